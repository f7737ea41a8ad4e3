"""Instructions per sample of the live analyzer: `python -m bench.dsp_instructions [--json OUT]`.

CPU time on a shared machine moves by +-15 % with the load; instruction counts do not. This runs
`bench.dsp`'s workload (--streams x --fs Hz of mitdb 100, 0.25 s chunks, one ``process()`` per
chunk) under ``valgrind --tool=callgrind --instr-atstart=no``: imports, set-up and --warm-s of
signal run uninstrumented, then for each of the --seconds of measured chunks the samples are fed
uninstrumented and instrumentation is switched on (``callgrind_control -i on``) for the
``process()`` call alone. Prints instructions per sample of ``process()`` and writes JSON; never
asserts. Needs valgrind (Debian package ``valgrind``); takes ~4 min for the defaults. To compare
another tree, run it from that tree's root (``python -m`` puts the working directory before
PYTHONPATH, and the child runs in the tree of this file; PYTHONPATH alone measures the current
tree), with ``--data`` if that tree is not beside ``shared/`` (e.g. a ``git archive`` in /tmp).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _child(args: argparse.Namespace) -> None:
    """The measured process (runs under callgrind)."""
    from dsp.analyzer import MultiStreamAnalyzer
    from dsp.records import load_record, resample_record

    rec = load_record(Path(args.data) / "mitdb" / "100")
    if args.fs != rec.sampling_rate_hz:
        rec = resample_record(rec, args.fs)
    source = rec.signal_mv
    gc.collect()
    if args.freeze:
        gc.freeze()
    an = MultiStreamAnalyzer()
    ids = [f"s{i}" for i in range(args.streams)]
    for sid in ids:
        an.add_stream(sid, args.fs)
    step = int(round(0.25 * args.fs))
    warm = int(round(args.warm_s * args.fs)) // step
    chunks = warm + int(round(args.seconds * args.fs)) // step
    offsets = (np.arange(args.streams) * 7919) % (source.size - chunks * step - 1)
    pid = str(os.getpid())
    for c in range(chunks):
        a = c * step
        for i, sid in enumerate(ids):
            an.feed(sid, source[offsets[i] + a : offsets[i] + a + step], a)
        if c >= warm:
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        an.process()
        if c >= warm:
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    print(f"samples {args.streams * (chunks - warm) * step}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the child under callgrind; print and write --json."""
    p = argparse.ArgumentParser(prog="python -m bench.dsp_instructions", description=__doc__)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--fs", type=float, default=500.0)
    p.add_argument("--warm-s", type=float, default=3.0, help="uninstrumented signal first (s)")
    p.add_argument("--seconds", type=float, default=2.0, help="measured signal (s)")
    p.add_argument("--no-freeze", dest="freeze", action="store_false",
                   help="leave start-up objects to the collector (bench.dsp freezes them)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/ecg"))
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("bench.dsp_instructions: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={tmp}/cg.out", sys.executable, "-m", "bench.dsp_instructions",
               "--child", "--streams", str(args.streams), "--fs", str(args.fs),
               "--warm-s", str(args.warm_s), "--seconds", str(args.seconds), "--data", args.data]
        if not args.freeze:
            cmd.append("--no-freeze")
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    collected = re.search(r"Collected : (\d+)", out.stderr)
    samples = re.search(r"samples (\d+)", out.stdout)
    if out.returncode != 0 or collected is None or samples is None:
        print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
        return 1
    ir, n = int(collected.group(1)), int(samples.group(1))
    result = {"streams": args.streams, "fs_hz": args.fs, "warm_s": args.warm_s,
              "seconds": args.seconds, "chunk_s": 0.25, "gc_freeze": args.freeze,
              "instructions": ir, "samples": n, "instructions_per_sample": ir / n}
    print(f"{args.streams} streams x {args.fs:g} Hz, 0.25 s chunks: {ir / n:.1f} instructions per "
          f"sample of process() ({ir / 1e6:.0f} M over {n / 1e6:g} M samples)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
