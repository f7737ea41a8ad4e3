"""Recorder cost: CPU per recorded stream and disk throughput.

    python -m bench.recorder --video N --waveforms M --seconds S [--fast] [--json FILE]
    python -m bench.recorder --video 0 --waveforms 0 --http-sessions 200 --http-file-mb 64

Encodes a short ~1 Mbit/s VP8 clip once with libvpx, then records N copies of it (fed in real
time, or as fast as possible with --fast, with timestamps as if real time) plus M two-channel
500 Hz waveform streams (10 chunks/s, one beat/s). Video and waveforms are measured in separate
phases so each gets its own figure. CPU is process CPU time (all threads, including feeding) per
stream-second of recording, in % of one core. Prints figures and writes JSON; never asserts.

The safety phase (`--safety`) records the same video (plus one waveform) with each fsync policy
and with AES-256-GCM and SM4-GCM encryption, as fast as the recorder goes, and measures the AEAD
cost per MB and the offline remux / EDF+ steps in CPU time (wall time on a busy machine says
little; rerun on a quiet one). fsync cost is mostly wall time waiting on the disk, shown too.

The HTTP phase (`--http-sessions`) runs a real node and downloads through it: listing K
sessions, Range reads of 64 KiB, 1 MiB and 8 MiB, and the whole file of `--http-file-mb` MB, each
with its wall time and the worst event-loop lag seen meanwhile (files are streamed by aiohttp's
`FileResponse`, so a large download should not hold the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from media_server.frames import EncodedFrame
from recorder import RecorderConfig, SessionRecorder, WaveformStreamInfo, crypto, edf_export, remux
from recorder.crypto import MasterKey

FPS = 30


def encode_clip(seconds: float = 2.0, width: int = 640, height: int = 480,
                bit_rate: int = 1_000_000) -> list[tuple[bytes, bool]]:
    """~1 Mbit/s VP8 frames of moving noise, keyframe first; encoded once."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.bit_rate = bit_rate
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    # Smooth blobs plus fine noise: compresses like camera video, not like pure noise.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = 127 + 60 * np.sin(xx / 23.0)[..., None] * np.cos(yy / 17.0)[..., None]
    base = np.clip(smooth + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    out: list[tuple[bytes, bool]] = []
    n = int(seconds * FPS)
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        if i == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out.extend((bytes(p), bool(p.is_keyframe)) for p in enc.encode(frame))
    out.extend((bytes(p), bool(p.is_keyframe)) for p in enc.encode(None))
    return out


async def _loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - t - 0.005)


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


async def run_phase(root: Path, n_video: int, n_wave: int, seconds: float, fast: bool,
                    clip: list[tuple[bytes, bool]], **config: Any) -> dict[str, float | str]:
    """Record one phase (RecorderConfig fields in `config`); returns CPU, throughput and backlog figures."""
    rec = SessionRecorder(RecorderConfig(root, **config), room="bench")
    directory = rec.start("bench")
    t0 = time.time()
    video = [rec.add_track(f"v{i}", f"p{i}", "video", "VP8") for i in range(n_video)]
    info = WaveformStreamInfo(("II", "V5"), ("mV", "mV"), (200.0, 200.0), (0, 0), 500.0)
    waves = [rec.add_waveform_stream(f"w{i}", f"m{i}", info) for i in range(n_wave)]
    wave_chunk = np.random.default_rng(1).integers(-1000, 1000, (2, 50))
    stop_lag = asyncio.Event()
    lags: list[float] = []
    lag_task = asyncio.create_task(_loop_lag(stop_lag, lags))
    max_pending = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    n_ticks = int(seconds * FPS)
    for k in range(n_ticks):  # one tick = one video frame period (1/30 s)
        if not fast:
            delay = wall0 + k / FPS - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        data, key = clip[k % len(clip)]
        for i, sink in enumerate(video):
            sink.on_frame(EncodedFrame(f"v{i}", "video", "VP8", data, (k * 3000) % (1 << 32),
                                       90000, key, t0 + k / FPS))
        if k % 3 == 0:  # 10 chunks of 50 samples per second
            first = (k // 3) * 50
            for w in waves:
                w.on_chunk(first, wave_chunk)
                if k % FPS == 0:
                    w.on_beat(first, "N")
        max_pending = max(max_pending, rec._pending_bytes)
        if fast and k % 30 == 0:
            await asyncio.sleep(0)
    manifest = await rec.stop("bench")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    stop_lag.set()
    await lag_task
    n_streams = n_video + n_wave
    disk_bytes = _dir_bytes(directory)
    return {
        "streams": n_streams,
        "recorded_seconds": seconds,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_percent_per_stream": 100.0 * cpu / (n_streams * seconds) if n_streams else 0.0,
        "disk_bytes": disk_bytes,
        "disk_throughput_mb_s": disk_bytes / wall / 1e6,
        "media_mbit_s_per_video_stream": (
            sum(len(d) for d, _ in clip) * 8 / (len(clip) / FPS) / 1e6 if n_video else 0.0),
        "max_pending_bytes": max_pending,
        "loop_lag_max_ms": 1000 * max(lags, default=0.0),
        "loop_lag_p99_ms": 1000 * float(np.percentile(lags, 99)) if lags else 0.0,
        "stop_reason": manifest.stop_reason or "",
        "fsyncs": rec._writer.fsyncs if rec._writer is not None else 0,
        "fsync_wall_ms": 1000 * rec._writer.fsync_s if rec._writer is not None else 0.0,
        "directory": str(directory),
    }


def _cpu(fn: Any) -> tuple[float, Any]:
    c0 = time.process_time()
    out = fn()
    return time.process_time() - c0, out


async def safety_phase(root: Path, n_video: int, seconds: float, clip: list[tuple[bytes, bool]]) -> dict[str, object]:
    """What keeping recordings safe costs: fsync policies and encryption on the recording path
    (CPU per stream-second, as fast as the recorder goes), raw AEAD cost per MB, and the offline
    steps: remux to one file per participant and EDF+ export (CPU s per recorded minute)."""
    master = MasterKey(bytes(range(32)))
    variants: dict[str, dict[str, Any]] = {
        "plain_fsync_none": {}, "plain_fsync_second": {"fsync": "second"},
        "plain_fsync_cluster": {"fsync": "cluster"},
        "aes_256_gcm": {"master_key": master}, "sm4_gcm": {"master_key": master, "encryption_algorithm": "sm4-gcm"},
    }
    out: dict[str, object] = {}
    for name, config in variants.items():
        r = await run_phase(root / name, n_video, 1, seconds, False, clip, **config)  # real time: fsync "second" is by the clock
        out[name] = {k: r[k] for k in ("cpu_percent_per_stream", "cpu_s", "wall_s", "fsyncs", "fsync_wall_ms",
                                       "disk_bytes")}
        if name == "plain_fsync_none":
            directory = Path(str(r["directory"]))
            remux_cpu, _ = _cpu(lambda d=directory: remux.remux_participants(d))
            edf_cpu, _ = _cpu(lambda d=directory: edf_export.export_session(d))
            minutes = seconds / 60.0
            out["remux_cpu_s_per_stream_minute"] = remux_cpu / (n_video * minutes)
            out["edf_cpu_s_per_record_minute"] = edf_cpu / minutes
    data = np.random.default_rng(2).bytes(16 * 1024 * 1024)
    for alg in ("aes-256-gcm", "sm4-gcm"):
        key = crypto.SessionKey.new(master, alg)
        path = root / f"raw-{alg}"

        def write(p: Path = path, k: crypto.SessionKey = key) -> None:
            with crypto.EncryptedFile(p, "x", key=k) as f:
                for i in range(0, len(data), 4096):
                    f.write(data[i:i + 4096])

        def read(p: Path = path) -> bytes:
            with crypto.EncryptedFile(p, "r", master=master) as f:
                return bytes(f.read())
        w_cpu, _ = _cpu(write)
        r_cpu, back = _cpu(read)
        assert back == data
        out[f"{alg}_write_cpu_ms_per_mb"] = 1000 * w_cpu / 16
        out[f"{alg}_read_cpu_ms_per_mb"] = 1000 * r_cpu / 16
    return out


async def amain(args: argparse.Namespace) -> dict[str, object]:
    t = time.perf_counter()
    clip = encode_clip()
    encode_s = time.perf_counter() - t
    results: dict[str, object] = {
        "video_streams": args.video, "waveform_streams": args.waveforms,
        "seconds": args.seconds, "mode": "fast" if args.fast else "realtime",
        "clip_encode_s": encode_s,
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if args.video:
            results["video"] = await run_phase(Path(tmp), args.video, 0, args.seconds,
                                               args.fast, clip)
        if args.waveforms:
            results["waveforms"] = await run_phase(Path(tmp), 0, args.waveforms, args.seconds,
                                                   args.fast, clip)
        if args.safety:
            results["safety"] = await safety_phase(Path(tmp) / "safety", max(1, args.video), args.seconds, clip)
        if args.http_sessions:
            results["http"] = await http_phase(Path(tmp) / "http", args.http_sessions, args.http_file_mb)
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


async def http_phase(root: Path, n_sessions: int, file_mb: float) -> dict[str, object]:
    """Wall time per download through a real node, and the event-loop lag during each."""
    import urllib.request

    from medstream.app import MedstreamApp
    from medstream.config import ServerConfig
    from recorder.manifest import SessionManifest, write_manifest
    from signaling.hub import SignalingConfig
    from signaling.tokens import issue_token

    secret = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"
    room = "bench-room"
    for i in range(n_sessions):
        sid = f"20250101T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}Z-{i:06x}"
        d = root / room / sid
        d.mkdir(parents=True)
        write_manifest(d, SessionManifest(sid, room, "consultation", "2025-01-01T00:00:00Z", "x",
                                          1735689600.0 + i, stopped_at="2025-01-01T01:00:00Z"))
    big = root / room / sid / "video01_x.webm"
    with open(big, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 255, int(file_mb * 1e6), dtype=np.uint8).tobytes())
    node = MedstreamApp(ServerConfig(SignalingConfig(secret=secret), port=0, audit_log=None, media=False,
                                     waveforms=False, recorder=True, recordings_dir=root))
    await node.start()
    auth = {"Authorization": f"Bearer {issue_token(secret, room=room, identity='bench', role='host')}"}
    lag = {"max": 0.0}

    async def watch() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lag["max"] = max(lag["max"], time.perf_counter() - t - 0.001)

    watcher = asyncio.ensure_future(watch())
    out: dict[str, object] = {"sessions": n_sessions, "file_mb": file_mb}
    def fetch(path: str, headers: dict[str, str]) -> int:
        # in a worker thread: the loop's lag is then the server's, not the client's
        request = urllib.request.Request(f"{node.url}{path}", headers={**auth, **headers})
        size = 0
        with urllib.request.urlopen(request) as r:
            while chunk := r.read(1 << 20):
                size += len(chunk)
        return size

    async def timed(path: str, headers: dict[str, str], reps: int) -> tuple[float, int, float]:
        lag["max"] = 0.0
        t = time.perf_counter()
        size = 0
        for _ in range(reps):
            size = await asyncio.to_thread(fetch, path, headers)
        return (time.perf_counter() - t) / reps, size, lag["max"]

    try:
        list_s, _, list_lag = await timed("/recordings", {}, 5)
        out["list_ms"], out["list_loop_lag_max_ms"] = 1000 * list_s, 1000 * list_lag
        file_path = f"/recordings/{room}/{sid}/{big.name}"
        for label, n in (("64k", 64 * 1024), ("1m", 1 << 20), ("8m", 8 << 20), ("whole", 0)):
            offset = int(file_mb * 1e6) // 3
            headers = {"Range": f"bytes={offset}-{offset + n - 1}"} if n else {}
            s_per, size, worst = await timed(file_path, headers, 20 if n else 3)
            out[f"range_{label}_ms"] = 1000 * s_per
            out[f"range_{label}_mb_s"] = size / s_per / 1e6
            out[f"range_{label}_loop_lag_max_ms"] = 1000 * worst
    finally:
        watcher.cancel()
        await node.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a summary, optionally write JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=int, default=4, help="VP8 streams (~1 Mbit/s each)")
    p.add_argument("--waveforms", type=int, default=8, help="2-channel 500 Hz waveform streams")
    p.add_argument("--seconds", type=float, default=10.0, help="recorded seconds per phase")
    p.add_argument("--fast", action="store_true", help="feed as fast as possible (not real time)")
    p.add_argument("--dir", default=None, help="where to write (default: system temp)")
    p.add_argument("--http-sessions", type=int, default=0,
                   help="also measure the HTTP service: list this many sessions, Range reads")
    p.add_argument("--http-file-mb", type=float, default=64.0, help="size of the file read in ranges")
    p.add_argument("--safety", action="store_true",
                   help="also measure fsync policies, encryption (AES-256-GCM, SM4-GCM), remux and EDF+ export")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = p.parse_args(argv)
    results = asyncio.run(amain(args))
    for phase in ("video", "waveforms"):
        r = results.get(phase)
        if isinstance(r, dict):
            print(f"{phase:>9}: {r['streams']} streams x {r['recorded_seconds']:.0f} s in "
                  f"{r['wall_s']:.1f} s: CPU {r['cpu_percent_per_stream']:.2f} % of a core per "
                  f"stream, disk {r['disk_throughput_mb_s']:.2f} MB/s, max backlog "
                  f"{r['max_pending_bytes'] / 1e3:.0f} kB, loop lag max {r['loop_lag_max_ms']:.1f} ms"
                  + (f", {r['media_mbit_s_per_video_stream']:.2f} Mbit/s per stream"
                     if phase == "video" else ""))
    s = results.get("safety")
    if isinstance(s, dict):
        for name in ("plain_fsync_none", "plain_fsync_second", "plain_fsync_cluster", "aes_256_gcm", "sm4_gcm"):
            r = s[name]
            print(f"   safety: {name:<20} CPU {r['cpu_percent_per_stream']:.2f} % of a core per stream "
                  f"({r['fsyncs']} fsync rounds taking {r['fsync_wall_ms']:.0f} ms of the writer thread)")
        print(f"   safety: AES-256-GCM write {s['aes-256-gcm_write_cpu_ms_per_mb']:.1f} / read "
              f"{s['aes-256-gcm_read_cpu_ms_per_mb']:.1f} ms CPU per MB; SM4-GCM write "
              f"{s['sm4-gcm_write_cpu_ms_per_mb']:.1f} / read {s['sm4-gcm_read_cpu_ms_per_mb']:.1f} ms CPU per MB")
        print(f"   safety: remux {s['remux_cpu_s_per_stream_minute']:.3f} CPU s per stream-minute, "
              f"EDF+ {s['edf_cpu_s_per_record_minute']:.3f} CPU s per record-minute")
    h = results.get("http")
    if isinstance(h, dict):
        print(f"     http: list {h['sessions']} sessions {h['list_ms']:.1f} ms; Range read "
              f"64 KiB {h['range_64k_ms']:.2f} ms, 1 MiB {h['range_1m_ms']:.2f} ms, "
              f"8 MiB {h['range_8m_ms']:.1f} ms ({h['range_8m_mb_s']:.0f} MB/s), whole "
              f"{h['file_mb']:.0f} MB {h['range_whole_ms']:.0f} ms; loop lag max during the whole-file "
              f"downloads {h['range_whole_loop_lag_max_ms']:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
