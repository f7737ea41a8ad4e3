"""Signaling benchmark: joins per second, and fan-out latency to every member of a large room.

The server runs as its own process (`medstream serve`, uvloop) pinned to one core; the clients run
here, pinned to the other core where there is one. Figures are printed and written as JSON.

    python -m bench.signaling --joins 2000 --room-size 500 --messages 50 --json bench/results/signaling.json

`--baseline-tree DIR` runs the same clients against a server started from another checkout (e.g.
`git worktree add /tmp/before <commit>`) too, the two interleaved `--rounds` times, and prints the
medians side by side with their ratios: how a change of the server was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from bench.proc import cpu_seconds, free_port, pin_to_core, rss_mb, wait_for_port
from protocol import signaling as wire
from signaling.tokens import issue_token

SECRET = "bench-secret-0123456789-0123456789-abcdef"


def start_server(port: int, core: int | None, tree: Path | None = None) -> subprocess.Popen[bytes]:
    """`medstream serve` (signaling only) from this checkout, or from `tree`."""
    # one load generator from one address opens thousands of sockets: lift the per-address caps
    # that protect a real node from a flood (a config file; a server that does not know a limit
    # ignores it)
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    config.write_text("[limits]\nmax_connections = 100000\nmax_connections_per_address = 100000\n"
                      "max_pending = 100000\nmax_pending_per_address = 100000\n")
    cmd = [sys.executable, "-m", "medstream.cli", "serve", "--port", str(port), "--config", str(config),
           "--no-media", "--audit-log", "", "--log-level", "WARNING"]
    if core is not None and _have_taskset():
        cmd = ["taskset", "-c", str(core), *cmd]
    env = dict(os.environ, MEDSTREAM_AUDIT_LOG="", MEDSTREAM_SECRET=SECRET)  # never on the command line
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, cwd=tree)


def _have_taskset() -> bool:
    return subprocess.call(["sh", "-c", "command -v taskset"], stdout=subprocess.DEVNULL) == 0


async def join(url: str, room: str, identity: str, role: str, kind: str | None = None) -> websockets.ClientConnection:
    ws = await websockets.connect(url, compression=None, max_queue=None)
    tok = issue_token(SECRET, room=room, identity=identity, role=role, room_kind=kind)
    await ws.send(wire.encode(wire.Join(wire.PROTOCOL_VERSION, tok)))
    while True:
        msg = wire.decode_server_message(await ws.recv())
        if isinstance(msg, wire.Joined):
            return ws
        if isinstance(msg, wire.Error):
            raise RuntimeError(msg)


async def bench_joins(
    url: str, total: int, concurrency: int, server_pid: int, room_size: int = 10, kind: str = "consultation"
) -> dict[str, Any]:
    """`total` participants join rooms of `room_size` with `concurrency` joins in flight.

    Consultation rooms: experts, who all see each other join. Broadcast rooms: viewers, whose
    presence only the host sees."""
    sockets: list[websockets.ClientConnection] = []
    role = "expert" if kind == "consultation" else "viewer"
    tag = kind[0]
    hosts = [await join(url, f"{tag}{r}", f"host{r}", "host", kind) for r in range(max(1, total // room_size))]
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            sockets.append(await join(url, f"{tag}{i % len(hosts)}", f"u{i}", role))
            latencies.append(time.perf_counter() - t)

    cpu0 = cpu_seconds(server_pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(server_pid) - cpu0
    for ws in sockets + hosts:
        await ws.close()
    latencies.sort()
    return {
        "room_kind": kind,
        "room_size": room_size,
        "joins": total,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "joins_per_s": round(total / wall, 1),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_ms_per_join": round(1000 * cpu / total, 3),
        "server_bound_joins_per_s": round(total / cpu, 1) if cpu > 0 else None,
        "join_latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 2),
        "join_latency_ms_p99": round(1000 * latencies[int(len(latencies) * 0.99) - 1], 2),
    }


async def bench_fanout(url: str, room_size: int, messages: int, server_pid: int) -> dict[str, Any]:
    """A co-presenter toggles its hand (seen by the whole hall); time until each member has it."""
    host = await join(url, "fan", "host", "host", "broadcast")
    members = [host, await join(url, "fan", "co-presenter", "expert")]
    for batch in range(0, room_size - 2, 50):
        members += await asyncio.gather(
            *(join(url, "fan", f"v{i}", "viewer") for i in range(batch, min(batch + 50, room_size - 2)))
        )
    speaker = members[1]
    # drain the join announcements
    await asyncio.sleep(1.0)
    for ws in members:
        while True:
            try:
                await asyncio.wait_for(ws.recv(), 0.001)
            except TimeoutError:
                break

    current = -1
    latencies: list[float] = []
    sends: list[float] = []
    delivered = 0

    async def reader(ws: websockets.ClientConnection) -> None:
        nonlocal delivered
        async for frame in ws:
            if '"participant_updated"' in frame:  # the clock is read before any parsing
                latencies.append(1000 * (time.perf_counter() - sends[current]))
                delivered += 1

    readers = [asyncio.ensure_future(reader(ws)) for ws in members if ws is not speaker]
    cpu0 = cpu_seconds(server_pid)
    for i in range(messages):
        target = delivered + len(readers)
        current = i
        sends.append(time.perf_counter())
        await speaker.send(json.dumps({"type": "raise_hand", "raised": i % 2 == 0}))
        deadline = time.perf_counter() + 10
        while delivered < target and time.perf_counter() < deadline:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # let the rate limiter refill; idle gap between messages
    cpu = cpu_seconds(server_pid) - cpu0
    for r in readers:
        r.cancel()
    for ws in members:
        await ws.close()
    latencies.sort()
    expected = len(readers) * messages
    return {
        "room_size": room_size,
        "messages": messages,
        "deliveries": len(latencies),
        "lost": expected - len(latencies),
        "latency_ms_p50": round(statistics.median(latencies), 2) if latencies else None,
        "latency_ms_p99": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2) if latencies else None,
        "latency_ms_max": round(latencies[-1], 2) if latencies else None,
        "server_cpu_ms_per_fanout": round(1000 * cpu / messages, 2),
    }


def run_once(args: argparse.Namespace, tree: Path | None) -> dict[str, Any]:
    """One server process, the three measurements."""
    port = free_port()
    cores = os.cpu_count() or 1
    server = start_server(port, 0 if cores > 1 else None, tree)
    try:
        wait_for_port(port)
        url = f"ws://127.0.0.1:{port}/ws"
        result: dict[str, Any] = {"server_tree": str(tree) if tree else "."}
        result["joins_consultation"] = _run(bench_joins(url, args.joins, args.concurrency, server.pid, 10, "consultation"))
        result["joins_broadcast"] = _run(bench_joins(url, args.joins, args.concurrency, server.pid, 500, "broadcast"))
        result["fanout"] = _run(bench_fanout(url, args.room_size, args.messages, server.pid))
        result["server_rss_mb"] = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    return result


HEADLINES = (("joins_consultation", "joins_per_s"), ("joins_broadcast", "joins_per_s"),
             ("joins_consultation", "server_cpu_ms_per_join"), ("fanout", "latency_ms_p50"),
             ("fanout", "latency_ms_p99"), ("fanout", "server_cpu_ms_per_fanout"), ("server_rss_mb", None))


def _figure(run: dict[str, Any], section: str, key: str | None) -> float | None:
    value = run.get(section) if key is None else (run.get(section) or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--room-size", type=int, default=500)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--baseline-tree", type=Path, help="also measure a server run from this checkout")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (with --baseline-tree)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    if cores > 1:
        pin_to_core(1)
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    for _ in range(max(1, args.rounds)):
        runs["this"].append(run_once(args, None))
        if args.baseline_tree is not None:
            runs["baseline"].append(run_once(args, args.baseline_tree.resolve()))
    result: dict[str, Any] = {"bench": "signaling", "cores": cores, "server_pinned_core": 0 if cores > 1 else None,
                              "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                              **runs["this"][0], "runs": runs}
    if args.baseline_tree is not None:
        table = {}
        for section, key in HEADLINES:
            name = section if key is None else f"{section}.{key}"
            ours = [v for r in runs["this"] if (v := _figure(r, section, key)) is not None]
            base = [v for r in runs["baseline"] if (v := _figure(r, section, key)) is not None]
            if ours and base:
                m_ours, m_base = statistics.median(ours), statistics.median(base)
                table[name] = {"this": m_ours, "baseline": m_base,
                               "ratio_this_over_baseline": round(m_ours / m_base, 3) if m_base else None}
        result["comparison_medians"] = table
    print(json.dumps(result if args.baseline_tree is None else result["comparison_medians"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
