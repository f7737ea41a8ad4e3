"""Measurement accuracy on synthetic 12-lead ECGs with known intervals, against IEC 60601-2-25 limits.

The limits are those of IEC 60601-2-25:2011 for global intervals on biological ECGs (CSE):
|mean error| and SD of the error per interval (`dsp.ecg12.eval.IEC_LIMITS_MS`). The synthetic
set is the dipole model of `dsp.ecg12.synthetic` with random intervals, axes, noise and wander.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.ecg12.eval import IEC_LIMITS_MS, synthetic_errors
from dsp.ecg12.measurements import MeasurementError, analyze, measure
from dsp.ecg12.record import LEADS, Ecg12
from dsp.ecg12.synthetic import SyntheticParams, random_params, synthesize


@pytest.mark.parametrize(("fs", "noise_scale"), [(500.0, 1.0), (250.0, 1.0), (1000.0, 1.0), (500.0, 2.0)])
def test_interval_errors_within_iec_limits(fs: float, noise_scale: float) -> None:
    n = 30 if (fs, noise_scale) == (500.0, 1.0) else 12
    result = synthetic_errors(n, seed=8, sampling_rate_hz=fs, noise_scale=noise_scale)
    for key, (mean_limit, sd_limit) in IEC_LIMITS_MS.items():
        entry = result[key]
        assert isinstance(entry, dict)
        assert entry["not_measured"] == 0, key
        assert abs(float(entry["mean"])) <= mean_limit, (key, entry)
        assert float(entry["sd"]) <= sd_limit, (key, entry)
    hr, axis = result["heart_rate_bpm"], result["axis_deg"]
    assert isinstance(hr, dict) and isinstance(axis, dict)
    assert float(hr["max_abs"]) <= 2.0  # no beat missed or doubled
    assert float(axis["max_abs"]) <= 10.0


def test_one_ecg_in_detail() -> None:
    params = SyntheticParams(heart_rate_bpm=60.0, pr_ms=240.0, qrs_ms=130.0, qt_ms=480.0, axis_deg=-40.0, rr_jitter=0.0)
    ecg, truth = synthesize(params, np.random.default_rng(3))
    a = analyze(ecg)
    m = a.measurements
    assert m.heart_rate_bpm == pytest.approx(60.0, abs=0.5)
    assert m.rhythm_regular and m.p_present
    assert m.pr_ms == pytest.approx(truth.pr_ms, abs=10)
    assert m.qrs_ms == pytest.approx(truth.qrs_ms, abs=10)
    assert m.qt_ms == pytest.approx(truth.qt_ms, abs=25)
    assert m.axis_deg == pytest.approx(truth.axis_deg, abs=5)
    # QTc: Bazett and Fridericia equal QT at exactly 1 s RR
    assert m.qtc_bazett_ms == pytest.approx(m.qt_ms * math.sqrt(1000.0 / m.rr_mean_ms))
    assert m.qtc_fridericia_ms == pytest.approx(m.qt_ms / (m.rr_mean_ms / 1000.0) ** (1 / 3))
    assert m.n_beats == 10 and m.n_beats_in_median >= 7
    # amplitudes: R in I, a dominant negative wave in aVF for a -40° axis; ST ~ 0 (no ST shift in the model)
    assert m.leads["I"].r_mv > 0.5 and m.leads["aVF"].q_mv < -0.3 and m.leads["aVF"].qrs_net_mv_ms < 0
    assert all(abs(amp.st_j60_mv) < 0.05 for amp in m.leads.values())
    j = m.to_json()
    assert set(j["leads"]) == set(LEADS) and j["qrs_ms"] == round(m.qrs_ms, 1)


def test_irregular_rhythm_without_p_waves() -> None:
    rng = np.random.default_rng(11)
    params = SyntheticParams(heart_rate_bpm=90.0, p_mv=0.0, rr_jitter=0.2, qt_ms=340.0, pr_ms=150.0)
    ecg, _ = synthesize(params, rng)
    m = measure(ecg)
    assert not m.rhythm_regular and m.rr_irregularity > 0.08
    assert not m.p_present and m.pr_ms is None and m.p_duration_ms is None


def test_flat_ecg_is_not_measurable() -> None:
    rng = np.random.default_rng(0)
    ecg = Ecg12.from_leads({lead: 0.005 * rng.standard_normal(5000) for lead in LEADS}, 500)
    with pytest.raises(MeasurementError, match=r"QRS amplitude must reach 0.15 mV peak-to-peak in some lead, got 0.0"):
        measure(ecg)


def test_random_params_keep_waves_apart() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        p = random_params(rng)
        assert p.qt_ms + p.pr_ms + 40.0 <= 60000.0 / p.heart_rate_bpm
        assert p.pr_ms >= p.p_duration_ms + 25.0


def test_median_beat_json_for_the_viewer() -> None:
    params = SyntheticParams(heart_rate_bpm=60.0, pr_ms=180.0, qrs_ms=100.0, qt_ms=420.0, rr_jitter=0.0)
    ecg, truth = synthesize(params, np.random.default_rng(4))
    a = analyze(ecg)
    view = a.median_beat_json(max_rate_hz=250.0)
    assert view["sampling_rate_hz"] == 250.0
    leads = view["leads"]
    assert isinstance(leads, dict) and set(leads) == set(LEADS)
    assert len(leads["II"]) == (a.median.samples_mv.shape[1] + 1) // 2
    fid = view["fiducials_ms"]
    assert isinstance(fid, dict) and fid["qrs_on"] == 0.0
    assert fid["p_on"] == pytest.approx(-truth.pr_ms, abs=10)
    assert fid["qrs_off"] == pytest.approx(truth.qrs_ms, abs=10)
    assert fid["t_end"] == pytest.approx(truth.qt_ms, abs=25)
