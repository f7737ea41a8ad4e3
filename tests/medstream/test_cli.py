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
