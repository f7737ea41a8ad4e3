"""EC13-style heart-rate meter and alarm timing figures: `python -m bench.ec13 [--json FILE]`.

Synthetic signals from `tests.dsp.synthetic` (our generator after EC13's descriptions, not the
standard's files), streamed through the live analyzer as the server feeds it (`alarm_eval`):
* the displayed HR on the four alternating rhythms of EC13 figure 3 at x0.5/x1/x2 amplitude
  (min/max over the last 30 s of 45 s) against the true rate, tolerance +-10 % or +-5 bpm;
* the response to 80 -> 120 and 80 -> 40 bpm steps (first second from which the display stays
  within tolerance of the new rate);
* the time from the last beat to the asystole alarm, and from onset to the VT / VF alarm for
  synthetic 200 bpm VT and coarse VF after 30 s of sinus rhythm, at x0.5/x1/x2.
Prints a table and writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from dsp.alarm_eval import run_records
from tests.dsp.synthetic import (
    EC13_RHYTHMS,
    NORMAL,
    beat_times,
    fibrillation,
    rate_step,
    render,
    rhythm_signal,
    ventricular_tachycardia,
)


def _tolerance(bpm: float) -> float:
    return max(0.1 * bpm, 5.0)


def main(argv: list[str] | None = None) -> int:
    """Run every case at 500 Hz; print and write --json."""
    p = argparse.ArgumentParser(prog="python -m bench.ec13", description=__doc__)
    p.add_argument("--fs", type=float, default=500.0)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    fs = args.fs
    out: dict[str, Any] = {"fs": fs, "rhythms": [], "steps": [], "alarms": []}
    print("EC13-style rhythms: displayed HR min-max (expected, tolerance)")
    for rhythm in EC13_RHYTHMS:
        for scale in (0.5, 1.0, 2.0):
            x, _ = rhythm_signal(rhythm, fs, 45.0, scale, seed=1)
            shown = [v for t, v in run_records({"p": (x, fs)})["p"].hr if t is not None and t >= 15]
            values = [v for v in shown if v is not None]
            lo, hi = (min(values), max(values)) if values else (None, None)
            ok = (len(values) == len(shown) and lo is not None and hi is not None
                  and max(abs(lo - rhythm.expected_bpm), abs(hi - rhythm.expected_bpm))
                  <= _tolerance(rhythm.expected_bpm))
            print(f"  {rhythm.name:<40} x{scale:<3g} {lo}-{hi} bpm "
                  f"(expected {rhythm.expected_bpm:g} +-{_tolerance(rhythm.expected_bpm):g}) "
                  f"{'ok' if ok else 'OUT'}")
            out["rhythms"].append({"name": rhythm.name, "scale": scale, "min": lo,
                                   "max": hi, "expected": rhythm.expected_bpm, "ok": ok})
    print("step responses (step at 30 s)")
    for after in (120.0, 40.0):
        x, _ = rate_step(fs, 80.0, after, 30.0, 60.0, seed=2)
        hr = [(float(t or 0.0), v) for t, v in run_records({"p": (x, fs)})["p"].hr]
        tol = _tolerance(after)
        settled = next((t for t, _ in hr if t > 30 and all(
            v is not None and abs(v - after) <= tol for u, v in hr if t <= u < 59)), None)
        resp = None if settled is None else settled - 30.0
        print(f"  80 -> {after:g} bpm: within tolerance after {resp} s")
        out["steps"].append({"to_bpm": after, "response_s": resp})
    print("alarm latencies")
    for scale in (0.5, 1.0, 2.0):
        sinus = render(fs, beat_times([0.8], 30.0), [NORMAL], 30.0, scale)
        last_beat = beat_times([0.8], 30.0)[-1]
        flat = 0.01 * np.random.default_rng(3).standard_normal(int(15 * fs))
        cases = {
            "asystole": (np.concatenate([sinus, flat]), "asystole", last_beat),
            "ventricular_tachycardia": (np.concatenate(
                [sinus, ventricular_tachycardia(fs, 200, 15.0, scale, seed=4)]),
                "ventricular_tachycardia", 30.0),
            "ventricular_fibrillation": (np.concatenate(
                [sinus, fibrillation(fs, 15.0, scale, seed=5)]), "ventricular_fibrillation", 30.0),
        }
        for name, (x, kind, onset) in cases.items():
            alarms = run_records({"p": (x, fs)})["p"].alarms
            raised = [a["raised_s"] for a in alarms if a["kind"] == kind]
            lat = round(float(raised[0]) - onset, 2) if raised else None
            print(f"  x{scale:<3g} {name:<26} {lat} s after "
                  f"{'the last beat' if name == 'asystole' else 'onset'}")
            out["alarms"].append({"scale": scale, "kind": name, "latency_s": lat})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
