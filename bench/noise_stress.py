"""Noise-stress test of the live QRS detector: `python -m bench.noise_stress [--json FILE]`.

mitdb 118 and 119 (the records nstdb was built from) with nstdb's muscle-artefact (``ma``) and
baseline-wander (``bw``) noise added the way nstdb added electrode motion: clean for 5 min, then
noise in alternating 2-min segments, at 6, 0 and -6 dB SNR (signal power from the QRS
peak-to-peak amplitude, `dsp.records.noise_stress_mixture`). Beats are scored EC57-style after
the first 5 min (as for nstdb). The detector is causal and chunk-invariant, so running it over
the whole record at once gives the live beats. nstdb's ``em`` noise is not in the data set.
Prints a table (with neurokit2 offline side by side) and writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import wfdb

from dsp.ecg_eval import neurokit2_detect
from dsp.qrs import PanTompkinsDetector
from dsp.records import LEARNING_PERIOD_S, BeatScore, load_record, noise_stress_mixture, score_beats

DATA = Path(os.environ.get("MEDSTREAM_ECG_DATA", Path(__file__).resolve().parents[2] / "shared/data/ecg"))


def f1(s: BeatScore) -> float:
    """F1 = 2 tp / (2 tp + fp + fn)."""
    return 2 * s.tp / (2 * s.tp + s.fp + s.fn) if s.tp else 0.0


def main(argv: list[str] | None = None) -> int:
    """Run every record x noise x SNR; print per-SNR totals."""
    p = argparse.ArgumentParser(prog="python -m bench.noise_stress", description=__doc__)
    p.add_argument("--records", nargs="+", default=["118", "119"])
    p.add_argument("--noises", nargs="+", default=["ma", "bw"])
    p.add_argument("--snr", nargs="+", type=float, default=[6.0, 0.0, -6.0])
    p.add_argument("--no-neurokit2", action="store_true")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    out: dict[str, object] = {"records": args.records, "noises": args.noises, "runs": []}
    print(f"{'record':>6} {'noise':>5} {'SNR dB':>6} | {'tp':>5} {'fp':>5} {'fn':>5} {'F1 %':>6} |"
          f" neurokit2 F1 %")
    totals: dict[tuple[str, float], list[BeatScore]] = {}
    for name in args.records:
        rec = load_record(DATA / "mitdb" / name)
        for noise_name in args.noises:
            noise = wfdb.rdrecord(str(DATA / "nstdb" / noise_name), channels=[0]).p_signal[:, 0]
            for snr in args.snr:
                mixed = noise_stress_mixture(rec, np.asarray(noise, dtype=np.float64), snr)
                det = PanTompkinsDetector(mixed.sampling_rate_hz)
                beats = det.process(mixed.signal_mv) + det.flush()
                ours = score_beats(mixed, np.asarray(beats), LEARNING_PERIOD_S)
                nk = None if args.no_neurokit2 else score_beats(
                    mixed, neurokit2_detect(mixed), LEARNING_PERIOD_S)
                agg = totals.setdefault((noise_name, snr), [BeatScore(0, 0, 0), BeatScore(0, 0, 0)])
                agg[0] += ours
                if nk is not None:
                    agg[1] += nk
                print(f"{name:>6} {noise_name:>5} {snr:6.0f} | {ours.tp:5d} {ours.fp:5d} "
                      f"{ours.fn:5d} {100 * f1(ours):6.2f} | "
                      + ("-" if nk is None else f"{100 * f1(nk):6.2f}"))
                out["runs"].append({  # type: ignore[attr-defined]
                    "record": name, "noise": noise_name, "snr_db": snr, "tp": ours.tp,
                    "fp": ours.fp, "fn": ours.fn, "f1": f1(ours),
                    "neurokit2_f1": None if nk is None else f1(nk)})
    print("totals over records:")
    for (noise_name, snr), (ours, nk) in totals.items():
        print(f"  {noise_name:>3} {snr:4.0f} dB: medstream F1 {100 * f1(ours):6.2f} %"
              + ("" if args.no_neurokit2 else f"   neurokit2 {100 * f1(nk):6.2f} %"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
