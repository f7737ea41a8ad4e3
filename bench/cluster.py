"""Cluster benchmark: joins/s with 1 and 2 processes on Redis, the cost of a join that is
redirected to the room's node, and monitor -> wall waveform latency with the Redis journal.

Everything runs on this machine: one `redis-server`, `medstream serve --redis` processes (a single
node, then `--workers 2` sharing one port with SO_REUSEPORT), and the clients in this process.
Alongside wall-clock figures it reports the CPU seconds the server processes (and Redis) used, the
figure to trust on a busy machine: `server_bound_joins_per_s` is joins / the busiest worker's CPU
seconds, what the workers would do with a core each and a client that keeps up.

    python -m bench.cluster --joins 3000 --json bench/results/cluster.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from bench.cluster_harness import SECRET, Node, RedisServer, tempdir
from bench.proc import cpu_seconds
from protocol import signaling as wire
from protocol import waveforms as wf
from signaling.tokens import issue_token

LIMITS = ("[limits]\nmax_connections = 100000\nmax_connections_per_address = 100000\n"
          "max_pending = 100000\nmax_pending_per_address = 100000\ntoken_join_burst = 100000\n")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


async def join(url: str, tok: str, hops: list[int] | None = None) -> websockets.ClientConnection:
    """Join, following redirects; `hops` gets the number of redirects."""
    n = 0
    while True:
        ws = await websockets.connect(url, compression=None, max_queue=None, open_timeout=30)
        await ws.send(wire.encode(wire.Join(wire.PROTOCOL_VERSION, tok, id=1)))
        while True:
            msg = wire.decode_server_message(await ws.recv())
            if isinstance(msg, wire.Joined):
                if hops is not None:
                    hops.append(n)
                return ws
            if isinstance(msg, wire.Redirect):
                await ws.close()
                url, n = msg.url, n + 1
                break
            if isinstance(msg, wire.Error):
                raise RuntimeError(msg)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * q))], 2) if values else float("nan")


async def bench_joins(node: Node, total: int, concurrency: int, room_size: int, direct: bool = False,
                      tag: str = "b") -> dict[str, Any]:
    """`total` experts join consultations of `room_size` through the node's (shared) port, or with
    `direct` straight to the worker hosting their room (no redirect: what redirects cost)."""
    rooms = max(1, total // room_size)
    hosts = [await join(node.ws_url, issue_token(SECRET, room=f"{tag}{r}", identity=f"h{r}", role="host",
                                                  room_kind="consultation")) for r in range(rooms)]
    tokens = [issue_token(SECRET, room=f"{tag}{i % rooms}", identity=f"u{i}", role="expert") for i in range(total)]
    urls = [node.ws_url] * rooms
    if direct:
        await asyncio.sleep(1.5)  # the rooms' directory entries are written within a second
        where = {n["node_id"]: n["url"] for n in node.get("/cluster/v1/nodes")["nodes"]}
        urls = [where[node.get(f"/cluster/v1/rooms/{tag}{r}")["node_id"]] for r in range(rooms)]
    pids = children(node.pid) or [node.pid]
    sem = asyncio.Semaphore(concurrency)
    sockets: list[websockets.ClientConnection] = []
    latencies: list[float] = []
    hops: list[int] = []

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            sockets.append(await join(urls[i % rooms], tokens[i], hops))
            latencies.append(1000 * (time.perf_counter() - t))

    cpu0 = [cpu_seconds(p) for p in pids]
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall = time.perf_counter() - t0
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
    for ws in sockets + hosts:
        await ws.close()
    return {
        "processes": len(pids), "direct": direct, "joins": total, "room_size": room_size, "concurrency": concurrency,
        "wall_s": round(wall, 3), "joins_per_s": round(total / wall, 1),
        "server_cpu_s_per_process": [round(c, 3) for c in cpu],
        "server_cpu_ms_per_join": round(1000 * sum(cpu) / total, 3),
        "server_bound_joins_per_s": round(total / max(cpu), 1) if max(cpu) > 0 else None,
        "redirected_share": round(sum(1 for h in hops if h) / len(hops), 3),
        "join_latency_ms_p50": pct(latencies, 0.5), "join_latency_ms_p99": pct(latencies, 0.99),
    }


async def bench_redirect_latency(a: Node, b: Node, n: int) -> dict[str, Any]:
    """A join through the room's node vs through the other node (redirect, reconnect, join)."""
    host = await join(a.ws_url, issue_token(SECRET, room="lat", identity="host", role="host", room_kind="consultation"))
    deadline = time.monotonic() + 30
    while True:  # the room's state is written within a second of its opening
        try:
            state = b.get("/cluster/v1/rooms/lat")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    home, other = (a, b) if state["node_id"] == a.name else (b, a)
    out: dict[str, list[float]] = {"direct": [], "redirected": []}
    for i in range(n):
        for label, via in (("direct", home), ("redirected", other)):
            t = time.perf_counter()
            ws = await join(via.ws_url, issue_token(SECRET, room="lat", identity=f"{label}{i}", role="expert"))
            out[label].append(1000 * (time.perf_counter() - t))
            await ws.close()
    await host.close()
    return {f"{k}_join_ms_{q}": pct(v, p) for k, v in out.items() for q, p in (("p50", 0.5), ("p99", 0.99))}


async def bench_waveform_latency(monitor_via: Node, wall_via: Node, seconds: float) -> dict[str, Any]:
    """A monitor (in through one node) streams 250 Hz in 40 ms chunks stamped with their send
    time; the wall (in through the other) measures arrival - stamp. The ack comes after the Redis
    journal has the frame: its latency is measured too."""
    wall = await join(wall_via.ws_url, issue_token(SECRET, room="wf", identity="wall", role="host",
                                                     room_kind="monitoring"))
    mon = await join(monitor_via.ws_url, issue_token(SECRET, room="wf", identity="mon", role="monitor"))
    ch = (wf.ChannelInfo("II", "mV", 200.0, 0),)
    await mon.send(wf.encode(wf.Announce("bed", ch, 250.0)))
    viewer_ms: list[float] = []
    ack_ms: list[float] = []
    sent: dict[int, float] = {}

    async def read_wall() -> None:
        async for frame in wall:
            if isinstance(frame, bytes):
                msg = wf.decode_server_frame(frame)
                if isinstance(msg, wf.ViewerChunk):
                    viewer_ms.append(1000 * (time.time() - msg.chunk.t0))

    async def read_acks() -> None:
        async for frame in mon:
            if isinstance(frame, bytes):
                msg = wf.decode_server_frame(frame)
                if isinstance(msg, wf.Ack) and (t := sent.pop(msg.next_seq, None)) is not None:
                    ack_ms.append(1000 * (time.perf_counter() - t))

    readers = [asyncio.ensure_future(read_wall()), asyncio.ensure_future(read_acks())]
    samples = (np.sin(np.arange(10) / 3) * 200).astype("<i2").reshape(1, 10)
    seq = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await mon.send(wf.encode(wf.Chunk("bed", seq, time.time(), samples)))
        seq += 10
        sent[seq] = time.perf_counter()
        await asyncio.sleep(0.04)
    await asyncio.sleep(0.5)
    for r in readers:
        r.cancel()
    await wall.close()
    await mon.close()
    return {"chunks": seq // 10, "wall_latency_ms_p50": pct(viewer_ms, 0.5), "wall_latency_ms_p99": pct(viewer_ms, 0.99),
            "ack_after_journal_ms_p50": pct(ack_ms, 0.5), "ack_after_journal_ms_p99": pct(ack_ms, 0.99)}


def bench_cascade(work: Path, redis_url: str, viewers: int, seconds: float, share: int) -> dict[str, Any]:
    """A lecture on node `origin` (one presenter: 640x360 VP8 ~1 Mbit/s + Opus, pre-encoded) and
    `viewers` light subscribers (aiortc, no decoding: bench.sfu_clients) joining through the
    origin; the origin carries `share` viewers' media, node `edge` the rest. CPU of each node
    over `seconds` of steady media."""
    import select
    import subprocess
    import sys

    from bench.sfu import encode_clip

    clip = work / "clip.webm"
    if not clip.exists():
        encode_clip(clip)
    env = {"MEDSTREAM_CASCADE_SHARE": str(share)}
    nodes = [Node(name, redis_url, work, media=True, env=env, log_level="WARNING",
                  extra=("--ice-host", "127.0.0.1", *(("--room", "lecture:broadcast") if name == "origin" else ())))
             for name in ("origin", "edge")]
    for n in nodes:
        n.spawn()
    procs: list[subprocess.Popen[str]] = []
    try:
        for n in nodes:
            n.wait_ready()
        origin = nodes[0]
        while len(origin.get("/cluster/v1/nodes")["nodes"]) < 2:
            time.sleep(0.2)
        tokens = [issue_token(SECRET, room="lecture", identity=f"viewer-{i}", role="viewer") for i in range(viewers)]
        specs: list[dict[str, Any]] = [{"publisher_tokens": [issue_token(SECRET, room="lecture", identity="presenter", role="host")],
                  "subscriber_tokens": []},
                 {"publisher_tokens": [], "subscriber_tokens": tokens}]
        for w, spec in enumerate(specs):
            spec |= {"url": origin.ws_url, "clip": str(clip), "publishers_total": 1, "out": str(work / f"cascade-{w}.json")}
            (work / f"cascade-spec-{w}.json").write_text(json.dumps(spec))
            procs.append(subprocess.Popen([sys.executable, "-m", "bench.sfu_clients", "--spec",
                                           str(work / f"cascade-spec-{w}.json")],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            assert procs[-1].stdout is not None
            ready, _, _ = select.select([procs[-1].stdout], [], [], 120 + viewers)
            line = procs[-1].stdout.readline() if ready else ""
            if not line.startswith("READY"):
                raise RuntimeError(f"cascade clients not ready: {line!r}")
        time.sleep(2.0)
        pids = [n.pid for n in nodes]
        cpu0 = [cpu_seconds(p) for p in pids]
        time.sleep(seconds)
        cpu = [round((cpu_seconds(p) - c) / seconds, 3) for p, c in zip(pids, cpu0)]
        status = origin.get("/cluster/v1/cascade")
        on_edge = sum(1 for v in status["placement"].values() if v == "edge")
        return {"viewers": viewers, "share": share, "viewers_on_origin": viewers - on_edge, "viewers_on_edge": on_edge,
                "tracks_served_to_edge": sum(1 for e in status["served"].values() if "edge" in e),
                "origin_cpu_per_s": cpu[0], "edge_cpu_per_s": cpu[1],
                "edge_cpu_ms_per_viewer_per_s": round(1000 * cpu[1] / on_edge, 2) if on_edge else None,
                "origin_cpu_ms_per_viewer_per_s": round(1000 * cpu[0] / viewers, 2)}
    finally:
        for p in procs:
            if p.poll() is None:
                assert p.stdin is not None
                with contextlib.suppress(OSError):
                    p.stdin.write("STOP\n")
                    p.stdin.flush()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for n in nodes:
            n.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = tempdir()
    (work / "limits.toml").write_text(LIMITS)
    redis = RedisServer(work)
    redis.start()
    extra = ("--config", str(work / "limits.toml"))
    result: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()}}
    redis_cpu0 = cpu_seconds(redis.proc.pid) if redis.proc else 0.0
    try:
        if args.only_cascade:
            v = args.cascade_viewers
            result["cascade_all_on_origin"] = bench_cascade(work, redis.url, v, args.cascade_s, v)
            result["cascade_half_on_edge"] = bench_cascade(work, redis.url, v, args.cascade_s, v // 2)
            return result
        alone = Node("alone", "", work, extra=extra, log_level="WARNING")  # no --redis: the default
        alone.start()
        result["joins_1_process_no_redis"] = [await bench_joins(alone, args.joins, args.concurrency, args.room_size)
                                              for _ in range(args.rounds)]
        alone.stop()
        one = Node("single", redis.url, work, extra=extra, log_level="WARNING")
        one.start()
        result["joins_1_process"] = [await bench_joins(one, args.joins, args.concurrency, args.room_size)
                                     for _ in range(args.rounds)]
        one.stop()
        two = Node("pair", redis.url, work, extra=(*extra, "--workers", "2", "--node-port", "0"), log_level="WARNING")
        two.start()
        await asyncio.sleep(2.5)  # both workers registered
        result["joins_2_processes"], result["joins_2_processes_direct"] = [], []
        for r in range(args.rounds):  # interleaved: the machine's load drifts
            result["joins_2_processes"].append(await bench_joins(two, args.joins, args.concurrency, args.room_size,
                                                                 tag=f"r{r}-"))
            result["joins_2_processes_direct"].append(await bench_joins(
                two, args.joins, args.concurrency, args.room_size, direct=True, tag=f"d{r}-"))
        two.stop()
        a = Node("a", redis.url, work, extra=extra, log_level="WARNING")
        b = Node("b", redis.url, work, extra=extra, log_level="WARNING")
        a.start()
        b.start()
        await asyncio.sleep(1.5)
        result["cross_node_join"] = await bench_redirect_latency(a, b, args.latency_joins)
        result["waveforms_monitor_to_wall"] = await bench_waveform_latency(a, b, args.waveform_s)
        a.stop()
        b.stop()
        if args.cascade_viewers:
            v = args.cascade_viewers
            result["cascade_all_on_origin"] = await asyncio.to_thread(bench_cascade, work, redis.url, v,
                                                                      args.cascade_s, v)
            result["cascade_half_on_edge"] = await asyncio.to_thread(bench_cascade, work, redis.url, v,
                                                                     args.cascade_s, v // 2)
    finally:
        if redis.proc:
            result["redis_cpu_s"] = round(cpu_seconds(redis.proc.pid) - redis_cpu0, 3)
        redis.kill()
    for key in ("joins_1_process_no_redis", "joins_1_process", "joins_2_processes", "joins_2_processes_direct"):
        runs = result.get(key, [])
        if not runs:
            continue
        result[key + "_median"] = {k: statistics.median(r[k] for r in runs)
                                   for k in ("joins_per_s", "server_bound_joins_per_s", "server_cpu_ms_per_join")}
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joins", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--latency-joins", type=int, default=100)
    parser.add_argument("--waveform-s", type=float, default=10.0)
    parser.add_argument("--cascade-viewers", type=int, default=20, help="lecture viewers (0: no cascade run)")
    parser.add_argument("--cascade-s", type=float, default=10.0)
    parser.add_argument("--only-cascade", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        import uvloop
        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
