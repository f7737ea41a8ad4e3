"""V-class accuracy of the live detector's beat labels: `python -m bench.beat_classes [--json OUT]`.

Each mitdb record (channel 0, whole record, 90-sample chunks, flushed) through one
`PanTompkinsDetector`; beats matched to the reference within 150 ms (EC57); AAMI V class =
``V`` + ``E``. Prints TP/FN/FP of the V label per record and the totals; never asserts.
Default records: all of ../shared/data/ecg/mitdb except the paced 102 and 104.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def score(path: Path) -> dict[str, int]:
    """V TP / FN / FP of one record (and its beat TP / FP / FN)."""
    import wfdb
    from wfdb.processing import compare_annotations

    from dsp.qrs import PanTompkinsDetector
    from dsp.records import load_record

    rec = load_record(path)
    det = PanTompkinsDetector(rec.sampling_rate_hz)
    beats: list[int] = []
    classes = ""
    x = rec.signal_mv
    for a in range(0, x.size, 90):
        beats += det.process(x[a : a + 90])
        classes += det.last_classes
    beats += det.flush()
    classes += det.last_classes
    ann = wfdb.rdann(str(path), "atr")
    symbol = dict(zip(ann.sample.tolist(), ann.symbol, strict=False))
    cmp = compare_annotations(rec.beats, np.asarray(beats), int(0.15 * rec.sampling_rate_hz))
    want = np.array([symbol[s] in "VE" for s in rec.beats[cmp.matched_ref_inds]])
    got = np.array([classes[i] == "V" for i in cmp.matched_test_inds])
    return {"beat_tp": int(cmp.tp), "beat_fp": int(cmp.fp), "beat_fn": int(cmp.fn),
            "v_tp": int((want & got).sum()), "v_fn": int((want & ~got).sum()),
            "v_fp": int((~want & got).sum())}


def main(argv: list[str] | None = None) -> int:
    """Score the records; print and write --json."""
    p = argparse.ArgumentParser(prog="python -m bench.beat_classes", description=__doc__)
    p.add_argument("records", nargs="*", help="mitdb record names (default: all but 102, 104)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/ecg"))
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    root = Path(args.data) / "mitdb"
    names = args.records or [r for r in (root / "RECORDS").read_text().split()
                             if r not in ("102", "104")]
    out: dict[str, dict[str, int]] = {}
    for name in names:
        out[name] = r = score(root / name)
        print(f"{name}: V tp {r['v_tp']} fn {r['v_fn']} fp {r['v_fp']}", flush=True)
    tp, fn, fp = (sum(r[k] for r in out.values()) for k in ("v_tp", "v_fn", "v_fp"))
    se, ppv = tp / max(tp + fn, 1), tp / max(tp + fp, 1)
    print(f"V sensitivity {100 * se:.1f} %, positive predictivity {100 * ppv:.1f} % "
          f"({tp} TP, {fn} FN, {fp} FP; {len(out)} records)")
    if args.json:
        Path(args.json).write_text(json.dumps({"records": out, "v_se": se, "v_ppv": ppv},
                                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
