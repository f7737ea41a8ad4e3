"""Measurements a reading doctor checks first, from the median beat over all leads.

Intervals are global (earliest onset, latest offset over the 12 leads); amplitudes and ST are
per lead, relative to the PR-segment (isoelectric) level of the median beat.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from dsp.ecg12.delineation import (
    BeatSet,
    Fiducials,
    MedianBeat,
    classify_beats,
    condition,
    delineate,
    detect_beats,
    median_beat,
)
from dsp.ecg12.record import LEADS, Ecg12

#: ST is reported at the J point and 60 ms after it (the point the flags use)
ST_OFFSET_MS = 60.0
#: RR irregularity (median |successive RR difference| / median RR) above which the rhythm is called irregular
IRREGULAR_RATIO = 0.08


#: below this median-beat QRS peak-to-peak (largest lead) there is no ECG to measure
MIN_QRS_MV = 0.15


class MeasurementError(ValueError):
    """The ECG could not be measured (too few beats found); the message says what was found."""


@dataclass(frozen=True)
class LeadAmplitudes:
    """Per-lead amplitudes in mV relative to the isoelectric level. Q and S are <= 0, R >= 0; P and T signed."""

    p_mv: float
    q_mv: float
    r_mv: float
    s_mv: float
    t_mv: float
    st_j_mv: float
    st_j60_mv: float
    st_slope_mv_per_s: float
    qrs_net_mv_ms: float
    terminal_qrs_mv: float


@dataclass(frozen=True)
class Measurements:
    """Global measurements of one 12-lead ECG. Times in ms, rate in bpm, axis in degrees (None: not measurable)."""

    heart_rate_bpm: float
    rr_mean_ms: float
    rr_irregularity: float
    rhythm_regular: bool
    n_beats: int
    n_beats_in_median: int
    p_present: bool
    p_duration_ms: float | None
    pr_ms: float | None
    qrs_ms: float
    qt_ms: float | None
    qtc_bazett_ms: float | None
    qtc_fridericia_ms: float | None
    axis_deg: float | None
    leads: dict[str, LeadAmplitudes] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """Plain dict (rounded) for JSON: reports, the CLI, the future HTTP layer."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 1)
        out["leads"] = {name: {k: round(v, 3) for k, v in asdict(amp).items()} for name, amp in self.leads.items()}
        return out


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything the measurements came from: conditioned leads, beats, median beat, fiducials."""

    ecg: Ecg12
    conditioned_mv: np.ndarray
    beats: BeatSet
    median: MedianBeat
    median_corrected_mv: np.ndarray
    fiducials: Fiducials
    measurements: Measurements

    def fiducials_ms(self) -> dict[str, float | None]:
        """Global fiducials in ms relative to QRS onset (for calipers on the median beat)."""
        f, fs = self.fiducials, self.median.sampling_rate_hz

        def rel(i: int | None) -> float | None:
            return None if i is None else round((i - f.qrs_on) * 1000.0 / fs, 1)

        return {
            "p_on": rel(f.p_on),
            "p_off": rel(f.p_off),
            "qrs_on": 0.0,
            "qrs_off": rel(f.qrs_off),
            "t_peak": rel(f.t_peak),
            "t_end": rel(f.t_end),
        }

    def median_beat_json(self, max_rate_hz: float = 250.0) -> dict[str, object]:
        """The median beat (mV, isoelectric-referenced) and its fiducials, for the 12-lead viewer.

        Decimated by an integer factor to at most ``max_rate_hz`` (the beat is already low-passed
        at 60 Hz); ``start_ms`` is the first sample's time relative to QRS onset.
        """
        fs = self.median.sampling_rate_hz
        step = max(1, int(fs // max_rate_hz))
        x = self.median_corrected_mv[:, ::step]
        return {
            "sampling_rate_hz": fs / step,
            "start_ms": round(-self.fiducials.qrs_on * 1000.0 / fs, 1),
            "leads": {name: [round(float(v), 4) for v in x[i]] for i, name in enumerate(LEADS)},
            "fiducials_ms": self.fiducials_ms(),
        }


def _amplitudes(x: np.ndarray, f: Fiducials, fs: float) -> LeadAmplitudes:
    on, off = f.qrs_on, f.qrs_off
    qrs = x[on : off + 1]
    r_idx = int(np.argmax(qrs))
    r = max(0.0, float(qrs[r_idx]))
    if r < 0.02:  # QS complex: one negative deflection, reported as Q
        q, s = min(0.0, float(qrs.min())), 0.0
        r = 0.0
    else:
        q = min(0.0, float(qrs[: r_idx + 1].min()))
        s = min(0.0, float(qrs[r_idx:].min()))
    p = 0.0
    if f.p_on is not None and f.p_off is not None:
        pw = x[f.p_on : f.p_off + 1]
        p = float(pw[int(np.argmax(np.abs(pw)))])
    t = 0.0
    if f.t_end is not None:
        tw = x[off + int(0.04 * fs) : f.t_end + 1]
        if tw.size:
            t = float(tw[int(np.argmax(np.abs(tw)))])
    j60 = min(x.shape[0] - 1, off + int(round(ST_OFFSET_MS * fs / 1000.0)))
    j80 = min(x.shape[0] - 1, off + int(round(0.08 * fs)))
    st_j = float(x[off])
    term = int(round(0.04 * fs))
    return LeadAmplitudes(
        p_mv=p,
        q_mv=q,
        r_mv=r,
        s_mv=s,
        t_mv=t,
        st_j_mv=st_j,
        st_j60_mv=float(x[j60]),
        st_slope_mv_per_s=(float(x[j80]) - st_j) / 0.08,
        qrs_net_mv_ms=float(np.sum(qrs)) * 1000.0 / fs,
        terminal_qrs_mv=float(np.mean(x[max(on, off - term) : off + 1])),
    )


def analyze(ecg: Ecg12) -> Analysis:
    """Detect beats, build the median beat, delineate it and measure.

    Raises:
        MeasurementError: fewer than 3 beats detected, none fits the median-beat window, or the
            median QRS is below `MIN_QRS_MV` in every lead.
    """
    fs = ecg.sampling_rate_hz
    x = condition(ecg.signals_mv, fs)
    r = detect_beats(x, fs)
    if r.size < 3:
        raise MeasurementError(f"need at least 3 beats to measure, found {r.size} in {ecg.duration_s:.1f} s")
    beats = classify_beats(x, fs, r)
    med = median_beat(x, fs, beats)
    if med is None:
        raise MeasurementError(f"no beat fits the median-beat window ({r.size} beats in {ecg.duration_s:.1f} s)")
    half = int(0.06 * fs)
    qrs_ptp = float(np.max(np.ptp(med.samples_mv[:, med.r_index - half : med.r_index + half + 1], axis=1)))
    if qrs_ptp < MIN_QRS_MV:
        raise MeasurementError(
            f"QRS amplitude must reach {MIN_QRS_MV} mV peak-to-peak in some lead, got {qrs_ptp:.3f} mV (leads off or no ECG?)"
        )
    rr = np.diff(beats.r_samples) * 1000.0 / fs
    rr_median = float(np.median(rr))
    fid, corrected = delineate(med, rr_median)
    to_ms = 1000.0 / fs
    rr_mean = float(np.mean(rr))
    irregularity = float(np.median(np.abs(np.diff(rr))) / rr_median) if rr.size >= 3 else 0.0
    qrs_ms = (fid.qrs_off - fid.qrs_on) * to_ms
    qt = (fid.t_end - fid.qrs_on) * to_ms if fid.t_end is not None else None
    rr_s = rr_mean / 1000.0
    p_present = fid.p_on is not None and fid.p_off is not None
    amps = {name: _amplitudes(corrected[i], fid, fs) for i, name in enumerate(LEADS)}
    lead_i, avf = amps["I"].qrs_net_mv_ms, amps["aVF"].qrs_net_mv_ms
    axis = math.degrees(math.atan2(2.0 * avf / math.sqrt(3.0), lead_i)) if (lead_i or avf) else None
    m = Measurements(
        heart_rate_bpm=60000.0 / rr_mean,
        rr_mean_ms=rr_mean,
        rr_irregularity=irregularity,
        rhythm_regular=irregularity <= IRREGULAR_RATIO,
        n_beats=int(beats.r_samples.size),
        n_beats_in_median=med.n_beats,
        p_present=p_present,
        p_duration_ms=(fid.p_off - fid.p_on) * to_ms if p_present else None,  # type: ignore[operator]
        pr_ms=(fid.qrs_on - fid.p_on) * to_ms if p_present else None,  # type: ignore[operator]
        qrs_ms=qrs_ms,
        qt_ms=qt,
        qtc_bazett_ms=qt / math.sqrt(rr_s) if qt is not None else None,
        qtc_fridericia_ms=qt / rr_s ** (1.0 / 3.0) if qt is not None else None,
        axis_deg=axis,
        leads=amps,
    )
    return Analysis(
        ecg=ecg, conditioned_mv=x, beats=beats, median=med, median_corrected_mv=corrected, fiducials=fid, measurements=m
    )


def measure(ecg: Ecg12) -> Measurements:
    """`analyze` and keep only the measurements."""
    return analyze(ecg).measurements
