"""The `medstream` command as an operator uses it: serve in one process, token from another."""

import asyncio
import json
import os
import subprocess
import sys
import urllib.request

import websockets

from bench.proc import free_port, wait_for_port

SECRET = "cli-test-secret-0123456789-0123456789-abc"


ENV = {**os.environ, "MEDSTREAM_SECRET": SECRET}


def medstream(*args: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", ENV)
    return subprocess.run([sys.executable, "-m", "medstream.cli", *args], capture_output=True, text=True, timeout=60, **kw)


def test_help_lists_commands_and_unknown_command_fails():
    out = medstream("--help")
    assert out.returncode == 0 and "serve" in out.stdout and "ecg-eval" in out.stdout
    for command in ("serve", "token", "demo", "ecg-eval", "ecg-summary", "monitor-sim", "publish", "recordings"):
        assert medstream(command, "--help").returncode == 0, command
    bad = medstream("frobnicate")
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_token_refuses_bad_input_and_missing_secret():
    out = medstream("token", "--room", "r", "--identity", "a", "--role", "host", "--kind", "party")
    assert out.returncode != 0
    out = medstream("token", "--room", "r", "--identity", "a", "--role", "host", env={"PATH": "/usr/bin:/bin"})
    assert out.returncode != 0 and "no secret" in out.stderr


def test_serve_answers_healthz_and_a_token_from_the_cli_joins(tmp_path):
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    server = subprocess.Popen(
        [sys.executable, "-m", "medstream.cli", "serve", "--port", str(port),
         "--audit-log", str(audit), "--no-media", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        wait_for_port(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        tok = medstream("token", "--room", "consult-1", "--identity", "dr-li", "--name", "Dr Li", "--role", "host",
                        "--kind", "consultation", "--valid-for", "10m")
        assert tok.returncode == 0, tok.stderr

        async def join() -> dict:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": tok.stdout.strip()}))
                return json.loads(await asyncio.wait_for(ws.recv(), 10))

        joined = asyncio.run(join())
        assert joined["type"] == "joined" and joined["participant"]["name"] == "Dr Li"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert "medstream serving on" in out
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events[:2] == ["room_created", "join"]


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2 and a short plain message on stderr, never a traceback."""
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    for needle in needles:
        assert needle in out.stderr, (needle, out.stderr)


def test_everyday_serve_mistakes_get_one_line_and_exit_code_2(tmp_path):
    base = ("serve", "--audit-log", "none", "--no-media")  # the secret comes from MEDSTREAM_SECRET
    _one_line_error(medstream(*base, "--port", "80000"), "port must be 0-65535")
    _one_line_error(medstream(*base, "--port", "http"), "port must be a number")
    _one_line_error(medstream(*base, "--port", "0", "--room", "ward-3:party"), "KIND one of", "ward-3:party")
    _one_line_error(medstream(*base, "--port", "0", "--config", str(tmp_path / "missing.toml")), "not found")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("port = [\n")
    _one_line_error(medstream(*base, "--port", "0", "--config", str(bad_toml)), "cannot be read")
    no_secret = medstream("serve", "--port", "0", "--no-media", env={"PATH": "/usr/bin:/bin"})
    _one_line_error(no_secret, "no secret", "--dev")
    # the port is taken: by a plain listening socket of this test
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = str(s.getsockname()[1])
        _one_line_error(medstream(*base, "--port", taken), f"port {taken}", "already in use")


def test_token_durations_and_start_times_people_type():
    from medstream.token import parse_duration, parse_start

    assert [parse_duration(t) for t in ("90m", "2h", "1day", "1.5 hours", "45s", "3600", "1d")] == [
        5400, 7200, 86400, 5400, 45, 3600, 86400]
    assert parse_start("+15m", 1000.0) == 1900.0 and parse_start(None, 5.0) == 5.0
    assert parse_start("2026-12-01T14:00:00+08:00", 0) == 1796104800.0  # 06:00 UTC
    for bad in ("1 fortnight", "soon", "-5m", "0h"):
        out = medstream("token", "--room", "r", "--identity", "a", "--role", "host",
                        f"--valid-for={bad}")
        _one_line_error(out, "duration must")
    _one_line_error(medstream("token", "--room", "r", "--identity", "a", "--role", "host",
                              "--valid-from", "tomorrow-ish"), "--valid-from must be")
    ok = medstream("token", "--room", "r", "--identity", "a", "--role", "host",
                   "--valid-from", "+10m", "--valid-for", "1day")
    assert ok.returncode == 0 and ok.stdout.count(".") == 2  # a JWT


def test_recordings_without_a_folder_and_summary_with_a_bad_channel(tmp_path, ecg_data_dir):
    listing = medstream("recordings", "--root", str(tmp_path / "none"), "list")
    assert listing.returncode == 0 and "no recordings yet" in listing.stdout, listing
    _one_line_error(medstream("recordings", "--root", str(tmp_path / "none"), "prune", "--older-than", "3"),
                    "no recordings yet")
    out = medstream("ecg-summary", str(ecg_data_dir / "mitdb" / "100"), "--channel", "7")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "channel 7" in out.stderr, out.stderr[-1500:]
