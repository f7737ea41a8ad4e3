"""Signal-quality checks on real records mixed with real nstdb noise (bw, ma)."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from dsp.alarms import AlarmKind
from dsp.analyzer import MultiStreamAnalyzer
from dsp.qrs import PanTompkinsDetector
from dsp.records import score_beats
from dsp.signal_quality import SignalQualityBank
from tests.dsp.conftest import cached_record

FS = 360
NOISY = slice(30 * FS, 60 * FS)


def _mix(ecg_data_dir, record: str, noise: str, snr_db: float) -> tuple[np.ndarray, object]:
    """90 s of a mitdb record with nstdb noise added in 30-60 s at an rms SNR of ``snr_db``."""
    rec = cached_record(str(ecg_data_dir / "mitdb" / record))
    x = rec.signal_mv[: 90 * FS].copy()
    n = wfdb.rdrecord(str(ecg_data_dir / "nstdb" / noise), channels=[0]).p_signal[NOISY, 0]
    n = n - n.mean()
    x[NOISY] += n * (np.std(x) / np.std(n)) * 10 ** (-snr_db / 20)
    return x, rec


def _alarm_events(x: np.ndarray) -> list[tuple[float, AlarmKind, bool]]:
    an = MultiStreamAnalyzer()
    an.add_stream("s", FS)
    events = []
    for a in range(0, x.size, FS // 4):
        an.feed("s", x[a : a + FS // 4], a)
        res = an.process()["s"]
        events += [(a / FS, al.kind, True) for al in res.alarms_raised]
        events += [(a / FS, al.kind, False) for al in res.alarms_cleared]
    return events


def test_muscle_artefact_that_breaks_detection_raises_noise(ecg_data_dir):
    x, rec = _mix(ecg_data_dir, "119", "ma", -18.0)
    ref = rec.beats[(rec.beats >= NOISY.start) & (rec.beats < NOISY.stop)]
    found = np.array(PanTompkinsDetector(FS).process(x))
    inside = type(rec)(rec.name, FS, x, ref, ())
    score = score_beats(inside, found[(found >= NOISY.start) & (found < NOISY.stop)])
    assert score.ppv < 0.8 or score.se < 0.8, score  # the noise really prevents analysis
    events = _alarm_events(x)
    noise = [(t, up) for t, kind, up in events if kind is AlarmKind.NOISE]
    assert noise and noise[0][1] and 30 < noise[0][0] < 36, noise
    assert noise[-1] == (noise[-1][0], False) and noise[-1][0] < 64, noise


@pytest.mark.parametrize("snr_db", [0.0, -6.0])
def test_baseline_wander_alone_raises_nothing(ecg_data_dir, snr_db):
    x, rec = _mix(ecg_data_dir, "100", "bw", snr_db)
    score = score_beats(
        type(rec)(rec.name, FS, x, rec.beats[rec.beats < x.size], ()),
        np.array(PanTompkinsDetector(FS).process(x)),
    )
    assert score.se > 0.99 and score.ppv > 0.99  # wander below 5 Hz does not hurt detection
    assert _alarm_events(x) == []


def test_flags_do_not_depend_on_chunking(ecg_data_dir):
    x, _ = _mix(ecg_data_dir, "119", "ma", -12.0)
    whole, chunked = SignalQualityBank(FS), SignalQualityBank(FS)
    whole.add_stream()
    chunked.add_stream()
    rng = np.random.default_rng(3)
    pos = 0
    while pos < x.size:
        n = int(rng.integers(1, 200))
        got = chunked.process_arrays(x[None, pos : pos + n])
        pos += n
    want = whole.process_arrays(x[None, :])
    assert got.noise_mv[0] == want.noise_mv[0] and got.artefact_ratio[0] == want.artefact_ratio[0]
    assert got.ptp_mv[0] == want.ptp_mv[0]


def test_a_bank_of_streams_gives_each_stream_its_own_flags(ecg_data_dir):
    """Rows of one bank (fed whole or as subsets, one removed on the way) are judged exactly as
    one bank per stream: the per-segment state is shared, sample-major, across rows."""
    clean, _ = _mix(ecg_data_dir, "119", "ma", -12.0)
    x = np.stack([clean, np.clip(clean, -0.3, 0.3), np.roll(clean, 999), clean * 0.002])
    bank = SignalQualityBank(FS)
    singles = [SignalQualityBank(FS) for _ in x]
    for s in [bank, *singles]:
        s.add_stream()
        if s is bank:
            for _ in range(len(x) - 1):
                bank.add_stream()
    names = ["flat", "saturated", "noisy", "ptp_mv", "noise_mv", "artefact_ratio"]
    rng = np.random.default_rng(5)
    live = list(range(len(x)))
    seen = set()
    pos = 0
    while pos < 40 * FS:
        n = int(rng.integers(1, 300))
        subsets = [np.arange(len(live))] if rng.random() < 0.5 else [np.array([0, 2]),
                                                                     np.arange(1, len(live), 2)]
        for rows in subsets:
            got = bank.process_arrays(x[[live[r] for r in rows], pos : pos + n], rows)
            for i, r in enumerate(rows.tolist()):
                want = singles[live[r]].process_arrays(x[None, live[r], pos : pos + n])
                for name in names:
                    assert getattr(got, name)[i] == getattr(want, name)[0], (name, pos, r)
            seen |= {name for name in names[:3] if getattr(got, name).any()}
        pos += n
        if pos > 20 * FS and len(live) == len(x):
            bank.remove_stream(1)
            del live[1]
    assert seen == {"flat", "saturated", "noisy"}  # every check had rows with and without it
