"""EC13-style heart-rate meter: alternating rhythms, amplitudes x0.5..x2, step responses, tall T
waves, pacemaker pulses, slow wide beats; the whole live path (detector + meter)."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.alarm_eval import run_records
from dsp.heart_rate import HeartRateMeter
from tests.dsp.synthetic import (
    EC13_RHYTHMS,
    NORMAL,
    VENTRICULAR,
    BeatShape,
    beat_times,
    rate_step,
    render,
    rhythm_signal,
)


def _tolerance(bpm: float) -> float:
    """EC13: +-10 % or +-5 bpm, whichever is greater."""
    return max(0.1 * bpm, 5.0)


def _shown(run, after_s: float) -> list[float | None]:
    return [bpm for t, bpm in run.hr if t >= after_s]


@pytest.mark.parametrize("fs", [250.0, 500.0])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_alternating_rhythms_show_the_true_rate(fs, scale):
    signals = {r.name: rhythm_signal(r, fs, 40.0, scale, seed=3)[0] for r in EC13_RHYTHMS}
    runs = run_records({name: (x, fs) for name, x in signals.items()})
    for rhythm in EC13_RHYTHMS:
        shown = _shown(runs[rhythm.name], 12.0)
        assert None not in shown, rhythm.name
        err = max(abs(v - rhythm.expected_bpm) for v in shown)  # type: ignore[operator]
        assert err <= _tolerance(rhythm.expected_bpm), (rhythm.name, shown)


@pytest.mark.parametrize("after", [120.0, 40.0])
def test_step_response_within_5_s(after):
    fs, step = 360.0, 30.0
    x, _ = rate_step(fs, 80.0, after, step, 60.0, seed=4)
    run = run_records({"p": (x, fs)})["p"]
    tol = _tolerance(after)
    inside = [t for t, bpm in run.hr if t > step and bpm is not None and abs(bpm - after) <= tol]
    settled = [t for t in inside if all(
        bpm is not None and abs(bpm - after) <= tol for u, bpm in run.hr if t <= u < 58)]
    assert settled and settled[0] - step <= 5.0, run.hr[25:45]
    assert all(abs(bpm - 80.0) <= 5 for t, bpm in run.hr if 10 <= t <= step)  # type: ignore[operator]


@pytest.mark.parametrize("shape,bpm", [
    # EC13 tall T: 100 ms QRS, T 180 ms long ending 350 ms after QRS onset (starts 120 ms
    # after the QRS centre), up to 1.2 mV
    (BeatShape(qrs_mv=1.0, qrs_ms=100.0, t_mv=1.2, t_ms=180.0, qt_ms=120.0), 80),
    (BeatShape(qrs_mv=0.5, qrs_ms=100.0, t_mv=0.6, t_ms=180.0, qt_ms=120.0), 60),
    (BeatShape(qrs_mv=1.0, qrs_ms=100.0, pacer_mv=2.0, pacer_ms=40.0), 70),  # paced
    (VENTRICULAR, 40),  # slow wide beats (idioventricular)
    (BeatShape(qrs_mv=0.5, qrs_ms=160.0, t_mv=0.25, t_ms=200.0, qt_ms=260.0, p_mv=0.0), 40),
])
def test_every_beat_counted_once(shape, bpm):
    fs = 500.0
    times = beat_times([60.0 / bpm], 60.0)
    x = render(fs, times, [shape], 60.0, seed=5)
    run = run_records({"p": (x, fs)})["p"]
    found = np.asarray(run.beats) / fs
    assert len(found) == len(times), (len(found), len(times))
    assert np.max(np.abs(found - times)) < 0.1
    assert all(abs(v - bpm) <= 1.0 for v in _shown(run, 12.0))  # type: ignore[operator]


def test_single_meter_averages_whole_pairs():
    meter = HeartRateMeter(1000.0)
    t = 0
    for rr in [500, 1000] * 6:  # bigeminy, 80 bpm
        t += rr
        meter.on_beat(t)
    meter.update(0)
    meter.update(t)
    assert meter.heart_rate_bpm == pytest.approx(80.0)


def test_a_missed_beat_moves_the_display_less_than_the_tolerance():
    fs = 250.0
    times = beat_times([0.75], 40.0)
    x = render(fs, times, [NORMAL], 40.0)
    x[int(20.0 * fs) : int(20.7 * fs)] = x[int(19.0 * fs)]  # one complex lost (flat 0.7 s)
    run = run_records({"p": (x, fs)})["p"]
    shown = _shown(run, 12.0)
    assert all(v is not None and abs(v - 80.0) <= _tolerance(80.0) + 6 for v in shown), shown
