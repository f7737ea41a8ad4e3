"""Findings 7 (descriptors) and 9 (secrets, logs, audit) of issue 15 against real `medstream
serve` processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websockets

from bench.proc import free_port, wait_for_port
from signaling.tokens import issue_token
from tests.conftest import REPO_ROOT, timeout_s

SECRET = "process-test-secret-" + "p" * 32


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSTREAM_")}
    return {**env, "PYTHONPATH": str(REPO_ROOT), **extra}


def _serve(port: int, *args: str, env: dict[str, str], nofile: int | None = None) -> subprocess.Popen[str]:
    def limit() -> None:
        if nofile is not None:  # soft limit only, as a systemd service starts (hard stays higher)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return subprocess.Popen(
        [sys.executable, "-m", "medstream.cli", "serve", "--port", str(port), "--no-media", *args],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)


def _stop(server: subprocess.Popen[str]) -> tuple[str, str]:
    server.terminate()
    try:
        return server.communicate(timeout=timeout_s(20))
    except subprocess.TimeoutExpired:
        server.kill()
        return server.communicate()


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _hold_open(port: int, source: str, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """One attacker slot: complete the websocket handshake, never join, reopen when closed."""
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 2.0)
            writer.write(UPGRADE)
            status = await asyncio.wait_for(reader.readline(), 2.0)
            if b" 101 " in status:
                stats["held"] += 1
                await reader.read()  # until the server gives up on us
            else:
                stats["refused"] += 1
                await asyncio.sleep(0.2)
        except (TimeoutError, OSError):
            stats["failed"] += 1
            await asyncio.sleep(0.2)
        finally:
            if writer is not None:
                writer.close()


async def test_finding_7_never_joining_connections_do_not_lock_out_a_doctor(tmp_path: Path) -> None:
    """400 never-joining connections from one address against a server started with a soft limit
    of 256 file descriptors (the hard limit higher, as for a systemd service): the server raises
    its own limit and caps what one address may hold, so the doctor (another address) still
    joins at once. (With soft = hard the burst itself can exhaust descriptors at accept time,
    below anything the server decides: bench.abuse measures that case.)"""
    config = tmp_path / "medstream.toml"
    config.write_text("[limits]\nmax_pending_per_address = 16\n")
    port = free_port()
    server = _serve(port, "--config", str(config), "--audit-log", "none", "--log-level", "WARNING",
                    env=_env(MEDSTREAM_SECRET=SECRET), nofile=256)
    stop = asyncio.Event()
    stats = {"held": 0, "refused": 0, "failed": 0}
    try:
        await asyncio.to_thread(wait_for_port, port)
        attack = [asyncio.ensure_future(_hold_open(port, "127.0.0.2", stop, stats)) for _ in range(400)]
        deadline = time.monotonic() + timeout_s(10)
        while stats["held"] + stats["refused"] < 400 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        tok = issue_token(SECRET, room="c1", identity="dr-li", role="host", room_kind="consultation")
        t0 = time.monotonic()

        async def join() -> dict[str, object]:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws", local_addr=("127.0.0.3", 0)) as ws:
                await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": tok}))
                return json.loads(await ws.recv())  # type: ignore[no-any-return]

        joined = await asyncio.wait_for(join(), timeout_s(10))
        assert joined["type"] == "joined", joined
        assert time.monotonic() - t0 < timeout_s(10)  # not after the attackers' handshake timeout
        assert stats["refused"] > 0  # the caps answered, not the kernel's backlog
    finally:
        stop.set()
        for task in attack:
            task.cancel()
        await asyncio.gather(*attack, return_exceptions=True)
        _, err = _stop(server)
    assert "Traceback" not in err, err[-2000:]


def _medstream(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medstream.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s(30))


def test_finding_9_no_secret_on_the_command_line_and_no_short_secret() -> None:
    try:
        out = subprocess.run(
            [sys.executable, "-m", "medstream.cli", "serve", "--port", str(free_port()), "--no-media",
             "--audit-log", "none", "--secret", SECRET],
            cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=timeout_s(15))
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("serve accepted --secret on its command line") from exc
    assert out.returncode != 0 and "/proc" in out.stderr
    short = _medstream("token", "--room", "r", "--identity", "a", "--role", "host", env=_env(MEDSTREAM_SECRET="short"))
    assert short.returncode != 0 and "at least 32 bytes" in short.stderr


def test_finding_9_tokens_never_reach_the_log_and_the_audit_chain_verifies(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    audit = tmp_path / "audit.jsonl"
    port = free_port()
    server = _serve(port, "--audit-log", str(audit), "--log-level", "DEBUG", "--recordings-dir", str(tmp_path / "rec"),
                    env=_env(MEDSTREAM_SECRET_FILE=str(secret_file), MEDSTREAM_AUDIT_HASH="sm3"))
    tok = issue_token(SECRET, room="c1", identity="dr-li", role="host", room_kind="consultation")
    try:
        wait_for_port(port, timeout_s(30))
        for path in (f"/wall.html?token={tok}", f"/recordings?token={tok}", "/metrics"):
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s(20)).read()

        async def joins() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={tok}") as ws:
                await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": tok}))
                assert json.loads(await ws.recv())["type"] == "joined"
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": tok[:-3] + "AAA"}))
                assert json.loads(await ws.recv())["reason"] == "invalid_token"

        asyncio.run(joins())
    finally:
        out, err = _stop(server)
    signature = tok.rsplit(".", 1)[1]
    assert signature not in out + err and tok not in out + err
    assert "refused invalid_token" in err  # the log was really written
    verified = _medstream("audit", "verify", str(audit), env=_env())
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout + verified.stderr
    lines = audit.read_text().splitlines()
    assert {json.loads(line)["event"] for line in lines} >= {"room_created", "join", "join_refused"}
    assert all(json.loads(line)["alg"] == "sm3" for line in lines)
    assert tok not in audit.read_text() and signature not in audit.read_text()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0].replace("dr-li", "dr-xx"), *lines[1:]]) + "\n")
    broken = _medstream("audit", "verify", str(tampered), env=_env())
    assert broken.returncode == 1 and "line 1" in broken.stdout
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("\n".join(lines[1:]) + "\n")
    assert _medstream("audit", "verify", str(dropped), env=_env()).returncode == 1
