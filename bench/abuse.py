"""Abuse battery: hostile inputs and connection waves against a real `medstream serve`, while
canary participants (a consultation pinging, a monitor streaming ECG to a supervisor) measure how
much of it reaches people who did nothing wrong.

    python -m bench.abuse --inputs 12000 --json bench/results/abuse.json

Phases: (1) text fuzz: mutated signaling messages, garbage, deep nesting, hostile numbers, on
joined and unjoined connections; (2) binary fuzz: mutated waveform frames from a monitor;
(3) hostile tokens: forged, `alg: none`, empty-key, out-of-range claims, signed with the real
secret; (4) connection waves: never-joining websocket handshakes from several addresses, silent
TCP connections, and one viewer token joining hundreds of times, each with legitimate joins from
another address measured during the wave. The server runs with `--nofile` descriptors (default
1,024, the common default the findings were made at) and with rate limits raised so that fuzz
inputs reach the parser instead of the rate limiter.

Reported: inputs sent, server crashes (process exit), tracebacks and ERROR lines in its log, error
replies by reason, unexpected closes of fuzz connections, canary ping RTT p50/p99/max and missed
pongs, canary waveform chunks received and their worst delay, legitimate join success and
latency per wave, machine load. It measures; it never asserts. The input generators
(`text_inputs`, `binary_inputs`, `hostile_tokens`) are shared with tests/security/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import jwt
import msgpack
import numpy as np
import websockets

from bench.proc import free_port, wait_for_port
from protocol import signaling as wire
from protocol.waveforms import Announce, ChannelInfo, Chunk, Numerics, decode_server_frame, encode
from signaling.tokens import issue_token

SECRET = "abuse-bench-secret-" + "a" * 40
REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- input generators

_SCALARS: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, -(2**63), 2**64, 10**30, 1.5, -0.0, 1e308, "", "x", "a" * 200,
    "心电图", "\u0000", "\ud7ff", "🫀" * 20, "__proto__", "constructor", "../../etc/passwd",
    "<script>alert(1)</script>", "' OR 1=1 --", "%s%s%n", "NaN",
]
_RAW_NUMBERS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1" * 5000, "0." + "0" * 3000 + "1"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth < 3 and r < 0.12:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 3 and r < 0.22:
        return {rng.choice(["type", "id", "x", "__proto__", "token"]): _value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    if r < 0.3:
        return rng.randrange(-(2**70), 2**70)
    if r < 0.38:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(40)))
    return rng.choice(_SCALARS)


def text_inputs(rng: random.Random, n: int) -> Iterator[str]:
    """`n` hostile signaling text frames (never a `leave`, which would end the fuzzing socket)."""
    types = [t for t in wire.CLIENT_MESSAGES if t != "leave"]
    produced = 0
    while produced < n:
        r = rng.random()
        if r < 0.55:  # a real message type with fields mutated, dropped or added
            t = rng.choice(types)
            cls = wire.CLIENT_MESSAGES[t]
            msg: dict[str, Any] = {"type": t}
            for f in fields(cls):
                if rng.random() < 0.8:
                    msg[f.name] = _value(rng)
            if rng.random() < 0.3:
                msg[rng.choice(["extra", "__proto__", "v", "type"])] = _value(rng)
            if t == "join":
                msg["v"] = 1 if rng.random() < 0.7 else _value(rng)
            text = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
        elif r < 0.65:  # deep nesting, in and out of a message
            depth = rng.choice([10, 100, 999, 1000, 5000, 20000])
            inner = "[" * depth + "]" * depth
            text = inner if rng.random() < 0.5 else '{"type":"ping","x":' + inner + "}"
        elif r < 0.73:  # numbers Python's json takes but JSON does not have
            text = '{"type":"raise_hand","raised":true,"id":' + rng.choice(_RAW_NUMBERS) + "}"
        elif r < 0.8:  # not an object / broken JSON
            text = rng.choice(["[]", "null", "1", '"join"', "{", '{"type":', "{}", '{"type":null}',
                               '{"type":"join","v":1,"token":}', "\ufeff{}", '{"a":"\\ud800"}'])
        elif r < 0.9:  # random bytes as text
            text = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).decode("latin-1")
        else:  # a valid message truncated or with a byte flipped
            good = json.dumps({"type": "subscribe", "track_ids": ["a" * rng.randrange(70)], "id": 1})
            cut = rng.randrange(1, len(good))
            text = good[:cut] if rng.random() < 0.5 else good[:cut] + chr(rng.randrange(32, 127)) + good[cut + 1:]
        if '"type": "leave"' in text or '"type":"leave"' in text:
            continue
        produced += 1
        yield text


def hostile_tokens(rng: random.Random, n: int, secret: str = SECRET) -> Iterator[str]:
    """Tokens that must all be refused: forged, unsigned, empty-key, and signed with the real
    secret but carrying out-of-range or wrongly typed claims."""
    now = time.time()
    base = {"sub": "x", "room": "abuse", "role": "host", "kind": "consultation", "nbf": now - 5, "exp": now + 60}
    bad_claims: list[dict[str, Any]] = [
        {"nbf": 10**20}, {"exp": 10**30, "nbf": -(10**20)}, {"exp": 1e308}, {"nbf": "now"}, {"exp": None},
        {"sub": ""}, {"sub": "x" * 500}, {"role": "speaker"}, {"role": "root"}, {"room": ["a"]},
        {"kind": {"a": 1}}, {"jti": 7}, {"jti": "j" * 500}, {"exp": now - 3600}, {"nbf": now + 3600},
        {"exp": True}, {"nbf": float("nan")},
    ]
    for i in range(n):
        k = i % 6
        if k == 5:  # a header naming a key the server does not have, or not a string
            yield jwt.encode(base, secret, algorithm="HS256", headers={"kid": rng.choice(["nope", "k0", ""])})
        elif k == 0:
            yield jwt.encode({**base, **rng.choice(bad_claims)}, secret, algorithm="HS256")
        elif k == 1:
            yield jwt.encode(base, "forged-" + "f" * 40, algorithm="HS256")
        elif k == 2:
            yield jwt.encode(base, None, algorithm="none")
        elif k == 3:
            tok = jwt.encode(base, secret, algorithm="HS256")
            cut = len(tok) - rng.randrange(5, 30)  # inside the signature, away from its padding bits
            yield tok[:cut] + ("B" if tok[cut] == "A" else "A") + tok[cut + 1:]
        else:
            yield rng.choice(["", "a.b.c", "x" * 5000, "e30.e30.", "..", "\u0000", "eyJhbGciOiJub25lIn0.e30."])


_ANNOUNCE = Announce("fuzz-1", (ChannelInfo("II", "mV", 200.0, 0),), 500.0, ecg_channel=0)


def binary_inputs(rng: random.Random, n: int) -> Iterator[bytes]:
    """`n` hostile waveform frames: mutated announces/chunks/numerics, garbage, ext types,
    `__proto__` keys, wrong dtypes and lengths, huge sequence numbers."""
    samples = np.zeros((1, 50), dtype="<i2")
    good = [msgpack.unpackb(encode(_ANNOUNCE)),
            msgpack.unpackb(encode(Chunk("fuzz-1", 0, 1.7e9, samples))),
            msgpack.unpackb(encode(Numerics("fuzz-1", 1.7e9, {"spo2_pct": 97.0})))]
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            m = dict(rng.choice(good))
            for _ in range(rng.randrange(1, 4)):
                key = rng.choice([*m.keys(), "__proto__", "extra"])
                m[key] = rng.choice([_value(rng), b"\x00" * rng.randrange(0, 70), rng.randrange(-(2**63), 2**64),
                                     float("nan"), float("inf"), "<i8", "<f4"])
            try:
                yield msgpack.packb(m, use_bin_type=True)
            except (OverflowError, TypeError, ValueError):
                yield b"\xc1"
        elif r < 0.7:
            yield msgpack.packb(msgpack.ExtType(rng.randrange(128), b"xyz"))
        elif r < 0.8:
            yield msgpack.packb({1: 2, b"type": b"announce"}, use_bin_type=True)
        elif r < 0.9:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        else:
            frame = msgpack.packb(rng.choice(good), use_bin_type=True)
            yield frame[:rng.randrange(1, len(frame))]


# --------------------------------------------------------------------------- the run


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Canaries:
    """A host and an expert pinging in a consultation; a monitor streaming to a supervisor."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rtts_ms: list[float] = []
        self.missed = 0
        self.closed_unexpectedly = 0
        self.chunks_received = 0
        self.chunk_delays_ms: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        for identity, role in (("canary-host", "host"), ("canary-expert", "expert")):
            tok = issue_token(SECRET, room="canary", identity=identity, role=role, room_kind="consultation",
                              valid_for_s=7200)
            self._tasks.append(asyncio.ensure_future(self._pinger(tok)))
            await asyncio.sleep(0.2)
        sup = issue_token(SECRET, room="ward", identity="canary-sup", role="supervisor", valid_for_s=7200)
        mon = issue_token(SECRET, room="ward", identity="canary-monitor", role="monitor", valid_for_s=7200)
        self._tasks.append(asyncio.ensure_future(self._viewer(sup)))
        await asyncio.sleep(0.2)
        self._tasks.append(asyncio.ensure_future(self._monitor(mon)))

    async def _join(self, tok: str) -> websockets.ClientConnection:
        ws = await websockets.connect(self.url, local_addr=("127.0.0.20", 0), max_size=None)
        await ws.send(json.dumps({"type": "join", "v": 1, "token": tok, "id": "j"}))
        reply = json.loads(await ws.recv())
        if reply["type"] != "joined":
            raise RuntimeError(f"canary could not join: {reply}")
        return ws

    async def _pinger(self, tok: str) -> None:
        ws = await self._join(tok)
        try:
            i = 0
            while not self._stop.is_set():
                i += 1
                t0 = time.perf_counter()
                await ws.send(json.dumps({"type": "ping", "id": i}))
                try:
                    while True:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 2.0))
                        if msg.get("id") == i:
                            break
                    self.rtts_ms.append((time.perf_counter() - t0) * 1000)
                except TimeoutError:
                    self.missed += 1
                await asyncio.sleep(0.1)
        except websockets.ConnectionClosed:
            if not self._stop.is_set():
                self.closed_unexpectedly += 1
        finally:
            await ws.close()

    async def _viewer(self, tok: str) -> None:
        ws = await self._join(tok)
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    m = decode_server_frame(frame)
                    chunk = getattr(m, "chunk", None)
                    if chunk is not None and chunk.stream_id == "canary-bed":
                        self.chunks_received += 1
                        self.chunk_delays_ms.append((time.time() - chunk.t0) * 1000)
        except websockets.ConnectionClosed:
            if not self._stop.is_set():
                self.closed_unexpectedly += 1

    async def _monitor(self, tok: str) -> None:
        ws = await self._join(tok)
        try:
            await ws.send(encode(Announce("canary-bed", (ChannelInfo("II", "mV", 200.0, 0),), 500.0, 0)))
            seq = 0
            while not self._stop.is_set():
                await ws.send(encode(Chunk("canary-bed", seq, time.time(), np.zeros((1, 50), dtype="<i2"))))
                seq += 50
                await asyncio.sleep(0.1)
        except websockets.ConnectionClosed:
            if not self._stop.is_set():
                self.closed_unexpectedly += 1
        finally:
            await ws.close()

    async def stop(self) -> dict[str, Any]:
        self._stop.set()
        await asyncio.sleep(0.3)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return {
            "pings": len(self.rtts_ms), "missed_pongs": self.missed,
            "ping_rtt_ms_p50": _percentile(self.rtts_ms, 0.5), "ping_rtt_ms_p99": _percentile(self.rtts_ms, 0.99),
            "ping_rtt_ms_max": round(max(self.rtts_ms), 2) if self.rtts_ms else None,
            "closed_unexpectedly": self.closed_unexpectedly, "waveform_chunks_received": self.chunks_received,
            "waveform_delay_ms_p99": _percentile(self.chunk_delays_ms, 0.99),
            "waveform_delay_ms_max": round(max(self.chunk_delays_ms), 1) if self.chunk_delays_ms else None,
        }


async def fuzz_text(url: str, inputs: list[str], source: str, joined_as: str | None,
                    replies: Counter[str]) -> dict[str, int]:
    """Send `inputs` on one connection (joined as a viewer if `joined_as`), count the replies."""
    out = {"sent": 0, "closed": 0}
    ws = await websockets.connect(url, local_addr=(source, 0), max_size=None)
    reader_done = asyncio.Event()

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in ws:
                if isinstance(frame, str):
                    msg = json.loads(frame)
                    replies[msg.get("reason") or msg["type"]] += 1
                    if msg.get("id") == "fuzz-end":
                        break
        reader_done.set()

    reader = asyncio.ensure_future(read())
    try:
        if joined_as is not None:
            await ws.send(json.dumps({"type": "join", "v": 1, "token": joined_as}))
        for text in inputs:
            await ws.send(text)
            out["sent"] += 1
        await ws.send(json.dumps({"type": "ping", "id": "fuzz-end"}))
        await asyncio.wait_for(reader_done.wait(), 60)
    except (TimeoutError, websockets.ConnectionClosed):
        out["closed"] += 1
    finally:
        reader.cancel()
        await ws.close()
    return out


async def fuzz_binary(url: str, inputs: list[bytes], replies: Counter[str]) -> dict[str, int]:
    out = {"sent": 0, "closed": 0}
    tok = issue_token(SECRET, room="ward", identity="fuzz-monitor", role="monitor")
    async with websockets.connect(url, local_addr=("127.0.0.30", 0), max_size=None) as ws:
        await ws.send(json.dumps({"type": "join", "v": 1, "token": tok}))
        await ws.recv()
        try:
            for i, frame in enumerate(inputs):
                await ws.send(frame)
                out["sent"] += 1
                if i % 200 == 0:  # read what came back so far
                    while True:
                        try:
                            reply = await asyncio.wait_for(ws.recv(), 0.001)
                        except TimeoutError:
                            break
                        if isinstance(reply, bytes):
                            replies[getattr(decode_server_frame(reply), "reason", "ack")] += 1
        except websockets.ConnectionClosed:
            out["closed"] += 1
    return out


async def hostile_joins(url: str, tokens: list[str], replies: Counter[str]) -> int:
    sent = 0
    async with websockets.connect(url, local_addr=("127.0.0.31", 0), max_size=None) as ws:
        for i, tok in enumerate(tokens):
            await ws.send(json.dumps({"type": "join", "v": 1, "token": tok, "id": i}))
            reply = json.loads(await ws.recv())
            replies[reply.get("reason") or reply["type"]] += 1
            sent += 1
            if reply["type"] == "joined":  # must never happen; start over on a fresh socket
                break
    return sent


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def _stall(port: int, source: str, handshake: bool, hold_s: float, stats: Counter[str]) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 3)
    except (TimeoutError, OSError):
        stats["connect_failed"] += 1
        return
    try:
        if handshake:
            writer.write(UPGRADE)
            status = await asyncio.wait_for(reader.readline(), 3)
            stats["held" if b" 101 " in status else "refused_http"] += 1
        else:
            stats["silent"] += 1
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(reader.read(), hold_s)
    except (TimeoutError, OSError):
        stats["no_answer"] += 1
    finally:
        writer.close()


async def _legit_joins(url: str, n: int, stop_after_s: float) -> dict[str, Any]:
    ok, failed, latencies = 0, 0, []
    why: Counter[str] = Counter()
    deadline = time.monotonic() + stop_after_s
    i = 0
    while time.monotonic() < deadline and i < n:
        i += 1
        tok = issue_token(SECRET, room="canary", identity=f"doctor-{i}-{random.random()}", role="expert")
        t0 = time.perf_counter()
        try:
            async with websockets.connect(url, local_addr=("127.0.0.9", 0), open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "join", "v": 1, "token": tok}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if reply["type"] == "joined":
                ok += 1
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                failed += 1
                why[reply.get("reason", "?")] += 1
        except websockets.InvalidStatus as exc:
            failed += 1
            why[f"http_{exc.response.status_code}: {exc.response.body.decode(errors='replace').strip()[:60]}"] += 1
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            failed += 1
            why[type(exc).__name__] += 1
        await asyncio.sleep(0.2)
    return {"legit_joins_ok": ok, "legit_joins_failed": failed, "legit_failures": dict(why),
            "legit_join_ms_p50": _percentile(latencies, 0.5), "legit_join_ms_max": round(max(latencies), 1) if latencies else None}


async def connection_wave(url: str, port: int, kind: str, size: int, hold_s: float) -> dict[str, Any]:
    stats: Counter[str] = Counter()
    sources = [f"127.0.0.{10 + i % 4}" for i in range(size)]
    if kind == "one_token_joins":
        tok = issue_token(SECRET, room="canary", identity="one-viewer", role="viewer")

        async def join_once(src: str) -> None:
            try:
                async with websockets.connect(url, local_addr=(src, 0), open_timeout=5) as ws:
                    await ws.send(json.dumps({"type": "join", "v": 1, "token": tok}))
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    stats[reply.get("reason") or reply["type"]] += 1
                    await asyncio.sleep(hold_s)
            except (TimeoutError, OSError, websockets.WebSocketException):
                stats["failed"] += 1
        attackers = [asyncio.ensure_future(join_once(s)) for s in sources]
    else:
        attackers = [asyncio.ensure_future(_stall(port, s, kind == "never_joining", hold_s, stats)) for s in sources]
    await asyncio.sleep(0.5)
    legit = await _legit_joins(url, 10, hold_s)
    await asyncio.gather(*attackers, return_exceptions=True)
    return {"kind": kind, "connections": size, **dict(stats), **legit}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    workdir = Path(tempfile.mkdtemp(prefix="medstream-abuse-"))
    config = workdir / "medstream.toml"
    config.write_text("rooms = [\"ward:monitoring\"]\n[limits]\nrate_per_s = 100000.0\nrate_burst = 100000\n"
                      "flood_close_after = 1000000000\nbinary_rate_per_s = 100000.0\nbinary_rate_burst = 100000\n")
    env = {**os.environ, "MEDSTREAM_SECRET": SECRET, "PYTHONPATH": str(REPO)}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile_hard or args.nofile))

    log_path = workdir / "server.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen([sys.executable, "-m", "medstream.cli", "serve", "--port", str(port), "--no-media",
                               "--config", str(config), "--audit-log", str(workdir / "audit.jsonl")],
                              env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=limit)
    load_before = os.getloadavg()
    t_start = time.monotonic()
    result: dict[str, Any] = {"seed": args.seed, "server_nofile": args.nofile,
                              "server_nofile_hard": args.nofile_hard or args.nofile}
    try:
        await asyncio.to_thread(wait_for_port, port)
        canaries = Canaries(url)
        await canaries.start()
        replies: Counter[str] = Counter()
        texts = [] if args.waves_only else list(text_inputs(rng, args.inputs))
        per = max(1, len(texts) // 4)
        viewers = [issue_token(SECRET, room="canary", identity=f"fuzz-viewer-{i}", role="viewer") for i in range(2)]
        text_runs = await asyncio.gather(*(
            fuzz_text(url, texts[i * per:(i + 1) * per], f"127.0.0.{40 + i}", viewers[i] if i < 2 else None, replies)
            for i in range(4)))
        binary_replies: Counter[str] = Counter()
        binary = await fuzz_binary(url, [] if args.waves_only else list(binary_inputs(rng, args.inputs // 2)),
                                   binary_replies)
        token_replies: Counter[str] = Counter()
        joins = await hostile_joins(url, [] if args.waves_only else list(hostile_tokens(rng, args.inputs // 10)),
                                    token_replies)
        waves = []
        for kind, size in (("never_joining", args.wave), ("silent_tcp", args.wave // 2), ("one_token_joins", 300)):
            waves.append(await connection_wave(url, port, kind, size, args.hold_s))
        result.update({
            "text_inputs": sum(r["sent"] for r in text_runs), "text_connections_closed": sum(r["closed"] for r in text_runs),
            "text_replies": dict(replies.most_common()),
            "binary_inputs": binary["sent"], "binary_connection_closed": binary["closed"],
            "binary_replies": dict(binary_replies.most_common()),
            "hostile_token_joins": joins, "hostile_token_replies": dict(token_replies),
            "tokens_accepted": token_replies.get("joined", 0),
            "waves": waves,
            "canaries": await canaries.stop(),
        })
    finally:
        crashed = server.poll() is not None
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=20)
        log_file.close()
    log_text = log_path.read_text(errors="replace")
    result.update({
        "inputs_total": result.get("text_inputs", 0) + result.get("binary_inputs", 0) + result.get("hostile_token_joins", 0),
        "server_crashed": crashed,
        "tracebacks": log_text.count("Traceback"),
        "error_log_lines": sum(" ERROR " in line for line in log_text.splitlines()),
        "log_lines": len(log_text.splitlines()),
        "seconds": round(time.monotonic() - t_start, 1),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    })
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=12000, help="text fuzz inputs (binary: half, tokens: a tenth)")
    p.add_argument("--wave", type=int, default=1100, help="connections per never-joining wave")
    p.add_argument("--hold-s", type=float, default=4.0, help="how long each wave holds its connections")
    p.add_argument("--nofile", type=int, default=1024, help="the server's soft descriptor limit")
    p.add_argument("--nofile-hard", type=int, default=None,
                   help="its hard limit (default: = soft, so the server cannot raise it; a systemd "
                        "service typically has soft 1024, hard 524288, and the server raises to hard)")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--waves-only", action="store_true", help="skip the fuzz phases")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["binary_inputs", "hostile_tokens", "main", "text_inputs"]
