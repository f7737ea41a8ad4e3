"""SFU benchmark (issue 3): P publishers x S subscribers through medstream vs a transcoding relay.

    python -m bench.sfu --publishers 2 --subscribers 4 --seconds 15 --json out.json
    python -m bench.sfu --points 2x4,4x8,1x50,1x200 --seconds 12 --json out.json

Topology (per relay, per load point), all on 127.0.0.1:
- the server in its own process pinned to core 0: `medstream` is the real medstream node
  (`MedstreamApp`: websocket signaling -> hub -> `Sfu`), `transcoding` is `bench.sfu_transcode`
  (aiortc `MediaRelay`: decode once, encode per subscriber) speaking the same signaling subset;
- client workers (`bench.sfu_clients`) pinned to core 1: P publishers of a pre-encoded VP8 clip
  (~1 Mbit/s, 30 fps, encoded once up front) + Opus, looped with continuing timestamps, and S
  subscribers that each receive every publisher and count decrypted RTP without decoding.

Figures (measurement window of `--seconds` after every subscriber has video from every
publisher): server CPU (user+sys of the server process) per forwarded video stream-second and
per forwarded RTP packet, forwarded packets/s (received by subscribers), frame loss (video
frames sent in the window x S vs frames received), relay latency p50/p99 (publisher hands the
frame to its aiortc sender -> subscriber receives the frame's last packet; one machine, one
wall clock), server RSS, client CPU. Prints and writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import select
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from bench.proc import cpu_seconds, rss_mb

SECRET = "bench-secret-sfu-0123456789abcdefghijklmnop"
ROOM = "hall"
SERVER_CORE = 0
CLIENT_CORE = 1
RELAYS = ("medstream", "transcoding")  # also "medstream+rcvbuf" (bench/sfu_experiments.py)
JANUS_ROOT: Path | None = None  # set by bench.janus: relay "janus" (its private config, shim)


# --------------------------------------------------------------------------- the clip


def encode_clip(path: Path, seconds: float = 5.0, fps: int = 30, bitrate_bps: int = 1_000_000,
                size: tuple[int, int] = (640, 360)) -> dict[str, Any]:
    """Encode a synthetic moving clip once: VP8 (libvpx, `bitrate_bps`) + Opus, into WebM.

    Returns what was written (frames, measured video bitrate). Keyframe every 2 s.
    """
    import av
    import numpy as np

    width, height = size
    rng = np.random.default_rng(3)
    # smooth texture (upscaled coarse noise) plus a little fine noise: ~1 Mbit/s at 640x360
    coarse = rng.integers(16, 235, (height // 8, width // 8)).astype(np.float32)
    smooth = np.kron(np.tile(coarse, (2, 2)), np.ones((8, 8), dtype=np.float32))
    texture = np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
    frames = int(seconds * fps)
    video_bytes = 0
    with av.open(str(path), "w") as out:
        v = out.add_stream("libvpx", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.bit_rate = bitrate_bps
        v.codec_context.gop_size = 2 * fps
        v.codec_context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        a = out.add_stream("libopus", rate=48000)
        a.layout = "stereo"
        a.bit_rate = 32000
        for i in range(frames):
            dx, dy = (7 * i) % width, (3 * i) % height
            y = texture[dy : dy + height, dx : dx + width]
            uv = np.full((height // 2, width // 2), 128, dtype=np.uint8)
            yuv = np.concatenate([y.reshape(-1), uv.reshape(-1), uv.reshape(-1)])
            frame = av.VideoFrame.from_ndarray(yuv.reshape(height * 3 // 2, width), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in v.encode(frame):
                video_bytes += p.size
                out.mux(p)
        for p in v.encode(None):
            video_bytes += p.size
            out.mux(p)
        n = 960
        for j in range(int(seconds * 48000) // n):
            t = (np.arange(n) + j * n) / 48000
            # noise makes every Opus packet distinct, so receivers can recognise each one
            tone = (4000 * np.sin(2 * math.pi * 440 * t) + rng.normal(0, 800, n)).astype(np.int16)
            af = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16",
                                            layout="stereo")
            af.sample_rate = 48000
            af.pts = j * n
            af.time_base = Fraction(1, 48000)
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    return {"frames": frames, "fps": fps, "size": f"{width}x{height}", "seconds": seconds,
            "video_kbit_s": round(video_bytes * 8 / seconds / 1000, 1), "keyframe_interval_s": 2.0}


# --------------------------------------------------------------------------- server processes


def _estimators_start_high() -> None:
    """The bench's light subscribers bypass aiortc's receiver and send no REMB; the node's
    estimator kept its 1.5 Mbit/s start value for such a receiver and the adaptation (issue 12)
    paused all but one ~1 Mbit/s publisher for them (2x4, 4x8 failed: "not every subscriber
    received video"; bench.janus 2:4 lost 50 %). The estimator now lifts that bound after
    `remb_wait_s` (3 s) without a REMB; the bench node also starts at the maximum, so its first
    seconds are forwarded whole too, as Janus (bitrate=0) does."""
    from media_server import bwe

    original = bwe.BandwidthEstimator.__init__

    def init(self: bwe.BandwidthEstimator, config: bwe.BweConfig | None = None) -> None:
        original(self, config or bwe.BweConfig(start_bps=bwe.BweConfig.max_bps))

    bwe.BandwidthEstimator.__init__ = init  # type: ignore[method-assign]


def _serve_medstream(experiments: list[str]) -> None:
    import asyncio

    from bench.sfu_experiments import PATCHES

    for name in experiments:
        PATCHES[name]()
    _estimators_start_high()
    # "medstream+mux": every peer on one shared UDP port (media_server.udp_mux, --udp-port)
    shared = {"udp_port": 0} if "mux" in experiments else {}

    from medstream.app import MedstreamApp
    from medstream.config import ServerConfig
    from signaling.hub import SignalingConfig

    async def run() -> None:
        app = MedstreamApp(ServerConfig(
            signaling=SignalingConfig(secret=SECRET), host="127.0.0.1", port=0, audit_log=None,
            media=True, waveforms=False, recorder=False, ice_host_addresses=("127.0.0.1",),
            rooms=((ROOM, "broadcast"),), **shared))
        await app.start()
        print(f"PORT {app.port}", flush=True)
        out = os.environ.get("MEDSTREAM_COUNTERS_OUT")
        counters = asyncio.ensure_future(_write_counters(app, out)) if out else None
        await asyncio.Event().wait()
        del counters

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


async def _write_counters(app: Any, path: str) -> None:
    """Every 0.25 s, one JSON line: this process's user/sys CPU and what its Sfu sent.

    The packets the server itself forwarded (not what the clients managed to receive): CPU
    per forwarded packet stays meaningful when a loaded machine starves the clients. Reads
    attributes main and this branch both have (Sfu._producers, consumers' counters)."""
    import asyncio
    import gc

    collected = [0.0, 0.0, 0.0]  # CPU s in the collector, per generation
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.thread_time()]
        elif started:
            collected[info["generation"]] += time.thread_time() - started[0]

    gc.callbacks.append(on_gc)
    with open(path, "a", buffering=1) as f:
        while True:
            t = os.times()
            sfu = getattr(app, "media", None)
            sent = resent = received = sheds = 0
            batchers: dict[int, Any] = {}
            for producer in list(getattr(sfu, "_producers", {}).values()):
                received += producer.packets_received
                sheds += getattr(producer, "backlog_sheds", 0)
                for c in list(producer.consumers):
                    sent += c.packets_forwarded
                    resent += c.retransmissions
                    b = getattr(c, "_batcher", None)
                    if b is not None:
                        batchers[id(b)] = b
            batched = [sum(getattr(b, "datagrams", 0) for b in batchers.values()),
                       sum(getattr(b, "syscalls", 0) for b in batchers.values())]
            f.write(json.dumps({"t": time.time(), "user": t.user, "sys": t.system, "sent": sent,
                                "resent": resent, "received": received, "sheds": sheds, "gc_s": collected,
                                "batched_datagrams_syscalls": batched}) + "\n")
            await asyncio.sleep(0.25)


def _counters_at(path: Path, t: float) -> dict[str, Any] | None:
    """The server's counters line nearest to wall time `t` (None without any)."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    return min(rows, key=lambda r: abs(r["t"] - t)) if rows else None


def udp_counters() -> dict[str, int]:
    """This network namespace's UDP counters (/proc/net/snmp): datagrams, buffer overflows."""
    with open("/proc/net/snmp") as f:
        rows = [line.split()[1:] for line in f if line.startswith("Udp:")]
    return {name: int(value) for name, value in zip(rows[0], rows[1], strict=True)}


def udp_drops_by_pid() -> dict[int, int]:
    """Datagrams the kernel dropped per process (`ss` skmem d: full receive buffer), by pid."""
    out = subprocess.run(["ss", "-H", "-u", "-a", "-m", "-p"], capture_output=True, text=True,
                         check=False).stdout
    drops: dict[int, int] = {}
    pid = None
    for line in out.splitlines():
        if "pid=" in line:
            pid = int(line.split("pid=")[1].split(",")[0])
        elif "skmem:" in line and pid is not None:
            d = line.rsplit(",d", 1)[-1].rstrip(")")
            drops[pid] = drops.get(pid, 0) + int(d) if d.isdigit() else drops.get(pid, 0)
    return drops


def _start_server(relay: str, expect_tracks: int) -> tuple[subprocess.Popen[str], str, float]:
    """Start `relay` pinned to the server core: (process, URL, idle RSS in MiB)."""
    if relay == "janus":
        from bench.janus import start_janus

        if JANUS_ROOT is None:
            raise RuntimeError("relay janus needs bench.janus.prepare_janus() first")
        return start_janus(JANUS_ROOT, SERVER_CORE)
    cwd, env = None, None
    if relay.startswith("medstream"):
        name, _, root = relay.partition("@")  # "medstream@DIR": the server from another tree
        patches = name.split("+")[1:]  # "medstream+rcvbuf": see bench/sfu_experiments.py
        args = ["--serve"] + [f"--experiment={p}" for p in patches]
        cmd = [sys.executable, "-m", "bench.sfu", *args]
        if root:  # this file's server code (counters included) on the other tree's packages
            cwd, env = root, {**os.environ, "PYTHONPATH": root}
            cmd = [sys.executable, "-c", f"import runpy, sys; sys.argv = {['bench.sfu', *args]!r}; "
                                         f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"]
    else:
        cmd = [sys.executable, "-m", "bench.sfu_transcode", "--expect-tracks", str(expect_tracks)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
    os.sched_setaffinity(proc.pid, {SERVER_CORE})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"{relay} server did not start: expected 'PORT n', got {line!r}")
    time.sleep(0.5)
    return proc, f"ws://127.0.0.1:{int(line.split()[1])}/ws", rss_mb(proc.pid)


# --------------------------------------------------------------------------- one load point


def run_point(relay: str, publishers: int, subscribers: int, seconds: float, clip: Path,
              workers: int, workdir: Path, profile: Path | None = None) -> dict[str, Any]:
    """Run one relay at P x S; returns its figures (see module docstring)."""
    from signaling.tokens import issue_token

    tag = relay.replace("/", "_")
    probe_out = workdir / f"probe-{tag}-{publishers}x{subscribers}.jsonl"
    counters_out = workdir / f"counters-{tag}-{publishers}x{subscribers}-{time.time():.0f}.jsonl"
    os.environ["MEDSTREAM_COUNTERS_OUT"] = str(counters_out)
    if "+probe" in relay:  # bench/sfu_experiments.latency_probe: server-side times per frame
        os.environ["MEDSTREAM_PROBE_OUT"] = str(probe_out)
    server, url, idle_rss = _start_server(relay, 2 * publishers)
    procs: list[subprocess.Popen[str]] = []
    outs: list[Path] = []
    try:
        pub_tokens = [issue_token(SECRET, room=ROOM, identity=f"presenter-{i}",
                                  role="host" if i == 0 else "expert") for i in range(publishers)]
        sub_tokens = [issue_token(SECRET, room=ROOM, identity=f"viewer-{i}", role="viewer")
                      for i in range(subscribers)]
        # worker 0 only publishes (its pacing must not suffer from subscriber load); the
        # subscribers are spread over `workers` more processes; all on the client core
        n_sub_workers = max(1, min(workers, subscribers))
        for w in range(n_sub_workers + 1):
            out = workdir / f"{tag}-{publishers}x{subscribers}-w{w}.json"
            spec = {"url": url, "clip": str(clip), "publishers_total": publishers,
                    "publisher_tokens": pub_tokens if w == 0 else [],
                    "subscriber_tokens": [] if w == 0 else sub_tokens[w - 1 :: n_sub_workers],
                    "out": str(out)}
            if relay == "janus":  # same clients, Janus's VideoRoom API (bench/janus_clients.py)
                spec |= {"server": "janus",
                         "publisher_names": [f"presenter-{i}" for i in range(publishers)] if w == 0 else [],
                         "subscribers": 0 if w == 0 else len(sub_tokens[w - 1 :: n_sub_workers]),
                         "feeds_file": str(outs[0].with_suffix(".feeds.json")) if outs else ""}
            spec_path = workdir / f"spec-{w}.json"
            spec_path.write_text(json.dumps(spec))
            outs.append(out)
            p = subprocess.Popen([sys.executable, "-m", "bench.sfu_clients", "--spec", str(spec_path)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            os.sched_setaffinity(p.pid, {CLIENT_CORE})
            procs.append(p)
        setup_t0 = time.time()
        setup_timeout_s = 60 + 0.5 * subscribers
        for p in procs:
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], setup_t0 + setup_timeout_s - time.time())
            line = p.stdout.readline() if ready else ""
            if not line.startswith("READY"):
                return {"relay": relay, "publishers": publishers, "subscribers": subscribers,
                        "failed": f"not every subscriber received video within {setup_timeout_s:.0f} s "
                                  f"(worker said {line!r}); server CPU so far "
                                  f"{cpu_seconds(server.pid):.1f} s, load {os.getloadavg()}"}
        setup_s = time.time() - setup_t0
        t0 = math.ceil(time.time()) + 2.0  # whole seconds: packet counters are per second
        time.sleep(t0 - time.time())
        cpu0 = cpu_seconds(server.pid)
        udp0 = udp_counters()
        ccpu0 = sum(cpu_seconds(p.pid) for p in procs)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(["py-spy", "record", "-f", "raw", "-r", "200", "-p", str(server.pid),
                                    "-d", str(int(seconds)), "-o", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t1 = t0 + seconds
        time.sleep(t1 - time.time())
        cpu1 = cpu_seconds(server.pid)
        udp1 = udp_counters()
        drops = udp_drops_by_pid()
        ccpu1 = sum(cpu_seconds(p.pid) for p in procs)
        rss = rss_mb(server.pid)
        load = os.getloadavg()
        time.sleep(1.0)  # let frames sent just before t1 arrive
        for p in procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("STOP\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()
            p.wait(timeout=60)
        if spy is not None:
            spy.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    records = [json.loads(o.read_text()) for o in outs]
    figures = _figures(relay, publishers, subscribers, t0, t1, cpu1 - cpu0, ccpu1 - ccpu0, rss,
                       records, setup_s, load)
    figures["server_rss_idle_mb"] = idle_rss
    c0, c1 = _counters_at(counters_out, t0), _counters_at(counters_out, t1)
    if c0 is not None and c1 is not None and c1["t"] > c0["t"]:
        # the server's own view: CPU (user / sys) per packet it forwarded (retransmissions
        # included), whatever the clients managed to receive
        sent = (c1["sent"] + c1["resent"]) - (c0["sent"] + c0["resent"])
        user, system = c1["user"] - c0["user"], c1["sys"] - c0["sys"]
        figures["server_sent_pps"] = round(sent / (c1["t"] - c0["t"]), 1)
        figures["server_received_pps"] = round((c1["received"] - c0["received"]) / (c1["t"] - c0["t"]), 1)
        figures["server_user_us_per_sent_packet"] = round(1e6 * user / sent, 2) if sent else None
        figures["server_sys_us_per_sent_packet"] = round(1e6 * system / sent, 2) if sent else None
        figures["server_cpu_us_per_sent_packet"] = round(1e6 * (user + system) / sent, 2) if sent else None
        figures["backlog_sheds"] = c1["sheds"] - c0["sheds"]
        if "batched_datagrams_syscalls" in c1 and "batched_datagrams_syscalls" in c0:
            (d0, s0), (d1, s1) = c0["batched_datagrams_syscalls"], c1["batched_datagrams_syscalls"]
            if d1 > d0:  # send system calls per forwarded datagram (batching.SendBatcher)
                figures["send_syscalls_per_datagram"] = round((s1 - s0) / (d1 - d0), 3)
        if "gc_s" in c1:  # CPU share of the garbage collector, per generation (% of the window)
            figures["gc_pct_by_generation"] = [round(100 * (b - a) / (c1["t"] - c0["t"]), 2)
                                               for a, b in zip(c0["gc_s"], c1["gc_s"], strict=True)]
    if "+probe" in relay:
        from bench.sfu_experiments import summarise_probe

        figures["server_probe"] = summarise_probe(str(probe_out), t0, t1)
    figures["rss_per_subscriber_kib"] = round((rss - idle_rss) * 1024 / subscribers, 1)
    # kernel drops on loopback: a receive buffer overflowed (server or client socket)
    figures["udp_rcvbuf_errors"] = udp1["RcvbufErrors"] - udp0["RcvbufErrors"]
    figures["udp_sndbuf_errors"] = udp1["SndbufErrors"] - udp0["SndbufErrors"]
    # where (since the sockets opened, setup included): server, publisher worker, subscribers
    figures["udp_drops"] = {"server": drops.get(server.pid, 0),
                            "publishers": drops.get(procs[0].pid, 0),
                            "subscribers": sum(drops.get(p.pid, 0) for p in procs[1:])}
    return figures


def _figures(relay: str, publishers: int, subscribers: int, t0: float, t1: float, server_cpu_s: float,
             client_cpu_s: float, rss: float, records: list[dict[str, Any]], setup_s: float,
             load: tuple[float, float, float]) -> dict[str, Any]:
    import numpy as np

    wall = t1 - t0
    lat_ms: dict[str, np.ndarray] = {}
    matched: dict[str, int] = {}
    sent_in_window: dict[str, int] = {}
    unmatched = 0
    for kind in ("video", "audio"):
        # publisher sends, by what each relay preserves: frame bytes (forwarding), RTP timestamp
        # (transcoding: re-encoded bytes, same timestamp once both senders start at 0)
        sends: dict[tuple[str, object], list[float]] = {}
        sent_in_window[kind] = 0
        for r in records:
            for pub, k, key, pts, t in r["sent"]:
                if k != kind:
                    continue
                sends.setdefault((pub, key if relay != "transcoding" else pts), []).append(t)
                if t0 <= t < t1:
                    sent_in_window[kind] += 1
        for lst in sends.values():
            lst.sort()
        latencies: list[float] = []
        for r in records:
            for pub, k, key, ts, t in r["frames"]:
                if k != kind:
                    continue
                times = sends.get((pub, key if relay != "transcoding" else ts))
                i = bisect.bisect_right(times, t) - 1 if times else -1
                if times is None or i < 0 or t - times[i] > 2.0:
                    unmatched += kind == "video"
                    continue
                if t0 <= times[i] < t1:
                    latencies.append(t - times[i])
        lat_ms[kind] = np.array(latencies) * 1000.0
        matched[kind] = len(latencies)
    seconds = range(int(t0), int(t1))
    video_pkts = sum(int(r["video_packets"].get(str(s), 0)) for r in records for s in seconds)
    audio_pkts = sum(int(r["audio_packets"].get(str(s), 0)) for r in records for s in seconds)
    expected = sent_in_window["video"] * subscribers
    expected_audio = sent_in_window["audio"] * subscribers
    keeps_bytes = relay != "transcoding"  # transcoded Opus is re-timed: counts only
    streams = publishers * subscribers
    forwarded = video_pkts + audio_pkts
    publisher_ids = {row[0] for r in records for row in r["sent"]}
    link_loss = [loss for r in records for pid, loss, t in r.get("quality", [])
                 if pid in publisher_ids and t0 <= t <= t1 + 1.0]

    def pct(kind: str, q: float) -> float | None:
        lat = lat_ms[kind]
        return round(float(np.percentile(lat, q)), 2) if lat.size else None

    return {
        "relay": relay,
        "publishers": publishers,
        "subscribers": subscribers,
        "forwarded_video_streams": streams,
        "seconds": round(wall, 2),
        "setup_s": round(setup_s, 1),
        "server_cpu_s": round(server_cpu_s, 3),
        "server_cpu_pct": round(100 * server_cpu_s / wall, 1),
        "server_cpu_s_per_stream_s": round(server_cpu_s / (streams * wall), 5),
        "server_cpu_us_per_packet": round(1e6 * server_cpu_s / forwarded, 1) if forwarded else None,
        "forwarded_pps": round(forwarded / wall, 1),
        "forwarded_video_pps": round(video_pkts / wall, 1),
        "forwarded_audio_pps": round(audio_pkts / wall, 1),
        "video_frames_sent": sent_in_window["video"],
        "video_frames_expected": expected,
        "video_frames_received": matched["video"],
        "loss_pct": round(100 * (1 - matched["video"] / expected), 2) if expected else None,
        "fps_per_stream": round(matched["video"] / (streams * wall), 2) if streams else None,
        # forwarding: frames matched; transcoding: packets received in the window vs sent
        "audio_loss_pct": (round(100 * (1 - (matched["audio"] if keeps_bytes else audio_pkts)
                                     / expected_audio), 2) if expected_audio else None),
        "video_frames_unmatched": unmatched,
        # the server's own quality reports on publisher peers (loss into the server), max in window
        "publisher_link_loss_pct_max": round(max(link_loss), 2) if link_loss else None,
        "latency_ms_p50": pct("video", 50),
        "latency_ms_p99": pct("video", 99),
        "latency_ms_max": pct("video", 100),
        "audio_latency_ms_p50": pct("audio", 50) if keeps_bytes else None,
        "audio_latency_ms_p99": pct("audio", 99) if keeps_bytes else None,
        "server_rss_mb": rss,
        "client_cpu_s": round(client_cpu_s, 2),
        "client_cpu_pct": round(100 * client_cpu_s / wall, 1),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "client_errors": [e for r in records for e in r["errors"]][:5],
        # peer connections (publishers and subscribers) not "connected" when the window ended
        "connections_lost": sum(n for r in records for state, n in r.get("connection_states", {}).items()
                                if state != "connected"),
        "connections_at_end": sum(n for r in records for n in r.get("connection_states", {}).values()),
    }


# --------------------------------------------------------------------------- CLI


def _parse_points(text: str) -> list[tuple[int, int]]:
    points = []
    for part in text.split(","):
        p, _, s = part.strip().partition("x")
        if not p.isdigit() or not s.isdigit() or int(p) < 1 or int(s) < 1:
            raise argparse.ArgumentTypeError(f"a point must look like 2x4 (P x S >= 1), got {part!r}")
        points.append((int(p), int(s)))
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sfu", description=__doc__.split("\n")[0])
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--subscribers", type=int, default=4)
    p.add_argument("--points", type=_parse_points, help="several loads in one run: 2x4,4x8,1x50")
    p.add_argument("--seconds", type=float, default=15.0, help="measurement window per point")
    p.add_argument("--relays", default=",".join(RELAYS),
                   help="medstream,transcoding; candidate fixes (bench/sfu_experiments.py) as "
                        "medstream+PATCH: rcvbuf (4 MiB UDP receive buffers), probe; "
                        "medstream@DIR: the server of another checkout (e.g. main's, to compare "
                        "in one run: `git worktree add /tmp/main main`)")
    p.add_argument("--transcoding-max-streams", type=int, default=8,
                   help="skip the transcoding relay above this many forwarded video streams "
                        "(it cannot keep up; default 8)")
    p.add_argument("--workers", type=int, default=2,
                   help="subscriber worker processes, plus one for the publishers (all on core 1)")
    p.add_argument("--profile", type=Path, help="py-spy raw profile of the medstream server "
                                                "at the last point (folded stacks)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--experiment", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        _serve_medstream(args.experiment)
        return 0
    if os.cpu_count() is not None and (os.cpu_count() or 0) < 2:
        print("bench.sfu: needs 2 cores (server on core 0, clients on core 1)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {CLIENT_CORE})
    points = args.points or [(args.publishers, args.subscribers)]
    relays = [r for r in args.relays.split(",") if r]
    with tempfile.TemporaryDirectory(prefix="bench-sfu-") as tmp:
        workdir = Path(tmp)
        clip = workdir / "clip.webm"
        clip_info = encode_clip(clip)
        results: list[dict[str, Any]] = []
        skipped: list[str] = []
        for i, (pubs, subs) in enumerate(points):
            for relay in relays:
                if relay == "transcoding" and pubs * subs > args.transcoding_max_streams:
                    skipped.append(f"transcoding at {pubs}x{subs} (> {args.transcoding_max_streams} streams)")
                    continue
                profile = args.profile if (relay.startswith("medstream") and i == len(points) - 1) else None
                r = run_point(relay, pubs, subs, args.seconds, clip, args.workers, workdir, profile)
                results.append(r)
                print(json.dumps(r), flush=True)
                if args.json:  # after every point: a long run cut short keeps what it measured
                    args.json.write_text(json.dumps({"clip": clip_info, "results": results}) + "\n")
    comparisons = []
    for r in results:
        if r["relay"] != "transcoding" or "failed" in r:
            continue
        ours = next((m for m in results if m["relay"] == "medstream" and "failed" not in m
                     and m["publishers"] == r["publishers"]
                     and m["subscribers"] == r["subscribers"]), None)
        if ours and ours["server_cpu_s_per_stream_s"]:
            comparisons.append({
                "point": f"{r['publishers']}x{r['subscribers']}",
                "transcoding_over_medstream_cpu_per_stream_s": round(
                    r["server_cpu_s_per_stream_s"] / ours["server_cpu_s_per_stream_s"], 1),
                "note": "transcoding loses frames at this load: its CPU per stream is a lower bound"
                if (r["loss_pct"] or 0) > 1 else "",
            })
    summary = {
        "benchmark": "bench.sfu",
        "servers": {"medstream": "real medstream node (MedstreamApp: websocket signaling, hub, Sfu) "
                                 "in its own process",
                    "transcoding": "bench.sfu_transcode: aiortc MediaRelay (decode once, encode per "
                                   "subscriber) with the same signaling subset, own process"},
        "pinning": {"server_core": SERVER_CORE, "client_core": CLIENT_CORE},
        "cpu_count": os.cpu_count(),
        "clip": clip_info,
        "latency": "publisher hands frame to its aiortc sender -> subscriber receives the frame's "
                   "last RTP packet (decrypted, not decoded); time.time() on one machine",
        "results": results,
        "ratios": comparisons,
        "skipped": skipped,
    }
    print(json.dumps({"ratios": comparisons, "skipped": skipped}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
