"""Beats and classes of the QRS detector on every mitdb record, for refactoring checks.

`python -m bench.qrs_golden OUT.json` records them (single detectors in 100 ms chunks on whole
records; one bank of all records with random chunks; the live analyzer, 0.1 s chunks); `--check
OLD.json` compares with an earlier run and prints the first difference. Never asserts speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dsp.qrs import PanTompkinsBank, PanTompkinsDetector
from dsp.records import load_record


def _records(data: Path, limit_s: float | None) -> dict[str, tuple[np.ndarray, float]]:
    out = {}
    for hea in sorted((data / "mitdb").glob("*.hea")):
        rec = load_record(hea.with_suffix(""))
        x = rec.signal_mv
        if limit_s is not None:
            x = x[: int(limit_s * rec.sampling_rate_hz)]
        out[hea.stem] = (x, rec.sampling_rate_hz)
    return out


def run(data: Path, minutes: float) -> dict[str, object]:
    recs = _records(data, None)
    single: dict[str, list[list[int] | str]] = {}
    for name, (x, fs) in recs.items():
        det = PanTompkinsDetector(fs)
        step = int(0.1 * fs)
        beats: list[int] = []
        cls = ""
        for a in range(0, x.size, step):
            beats += det.process(x[a : a + step])
            cls += det.last_classes
        beats += det.flush()
        cls += det.last_classes
        single[name] = [beats, cls]
    # one bank, all records as rows (same fs), random chunks of 0-400 samples
    fs = next(iter(recs.values()))[1]
    n = int(minutes * 60 * fs)
    block = np.stack([x[:n] for x, _ in recs.values()])
    bank = PanTompkinsBank(fs)
    for _ in recs:
        bank.add_stream()
    rng = np.random.default_rng(7)
    bank_beats: list[list[int]] = [[] for _ in recs]
    bank_cls: list[str] = ["" for _ in recs]
    a = 0
    while a < n:
        m = int(rng.integers(0, 400))
        pos, idx = bank.process_flat(block[:, a : a + m])
        for p, i, c in zip(pos.tolist(), idx.tolist(), bank.last_classes.tolist(), strict=True):
            bank_beats[p].append(i)
            bank_cls[p] += "NVQ"[c]
        a += m
    banked = {name: [bank_beats[i], bank_cls[i]] for i, name in enumerate(recs)}
    # the analyzer as the server runs it (0.1 s chunks)
    from dsp.analyzer import MultiStreamAnalyzer

    an = MultiStreamAnalyzer()
    for name in recs:
        an.add_stream(name, fs)
    step = int(0.1 * fs)
    live: dict[str, list[list[int] | str]] = {name: [[], ""] for name in recs}
    for a in range(0, n, step):
        for name, (x, _) in recs.items():
            an.feed(name, x[a : min(a + step, n)], a)
        for name, res in an.process().items():
            live[name][0] += [b.sample_index for b in res.beats]  # type: ignore[operator]
            live[name][1] += "".join(b.label for b in res.beats)  # type: ignore[operator]
    return {"single": single, "bank": banked, "analyzer": live}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.qrs_golden", description=__doc__)
    p.add_argument("out")
    p.add_argument("--check", metavar="OLD")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/ecg"))
    args = p.parse_args(argv)
    res = run(Path(args.data), args.minutes)
    Path(args.out).write_text(json.dumps(res))
    n = sum(len(v[0]) for v in res["single"].values())  # type: ignore[attr-defined]
    v = sum(v[1].count("V") for v in res["single"].values())  # type: ignore[attr-defined]
    print(f"{n} beats ({v} V) on {len(res['single'])} records")  # type: ignore[arg-type]
    if args.check:
        old = json.loads(Path(args.check).read_text())
        bad = 0
        for kind in old:
            for name in old[kind]:
                if old[kind][name] != res[kind][name]:  # type: ignore[index]
                    bad += 1
                    print(f"DIFFERENT: {kind} {name}")
        print("identical" if not bad else f"{bad} differences")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
