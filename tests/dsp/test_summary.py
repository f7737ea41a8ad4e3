"""Offline neurokit2 summary on a real record, checked against the cardiologists' beats."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.summary import summarize_ecg
from tests.dsp.conftest import cached_record


def test_summary_of_a_clean_record_matches_the_reference_beats(ecg_data_dir):
    rec = cached_record(str(ecg_data_dir / "mitdb" / "100"))
    n = 300 * 360
    s = summarize_ecg(rec.signal_mv[:n], 360)
    ref = rec.beats[rec.beats < n]
    nn = np.diff(ref) * 1000.0 / 360
    assert s.duration_s == pytest.approx(300.0)
    assert abs(s.n_beats - ref.size) <= 3
    assert s.mean_hr_bpm == pytest.approx(60000.0 / nn.mean(), rel=0.01)
    assert s.sdnn_ms == pytest.approx(nn.std(ddof=1), rel=0.1)
    assert s.rmssd_ms == pytest.approx(np.sqrt(np.mean(np.diff(nn) ** 2)), rel=0.15)
    assert s.quality_class == "Excellent" and s.quality_mean > 0.7
    assert set(s.to_json()) >= {"mean_hr_bpm", "sdnn_ms", "rmssd_ms", "pnn50_pct"}


def test_summary_command_writes_json(ecg_data_dir, tmp_path):
    import json

    from dsp.summary import main

    out = tmp_path / "summary.json"
    assert main([str(ecg_data_dir / "cudb" / "cu01"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["sampling_rate_hz"] == 250.0 and data["n_beats"] > 100


def test_summary_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 10 s"):
        summarize_ecg(np.zeros(360), 360)
    with pytest.raises(ValueError, match="125-1000 Hz"):
        summarize_ecg(np.zeros(36000), 50)
