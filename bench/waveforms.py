"""End-to-end waveform benchmark: N simulated monitors -> real server (subprocess) -> viewers.

    python -m bench.waveforms --monitors 500 --fs 500 --seconds 20 --json FILE

Measures monitor-to-viewer latency per chunk (wall time the monitor sent the chunk -> wall time a
viewer received it; monitors and viewers share this process's clock), server process CPU (user +
system time of the server subprocess over the measurement window), and throughput. Monitors are
grouped in rooms of `--beds-per-room`, each room with `--viewers-per-room` viewers. Prints and
writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import websockets

SECRET = "bench-secret-waveforms-0123456789abcdef"


# --------------------------------------------------------------------------- server subprocess


async def _serve(port: int, rooms: int, analysis: bool) -> None:
    from media_server.waveform_relay import WaveformConfig, WaveformRelay
    from signaling.hub import Hub, SignalingConfig
    from signaling.server import ServerParts, SignalingServer

    hub = Hub(SignalingConfig(secret=SECRET, binary_rate_per_s=1000.0))
    for r in range(rooms):
        hub.create_room(f"ward-{r}", "monitoring", time.time(), persistent=True)
    relay = WaveformRelay(WaveformConfig(analysis=analysis))
    server = SignalingServer(hub, parts=ServerParts(waveforms=relay))
    await server.start("127.0.0.1", port)
    print(f"PORT {server.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- clients


async def _viewer(url: str, token: str, send_times: dict[tuple[str, int], float],
                  latencies: list[float], counters: dict[str, int], measuring: list[bool]) -> None:
    from signaling.waveform_wire import ViewerChunk, decode_server_frame

    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": token}))
        async for raw in ws:
            if not isinstance(raw, bytes):
                continue
            now = time.time()
            m = decode_server_frame(raw)
            if isinstance(m, ViewerChunk):
                sent = send_times.get((m.chunk.stream_id, m.chunk.seq))
                if measuring[0]:
                    counters["chunks"] += 1
                    counters["bytes"] += len(raw)
                    if sent is not None:
                        latencies.append(now - sent)
            elif measuring[0]:
                counters[type(m).__name__] = counters.get(type(m).__name__, 0) + 1


async def _bench(args: argparse.Namespace) -> dict[str, object]:
    from clients.monitor_sim import ArraySource, MonitorSimConfig, MonitorSimulator, SyntheticSource
    from signaling.tokens import issue_token

    rooms = (args.monitors + args.beds_per_room - 1) // args.beds_per_room
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.waveforms", "--serve", "--rooms", str(rooms)]
        + (["--no-analysis"] if args.no_analysis else []),
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        url = f"ws://127.0.0.1:{int(line.split()[1])}/ws"
        # one shared 60 s synthetic ECG; each monitor starts at a different phase
        base = SyntheticSource(72.0, (), args.fs, seed=1, block_s=10.0)
        signal = base.read(int(60 * args.fs))
        send_times: dict[tuple[str, int], float] = {}
        latencies: list[float] = []
        counters: dict[str, int] = {"chunks": 0, "bytes": 0}
        measuring = [False]
        viewers = []
        for r in range(rooms):
            for v in range(args.viewers_per_room):
                tok = issue_token(SECRET, room=f"ward-{r}", identity=f"viewer-{r}-{v}", role="viewer")
                viewers.append(asyncio.create_task(
                    _viewer(url, tok, send_times, latencies, counters, measuring)))
        sims = []
        for i in range(args.monitors):
            tok = issue_token(SECRET, room=f"ward-{i // args.beds_per_room}",
                              identity=f"monitor-{i}", role="monitor")
            sim = MonitorSimulator(
                ArraySource(signal, args.fs, base.channels, 0, offset=i * 997),
                MonitorSimConfig(url=url, token=tok, stream_id=f"bed-{i}", chunk_ms=args.chunk_ms,
                                 numerics_every_s=5.0),
                record_send_times=True)
            sim.stats.send_times = _KeyedTimes(send_times, f"bed-{i}")  # type: ignore[assignment]
            sims.append(sim)
        total_s = args.warmup + args.seconds
        tasks = [asyncio.create_task(s.run(total_s)) for s in sims]
        await asyncio.sleep(args.warmup)
        cpu0, t0 = _cpu_s(proc.pid), time.time()
        n_lat0 = len(latencies)
        measuring[0] = True
        await asyncio.sleep(args.seconds)
        measuring[0] = False
        cpu1, t1 = _cpu_s(proc.pid), time.time()
        for t in tasks + viewers:
            t.cancel()
        await asyncio.gather(*tasks, *viewers, return_exceptions=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lat_ms = np.array(latencies[n_lat0:]) * 1000.0
    wall = t1 - t0
    samples_per_s = args.monitors * args.fs
    result = {
        "monitors": args.monitors, "fs_hz": args.fs, "rooms": rooms,
        "viewers": rooms * args.viewers_per_room, "chunk_ms": args.chunk_ms,
        "seconds": round(wall, 2), "analysis": not args.no_analysis,
        "latency_ms": {
            "n": int(lat_ms.size),
            "p50": round(float(np.percentile(lat_ms, 50)), 2) if lat_ms.size else None,
            "p90": round(float(np.percentile(lat_ms, 90)), 2) if lat_ms.size else None,
            "p99": round(float(np.percentile(lat_ms, 99)), 2) if lat_ms.size else None,
            "max": round(float(lat_ms.max()), 2) if lat_ms.size else None,
        },
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 1),
        "offered_samples_per_s": samples_per_s,
        "viewer_chunks_per_s": round(counters["chunks"] / wall, 1),
        "viewer_mbit_per_s": round(counters["bytes"] * 8 / wall / 1e6, 2),
        "viewer_other_messages": {k: v for k, v in counters.items() if k not in ("chunks", "bytes")},
        "monitor_errors": sum(len(s.stats.errors) for s in sims),
        "monitor_connections": sum(s.stats.connections for s in sims),
    }
    return result


class _KeyedTimes(dict):  # type: ignore[type-arg]
    """A monitor's seq -> send time, stored in the shared (stream, seq) map the viewers read."""

    def __init__(self, shared: dict[tuple[str, int], float], stream_id: str) -> None:
        super().__init__()
        self._shared, self._stream = shared, stream_id

    def __contains__(self, seq: object) -> bool:
        return (self._stream, seq) in self._shared

    def __setitem__(self, seq: int, t: float) -> None:
        self._shared[(self._stream, seq)] = t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.waveforms", description=__doc__.split("\n")[0])
    p.add_argument("--monitors", type=int, default=500)
    p.add_argument("--fs", type=float, default=500.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0, help="seconds to connect before measuring")
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("--beds-per-room", type=int, default=25)
    p.add_argument("--viewers-per-room", type=int, default=3)
    p.add_argument("--no-analysis", action="store_true", help="server without the DSP step")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rooms", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        try:
            import uvloop

            uvloop.run(_serve(0, args.rooms, not args.no_analysis))
        except ImportError:
            asyncio.run(_serve(0, args.rooms, not args.no_analysis))
        return 0
    try:
        import uvloop

        result = uvloop.run(_bench(args))
    except ImportError:
        result = asyncio.run(_bench(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
