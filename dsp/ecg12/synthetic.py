"""Synthetic 12-lead ECGs with exactly known intervals and frontal axis (a moving-dipole model).

Why our own generator: real records carry diagnoses but no fiducial points (PTB-XL+ and LUDB are
not in ../shared), and neurokit2's ``ecg_simulate(method="multileads")`` does not return the
interval truth per record. Here every wave is a heart-vector component (3-D, mV) times a shape
with *compact support*, so onsets and ends are exact instants, not a matter of threshold:

* P: two overlapping raised-cosine lobes (right then left atrium), ``[p_on, p_off]``.
* QRS: Q (septal), R (main, along the chosen axis) and S (terminal) raised-cosine lobes that
  tile ``[qrs_on, qrs_off]``.
* T: an asymmetric beta-shaped lobe ``u**a (1-u)**b`` on ``[t_on, t_end]``.

Leads are projections of the vector: I = Hx, II = Hx cos 60° + Hy sin 60°, III/aVR/aVL/aVF by
Einthoven and Goldberger, V1-V6 on horizontal-plane directions (Dower-like angles). The
frontal QRS axis truth is the angle of the QRS vector's area in the frontal plane, the same
quantity `dsp.ecg12.measure` estimates from the net QRS areas of I and aVF. Noise: white
(per lead), baseline wander (0.1-0.4 Hz), 50 Hz mains, beat-to-beat RR variability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsp.ecg12.record import LEADS, Ecg12

#: horizontal-plane angles of V1..V6 from the left (x) axis towards anterior (z), degrees
_PRECORDIAL_ANGLES_DEG = (115.0, 94.0, 76.0, 60.0, 30.0, 0.0)
_PRECORDIAL_GAIN = (1.0, 1.3, 1.35, 1.3, 1.1, 0.9)


@dataclass(frozen=True)
class SyntheticTruth:
    """The true global measurements of a synthetic ECG (ms, bpm, degrees)."""

    heart_rate_bpm: float
    p_duration_ms: float
    pr_ms: float
    qrs_ms: float
    qt_ms: float
    axis_deg: float


@dataclass(frozen=True)
class SyntheticParams:
    """Parameters of one synthetic ECG. Times in ms; vectors are (x left, y inferior, z anterior) in mV."""

    heart_rate_bpm: float = 70.0
    p_duration_ms: float = 100.0
    pr_ms: float = 160.0
    qrs_ms: float = 90.0
    qt_ms: float = 400.0
    st_ms: float = 40.0
    axis_deg: float = 60.0
    r_mv: float = 1.4
    p_mv: float = 0.18
    t_mv: float = 0.35
    noise_uv: float = 10.0
    wander_mv: float = 0.15
    mains_uv: float = 10.0
    rr_jitter: float = 0.02
    duration_s: float = 10.0
    sampling_rate_hz: float = 500.0


def _hann(t: np.ndarray, start: float, end: float) -> np.ndarray:
    u = (t - start) / (end - start)
    out = 0.5 - 0.5 * np.cos(2.0 * np.pi * u)
    out[(u <= 0.0) | (u >= 1.0)] = 0.0
    return out


def _beta(t: np.ndarray, start: float, end: float, a: float = 2.2, b: float = 1.8) -> np.ndarray:
    u = np.clip((t - start) / (end - start), 0.0, 1.0)
    shape = u**a * (1.0 - u) ** b
    peak = (a / (a + b)) ** a * (b / (a + b)) ** b
    return shape / peak


def _unit(angle_deg: float, z: float = 0.0) -> np.ndarray:
    rad = math.radians(angle_deg)
    v = np.array([math.cos(rad), math.sin(rad), z])
    return v / np.linalg.norm(v)


def _beat_vector(t_ms: np.ndarray, p: SyntheticParams, qrs_on: float) -> np.ndarray:
    """Heart vector (3, n) of one beat whose QRS starts at ``qrs_on`` (ms)."""
    p_on = qrs_on - p.pr_ms
    p_off = p_on + p.p_duration_ms
    qrs_off = qrs_on + p.qrs_ms
    t_on = qrs_off + p.st_ms
    t_end = qrs_on + p.qt_ms
    d = p.qrs_ms
    axis = p.axis_deg
    vec = np.zeros((3, t_ms.shape[0]))
    # atria: right atrium (inferior, anterior) first, then left atrium (leftward, posterior)
    vec += np.outer(_unit(75.0, 0.4) * p.p_mv, _hann(t_ms, p_on, p_on + 0.65 * p.p_duration_ms))
    vec += np.outer(_unit(20.0, -0.3) * p.p_mv * 0.8, _hann(t_ms, p_on + 0.35 * p.p_duration_ms, p_off))
    # ventricles: septal Q opposite the axis and anterior, main R along the axis and posterior-left,
    # terminal S rightward-superior-posterior
    vec += np.outer(_unit(axis + 180.0, 0.8) * 0.15 * p.r_mv, _hann(t_ms, qrs_on, qrs_on + 0.32 * d))
    vec += np.outer(_unit(axis, -0.35) * p.r_mv, _hann(t_ms, qrs_on + 0.14 * d, qrs_on + 0.78 * d))
    vec += np.outer(_unit(axis + 160.0, -0.6) * 0.3 * p.r_mv, _hann(t_ms, qrs_on + 0.58 * d, qrs_off))
    # repolarisation roughly concordant with the QRS
    vec += np.outer(_unit(axis - 15.0, 0.3) * p.t_mv, _beta(t_ms, t_on, t_end))
    return vec


def _project(vec: np.ndarray) -> np.ndarray:
    """Heart vector (3, n) -> 12 leads (12, n) in `LEADS` order."""
    hx, hy, hz = vec
    lead_i = hx
    lead_ii = 0.5 * hx + math.sqrt(3.0) / 2.0 * hy
    rows = [
        lead_i,
        lead_ii,
        lead_ii - lead_i,
        -(lead_i + lead_ii) / 2.0,
        lead_i - lead_ii / 2.0,
        lead_ii - lead_i / 2.0,
    ]
    for angle, gain in zip(_PRECORDIAL_ANGLES_DEG, _PRECORDIAL_GAIN):
        rad = math.radians(angle)
        rows.append(gain * (math.cos(rad) * hx + math.sin(rad) * hz + 0.1 * hy))
    return np.stack(rows)


def true_axis_deg(p: SyntheticParams) -> float:
    """Angle of the QRS vector's frontal-plane area (degrees, -180..180)."""
    t = np.arange(0.0, p.qrs_ms + 1.0, 0.05)
    vec = _beat_vector(t, p, 0.0)
    inside = (t >= 0.0) & (t <= p.qrs_ms)  # P ends before and T starts after: only QRS lobes here
    hx = float(np.sum(vec[0, inside]))
    hy = float(np.sum(vec[1, inside]))
    return math.degrees(math.atan2(hy, hx))


def synthesize(p: SyntheticParams, rng: np.random.Generator) -> tuple[Ecg12, SyntheticTruth]:
    """One synthetic 12-lead ECG and its truth. Deterministic for a given ``rng`` state."""
    fs = p.sampling_rate_hz
    n = int(round(p.duration_s * fs))
    t_ms = np.arange(n) * 1000.0 / fs
    rr_ms = 60000.0 / p.heart_rate_bpm
    onsets: list[float] = []
    onset = 0.45 * rr_ms + p.pr_ms
    while onset < t_ms[-1] + rr_ms:
        onsets.append(onset)
        onset += rr_ms * (1.0 + p.rr_jitter * rng.standard_normal())
    vec = np.zeros((3, n))
    for qrs_on in onsets:
        lo = int(max(0, (qrs_on - p.pr_ms - 5.0) * fs / 1000.0))
        hi = int(min(n, (qrs_on + p.qt_ms + 5.0) * fs / 1000.0) + 1)
        if hi > lo:
            vec[:, lo:hi] += _beat_vector(t_ms[lo:hi], p, qrs_on)
    leads = _project(vec)
    t_s = t_ms / 1000.0
    for row in range(12):
        wander = sum(
            p.wander_mv
            * rng.uniform(0.3, 1.0)
            * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t_s + rng.uniform(0, 2 * np.pi))
            for _ in range(2)
        )
        mains = p.mains_uv * 1e-3 * np.sin(2 * np.pi * 50.0 * t_s + rng.uniform(0, 2 * np.pi))
        leads[row] += wander + mains + p.noise_uv * 1e-3 * rng.standard_normal(n)
    mean_rr = float(np.mean(np.diff(onsets))) if len(onsets) > 1 else rr_ms
    truth = SyntheticTruth(
        heart_rate_bpm=60000.0 / mean_rr,
        p_duration_ms=p.p_duration_ms,
        pr_ms=p.pr_ms,
        qrs_ms=p.qrs_ms,
        qt_ms=p.qt_ms,
        axis_deg=true_axis_deg(p),
    )
    ecg = Ecg12.from_leads(dict(zip(LEADS, leads)), fs)
    return ecg, truth


def random_params(
    rng: np.random.Generator, sampling_rate_hz: float = 500.0, noise_scale: float = 1.0
) -> SyntheticParams:
    """Plausible resting-ECG parameters drawn at random (normal and prolonged intervals, axes -45..+120°).

    ``noise_scale`` multiplies the white noise, wander and mains amplitudes (a stress test).
    Draws are repeated until the next beat's P wave starts at least 40 ms after this beat's T
    ends, so every wave stays separable and its truth well defined.
    """
    while True:
        hr = float(rng.uniform(45.0, 105.0))
        rr_ms = 60000.0 / hr
        qrs = float(rng.uniform(70.0, 150.0))
        qt = float(max(rng.uniform(0.37, 0.48) * math.sqrt(rr_ms / 1000.0) * 1000.0, qrs + 190.0))
        p_dur = float(rng.uniform(70.0, 125.0))
        pr = float(rng.uniform(max(125.0, p_dur + 25.0), 260.0))
        if qt + pr + 40.0 <= rr_ms:
            break
    return SyntheticParams(
        heart_rate_bpm=hr,
        p_duration_ms=p_dur,
        pr_ms=pr,
        qrs_ms=qrs,
        qt_ms=qt,
        st_ms=float(rng.uniform(0.0, 70.0)),
        axis_deg=float(rng.uniform(-45.0, 120.0)),
        r_mv=float(rng.uniform(0.8, 2.0)),
        p_mv=float(rng.uniform(0.12, 0.25)),
        t_mv=float(rng.uniform(0.2, 0.5)),
        noise_uv=noise_scale * float(rng.uniform(5.0, 20.0)),
        wander_mv=noise_scale * float(rng.uniform(0.0, 0.3)),
        mains_uv=noise_scale * float(rng.uniform(0.0, 20.0)),
        sampling_rate_hz=sampling_rate_hz,
    )
