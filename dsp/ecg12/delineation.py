"""Beats over all 12 leads, a representative median beat, and global fiducial points on it.

Offline (the whole 10 s record is there), so the filters are zero-phase: a resting ECG is
measured after it is recorded, unlike the live monitoring path in `dsp.qrs`.

* Conditioning: 0.5 Hz high-pass (2nd-order Butterworth, forward-backward: the AHA 2007
  recommendation allows 0.67 Hz when zero-phase), 50 and 60 Hz notches, 60 Hz low-pass.
* Beats: the 5-15 Hz band of every lead, squared slope normalised per lead, summed over leads
  and integrated over 100 ms (the Pan & Tompkins 1985 energy, made multi-lead so one bad lead
  cannot hide a beat); peaks above 25 % of the typical QRS peak, at least 250 ms apart.
* Median beat: dominant beats only (QRS correlation with the record's template >= 0.85, not
  premature), aligned by cross-correlation, sample-wise median (robust to one noisy beat).
* Fiducials, global over all leads (the CSE convention: earliest onset, latest offset):
  QRS onset/offset where the spatial velocity sqrt(sum_l (dx_l/dt)^2), smoothed over 8 ms,
  leaves/returns to a low level for 12 ms; T end and P onset/offset on the RMS curve of the baseline-corrected leads by
  the area method of Zhang et al. (IEEE TBME 53(7):1337-1345, 2006), which is less biased than
  the tangent method on slowly ending waves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

#: median-beat window around the alignment point (ms)
PRE_MS = 450.0
POST_MS = 700.0


@dataclass(frozen=True, eq=False)
class BeatSet:
    """Beats found in a record. ``r_samples``: alignment points (sample indices); ``dominant``: used in the median."""

    r_samples: np.ndarray
    dominant: np.ndarray
    correlation: np.ndarray

    @property
    def rr_ms_fs(self) -> np.ndarray:
        """RR intervals in samples (divide by fs/1000 for ms)."""
        return np.diff(self.r_samples)


@dataclass(frozen=True, eq=False)
class MedianBeat:
    """Representative beat: ``samples_mv`` (12, m) baseline-corrected, ``r_index`` the alignment sample."""

    samples_mv: np.ndarray
    r_index: int
    sampling_rate_hz: float
    n_beats: int


@dataclass(frozen=True)
class Fiducials:
    """Global fiducial points, sample indices into the median beat (None: wave not found)."""

    p_on: int | None
    p_off: int | None
    qrs_on: int
    qrs_off: int
    t_peak: int | None
    t_end: int | None
    isoelectric: int


#: 2nd-order 60 Hz keeps the Q/S lobes of narrow QRSs sharp (a 4th-order 40 Hz filter rang ~10 ms
#: before the onset and widened narrow QRSs by 15-20 ms on the synthetic set)
LOWPASS_HZ = 60.0
LOWPASS_ORDER = 2
#: Zhang 2006 used 32 samples at 250 Hz
T_AREA_WINDOW_MS = 128.0
P_AREA_WINDOW_MS = 50.0
SV_SMOOTH_MS = 8.0


def condition(signals_mv: np.ndarray, fs: float) -> np.ndarray:
    """Zero-phase 0.5-60 Hz band with 50 and 60 Hz notches, all leads in one call; shape kept."""
    hp = signal.butter(2, 0.5, btype="highpass", fs=fs, output="sos")
    lp = signal.butter(LOWPASS_ORDER, min(LOWPASS_HZ, 0.45 * fs), btype="lowpass", fs=fs, output="sos")
    x = signal.sosfiltfilt(hp, signals_mv, axis=-1)
    for mains_hz in (50.0, 60.0):
        b, a = signal.iirnotch(mains_hz, 30.0, fs=fs)
        x = signal.filtfilt(b, a, x, axis=-1)
    return signal.sosfiltfilt(lp, x, axis=-1)


def _ms(fs: float, ms: float) -> int:
    return max(1, int(round(ms * fs / 1000.0)))


def detect_beats(x_mv: np.ndarray, fs: float) -> np.ndarray:
    """Multi-lead QRS detection on conditioned leads (12, n). Returns R sample indices, sorted."""
    sos = signal.butter(2, [5.0, 15.0], btype="bandpass", fs=fs, output="sos")
    band = signal.sosfiltfilt(sos, x_mv, axis=-1)
    energy = np.gradient(band, axis=-1) ** 2
    # normalise each lead by its typical beat energy so a noisy or huge lead cannot dominate
    second = _ms(fs, 1000.0)
    n_sec = max(1, energy.shape[1] // second)
    per_sec_max = energy[:, : n_sec * second].reshape(energy.shape[0], n_sec, second).max(axis=2)
    scale = np.median(per_sec_max, axis=1)
    scale[scale <= 0] = np.inf
    combined = np.sum(np.minimum(energy / scale[:, None], 4.0), axis=0)
    mwi = ndimage.uniform_filter1d(combined, size=_ms(fs, 100.0), mode="nearest")
    peaks, _ = signal.find_peaks(mwi, distance=_ms(fs, 250.0))
    if peaks.size == 0:
        return peaks
    heights = mwi[peaks]
    ref = float(np.percentile(heights, 85))
    keep = heights >= 0.25 * ref
    peaks, heights = peaks[keep], heights[keep]
    # T-wave rule (Pan & Tompkins): within 360 ms of a beat, a peak of less than half its energy
    # is that beat's T wave; one of more than twice its energy means the earlier one was
    accepted: list[int] = []
    accepted_h: list[float] = []
    t_window = _ms(fs, 360.0)
    for pk, h in zip(peaks, heights):
        if accepted and pk - accepted[-1] < t_window:
            if h < 0.5 * accepted_h[-1]:
                continue
            if h > 2.0 * accepted_h[-1]:
                accepted[-1], accepted_h[-1] = int(pk), float(h)
                continue
        accepted.append(int(pk))
        accepted_h.append(float(h))
    peaks = np.asarray(accepted, dtype=np.int64)
    # alignment point: the largest band-passed spatial magnitude within ±60 ms of the energy peak
    magnitude = np.sqrt(np.sum(band**2, axis=0))
    half = _ms(fs, 60.0)
    out = []
    for pk in peaks:
        lo, hi = max(0, pk - half), min(magnitude.shape[0], pk + half + 1)
        out.append(lo + int(np.argmax(magnitude[lo:hi])))
    return np.unique(np.asarray(out, dtype=np.int64))


def classify_beats(x_mv: np.ndarray, fs: float, r: np.ndarray) -> BeatSet:
    """Mark dominant beats (QRS shape like the record's median QRS, not premature) and refine alignment."""
    pre, post = _ms(fs, 80.0), _ms(fs, 120.0)
    n = x_mv.shape[1]
    inside = (r - pre - _ms(fs, 12.0) >= 0) & (r + post + _ms(fs, 12.0) < n)
    r = r.copy()
    corr = np.zeros(r.shape[0])
    if inside.sum() < 2:
        return BeatSet(r_samples=r, dominant=inside, correlation=corr)
    idx = np.nonzero(inside)[0]

    def windows(points: np.ndarray) -> np.ndarray:
        offs = np.arange(-pre, post + 1)
        w = x_mv[:, points[:, None] + offs[None, :]]  # (12, beats, m)
        w = w - w[:, :, :1]
        return np.transpose(w, (1, 0, 2)).reshape(points.shape[0], -1)

    template = np.median(windows(r[idx]), axis=0)
    # refine each beat's alignment by the lag (±12 ms) that best matches the template
    max_lag = _ms(fs, 12.0)
    for i in idx:
        best, best_lag = -np.inf, 0
        for lag in range(-max_lag, max_lag + 1):
            w = windows(np.array([r[i] + lag]))[0]
            c = float(np.dot(w, template))
            if c > best:
                best, best_lag = c, lag
        r[i] += best_lag
    w = windows(r[idx])
    template = np.median(w, axis=0)
    tn = np.linalg.norm(template)
    for k, i in enumerate(idx):
        wn = np.linalg.norm(w[k])
        corr[i] = float(np.dot(w[k], template) / (wn * tn)) if wn > 0 and tn > 0 else 0.0
    dominant = inside & (corr >= 0.85)
    if r.shape[0] >= 4:
        rr = np.diff(r)
        median_rr = float(np.median(rr))
        premature = np.zeros(r.shape[0], dtype=bool)
        premature[1:] = rr < 0.8 * median_rr
        if (dominant & ~premature).sum() >= 3:
            dominant &= ~premature
    if dominant.sum() == 0:
        dominant = inside
    return BeatSet(r_samples=r, dominant=dominant, correlation=corr)


def median_beat(x_mv: np.ndarray, fs: float, beats: BeatSet) -> MedianBeat | None:
    """Sample-wise median of the dominant beats in [-450, +700] ms; None if no beat fits the window."""
    pre, post = _ms(fs, PRE_MS), _ms(fs, POST_MS)
    n = x_mv.shape[1]
    r = beats.r_samples[beats.dominant]
    r = r[(r - pre >= 0) & (r + post < n)]
    if r.size == 0:
        r = beats.r_samples[(beats.r_samples - pre >= 0) & (beats.r_samples + post < n)]
    if r.size == 0:
        return None
    offs = np.arange(-pre, post + 1)
    stack = x_mv[:, r[:, None] + offs[None, :]]  # (12, beats, m)
    return MedianBeat(samples_mv=np.median(stack, axis=1), r_index=pre, sampling_rate_hz=fs, n_beats=int(r.size))


def _run_start(mask: np.ndarray, hold: int) -> int | None:
    """First index where ``mask`` is True for ``hold`` consecutive samples."""
    if mask.size < hold:
        return None
    counts = np.convolve(mask.astype(np.int64), np.ones(hold, dtype=np.int64), mode="valid")
    hits = np.nonzero(counts == hold)[0]
    return int(hits[0]) if hits.size else None


def _area_end(curve: np.ndarray, start: int, stop: int, window: int) -> int:
    """Zhang 2006 area indicator: end of the descending hump of ``curve`` in [start, stop).

    A(t) = sum over the ``window`` samples before t of (curve(τ) - curve(t)); its maximum is the
    corner where the wave meets the baseline.
    """
    stop = min(stop, curve.shape[0])
    best, best_t = -np.inf, start
    csum = np.concatenate(([0.0], np.cumsum(curve)))
    for t in range(max(start, window), stop):
        area = (csum[t + 1] - csum[t + 1 - window]) - window * curve[t]
        if area > best:
            best, best_t = area, t
    return best_t


def delineate(beat: MedianBeat, rr_ms: float) -> tuple[Fiducials, np.ndarray]:
    """Global fiducials on a median beat. Returns them and the beat re-referenced to the PR segment.

    ``rr_ms``: the median RR, which bounds where this beat's P may start (after the previous T).
    """
    fs = beat.sampling_rate_hz
    m = beat.samples_mv
    r0 = beat.r_index
    vel = np.gradient(m, axis=1) * fs / 1000.0  # mV/ms
    sv = np.sqrt(np.sum(vel**2, axis=0))
    # 8 ms smoothing: noise at 40-60 µV otherwise crosses the onset level in the PR segment
    sv = ndimage.uniform_filter1d(sv, size=_ms(fs, SV_SMOOTH_MS), mode="nearest")
    lo = r0 - _ms(fs, 60.0)
    hi = r0 + _ms(fs, 60.0)
    peak = lo + int(np.argmax(sv[lo:hi]))
    sv_max = float(sv[peak])
    floor = float(np.percentile(sv, 10))
    hold = _ms(fs, 12.0)
    # QRS onset: walk back from the steepest point until the velocity stays low for 12 ms
    thr_on = floor + 0.03 * (sv_max - floor)
    back_limit = max(0, r0 - _ms(fs, 200.0))
    seg = sv[back_limit : peak + 1][::-1] < thr_on
    k = _run_start(seg, hold)
    qrs_on = peak - k + 1 if k is not None else back_limit + int(np.argmin(sv[back_limit:peak]))
    qrs_on = min(qrs_on, peak)
    # QRS offset: walk forward; the ST-T slope is larger than the PR segment's, so a higher level
    thr_off = floor + 0.05 * (sv_max - floor)
    fwd_limit = min(sv.shape[0], r0 + _ms(fs, 220.0))
    seg = sv[peak:fwd_limit] < thr_off
    k = _run_start(seg, hold)
    qrs_off = peak + k - 1 if k is not None else peak + int(np.argmin(sv[peak:fwd_limit]))
    # isoelectric level: the flattest 10 ms in the 80 ms before QRS onset (the PR segment)
    iso_w = _ms(fs, 10.0)
    iso_lo = max(0, qrs_on - _ms(fs, 80.0))
    iso_hi = max(iso_lo + iso_w, qrs_on - _ms(fs, 2.0))
    smooth = ndimage.uniform_filter1d(sv, size=iso_w, mode="nearest")
    iso = iso_lo + int(np.argmin(smooth[iso_lo:iso_hi]))
    half = iso_w // 2
    baseline = np.mean(m[:, max(0, iso - half) : iso + half + 1], axis=1, keepdims=True)
    corrected = m - baseline
    rms = np.sqrt(np.mean(corrected**2, axis=0))
    rms_s = ndimage.uniform_filter1d(rms, size=_ms(fs, 16.0), mode="nearest")
    # T wave: RMS peak after the ST segment, end by the area method
    rr = rr_ms * fs / 1000.0
    t_lo = qrs_off + _ms(fs, 60.0)
    # up to 65 % of the RR: beyond it, at fast rates, lies the next beat's P wave (larger than a flat T)
    t_hi = min(rms.shape[0] - 1, r0 + int(min(_ms(fs, 560.0), 0.65 * rr)))
    t_peak: int | None = None
    t_end: int | None = None
    if t_hi > t_lo + _ms(fs, 20.0):
        # the first clear hump, not the largest: with a long PR at a fast rate the next beat's P
        # wave can stand inside the window and be as tall as a flat T
        seg = rms_s[t_lo:t_hi]
        humps, _ = signal.find_peaks(seg, prominence=0.2 * float(seg.max() - seg.min()) + 1e-9)
        tall = [int(h) for h in humps if seg[h] >= 0.5 * seg.max()]
        t_peak = t_lo + (tall[0] if tall else int(np.argmax(seg)))
        end_hi = min(rms.shape[0], t_peak + _ms(fs, 300.0), r0 + int(0.85 * rr))
        t_end = _area_end(rms_s, t_peak + 1, end_hi, _ms(fs, T_AREA_WINDOW_MS))
    # P wave: RMS hump before the QRS, after the previous beat's T end
    p_on: int | None = None
    p_off: int | None = None
    p_lo = max(1, qrs_on - _ms(fs, 420.0))
    if t_end is not None:
        p_lo = max(p_lo, t_end - int(rr) + _ms(fs, 20.0))
    p_hi = qrs_on - _ms(fs, 10.0)
    if p_hi - p_lo > _ms(fs, 40.0):
        seg = rms_s[p_lo:p_hi]
        quiet = float(np.min(rms_s[p_lo : p_hi + _ms(fs, 8.0)]))
        # the P wave is the last clear hump before the QRS, not the largest value in the window
        # (the window may start on the tail of the previous T or a U wave)
        humps, _ = signal.find_peaks(seg, prominence=0.6 * P_MIN_RMS_MV)
        humps = [int(h) for h in humps if seg[h] - quiet >= P_MIN_RMS_MV and h > _ms(fs, 10.0)]
        p_peak = p_lo + (humps[-1] if humps else int(np.argmax(seg)))
        if humps:
            w = _ms(fs, P_AREA_WINDOW_MS)
            # onset: the same indicator on the time-reversed curve (rev[j] = rms_s[p_peak + w - j])
            rev = rms_s[p_lo : p_peak + w + 1][::-1]
            p_on = p_peak + w - _area_end(rev, w + 1, rev.shape[0], w)
            p_off = _area_end(rms_s, p_peak + 1, p_hi + _ms(fs, 8.0), w)
            if p_off - p_on < _ms(fs, 40.0):
                p_on = p_off = None
    return (
        Fiducials(
            p_on=p_on,
            p_off=p_off,
            qrs_on=int(qrs_on),
            qrs_off=int(qrs_off),
            t_peak=t_peak,
            t_end=t_end,
            isoelectric=iso,
        ),
        corrected,
    )


#: a P wave is taken as present when its RMS hump rises this much (mV) above the quietest point before the QRS
P_MIN_RMS_MV = 0.025
