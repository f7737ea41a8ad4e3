"""Beat classes are the same as round 6's per-beat classifier, now that they are computed in
one vectorised pass per step (issue 11, throughput).

``qrs_round6_beats.json`` holds the beats and classes that main's detector (1f545a6, one
Python/numpy classification per beat) gave on three real segments with many ventricular
beats: mitdb 203 (multiform PVCs, VT), 208 (couplets, fusion), 223 (its slow bidirectional VT
at 578 s). The vectorised classifier must give every beat and class of it, for one detector
fed in random chunks and for a bank that classifies the three records' beats together.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dsp.qrs import BEAT_SYMBOLS, PanTompkinsBank, PanTompkinsDetector
from tests.dsp.conftest import cached_record

_OLD = json.loads((Path(__file__).with_name("qrs_round6_beats.json")).read_text())["records"]


def _segments(ecg_data_dir: Path) -> dict[str, tuple[np.ndarray, float]]:
    out = {}
    for name, ref in _OLD.items():
        rec = cached_record(str(ecg_data_dir / "mitdb" / name))
        fs = rec.sampling_rate_hz
        a = int(ref["start_s"] * fs)
        out[name] = (rec.signal_mv[a : a + int(ref["duration_s"] * fs)], fs)
    return out


def test_single_detector_in_random_chunks_gives_round_6_classes(ecg_data_dir):
    rng = np.random.default_rng(11)
    for name, (x, fs) in _segments(ecg_data_dir).items():
        det = PanTompkinsDetector(fs)
        beats: list[int] = []
        classes = ""
        pos = 0
        while pos < x.size:
            n = int(rng.integers(0, 400))
            beats += det.process(x[pos : pos + n])
            classes += det.last_classes
            pos += n
        beats += det.flush()
        classes += det.last_classes
        assert classes.count("V") >= 18, name  # the segments are there for their V beats
        assert beats == _OLD[name]["beats"], name
        assert classes == _OLD[name]["classes"], name


def test_bank_classifying_three_records_together_gives_round_6_classes(ecg_data_dir):
    segs = _segments(ecg_data_dir)
    fs = next(iter(segs.values()))[1]
    bank = PanTompkinsBank(fs)
    for _ in segs:
        bank.add_stream()
    xs = [x for x, _ in segs.values()]
    beats: list[list[int]] = [[] for _ in xs]
    classes = ["" for _ in xs]
    step = int(0.1 * fs)  # the server's chunk
    flush_n = bank.decision_delay_samples + 1
    for a in range(0, max(x.size for x in xs) + flush_n, step):
        # a record that has ended is flushed as `PanTompkinsDetector.flush` does (its last
        # sample repeated); its beats after the end are not counted
        block = np.stack([x[a : a + step] if a + step <= x.size
                          else np.concatenate([x[a : a + step], np.full(a + step - max(a, x.size),
                                                                        x[-1])])
                          for x in xs])
        pos, idx = bank.process_flat(block)
        for p, i, c in zip(pos.tolist(), idx.tolist(), bank.last_classes.tolist(), strict=True):
            if i < xs[p].size:
                beats[p].append(i)
                classes[p] += BEAT_SYMBOLS[c]
    for k, name in enumerate(segs):
        assert beats[k] == _OLD[name]["beats"], name
        assert classes[k] == _OLD[name]["classes"], name
