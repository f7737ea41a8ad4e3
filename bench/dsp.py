"""Throughput of the batched ECG analyzer: `python -m bench.dsp --streams 1000 --fs 500 ...`.

Streams are fed real ECG (mitdb 100 channel 0 resampled to --fs, each stream starting at a
different offset) in --chunk-s chunks; one `process()` per chunk, as the server does. CPU time
via time.process_time (one thread, so per core). Start-up objects are frozen out of the garbage
collector before the analyzer is built, as `medstream serve` does once started (`gc.freeze()`). Prints and writes JSON (with the machine's load
average, since other work on a shared machine slows every core); never asserts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

import numpy as np

from dsp.analyzer import MultiStreamAnalyzer
from dsp.records import load_record, resample_record


def run(streams: int, fs: float, seconds: float, chunk_s: float, source: np.ndarray) -> dict:
    """Feed ``streams`` x ``seconds`` of signal; return samples, CPU s and samples/s."""
    gc.collect()
    gc.freeze()  # as `medstream serve` does once started: the collector skips start-up objects
    an = MultiStreamAnalyzer()
    ids = [f"s{i}" for i in range(streams)]
    for sid in ids:
        an.add_stream(sid, fs)
    step = int(round(chunk_s * fs))
    total = int(round(seconds * fs))
    offsets = (np.arange(streams) * 7919) % (source.size - total - 1)
    cpu = 0.0
    for a in range(0, total, step):
        n = min(step, total - a)
        for i, sid in enumerate(ids):
            an.feed(sid, source[offsets[i] + a : offsets[i] + a + n], a)
        t0 = time.process_time()
        an.process()
        cpu += time.process_time() - t0
    samples = streams * total
    return {
        "streams": streams, "fs_hz": fs, "seconds": seconds, "chunk_s": chunk_s,
        "samples": samples, "cpu_s": cpu, "samples_per_s_per_core": samples / cpu,
        "realtime_factor": seconds / cpu,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark at 1, 100 and --streams streams; print and write --json."""
    p = argparse.ArgumentParser(prog="python -m bench.dsp", description=__doc__)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--fs", type=float, default=500.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--chunk-s", type=float, default=0.25)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/ecg"))
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    rec = load_record(Path(args.data) / "mitdb" / "100")
    if args.fs != rec.sampling_rate_hz:
        rec = resample_record(rec, args.fs)
    results = []
    load_before = os.getloadavg()[0]
    for n in sorted({1, 100, args.streams}):
        r = run(n, args.fs, args.seconds, args.chunk_s, rec.signal_mv)
        results.append(r)
        print(f"{n:5d} streams x {args.fs:g} Hz, {args.chunk_s:g} s chunks: "
              f"{r['samples_per_s_per_core'] / 1e6:7.2f} M samples/s per core "
              f"({r['realtime_factor']:.0f}x real time, {r['cpu_s']:.2f} s CPU)")
    load = {"load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0],
            "cpus": os.cpu_count()}
    print(f"machine load (1 min average) {load_before:.1f} -> {load['load_avg_1min_after']:.1f}"
          f" on {os.cpu_count()} CPUs: figures are per core of a shared machine")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "machine": load}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
