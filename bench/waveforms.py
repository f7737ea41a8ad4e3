"""End-to-end waveform benchmark: N monitors -> real server (own process, own core) -> viewers.

    python -m bench.waveforms --monitors 500 --fs 500 --seconds 20 --client-procs 4 --json FILE

The server runs in a subprocess pinned to `--server-core`; the simulated monitors and viewers are
spread over `--client-procs` worker processes pinned to the other cores, so the figures are the
server's and not a saturated client's. The clients are cheap on purpose: monitors are raw
websockets that send chunks encoded before the run (`waveform_wire.precode_chunk`, the send time
patched in as `t0`) at staggered phases, and viewers only read `t0` from each chunk frame
(`waveform_wire.chunk_timing`), so latency = viewer receive time - monitor send time (one clock,
one machine).

Measured over the `--seconds` window after `--warmup`:

* latency p50/p90/p99/max per delivered chunk, and how late monitors sent (client saturation);
* server CPU (user + system of the server process, DSP thread included) and client CPU;
* the server's own share, from probes inside the server process: relay time per monitor frame
  (`on_publisher_frame`), time a chunk frame waits in a viewer outbox until the writer takes it,
  event-loop lag, the relay's counters (drops, analysis step time);
* `--baseline`: the same clients against a bare fan-out server that forwards the monitor's bytes
  to the room's viewers (no decoding, no relay): the latency the clients and the kernel alone add.

`--profile FILE` records the server with py-spy during the window and prints the top functions.
Prints and writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SECRET = "bench-secret-waveforms-0123456789abcdef"
_SETUP_ALLOWANCE_S = 60.0  # workers import, encode and connect within this


# --------------------------------------------------------------------------- process helpers


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _pct(values: list[float] | np.ndarray, scale: float = 1.0, digits: int = 2) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64) * scale
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), digits),
            "p90": round(float(np.percentile(a, 90)), digits),
            "p99": round(float(np.percentile(a, 99)), digits), "max": round(float(a.max()), digits)}


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --------------------------------------------------------------------------- server process


class _Probe:
    """Server-side timings, collected only between `start` and `stop` (stdin commands)."""

    def __init__(self) -> None:
        self.on = False
        self.frame_s: list[float] = []
        self.outbox_wait_s: list[float] = []
        self.loop_lag_s: list[float] = []
        self.put_at: dict[int, tuple[float, bytes]] = {}  # id(frame) -> (put time, frame)

    def reset(self) -> None:
        self.frame_s.clear()
        self.outbox_wait_s.clear()
        self.loop_lag_s.clear()

    def report(self) -> dict[str, Any]:
        return {
            "relay_frame_us": _pct(self.frame_s, 1e6, 1),
            "relay_busy_s": round(sum(self.frame_s), 3),
            "outbox_wait_ms": _pct(self.outbox_wait_s, 1e3),
            "loop_lag_ms": _pct(self.loop_lag_s, 1e3),
        }

    async def watch_loop(self, period_s: float = 0.01) -> None:
        """Event-loop lag: how late a `period_s` sleep wakes up. Also forgets old put stamps."""
        pruned = time.perf_counter()
        while True:
            t = time.perf_counter()
            await asyncio.sleep(period_s)
            now = time.perf_counter()
            if self.on:
                self.loop_lag_s.append(now - t - period_s)
            if now - pruned > 2.0:
                self.put_at = {k: v for k, v in self.put_at.items() if now - v[0] < 2.0}
                pruned = now


def _probed_relay(config: Any, probe: _Probe) -> Any:
    """A WaveformRelay that times each monitor frame and each chunk's wait in viewer outboxes."""
    from waveforms import ViewerOutbox, WaveformRelay

    perf = time.perf_counter

    class ProbedRelay(WaveformRelay):
        def on_publisher_frame(self, group: str, publisher_id: str, data: bytes) -> list[bytes]:
            t = perf()
            out = super().on_publisher_frame(group, publisher_id, data)
            if probe.on:
                probe.frame_s.append(perf() - t)
            return out

        def add_viewer(self, group: str, viewer_id: str) -> ViewerOutbox:
            outbox = super().add_viewer(group, viewer_id)
            put, get = outbox.put_chunk, outbox.get

            def put_chunk(stream_id: str, lo: int, hi: int, frame: bytes) -> None:
                probe.put_at.setdefault(id(frame), (perf(), frame))
                put(stream_id, lo, hi, frame)

            async def timed_get() -> bytes | None:
                frame = await get()
                if probe.on and frame is not None and (t := probe.put_at.get(id(frame))):
                    probe.outbox_wait_s.append(perf() - t[0])
                return frame

            outbox.put_chunk = put_chunk  # type: ignore[method-assign,assignment]
            outbox.get = timed_get  # type: ignore[method-assign]
            return outbox

    return ProbedRelay(config)


async def _serve(rooms: int, analysis: bool) -> None:
    from medstream.app import MedstreamApp
    from medstream.config import ServerConfig
    from signaling.hub import Hub, SignalingConfig
    from waveforms import WaveformConfig

    signaling = SignalingConfig(secret=SECRET, binary_rate_per_s=1000.0)
    hub = Hub(signaling)
    for r in range(rooms):
        hub.create_room(f"ward-{r}", "monitoring", time.time(), persistent=True)
    probe = _Probe()
    relay = _probed_relay(WaveformConfig(analysis=analysis), probe)
    server = MedstreamApp(ServerConfig(signaling, port=0, audit_log=None, media=False, recorder=False),
                          hub=hub, relay=relay)
    await server.start()
    watcher = asyncio.ensure_future(probe.watch_loop())
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    steps: list[float] = []
    try:
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if line == "start":
                probe.reset()
                probe.on = True
                steps.clear()
                stats0 = relay.stats()
            elif line == "stop":
                probe.on = False
                st = relay.stats()
                print(json.dumps({
                    **probe.report(),
                    "relay": {
                        "chunks_in": st.chunks_in - stats0.chunks_in,
                        "samples_in": st.samples_in - stats0.samples_in,
                        "dropped_chunks_slow_viewers":
                            st.dropped_chunks_slow_viewers - stats0.dropped_chunks_slow_viewers,
                        "frames_rejected": st.frames_rejected - stats0.frames_rejected,
                        "analysis_steps": st.analysis_steps - stats0.analysis_steps,
                        "analysis_last_step_ms": round(st.analysis_last_step_ms, 1),
                        "streams": st.streams, "viewers": st.viewers,
                    },
                }), flush=True)
    finally:
        watcher.cancel()
        await server.stop()


async def _serve_baseline() -> None:
    """A bare fan-out: join -> joined, monitor bytes -> the room's viewers as they are."""
    import websockets
    from websockets.asyncio.server import broadcast, serve

    from signaling.tokens import verify_token

    viewers: dict[str, set[Any]] = {}

    async def handle(ws: Any) -> None:
        join = json.loads(await ws.recv())
        grant = verify_token(SECRET, join["token"], time.time(), 60.0)
        await ws.send(json.dumps({"type": "joined", "id": join.get("id")}))
        room = viewers.setdefault(grant.room, set())
        if grant.role.value != "monitor":
            room.add(ws)
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    broadcast(room, frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            room.discard(ws)

    async with serve(handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        loop = asyncio.get_running_loop()
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            if line == "stop":
                print(json.dumps({}), flush=True)


# --------------------------------------------------------------------------- client workers


@dataclass(frozen=True, slots=True)
class _WorkerPlan:
    url: str
    monitors: list[int]  # bed indices
    viewers: list[tuple[int, int]]  # (room, viewer index)
    beds_per_room: int
    fs: float
    chunk_ms: float
    max_run_s: float  # chunks encoded ahead for this much stream time
    out_npy: str


@dataclass(slots=True)
class _Window:
    """The measurement window (epoch s), sent by the parent once every worker is connected."""

    start: float = float("inf")
    end: float = float("inf")


async def _join(ws: Any, token: str) -> None:
    await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": token}))
    while True:
        raw = await ws.recv()
        if isinstance(raw, str):
            kind = json.loads(raw).get("type")
            if kind == "joined":
                return
            if kind == "error":
                raise RuntimeError(f"join refused: {raw}")


async def _monitor(plan: _WorkerPlan, window: _Window, frames: list[Any], announce: bytes,
                   token: str, phase_s: float, late_s: list[float], counts: Counter[str],
                   connected: asyncio.Event, connect_slots: asyncio.Semaphore) -> None:
    import websockets

    try:
        async with connect_slots:  # a few handshakes at a time: a connection storm is not the
            ws = await websockets.connect(plan.url, max_size=None, compression=None,  # point
                                          open_timeout=60)
            await _join(ws, token)
    finally:
        connected.set()  # READY even if this one failed: it is counted as a client error
    async with ws:

        async def drain_acks() -> None:
            async for _ in ws:
                counts["monitor_replies"] += 1

        reader = asyncio.create_task(drain_acks())
        await ws.send(announce)
        chunk_s = plan.chunk_ms / 1000.0
        due = time.time() + phase_s
        for pre in frames:
            now = time.time()
            if due > now:
                await asyncio.sleep(due - now)
                now = time.time()
            if now > window.end:
                break
            if now >= window.start:
                late_s.append(now - due)
            await ws.send(pre.frame_at(now))
            counts["chunks_sent"] += 1
            due += chunk_s
        reader.cancel()


async def _viewer(plan: _WorkerPlan, window: _Window, token: str, latencies: list[float],
                  counts: Counter[str]) -> None:
    import websockets

    from protocol.waveforms import chunk_timing

    async with websockets.connect(plan.url, max_size=None, compression=None,
                                  open_timeout=60) as ws:
        await _join(ws, token)
        async for raw in ws:
            if not isinstance(raw, bytes):
                continue
            now = time.time()
            timing = chunk_timing(raw)
            if timing is None:
                counts["viewer_other_frames"] += 1
            elif window.start <= timing[2] <= window.end:
                latencies.append(now - timing[2])
            if now > window.end + 1.0:
                return


def _precode(plan: _WorkerPlan) -> dict[int, list[Any]]:
    """Every chunk every monitor of this worker will send, encoded before the run."""
    from clients.monitor_sim import SyntheticSource
    from protocol.waveforms import Chunk, precode_chunk

    base = SyntheticSource(72.0, (), plan.fs, seed=1, block_s=10.0)
    signal = base.read(int(60 * plan.fs))[0]
    n = max(1, round(plan.chunk_ms / 1000.0 * plan.fs))
    n_chunks = int(plan.max_run_s / (plan.chunk_ms / 1000.0)) + 1
    frames: dict[int, list[Any]] = {}
    for bed in plan.monitors:
        idx = (bed * 997 + np.arange(n_chunks * n)) % signal.size
        x = signal[idx].reshape(n_chunks, 1, n)
        frames[bed] = [precode_chunk(Chunk(f"bed-{bed}", k * n, 0.0, x[k]))
                       for k in range(n_chunks)]
    return frames


async def _work(plan: _WorkerPlan) -> dict[str, Any]:
    from protocol.waveforms import Announce, ChannelInfo, encode
    from signaling.tokens import issue_token

    frames = _precode(plan)
    channels = (ChannelInfo("II", "mV", 200.0, 0),)
    latencies: list[float] = []
    late_s: list[float] = []
    counts: Counter[str] = Counter()
    window = _Window()
    tasks = []
    for room, v in plan.viewers:
        tok = issue_token(SECRET, room=f"ward-{room}", identity=f"viewer-{room}-{v}", role="viewer")
        tasks.append(asyncio.create_task(_viewer(plan, window, tok, latencies, counts)))
    await asyncio.sleep(0.5)  # viewers first, so they see every stream from its announce
    chunk_s = plan.chunk_ms / 1000.0
    connected = []
    connect_slots = asyncio.Semaphore(8)
    for bed in plan.monitors:
        tok = issue_token(SECRET, room=f"ward-{bed // plan.beds_per_room}",
                          identity=f"monitor-{bed}", role="monitor")
        announce = encode(Announce(f"bed-{bed}", channels, plan.fs, 0))
        phase = (bed * 0.618034 % 1.0) * chunk_s  # spread sends over the chunk period
        connected.append(asyncio.Event())
        tasks.append(asyncio.create_task(_monitor(plan, window, frames[bed], announce, tok, phase,
                                                  late_s, counts, connected[-1],
                                                  connect_slots)))
    for ev in connected:
        await ev.wait()
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    window.start, window.end = (float(x) for x in line.split())
    done, pending = await asyncio.wait(tasks, timeout=window.end - time.time() + 3.0)
    for t in pending:
        t.cancel()
    errors = [repr(t.exception()) for t in done if not t.cancelled() and t.exception()]
    np.save(plan.out_npy, np.asarray(latencies, dtype=np.float64))
    return {"late_ms": _pct(late_s, 1e3), "counts": dict(counts), "errors": errors[:5],
            "n_errors": len(errors)}


def _worker_main(plan_json: str) -> int:
    plan = _WorkerPlan(**json.loads(plan_json))
    print(json.dumps(_run_loop(_work(plan))), flush=True)
    return 0


# --------------------------------------------------------------------------- relay only


def _relay_only(args: argparse.Namespace) -> dict[str, Any]:
    """The sans-I/O relay alone, in this process: CPU per monitor chunk, no sockets.

    Every monitor's chunks of `--seconds` of stream time, encoded before the clock starts, go
    through `on_publisher_frame` in send order; each viewer outbox is drained after each 100 ms
    round, and with analysis a step runs every 200 ms of stream time. CPU time (process_time) is
    robust to other load on the machine, unlike the end-to-end latencies.
    """
    from clients.monitor_sim import SyntheticSource
    from protocol.waveforms import Announce, Chunk, encode
    from waveforms import WaveformConfig, WaveformRelay

    rooms = (args.monitors + args.beds_per_room - 1) // args.beds_per_room
    base = SyntheticSource(72.0, (), args.fs, seed=1, block_s=10.0)
    signal = base.read(int(60 * args.fs))[0]
    n = max(1, round(args.chunk_ms / 1000.0 * args.fs))
    rounds = int(args.seconds * 1000.0 / args.chunk_ms)
    relay = WaveformRelay(WaveformConfig(analysis=not args.no_analysis))
    outboxes = [relay.add_viewer(f"ward-{r}", f"v{r}-{v}")
                for r in range(rooms) for v in range(args.viewers_per_room)]
    frames: list[list[tuple[str, bytes]]] = [[] for _ in range(rounds)]
    for bed in range(args.monitors):
        room = f"ward-{bed // args.beds_per_room}"
        relay.on_publisher_frame(room, f"m{bed}", encode(Announce(f"bed-{bed}", base.channels,
                                                                  args.fs, 0)))
        idx = (bed * 997 + np.arange(rounds * n)) % signal.size
        x = signal[idx].reshape(rounds, 1, n)
        for k in range(rounds):
            frames[k].append((room, encode(Chunk(f"bed-{bed}", k * n, 1.7e9 + k * n / args.fs,
                                                 x[k]))))
    for out in outboxes:
        while out.get_nowait() is not None:
            pass
    relay_s = drain_s = analysis_s = 0.0
    delivered = 0
    steps_every = max(1, round(200.0 / args.chunk_ms))
    clock = time.process_time
    for k in range(rounds):
        t = clock()
        for bed, (room, frame) in enumerate(frames[k]):
            relay.on_publisher_frame(room, f"m{bed}", frame)
        t1 = clock()
        for out in outboxes:
            while out.get_nowait() is not None:
                delivered += 1
        t2 = clock()
        if not args.no_analysis and (k + 1) % steps_every == 0:
            relay.analyze_once()
        relay_s += t1 - t
        drain_s += t2 - t1
        analysis_s += clock() - t2
    chunks = rounds * args.monitors
    return {
        "mode": "relay only (sans-I/O, one process)", "monitors": args.monitors, "fs_hz": args.fs,
        "chunk_ms": args.chunk_ms, "stream_seconds": args.seconds, "chunks": chunks,
        "viewer_frames": delivered, "analysis": not args.no_analysis,
        "relay_us_per_chunk": round(1e6 * relay_s / chunks, 2),
        "outbox_get_us_per_frame": round(1e6 * drain_s / max(delivered, 1), 2),
        "analysis_us_per_chunk": round(1e6 * analysis_s / chunks, 2),
        "core_pct_at_real_time": round(100.0 * (relay_s + drain_s + analysis_s) / args.seconds, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------- orchestration


def _pin(proc: subprocess.Popen[Any], cores: set[int]) -> subprocess.Popen[Any]:
    """Pin a just-started process (before it starts threads, which inherit it) to `cores`."""
    usable = cores & os.sched_getaffinity(0)
    if usable:
        os.sched_setaffinity(proc.pid, usable)
    return proc


def _split_cores(server_core: int) -> tuple[set[int], set[int]]:
    allowed = os.sched_getaffinity(0)
    clients = allowed - {server_core}
    return {server_core}, clients or allowed


def _py_spy_top(raw_file: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive time shares per function from py-spy's collapsed stacks.

    Samples whose innermost Python frame is the event loop's `run` are uvloop's native code
    (socket I/O and, py-spy cannot tell, waiting in epoll): reported apart, not in the shares.
    """
    self_n: Counter[str] = Counter()
    incl_n: Counter[str] = Counter()
    total = loop_native = 0
    for line in raw_file.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack:
            continue
        frames = [f.split(":")[0] + ")" if ":" in f else f for f in stack.split(";")]
        n = int(n_text)
        if frames[-1].startswith("Runner.run"):
            loop_native += n
            continue
        total += n
        self_n[frames[-1]] += n
        for f in set(frames):
            incl_n[f] += n
    if not total:
        return {}

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100.0 * n / total, 1)) for f, n in c.most_common(top)]

    return {"python_samples": total, "loop_native_samples": loop_native,
            "self_pct": share(self_n), "inclusive_pct": share(incl_n)}


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    rooms = (args.monitors + args.beds_per_room - 1) // args.beds_per_room
    server_cores, client_cores = _split_cores(args.server_core)
    cmd = [sys.executable, "-m", "bench.waveforms", "--serve", "--rooms", str(rooms)]
    cmd += ["--no-analysis"] if args.no_analysis else []
    cmd += ["--baseline"] if args.baseline else []
    server = _pin(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True),
                  server_cores)
    if args.server_nice:  # on a shared machine: approximate a core of its own (needs root)
        os.setpriority(os.PRIO_PROCESS, server.pid, args.server_nice)
    workers: list[subprocess.Popen[str]] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-waveforms-")
    spy: subprocess.Popen[bytes] | None = None
    try:
        assert server.stdin is not None and server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server did not start: {line!r}")
        url = f"ws://127.0.0.1:{int(line.split()[1])}/ws"
        procs = max(1, args.client_procs)
        all_viewers = [(r, v) for r in range(rooms) for v in range(args.viewers_per_room)]
        max_run_s = _SETUP_ALLOWANCE_S + args.warmup + args.seconds + 5.0
        for w in range(procs):
            plan = _WorkerPlan(url, list(range(w, args.monitors, procs)), all_viewers[w::procs],
                               args.beds_per_room, args.fs, args.chunk_ms, max_run_s,
                               str(Path(tmp.name) / f"lat-{w}.npy"))
            workers.append(_pin(subprocess.Popen(
                [sys.executable, "-m", "bench.waveforms", "--worker",
                 json.dumps(dataclasses.asdict(plan))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True), client_cores))
        deadline = time.time() + _SETUP_ALLOWANCE_S
        for p in workers:  # every monitor connected (or failed) and streaming
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.time()))
            if not ready or p.stdout.readline().strip() != "READY":
                raise RuntimeError("a client worker did not get ready in time")
        measure_from = time.time() + args.warmup
        measure_to = measure_from + args.seconds
        for p in workers:
            assert p.stdin is not None
            p.stdin.write(f"{measure_from} {measure_to}\n")
            p.stdin.flush()
        time.sleep(max(0.0, measure_from - time.time()))
        cpu0 = {p.pid: _cpu_s(p.pid) for p in [server, *workers]}
        t0 = time.time()
        server.stdin.write("start\n")
        server.stdin.flush()
        if args.profile:
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(server.pid), "--format", "raw",
                                    "--duration", str(int(args.seconds)), "--rate", "200",
                                    "--nonblocking", "--output", str(args.profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(max(0.0, measure_to - time.time()))
        cpu1 = {p.pid: _cpu_s(p.pid) for p in [server, *workers]}
        t1 = time.time()
        server.stdin.write("stop\n")
        server.stdin.flush()
        server_probe = json.loads(server.stdout.readline())
        server_rss = _rss_mb(server.pid)
        worker_out = []
        for p in workers:
            out, _ = p.communicate(timeout=60)
            worker_out.append(json.loads(out.strip().splitlines()[-1]))
        if spy is not None:
            spy.wait(timeout=60)
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
        if server.stdin is not None:
            server.stdin.close()
        server.terminate()
        server.wait(timeout=10)
    wall = t1 - t0
    lat = np.concatenate([np.load(Path(tmp.name) / f"lat-{w}.npy") for w in range(len(workers))])
    tmp.cleanup()
    n_expected = args.monitors * args.viewers_per_room * args.seconds / (args.chunk_ms / 1000.0)
    client_cpu = sum(cpu1[p.pid] - cpu0[p.pid] for p in workers)
    result: dict[str, Any] = {
        "mode": "baseline (bare fan-out)" if args.baseline else
                "medstream server",
        "monitors": args.monitors, "fs_hz": args.fs, "rooms": rooms,
        "viewers": rooms * args.viewers_per_room, "chunk_ms": args.chunk_ms,
        "client_procs": len(workers), "server_cores": sorted(server_cores),
        "client_cores": sorted(client_cores), "server_nice": args.server_nice,
        "seconds": round(wall, 2),
        "analysis": not args.no_analysis and not args.baseline,
        "latency_ms": _pct(lat, 1e3),
        "delivered_pct": round(100.0 * lat.size / n_expected, 1) if n_expected else None,
        "server_cpu_pct": round(100.0 * (cpu1[server.pid] - cpu0[server.pid]) / wall, 1),
        "server_rss_mb": server_rss,
        "client_cpu_pct": round(100.0 * client_cpu / wall, 1),
        "monitor_send_late_ms": _merge_pct([w["late_ms"] for w in worker_out]),
        "offered_samples_per_s": args.monitors * args.fs,
        "viewer_chunks_per_s": round(lat.size / wall, 1),
        "server_probe": server_probe,
        "client_counts": dict(sum((Counter(w["counts"]) for w in worker_out), Counter())),
        "client_errors": sum(w["n_errors"] for w in worker_out),
        "client_error_samples": [e for w in worker_out for e in w["errors"]][:3],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if args.profile:
        result["profile"] = _py_spy_top(args.profile)
    return result


def _merge_pct(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Worst of the workers' percentiles (each worker reports its own)."""
    parts = [p for p in parts if p.get("n")]
    if not parts:
        return {"n": 0}
    return {"n": sum(p["n"] for p in parts),
            **{k: max(p[k] for p in parts) for k in ("p50", "p90", "p99", "max")}}


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.waveforms ...`: run the benchmark, print and optionally write JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.waveforms", description=__doc__.split("\n")[0])
    p.add_argument("--monitors", type=int, default=500)
    p.add_argument("--fs", type=float, default=500.0)
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds of streaming after every client connected, before measuring")
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("--beds-per-room", type=int, default=25)
    p.add_argument("--viewers-per-room", type=int, default=3)
    p.add_argument("--client-procs", type=int, default=4)
    p.add_argument("--server-core", type=int, default=0, help="CPU the server is pinned to")
    p.add_argument("--server-nice", type=int, default=0,
                   help="nice value of the server (e.g. -5 on a machine shared with other work)")
    p.add_argument("--no-analysis", action="store_true", help="server without the DSP step")
    p.add_argument("--baseline", action="store_true", help="bare fan-out server instead")
    p.add_argument("--relay-only", action="store_true",
                   help="CPU of the sans-I/O relay alone, no sockets, no server process")
    p.add_argument("--profile", type=Path, help="py-spy raw (collapsed) profile of the server")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rooms", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        _run_loop(_serve_baseline() if args.baseline else
                  _serve(args.rooms, not args.no_analysis))
        return 0
    if args.worker:
        return _worker_main(args.worker)
    result = _relay_only(args) if args.relay_only else _bench(args)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
