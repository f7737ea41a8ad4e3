"""Causal streaming QRS detection (Pan-Tompkins), batched across streams of one sampling rate.

Method: Pan J, Tompkins WJ. *A real-time QRS detection algorithm.* IEEE Trans Biomed Eng
32(3):230-236 (1985), with the decision-rule refinements of Hamilton PS, Tompkins WJ.
*Quantitative investigation of QRS detection rules using the MIT/BIH arrhythmia database.*
IEEE Trans Biomed Eng 33(12):1157-1165 (1986): 200 ms refractory period, T-wave discrimination
by slope within 360 ms of the previous beat, and a lowered threshold once the RR interval runs
past 1.66 times its recent mean ("search-back").

Pipeline per sample, vectorised over all streams and the whole chunk:
5-15 Hz band-pass -> five-point derivative -> square -> 150 ms moving-window integral (MWI).
Candidate peaks are the MWI maxima that dominate +-100 ms; only those reach the Python decision
loop (a few per second per stream), never single samples.

Candidates are judged on sqrt(MWI) (an amplitude; squaring made a 2x smaller QRS 4x smaller),
and after a long pause without beats the signal level decays so a lasting amplitude drop is
re-learned. Two deviations from the paper, both to stay causal with a bounded delay:
* Search-back is applied *as the candidate arrives* (the candidate is judged against half the
  threshold when it comes more than 1.66 mean RR after the last beat) instead of re-scanning
  the past, so every beat is emitted ~200 ms after its R peak, never an RR interval later.
* The squared derivative is quantised to integers so the moving-window sum is exact: results are
  bit-identical whatever the chunking (floating-point running sums are not).

Input is in millivolts; beats are reported as the sample index of the R peak (largest band-passed
deflection, corrected for the band-pass group delay).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from dsp.filters import (
    History,
    SosFilterBank,
    check_sampling_rate,
    design_qrs_bandpass,
    group_delay_samples,
    windows,
)

# Derivative (mV/s) quantisation step 1/64 mV/s; clip keeps squares and 150 ms sums far inside int64.
_Q_PER_MV_PER_S = 64.0
_Q_MAX = 2**20
#: `_DecisionState.evaluation_due` when nothing is due before the next candidate
_NEVER = 2**62
#: the QRS shape is compared at this many detection samples of shift either way
_TEMPLATE_LAG = 2


#: beat class codes (`PanTompkinsBank.last_classes`); `BEAT_SYMBOLS` maps them to the
#: MIT-BIH/AAMI annotation symbols: normal, ventricular (wide against the patient's own
#: normal beats, or of another shape and not narrower), unclassifiable (no reference yet, or the signal is noisy)
BEAT_NORMAL, BEAT_VENTRICULAR, BEAT_UNCLASSIFIED = 0, 1, 2
BEAT_SYMBOLS = "NVQ"

#: a candidate's QRS window as the decision rules carry it: an int token (the candidate's place
#: in the arrays of the step that found it; the window is cut only if the candidate becomes a
#: beat, or is still held when the step ends) or the cut window, (2 * lag + 1, length) shifts
_Shape = int | np.ndarray
#: a beat as the decision rules pass it on: (R index, width index, premature, QRS window); the
#: bank classifies the beats of a step together once they are final (`PanTompkinsBank._classify`)
_Beat = tuple[int, float, bool, _Shape]


@dataclass(frozen=True)
class PanTompkinsParams:
    """Decision-rule parameters (times in seconds). Defaults follow the papers cited in `qrs`."""

    integration_window_s: float = 0.150
    dominance_window_s: float = 0.100
    #: how far ahead a candidate must dominate too; this is the decision latency after the MWI
    #: peak (the MWI peak itself trails the R peak by ~0.1 s)
    lookahead_s: float = 0.100
    refractory_s: float = 0.200
    t_wave_window_s: float = 0.360
    t_wave_slope_ratio: float = 0.5
    learning_s: float = 2.0
    #: PT uses 0.25 on MWI energy; on sqrt(MWI) amplitudes 0.3 (tuned on mitdb, robust 0.25-0.35)
    threshold_fraction: float = 0.3
    searchback_rr_factor: float = 1.66
    searchback_threshold_factor: float = 0.5
    rr_history: int = 8
    #: judge candidates by sqrt(MWI), an amplitude rather than an energy (halves dynamic range)
    amplitude_domain: bool = True
    #: after this long without a beat (or 2 mean RR, whichever is longer) the signal level
    #: halves every further second, so a lasting drop in QRS amplitude is re-learned
    relearn_after_s: float = 2.5
    #: smallest QRS slope treated as a beat, mV/s (a 0.1 mV QRS rising in ~25 ms gives ~4 mV/s;
    #: raising it to 2.5-3.5, about a 0.07-0.1 mV triangular QRS, lost 70 wide, low-slope PVCs
    #: of mitdb 207)
    min_slope_mv_per_s: float = 1.5
    #: decide a candidate early once the MWI has fallen this fraction below its peak (0: always
    #: wait the whole look-ahead)
    confirm_drop: float = 0.25
    #: ...but only when its level is at least this fraction of the signal level (a P wave or
    #: noise bump followed by the real QRS waits for the whole look-ahead and loses to it)
    early_level_fraction: float = 0.8
    #: ...and its steepest slope at least this fraction of the previous beat's
    early_slope_ratio: float = 0.85
    #: allow early decisions within the T-wave window of the previous beat
    early_in_t_wave_window: bool = False
    #: search back (Hamilton & Tompkins): once 1.66 mean RR pass without a beat, the largest
    #: candidate of that gap above half the threshold becomes a beat, reported then (up to
    #: ~1.66 RR late) rather than lost
    retro_searchback: bool = True
    #: ...but due at most this long after the last beat (before the 4 s asystole rule judges)
    searchback_max_s: float = 3.0
    #: run the detection stages at fs / floor(fs / this) (full rate below twice this)
    detection_rate_hz: float = 250.0
    #: a beat is *wide* when its width index (MWI / steepest squared slope: how long the steep
    #: part of the complex lasts) is at least this times the stream's normal width. mitdb
    #: medians: normal 9.6-11.4, PVCs 15.5-18.3 (x1.5-1.9); LBBB/RBBB beats are wide in
    #: absolute terms (18-20), so the reference is the patient's own normal beats
    wide_ratio: float = 1.25
    #: a beat whose steepest slope is below this fraction of the running mean slope of recent
    #: beats is *doubtful* (a large P wave, a noise bump, also a wide PVC): it is held for
    #: ``contest_window_s``, and a candidate in that time that is both larger and steeper
    #: replaces it (the P wave then was not a beat; the QRS it preceded is). 0: off
    contest_slope_ratio: float = 0.85
    #: how long a doubtful beat is held: a PR interval, up to first-degree AV block (mitdb 108:
    #: P waves 200-300 ms before the QRS)...
    contest_window_s: float = 0.3
    #: ...but never longer than this fraction of the mean RR (fast rhythms such as VT runs)
    contest_rr_fraction: float = 0.4
    #: a beat whose QRS shape (5-15 Hz band, ``template_window_s`` around the R peak) correlates
    #: less than this with the patient's normal template, and that is not narrower than the
    #: normal beats, is ventricular even if not wide (another activation sequence; mitdb PVCs:
    #: median -0.3 to -0.8, normal beats >= 0.93 for 90 %); -1 turns the criterion off
    template_mismatch: float = 0.3
    #: QRS window before and after the R peak (ends at the MWI peak at the latest: decided
    #: beats never wait for it)
    template_window_s: tuple[float, float] = (0.05, 0.07)
    #: a beat with RR below this fraction of the recent mean RR is premature: never learnt as
    #: the patient's normal beat (width reference, template)
    premature_ratio: float = 0.85
    #: a run of beats alternating ventricular / not ends at RR intervals differing by more
    #: than this factor (bigeminy's coupling interval and pause; bidirectional VT is steady)
    alternating_rr_ratio: float = 1.5


class _DecisionState:
    """Per-stream adaptive levels and recent beats (the sequential part of Pan-Tompkins).

    Candidates arrive as plain numbers (index, level, slope, R index): this runs a few times
    per second per stream, so it avoids allocating objects.
    """

    __slots__ = (
        "contest_slope_factor",
        "contest_window",
        "floor",
        "fs",
        "held_window",
        "initialized",
        "last_beat_index",
        "last_level",
        "last_slope_sq",
        "learning",
        "learning_end",
        "missed",
        "noise_level",
        "params",
        "pending",
        "refractory",
        "relearn_after",
        "rr_samples",
        "rr_sum",
        "searchback_max",
        "signal_level",
        "slope_level",
        "snapshot",
        "t_wave_slope_factor",
        "t_wave_window",
    )

    def __init__(self, params: PanTompkinsParams, fs: float, floor: float) -> None:
        self.params = params
        self.fs = fs
        self.floor = floor
        self.initialized = False
        self.learning: list[tuple[int, float, float, int, _Shape]] = []
        self.learning_end = int(round(params.learning_s * fs))
        self.signal_level = 0.0
        self.noise_level = 0.0
        self.last_beat_index = -1  # -1: no beat yet
        self.last_slope_sq = 0.0
        self.last_level = 0.0
        self.rr_samples: deque[int] = deque()
        self.rr_sum = 0
        self.refractory = params.refractory_s * fs
        self.t_wave_window = params.t_wave_window_s * fs
        self.t_wave_slope_factor = params.t_wave_slope_ratio**2
        self.relearn_after = params.relearn_after_s * fs
        #: a doubtful beat held for one refractory period: (index, level, slope_sq, r_index)
        self.pending: tuple[int, float, float, _Beat] | None = None
        self.snapshot: tuple[object, ...] = ()
        self.contest_window = params.contest_window_s * fs
        self.contest_slope_factor = params.contest_slope_ratio**2
        self.held_window = self.contest_window
        self.slope_level = 0.0  # running mean squared slope of beats
        #: the largest candidate rejected since the last beat (for the search-back)
        self.missed: tuple[int, float, float, int, _Shape] | None = None
        self.searchback_max = params.searchback_max_s * fs
    def _initialize(self) -> list[_Beat]:
        self.initialized = True
        peaks = [c[1] for c in self.learning]
        if peaks:
            self.signal_level = 0.5 * max(peaks)
            # np.median's value (sorted middle, or the mean of the two middle ones), without
            # its per-call overhead: a thousand streams end their learning period together
            ordered = sorted(peaks)
            mid = len(ordered) // 2
            median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
            self.noise_level = 0.5 * float(median)
        beats: list[_Beat] = []
        for cand in self.learning:
            beat = self._decide(*cand)
            if beat is not None:
                beats.append(beat)
        self.learning = []
        return beats

    def relearn(self, from_index: int) -> None:
        """Forget levels and recent beats; learn again from the candidates of the
        ``learning_s`` after ``from_index`` (as at the start of a stream)."""
        self.initialized = False
        self.learning = []
        self.learning_end = from_index + int(round(self.params.learning_s * self.fs))
        self.signal_level = self.noise_level = 0.0
        self.last_beat_index = -1
        self.last_slope_sq = self.last_level = 0.0
        self.rr_samples.clear()
        self.rr_sum = 0
        self.pending = None
        self.slope_level = 0.0
        self.missed = None

    def on_candidate(
        self, index: int, level: float, slope_sq: float, r_index: int, shape: _Shape
    ) -> list[_Beat]:
        """Judge one candidate (in stream order; ``shape``: its QRS window or a token for it,
        see `_Shape`); return the beats decided (final: not to be undone)."""
        if not self.initialized:
            if index < self.learning_end:
                self.learning.append((index, level, slope_sq, r_index, shape))
                return []
            beats = self._initialize()
            return beats + self._contested(index, level, slope_sq, r_index, shape)
        if self.missed is not None:
            due = self.searchback_due()
            if 0 <= due < index:
                found = self._searchback()
                return [found, *self._contested(index, level, slope_sq, r_index, shape)]
        if self.pending is None and self.params.contest_slope_ratio <= 0.0:
            beat = self._decide(index, level, slope_sq, r_index, shape)
            return [beat] if beat is not None else []
        return self._contested(index, level, slope_sq, r_index, shape)

    def evaluation_due(self) -> int:
        """The smallest ``last_evaluated`` at which `on_evaluated` of an initialised state emits
        something (``_NEVER``: not before the next candidate); it only reads state until then,
        so the bank skips the call below it."""
        held = self.pending
        if held is not None:
            return math.ceil(held[0] + self.held_window)  # on_evaluated's test, on integers
        due = self.searchback_due()
        return due if due >= 0 else _NEVER

    def needs_evaluation(self) -> bool:
        """Whether `on_evaluated` can emit something (a held beat, a search-back due)."""
        return self.pending is not None or self.missed is not None

    def _contested(
        self, index: int, level: float, slope_sq: float, r_index: int, shape: _Shape
    ) -> list[_Beat]:
        """`_decide` with the doubtful-beat rule (`PanTompkinsParams.contest_slope_ratio`):
        a held beat is replaced by a larger and steeper candidate within its refractory
        period, or emitted once a candidate arrives after that period (or `on_evaluated`
        passes it). Depends only on the order of candidates, so it is chunking-independent."""
        out: list[_Beat] = []
        held = self.pending
        if held is not None:
            self.pending = None
            if index - held[0] < self.held_window:
                if level > held[1] and slope_sq > held[2]:
                    self._restore()  # the held one was not a beat: forget it
                    self.noise_level = 0.125 * held[1] + 0.875 * self.noise_level
                else:
                    out.append(held[3])  # the held beat stands; this one is refractory
            else:
                out.append(held[3])
        mean_slope = self.slope_level
        doubtful = self.initialized and slope_sq < self.contest_slope_factor * mean_slope
        before = self._save() if doubtful else ()  # only what may be undone
        if doubtful:  # how long it can be replaced: fixed now, from the RR before it
            rr = self.rr_sum / len(self.rr_samples) if self.rr_samples else 0.0
            frac = self.params.contest_rr_fraction * rr
            self.held_window = min(self.contest_window, frac) if rr > 0.0 else self.contest_window
        beat = self._decide(index, level, slope_sq, r_index, shape)
        if beat is not None:
            if mean_slope == 0.0:
                self.slope_level = slope_sq
            else:
                self.slope_level = mean_slope + 0.125 * (slope_sq - mean_slope)
            if doubtful:
                self.pending = (index, level, slope_sq, beat)
                self.snapshot = before
            else:
                out.append(beat)
        return out

    def _save(self) -> tuple[object, ...]:
        return (
            self.signal_level, self.noise_level, self.last_beat_index, self.last_slope_sq,
            self.last_level, tuple(self.rr_samples), self.rr_sum, self.slope_level, self.missed,
        )

    def _restore(self) -> None:
        (
            self.signal_level, self.noise_level, self.last_beat_index, self.last_slope_sq,
            self.last_level, rr, self.rr_sum, self.slope_level, self.missed,
        ) = self.snapshot  # type: ignore[assignment]
        self.rr_samples = deque(rr)  # type: ignore[call-overload]

    def clearly_qrs(self, index: int, level: float, slope_sq: float) -> bool:
        """Whether a candidate can be accepted before its look-ahead ends: learning is over,
        it is outside the T-wave window, and both its level and its steepest slope are close
        to those of recent beats (P waves and baseline bumps are slower than a QRS)."""
        if not self.initialized:
            return False
        p = self.params
        if not p.early_in_t_wave_window:
            last = self.last_beat_index
            if last >= 0 and index - last < self.t_wave_window:
                return False
        return (
            level >= p.early_level_fraction * self.signal_level
            and slope_sq >= p.early_slope_ratio**2 * self.last_slope_sq
        )

    def on_evaluated(self, last_evaluated: int) -> list[_Beat]:
        """End the learning period once the evaluated samples pass it, even without candidates."""
        if not self.initialized and last_evaluated >= self.learning_end:
            return self._initialize()
        held = self.pending
        if held is not None and last_evaluated >= held[0] + self.held_window:
            self.pending = None  # no candidate came within its refractory period
            return [held[3]]
        if held is None and self.missed is not None:
            due = self.searchback_due()
            if 0 <= due <= last_evaluated:
                return [self._searchback()]
        return []

    def _decide(
        self, index: int, level: float, slope_sq: float, r_index: int, shape: _Shape
    ) -> _Beat | None:
        """Return the beat if the candidate is one, else None; update the levels."""
        p = self.params
        noise = self.noise_level
        signal_level = self.signal_level
        last = self.last_beat_index
        n_rr = len(self.rr_samples)
        if last >= 0:
            since = index - last
            if since < self.refractory:
                return None  # refractory: physiologically impossible, not even a noise sample
            threshold_scale = 1.0
            if n_rr:
                rr_mean = self.rr_sum / n_rr
                gap = max(self.relearn_after, 2.0 * rr_mean)
                if since > gap:  # depends only on elapsed samples, so it is chunking-independent
                    decay = 0.5 ** ((since - gap) / self.fs)
                    signal_level = max(5.0 * noise, signal_level * decay)
                if since > p.searchback_rr_factor * rr_mean:
                    threshold_scale = p.searchback_threshold_factor
            threshold = (noise + p.threshold_fraction * (signal_level - noise)) * threshold_scale
        else:
            since = -1
            threshold_scale = 1.0
            threshold = noise + p.threshold_fraction * (signal_level - noise)
        if level > threshold and level > self.floor:
            if (
                since >= 0
                and since < self.t_wave_window
                and slope_sq < self.t_wave_slope_factor * self.last_slope_sq
            ):  # a T wave. Also requiring a level below the last beat's (to keep wide early
                # PVCs) double-counted EC13's 1.2 mV T waves and changed one mitdb beat: not kept
                self.noise_level = 0.125 * level + 0.875 * noise
                return None  # T wave
            weight = 0.25 if threshold_scale != 1.0 else 0.125
            return self._accept(index, level, slope_sq, r_index, shape, weight, signal_level)
        self.noise_level = 0.125 * level + 0.875 * noise
        if (
            p.retro_searchback
            and threshold_scale == 1.0
            and since >= self.t_wave_window
            and level > p.searchback_threshold_factor * threshold
            and level > self.floor
            and (self.missed is None or level > self.missed[1])
        ):  # the largest candidate since the last beat, for a later search-back
            self.missed = (index, level, slope_sq, r_index, shape)
        return None

    def _accept(
        self, index: int, level: float, slope_sq: float, r_index: int, shape: _Shape,
        weight: float, signal_level: float,
    ) -> _Beat:
        """Record a beat: signal level, RR history, last beat. Returns it as `_Beat` (its
        class is the bank's work once the beat is final)."""
        self.signal_level = weight * level + (1.0 - weight) * signal_level
        last = self.last_beat_index
        premature = False
        if last >= 0:
            since = index - last
            n_rr = len(self.rr_samples)
            # early against the recent mean RR: a premature beat (a PVC, an APC) is never
            # learnt as the patient's normal beat, however normal it looks
            premature = bool(n_rr) and since * n_rr < self.params.premature_ratio * self.rr_sum
            self.rr_samples.append(since)
            self.rr_sum += since
            if len(self.rr_samples) > self.params.rr_history:
                self.rr_sum -= self.rr_samples.popleft()
        self.last_beat_index = index
        self.last_slope_sq = slope_sq
        self.last_level = level
        self.missed = None
        energy = level * level if self.params.amplitude_domain else level
        return (r_index, energy / max(slope_sq, 1.0), premature, shape)

    def searchback_due(self) -> int:
        """Sample index from which a search-back is due (-1: nothing to search back for)."""
        if self.missed is None or not self.rr_samples:
            return -1
        rr_mean = self.rr_sum / len(self.rr_samples)
        wait = min(self.params.searchback_rr_factor * rr_mean, self.searchback_max)
        return self.last_beat_index + int(wait)

    def _searchback(self) -> _Beat:
        """Hamilton-Tompkins search-back: no beat for 1.66 mean RR, so the largest candidate
        of that gap (above half the threshold, outside the T-wave window) was a beat."""
        cand = self.missed
        self.missed = None
        assert cand is not None
        index, level, slope_sq, r_index, shape = cand
        return self._accept(index, level, slope_sq, r_index, shape, 0.25, self.signal_level)


class PanTompkinsBank:
    """Pan-Tompkins QRS detectors for many streams sharing one sampling rate.

    Rows are streams in the order they were added. ``process`` takes a block
    (n_rows, n_samples) in millivolts for all rows or a subset (``rows``), and returns, per row,
    the R-peak sample indices (counted from each stream's first sample) of the beats decided
    by this block, in order. A candidate MWI peak is decided as soon as the MWI has fallen
    clearly below it (``confirm_drop``) or after ``lookahead_s`` without a higher value, so a
    beat is reported by the first call whose block reaches that sample.
    """

    def __init__(self, sampling_rate_hz: float, params: PanTompkinsParams | None = None) -> None:
        self.fs = check_sampling_rate(sampling_rate_hz)
        self.params = params or PanTompkinsParams()
        p = self.params
        #: the derivative/MWI/candidate stages run on every ``decimation``-th band-passed sample
        #: (absolute index multiple of it): 5-15 Hz energy needs no more than ~250 Hz, and the
        #: band-pass, run at the full rate, is the anti-alias filter. R peaks are located on the
        #: full-rate band-passed signal.
        self.decimation = max(1, int(self.fs // p.detection_rate_hz))
        self.fs_detect = self.fs / self.decimation
        fd, dec = self.fs_detect, self.decimation
        self.window = max(2, int(round(p.integration_window_s * fd)))  # detection-rate samples
        self.half_dominance = max(2, int(round(p.dominance_window_s * fd)))
        self.lookahead = max(1, min(self.half_dominance, int(round(p.lookahead_s * fd))))
        self.learning_end = int(round(p.learning_s * self.fs))
        sos = design_qrs_bandpass(self.fs)
        # the R peak is where |band-pass| peaks, minus the band-pass group delay (full rate)
        self.bandpass_delay = int(round(group_delay_samples(sos, 10.0, self.fs)))
        w, k, la = self.window, self.half_dominance, self.lookahead
        # QRS shape window (detection samples): before / after the R peak
        self._tmpl_before = max(1, int(round(p.template_window_s[0] * fd)))
        self._tmpl_after = max(1, int(round(p.template_window_s[1] * fd)))
        self._tmpl_len = self._tmpl_before + self._tmpl_after
        # full-rate band-pass history: R search reaches (la + w + 2) detection samples back,
        # the shape window (w + la + 3 + its length and lags) at most
        self.history_length = max(w + k + la + 8,
                                  w + la + 4 + self._tmpl_len + 2 * _TEMPLATE_LAG) * dec
        q_floor = p.min_slope_mv_per_s * _Q_PER_MV_PER_S
        self.floor = float(q_floor * q_floor * self.window) * 0.25
        self._decision_floor = float(np.sqrt(self.floor)) if p.amplitude_domain else self.floor
        self._deriv_scale = fd / 8.0 * _Q_PER_MV_PER_S
        self._bandpass = SosFilterBank(sos)
        self._bp_hist = History(self.history_length)  # full rate
        self._bpd_hist = History(4)  # detection rate, for the 5-point derivative
        self._sq_hist = History(w + la + 4, np.int64)  # detection rate
        self._mwi_hist = History(k + la, np.int64)  # detection rate
        self._left = np.arange(-k, 0)[None, :]
        self._ahead = np.arange(1, la + 1)[None, :]
        self._win = np.arange(-w + 1, 1)[None, :]
        self._r_win = np.arange(-(w * dec) + 1, 1)[None, :]
        self._probe = sorted({k, max(1, k // 2), max(1, k // 4), max(1, k // 8), 2})[::-1]
        self._seen = np.zeros(0, dtype=np.int64)
        #: absolute (full-rate) index of the newest candidate handed to the decision rules
        self._last_candidate = np.zeros(0, dtype=np.int64)
        #: per row: wide-beat run length, R peaks of its first and last beats (see wide_runs)
        self._wide = np.zeros((0, 6), dtype=np.int64)
        # beat-class state per row (see `_classify`): normal width reference (0: none yet),
        # beats classified, normal QRS template (unit vector), whether there is one, class of
        # the last classified beat, shortest and longest RR of the alternating run
        self._wide_ref = np.zeros(0)
        self._widths_seen = np.zeros(0, dtype=np.int64)
        self._tmpl = np.zeros((0, self._tmpl_len))
        self._has_tmpl = np.zeros(0, dtype=bool)
        self._last_v = np.zeros(0, dtype=bool)
        self._alt_rr = np.zeros((0, 2), dtype=np.int64)
        self._states: list[_DecisionState] = []
        #: rows holding a doubtful beat (see `PanTompkinsParams.contest_slope_ratio`)
        self._held: set[int] = set()
        #: per row: `_DecisionState.evaluation_due` of a held row (rows not held: unused)
        self._due = np.zeros(0, dtype=np.int64)
        self._all_ready = True
        #: token of the first candidate of the next step (see `_Shape`)
        self._token_base = 0
        #: the 5-15 Hz band-passed block of the last `process` call, (n_rows, n) millivolts
        self.last_bandpassed = np.zeros((0, 0))
        #: class code (`BEAT_NORMAL`...) of each beat `process_flat` returned last, same order
        self.last_classes = np.zeros(0, np.uint8)

    @property
    def n_streams(self) -> int:
        """Number of streams (rows) in the bank."""
        return len(self._states)

    @property
    def samples_seen(self) -> np.ndarray:
        """Samples processed so far per row, shape (n_streams,), int64."""
        return self._seen

    def add_stream(self) -> int:
        """Add a stream; return its row."""
        self._bandpass.add_streams(1)
        self._bp_hist.add_streams(1)
        self._bpd_hist.add_streams(1)
        self._sq_hist.add_streams(1)
        self._mwi_hist.add_streams(1)
        self._seen = np.append(self._seen, 0)
        self._last_candidate = np.append(self._last_candidate, -(2**62))
        self._wide = np.concatenate([self._wide,
                                     np.array([[0, -1, -1, 0, -1, -1]], dtype=np.int64)])
        self._due = np.append(self._due, _NEVER)
        self._wide_ref = np.append(self._wide_ref, 0.0)
        self._widths_seen = np.append(self._widths_seen, 0)
        self._tmpl = np.concatenate([self._tmpl, np.zeros((1, self._tmpl_len))])
        self._has_tmpl = np.append(self._has_tmpl, False)
        self._last_v = np.append(self._last_v, False)
        self._alt_rr = np.concatenate([self._alt_rr, np.zeros((1, 2), np.int64)])
        self._states.append(_DecisionState(self.params, self.fs, self._decision_floor))
        self._all_ready = False
        return len(self._states) - 1

    def remove_stream(self, row: int) -> None:
        """Remove one stream; rows after it shift down by one."""
        self._bandpass.remove_stream(row)
        self._bp_hist.remove_stream(row)
        self._bpd_hist.remove_stream(row)
        self._sq_hist.remove_stream(row)
        self._mwi_hist.remove_stream(row)
        self._seen = np.delete(self._seen, row)
        self._last_candidate = np.delete(self._last_candidate, row)
        self._wide = np.delete(self._wide, row, axis=0)
        self._due = np.delete(self._due, row)
        self._wide_ref = np.delete(self._wide_ref, row)
        self._widths_seen = np.delete(self._widths_seen, row)
        self._tmpl = np.delete(self._tmpl, row, axis=0)
        self._has_tmpl = np.delete(self._has_tmpl, row)
        self._last_v = np.delete(self._last_v, row)
        self._alt_rr = np.delete(self._alt_rr, row, axis=0)
        del self._states[row]
        self._held = {r - (r > row) for r in self._held if r != row}

    def relearn(self, rows: np.ndarray) -> None:
        """Re-learn the adaptive levels of ``rows`` from their next samples on.

        For the end of a technical condition: during a noise burst the levels adapt to the
        noise, and afterwards the threshold can stay above every real QRS for a minute. The
        analyzer calls this when the signal becomes analysable again; the decision rules then
        start over as at the beginning of a stream (beats are decided ~2 s late once).
        """
        for row in np.asarray(rows).tolist():
            self._states[row].relearn(int(self._seen[row]))
            self._wide[row] = (0, -1, -1, 0, -1, -1)
            self._wide_ref[row] = 0.0
            self._widths_seen[row] = 0
            self._has_tmpl[row] = False
            self._last_v[row] = False
            self._alt_rr[row] = 0
            self._held.discard(row)
        if len(rows):
            self._all_ready = False

    def wide_runs(self, rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows``: (consecutive wide beats up to the last beat, R peak of the run's
        first beat, R peak of its last beat; -1: none), shape (len(rows), 3), int64."""
        return self._wide[rows, :3]

    def alternating_runs(self, rows: np.ndarray) -> np.ndarray:
        """Per row of ``rows``: (beats alternating ventricular / not at a steady rate up to
        the last classified beat, R peak of the first, R peak of the last; -1: none), shape
        (len(rows), 3), int64 (see `_DecisionState._on_class`)."""
        return self._wide[rows, 3:]

    @property
    def decision_delay_samples(self) -> int:
        """Upper bound on how far behind the newest sample a beat's R peak can be undecided."""
        p = self.params
        held = int(round(p.contest_window_s * self.fs)) if p.contest_slope_ratio > 0 else 0
        return (self.window + self.lookahead + 8) * self.decimation + self.bandpass_delay + held

    def signal_noise_levels(self, row: int) -> tuple[float, float]:
        """Current adaptive (signal, noise) MWI peak levels of one stream (arbitrary units)."""
        s = self._states[row]
        return s.signal_level, s.noise_level

    def process(self, x_mv: np.ndarray, rows: np.ndarray | None = None) -> list[list[int]]:
        """Feed the next samples of every row (or of ``rows``); return beats decided, per row.

        Args:
            x_mv: shape (n_rows, n_samples), millivolts, finite.
            rows: row indices of the streams in ``x_mv``'s rows (None: all rows, in order).
        Returns:
            One list per input row of R-peak sample indices (ints, ascending).
        """
        positions, indices = self.process_flat(x_mv, rows)
        out: list[list[int]] = [[] for _ in range(np.shape(x_mv)[0])]
        for r, i in zip(positions.tolist(), indices.tolist(), strict=False):
            out[r].append(i)
        return out

    def process_flat(
        self, x_mv: np.ndarray, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like `process`, but beats as two flat int64 arrays (cheaper for many streams).

        Returns:
            (position of the row in ``x_mv``, R-peak sample index), one entry per beat, sorted
            by position then index.
        """
        x = np.asarray(x_mv, dtype=np.float64)
        row_ids = np.arange(self.n_streams) if rows is None else np.asarray(rows)
        if x.ndim != 2 or x.shape[0] != row_ids.shape[0]:
            raise ValueError(f"expected a block of shape ({row_ids.shape[0]}, n), got {x.shape}")
        n = x.shape[1]
        if n == 0:
            self.last_bandpassed = np.zeros((row_ids.size, 0))
            self.last_classes = np.zeros(0, np.uint8)
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        sel = None if rows is None else row_ids
        dec = self.decimation
        seen_before = self._seen[row_ids]
        bp = self._bandpass.process(x, sel)
        self.last_bandpassed = bp  # shared with the signal-quality checks (same block)
        bp_ext = self._bp_hist.extend(bp, sel)  # (R, hist + n), full rate
        if dec == 1:
            found = [self._scan(np.arange(row_ids.size), row_ids, sel, bp, bp_ext, seen_before)]
        else:  # rows whose next multiple of `dec` sits at the same offset share one pass
            offset = (-seen_before) % dec
            same = offset.size == 0 or bool((offset == offset[0]).all())
            phases = offset[:1] if same else np.unique(offset)  # (np.unique costs ~30 us)
            found = []
            for o in phases.tolist():
                if o >= n:
                    continue
                if phases.size == 1:  # the usual case: views, no gathered copies of the block
                    found.append(self._scan(np.arange(row_ids.size), row_ids, sel,
                                            bp[:, o::dec], bp_ext, seen_before))
                    continue
                pos = np.flatnonzero(offset == o)
                found.append(
                    self._scan(pos, row_ids[pos], row_ids[pos], bp[pos, o::dec], bp_ext[pos],
                               seen_before[pos])
                )
        cand_pos = np.concatenate([f[0] for f in found]) if found else np.zeros(0, np.int64)
        # the beats decided, in the order they became final (per row, the order of `_classify`)
        pos_list: list[int] = []
        brows: list[int] = []
        blist: list[_Beat] = []
        # candidates carry a token, not their QRS window (see `_Shape`): token - base is their
        # place in this step's arrays; windows are cut for the beats and the survivors only
        base = self._token_base
        starts = np.zeros(0, np.int64)
        taken: dict[int, int] = {}
        due_at: dict[int, int] = {}
        learning = not self._all_ready
        if cand_pos.size:
            if len(found) == 1:
                _, abs_peak, levels, slope_sq, abs_r, early, starts = found[0]
            else:
                abs_peak, levels, slope_sq, abs_r, early, starts = (
                    np.concatenate([f[i] for f in found]) for i in range(1, 7)
                )
                order = np.lexsort((abs_peak, cand_pos))
                cand_pos, abs_peak, levels, slope_sq, abs_r, early, starts = (
                    cand_pos[order], abs_peak[order], levels[order], slope_sq[order],
                    abs_r[order], early[order], starts[order],
                )
            self._token_base = base + cand_pos.size
            states = self._states
            held = self._held
            # per-row updates are collected in dicts (the last per row wins, as candidates come
            # in stream order) and written to the arrays once: numpy item writes cost more
            for r, row, a, pk, sl, rr, ea, tok in zip(
                cand_pos.tolist(),
                row_ids[cand_pos].tolist(),
                abs_peak.tolist(),
                levels.tolist(),
                slope_sq.astype(np.float64).tolist(),  # exact: squares stay below 2**41
                abs_r.tolist(),
                early.tolist(),
                range(base, base + cand_pos.size), strict=False,
            ):
                state = states[row]
                if ea and not state.clearly_qrs(a, pk, sl):
                    continue  # wait for the whole look-ahead (judged again next call)
                taken[row] = a
                beats = state.on_candidate(a, pk, sl, rr, tok)
                if state.pending is not None or state.missed is not None:
                    held.add(row)
                    due_at[row] = state.evaluation_due()
                elif held:
                    held.discard(row)
                if beats:
                    n_b = len(beats)
                    pos_list.extend([r] * n_b if n_b > 1 else (r,))
                    brows.extend([row] * n_b if n_b > 1 else (row,))
                    blist.extend(beats)
            if taken:
                self._last_candidate[list(taken)] = list(taken.values())
            if due_at:
                self._due[list(due_at)] = list(due_at.values())
        self._seen[row_ids] = seen_before + n
        all_ready = self._all_initialized(row_ids)
        extra = False
        if not all_ready or self._held:
            last_evaluated = seen_before + n - 1 - self.lookahead * dec
            if all_ready:  # only held rows whose hold or search-back is due by now
                held_rows = np.fromiter(self._held, np.int64, len(self._held))
                if rows is None:  # position = row
                    held_pos = held_rows
                else:
                    at = np.full(self.n_streams, -1, np.int64)
                    at[row_ids] = np.arange(row_ids.size)
                    held_pos = at[held_rows]
                    held_rows, held_pos = held_rows[held_pos >= 0], held_pos[held_pos >= 0]
                ripe = self._due[held_rows] <= last_evaluated[held_pos]
                todo = list(zip(held_pos[ripe].tolist(), held_rows[ripe].tolist(), strict=True))
            else:
                todo = list(enumerate(row_ids.tolist()))
            for r, row in todo:
                state = self._states[row]
                if not state.initialized or state.needs_evaluation():
                    beats = state.on_evaluated(int(last_evaluated[r]))
                    if not state.needs_evaluation():
                        self._held.discard(row)
                    elif state.initialized:
                        self._due[row] = state.evaluation_due()
                    if beats:
                        extra = True
                        pos_list.extend([r] * len(beats))
                        brows.extend([row] * len(beats))
                        blist.extend(beats)
        if taken and (due_at or learning):  # candidates kept past this step get their windows
            self._keep_windows(list(due_at) + (list(taken) if learning else []), bp_ext,
                               cand_pos, starts, base)
        if not blist:
            self.last_classes = np.zeros(0, np.uint8)
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos_out = np.asarray(pos_list, dtype=np.int64)
        n_beats = len(blist)
        r_list, widths, prems, toks = zip(*blist, strict=True)
        r_peaks = np.fromiter(r_list, np.int64, n_beats)
        shapes = self._beat_windows(toks, bp_ext, cand_pos, starts, base)
        classes = self._classify(brows, r_peaks, np.fromiter(widths, np.float64, n_beats),
                                 np.fromiter(prems, bool, n_beats), shapes)
        if extra:  # beats of the loop and of the evaluations: by row, then R peak (and class)
            code = (r_peaks << 2) | classes
            order = np.lexsort((code, pos_out))
            pos_out, r_peaks, classes = pos_out[order], r_peaks[order], classes[order]
        self.last_classes = classes.astype(np.uint8)
        return pos_out, r_peaks

    def _beat_windows(
        self, toks: tuple[_Shape, ...], bp_ext: np.ndarray, cand_pos: np.ndarray,
        starts: np.ndarray, base: int,
    ) -> np.ndarray:
        """The QRS windows (n, 2 * lag + 1, length) of beats whose windows are ``toks``: cut
        from ``bp_ext`` for the candidates of this step (tokens), copied for those kept from
        earlier steps."""
        if set(map(type, toks)) == {int}:
            k = np.fromiter(toks, np.int64, len(toks)) - base
            if k.min() < 0 or k.max() >= cand_pos.size:  # a token of an earlier step: a bug
                raise RuntimeError("QRS window token outlived its step")
            return self._cut(bp_ext, cand_pos[k], starts[k])
        out = np.empty((len(toks), 2 * _TEMPLATE_LAG + 1, self._tmpl_len))
        mine = [i for i, t in enumerate(toks) if type(t) is int]
        if mine:
            k = np.array([toks[i] for i in mine], np.int64) - base
            if k.min() < 0 or k.max() >= cand_pos.size:
                raise RuntimeError("QRS window token outlived its step")
            out[mine] = self._cut(bp_ext, cand_pos[k], starts[k])
        old = [i for i, t in enumerate(toks) if type(t) is not int]
        out[old] = np.array([toks[i] for i in old])
        return out

    def _keep_windows(
        self, rows: list[int], bp_ext: np.ndarray, cand_pos: np.ndarray, starts: np.ndarray,
        base: int,
    ) -> None:
        """Replace the tokens of this step's candidates that ``rows``' decision states keep
        past the step (a held doubtful beat, the search-back candidate, its snapshot, the
        learning period's candidates) by their cut windows (the step's arrays go)."""
        n = cand_pos.size
        found: list[tuple[_DecisionState, str, int, int]] = []
        for row in set(rows):
            st = self._states[row]
            held = st.pending
            if held is not None:
                tok = held[3][3]
                if type(tok) is int and 0 <= tok - base < n:
                    found.append((st, "pending", 0, tok))
                saved = st.snapshot[8] if st.snapshot else None  # the missed candidate then
                if isinstance(saved, tuple) and type(saved[4]) is int and 0 <= saved[4] - base < n:
                    found.append((st, "snapshot", 0, saved[4]))
            missed = st.missed
            if missed is not None and type(missed[4]) is int and 0 <= missed[4] - base < n:
                found.append((st, "missed", 0, missed[4]))
            for i, cand in enumerate(st.learning):
                if type(cand[4]) is int and 0 <= cand[4] - base < n:
                    found.append((st, "learning", i, cand[4]))
        if not found:
            return
        k = np.array([f[3] for f in found], np.int64) - base
        cut = self._cut(bp_ext, cand_pos[k], starts[k])
        for (st, what, i, _), window in zip(found, cut, strict=True):
            if what == "pending":
                idx, lvl, sl, (r, wd, prem, _) = st.pending  # type: ignore[misc]
                st.pending = (idx, lvl, sl, (r, wd, prem, window))
            elif what == "missed":
                st.missed = (*st.missed[:4], window)  # type: ignore[index]
            elif what == "snapshot":
                snap = st.snapshot
                st.snapshot = (*snap[:8], (*snap[8][:4], window))  # type: ignore[index]
            else:
                st.learning[i] = (*st.learning[i][:4], window)

    def _scan(
        self,
        pos: np.ndarray,
        row_ids: np.ndarray,
        sel: np.ndarray | None,
        bpd: np.ndarray,
        bp_ext: np.ndarray,
        seen_before: np.ndarray,
    ) -> tuple[np.ndarray, ...]:
        """Derivative, squaring, MWI and candidate search on detection-rate samples ``bpd``
        (R, nd) of ``row_ids`` (``sel``: the same, or None for all rows in order).

        Returns the candidates that may be decided now as arrays: (position in the block,
        absolute MWI peak index, level, max squared slope, absolute R-peak index, early, start
        column of the QRS window in ``bp_ext`` (`_shape_starts`)), indices at the full rate; ``early`` ones (look-ahead not passed)
        are decided only if clearly a QRS (see `_confirm`).
        """
        dec = self.decimation
        w, k, la = self.window, self.half_dominance, self.lookahead
        nd = bpd.shape[1]
        empty = np.zeros(0, np.int64)
        if nd == 0:
            return empty, empty, np.zeros(0), empty, empty, np.zeros(0, bool), empty
        sqh = self._sq_hist.length
        b = self._bpd_hist.extend(bpd, sel)  # (R, 4 + nd)
        deriv = b[:, 4:] - b[:, :-4]
        deriv *= 2.0
        deriv += b[:, 3:-1]
        deriv -= b[:, 1:-3]
        deriv *= self._deriv_scale
        np.rint(deriv, out=deriv)
        np.clip(deriv, -_Q_MAX, _Q_MAX, out=deriv)
        q = deriv.astype(np.int64)
        np.multiply(q, q, out=q)
        sq_ext = self._sq_hist.extend(q, sel)  # (R, sqh + nd)
        cs = np.cumsum(sq_ext[:, sqh - w :], axis=1)
        mwi = cs[:, w:] - cs[:, :-w]  # sum of the w squared samples ending at each new sample
        # m: (R, h + nd); column j is detection sample seen_d - h + j. Columns k .. h + nd - 2
        # are judged (k samples behind, at least one ahead); candidates already handed to the
        # decision rules in an earlier call are skipped below.
        h = k + la
        m = self._mwi_hist.extend(mwi, sel)
        width = h + nd
        # absolute full-rate index of m's column 0 (detection samples sit on multiples of dec)
        seen_d = -(-seen_before // dec)
        base = (seen_d - h) * dec
        cand_rows, cols = self._block_records(m[:, k : width - 1], m[:, k + 1 : width])
        j = cols + k
        if cand_rows.size:
            keep = m[cand_rows, j] > m[cand_rows, j - 1]
            cand_rows, j = cand_rows[keep], j[keep]
        if cand_rows.size:
            abs_peak = base[cand_rows] + j * dec
            fresh = abs_peak > self._last_candidate[row_ids[cand_rows]]
            cand_rows, j, abs_peak = cand_rows[fresh], j[fresh], abs_peak[fresh]
        if cand_rows.size:
            peaks = m[cand_rows, j]
            # most local maxima are ripples: a few strided looks back reject them cheaply
            for d in self._probe:
                keep = peaks > m[cand_rows, j - d]
                cand_rows, j, abs_peak, peaks = (
                    cand_rows[keep], j[keep], abs_peak[keep], peaks[keep]
                )
            # windows gathered as rows of a sliding view: a strided copy per candidate, not
            # one index computation per element (same values)
            left = windows(m, k)[cand_rows, j - k].max(axis=1)
            keep = peaks > left
            cand_rows, j, abs_peak, peaks = cand_rows[keep], j[keep], abs_peak[keep], peaks[keep]
        if cand_rows.size:
            full, early = self._confirm(m, cand_rows, j, peaks, width)
            decided = full | early
            cand_rows, j, abs_peak, peaks, full = (
                cand_rows[decided], j[decided], abs_peak[decided], peaks[decided], full[decided]
            )
        if cand_rows.size == 0:
            return empty, empty, np.zeros(0), empty, empty, np.zeros(0, bool), empty
        levels = np.sqrt(peaks) if self.params.amplitude_domain else peaks.astype(np.float64)
        sq_idx = j - h + sqh  # same detection sample, in sq_ext columns
        slope_sq = windows(sq_ext, w)[cand_rows, sq_idx - w + 1].max(axis=1)
        # R peak: largest |band-pass| over the integration window that ends where the
        # derivative (2 detection samples of delay) saw the MWI peak, at the full rate
        hist = self._bp_hist.length
        end_col = abs_peak - 2 * dec - (seen_before[cand_rows] - hist)  # bp_ext column
        bp_win = np.abs(windows(bp_ext, w * dec)[cand_rows, end_col - w * dec + 1])
        r_col = end_col + self._r_win[0, 0] + np.argmax(bp_win, axis=1) - self.bandpass_delay
        abs_r = np.maximum(seen_before[cand_rows] - hist + r_col, 0)
        starts = self._shape_starts(end_col, r_col)
        return pos[cand_rows], abs_peak, levels, slope_sq, abs_r, ~full, starts

    def _shape_starts(self, end_col: np.ndarray, r_col: np.ndarray) -> np.ndarray:
        """The ``bp_ext`` column where each candidate's QRS window for the template match
        starts (see `_cut`): the band-passed signal at the detection rate from
        ``template_window_s[0]`` before the R peak, ``lag`` detection samples more either side.

        The windows end at the MWI peak at the latest (a wide complex's R peak can be late in
        its integration window), so every sample is there whenever the candidate is decided:
        the shape does not depend on chunking."""
        dec, lag, length = self.decimation, _TEMPLATE_LAG, self._tmpl_len
        peak_col = r_col + self.bandpass_delay  # bp_ext column of the |band-pass| maximum
        end = np.minimum(peak_col + (self._tmpl_after + lag) * dec, end_col + 2 * dec + 1)
        return end - (length + 2 * lag) * dec

    def _cut(self, bp_ext: np.ndarray, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The QRS windows starting at ``bp_ext[rows, starts]`` at their ``2 * lag + 1`` shifts,
        (n, 2 * lag + 1, length), a fresh contiguous array: one strided gather from a view
        whose [r, c, shift, k] is ``bp_ext[r, c + (shift + k) * decimation]``."""
        dec, lag, length = self.decimation, _TEMPLATE_LAG, self._tmpl_len
        r, c = bp_ext.shape
        s0, s1 = bp_ext.strides
        reach = (2 * lag + length - 1) * dec
        view = np.lib.stride_tricks.as_strided(
            bp_ext, (r, c - reach, 2 * lag + 1, length), (s0, s1, dec * s1, dec * s1),
            writeable=False,
        )
        return view[rows, starts]

    def _normalised(self, x: np.ndarray) -> np.ndarray:
        """QRS windows ``x`` (n, 2 * lag + 1, length) of `_cut`, each shift with its mean
        removed and scaled to unit norm, in place; only for the beats a step classifies
        (candidates outnumber beats ~1.7 to 1)."""
        # the same values as ``x - x.mean(...)`` and a division by ``np.where(norm > 0, norm,
        # 1)``, with fewer passes
        mean = x.sum(axis=2)
        mean /= self._tmpl_len
        x -= mean[:, :, None]
        norm = np.sqrt(np.einsum("ijk,ijk->ij", x, x))
        norm[norm <= 0.0] = 1.0
        x /= norm[:, :, None]
        return x

    def _classify(
        self, rows: list[int], r_peaks: np.ndarray, width: np.ndarray, premature: np.ndarray,
        windows_: np.ndarray,
    ) -> np.ndarray:
        """Class codes of the beats a step made final (``rows[i]``: the row of beat i, each
        row's beats in the order they became final; R peak, width index, premature, QRS
        windows of `_cut`), updating the rows' class state and
        run table. The j-th beats of all rows are classified in one numpy pass (`_classify_rows`),
        j = 0, 1, ...: a row's classes depend only on its own earlier beats, and the arithmetic
        per row is the same whatever else is in the pass, so classes do not depend on chunking."""
        n = len(rows)
        if len(set(rows)) == n:  # the usual case: at most one beat per row in a step
            groups = [np.arange(n)]
        else:
            count: dict[int, int] = {}
            rank = np.empty(n, np.int64)
            for i, row in enumerate(rows):
                rank[i] = count.get(row, 0)
                count[row] = rank[i] + 1
            groups = [np.flatnonzero(rank == j) for j in range(int(rank.max()) + 1)]
        row_arr = np.fromiter(rows, np.int64, n)
        shapes = self._normalised(windows_)
        if len(groups) == 1:
            return self._classify_rows(row_arr, r_peaks, width, premature, shapes)
        classes = np.empty(n, np.int64)
        for g in groups:
            classes[g] = self._classify_rows(row_arr[g], r_peaks[g], width[g], premature[g],
                                             shapes[g])
        return classes

    def _classify_rows(
        self, rows: np.ndarray, r_peaks: np.ndarray, width: np.ndarray, premature: np.ndarray,
        shapes: np.ndarray,
    ) -> np.ndarray:
        """Classify one beat of each of ``rows`` (distinct) against the patient's own normal
        beats and track runs; return the class codes.

        A beat is ventricular when it is *wide* (width index, MWI / steepest squared slope, at
        least ``wide_ratio`` x the normal width) or its QRS shape does not match the normal
        template (best correlation over +-2 detection samples below ``template_mismatch``:
        another activation sequence, e.g. the opposite polarity of bidirectional VT) and it is
        not narrower than the normal ones (a narrow complex of another shape is an axis shift,
        aberration or noise). The width reference and the template are learnt from the first
        8 beats (`BEAT_UNCLASSIFIED`), then only from beats that are normal *by rhythm context*
        (not premature, see ``premature_ratio``) and classed normal: a premature beat that
        looks normal (frequent narrow-ish PVCs, mitdb 223) does not pull the reference towards
        its width. Ventricular beats that are not premature pull both slowly (a lasting
        bundle-branch block or a new dominant rhythm is re-learnt within ~100 beats; a VT run
        does not become the reference). Runs: consecutive ventricular beats, and beats
        alternating ventricular / not at a steady rate (bidirectional VT; bigeminy's coupling
        interval and pause differ by more than ``alternating_rr_ratio`` and end the run).

        The correlation is a batched matmul (one BLAS product per row, bit-identical to a
        per-row ``shape @ template``), the template update elementwise per row."""
        p = self.params
        n = rows.size
        at = np.arange(n)
        ref = self._wide_ref[rows]
        seen = self._widths_seen[rows] + 1
        self._widths_seen[rows] = seen
        has = self._has_tmpl[rows]
        tmpl = self._tmpl[rows]
        scores = np.matmul(shapes, tmpl[:, :, None])[:, :, 0]
        best = scores.argmax(axis=1)
        corr = scores[at, best]
        best_shape = shapes[at, best]
        learning = seen <= 8
        classed = ~learning
        corr_c = np.where(has, corr, 1.0)
        wide = classed & (width >= p.wide_ratio * ref)
        mismatch = classed & (corr_c < p.template_mismatch) & (width >= ref)
        vent = wide | mismatch
        normal = classed & ~vent
        learnt = ~premature
        # width reference
        new_ref = np.where(learning, np.where(ref == 0.0, width, np.minimum(ref, width)), ref)
        new_ref = np.where(vent & learnt & wide, ref + 0.005 * (width - ref), new_ref)
        new_ref = np.where(normal & learnt, ref + 0.1 * (width - ref), new_ref)
        self._wide_ref[rows] = new_ref
        # template: the first learning beat's middle window, then moved towards the best-aligned
        weight = np.where(learning, 0.25, np.where(vent, np.where(mismatch, 1.0 / 64.0, 0.0),
                                                   0.125))
        weight = np.where(has & (learning | learnt), weight, 0.0)
        move = weight > 0.0
        if move.any():
            w = weight[move]
            c = corr[move]
            keep = 1.0 - w
            norm = np.sqrt(np.maximum(keep * keep + 2.0 * w * keep * c + w * w, 0.0))
            ok = norm > 1e-12
            safe = np.where(ok, norm, 1.0)[:, None]
            moved = tmpl[move] * (keep[:, None] / safe) + best_shape[move] * (w[:, None] / safe)
            self._tmpl[rows[move][ok]] = moved[ok]
        first = learning & ~has
        if first.any():
            self._tmpl[rows[first]] = shapes[first, shapes.shape[1] // 2]
            self._has_tmpl[rows[first]] = True
        # runs (classified beats only)
        if classed.any():
            cr = rows[classed]
            r = r_peaks[classed]
            v = vent[classed]
            runs = self._wide[cr]
            run = runs[:, 0]
            runs[:, 1] = np.where(v & (run == 0), r, runs[:, 1])
            runs[:, 0] = np.where(v, run + 1, 0)
            runs[:, 2] = np.where(v, r, runs[:, 2])
            last_r = runs[:, 5]
            restart = (last_r < 0) | (v == self._last_v[cr])
            rr = r - last_r
            lo, hi = self._alt_rr[cr].T
            lo2 = np.where(lo == 0, rr, np.minimum(lo, rr))
            hi2 = np.where(lo == 0, rr, np.maximum(hi, rr))
            pause = ~restart & (hi2 >= p.alternating_rr_ratio * lo2)
            go_on = ~restart & ~pause
            runs[:, 3] = np.where(restart, 1, np.where(pause, 2, runs[:, 3] + 1))
            runs[:, 4] = np.where(restart, r, np.where(pause, last_r, runs[:, 4]))
            alt = np.zeros((cr.size, 2), np.int64)
            alt[pause] = rr[pause, None]
            alt[go_on, 0] = lo2[go_on]
            alt[go_on, 1] = hi2[go_on]
            self._alt_rr[cr] = alt
            runs[:, 5] = r
            self._last_v[cr] = v
            self._wide[cr] = runs
        return np.where(learning, BEAT_UNCLASSIFIED, np.where(vent, BEAT_VENTRICULAR,
                                                              BEAT_NORMAL))

    def _block_records(
        self, judged: np.ndarray, right: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of the local maxima (``>= right``, above the floor) that are also
        higher than everything before them in their block of ``half_dominance`` columns.

        A candidate must exceed the ``half_dominance`` samples before it, so it is such a
        record in any block of at most ``half_dominance`` columns: a running maximum replaces a
        per-sample window scan (blocks of half that length, used before, let ~45 % more
        ripples through to the exact checks, with the same candidates in the end).
        Which blocks are used does not matter (candidates are checked exactly afterwards).
        """
        r, length = judged.shape
        size = max(1, self.half_dominance)
        mask = np.empty((r, length), dtype=bool)
        whole = length // size * size
        # whole blocks from column 0, then the shorter rest as one more block; a column is a
        # record when the running maximum rises there (no padded or shifted copies)
        for a, b in ((0, whole), (whole, length)):
            if b == a:
                continue
            n_blocks = (b - a) // size if b == whole else 1
            body = judged[:, a:b].reshape(r, n_blocks, (b - a) // n_blocks)
            out = mask[:, a:b].reshape(r, n_blocks, (b - a) // n_blocks)
            running = np.maximum.accumulate(body, axis=2)
            out[:, :, 0] = True  # every block's first column (MWI sums are >= 0 > -1)
            np.greater(running[:, :, 1:], running[:, :, :-1], out=out[:, :, 1:])
        mask &= judged >= right
        mask &= judged > self.floor
        # flat indices and a divmod: cheaper than a 2-D np.nonzero, same (C) order
        rows, cols = np.divmod(np.flatnonzero(mask), length)
        return rows, cols

    def _all_initialized(self, row_ids: np.ndarray) -> bool:
        """True when no row in ``row_ids`` is still in its learning period (cached)."""
        if self._all_ready:
            return True
        self._all_ready = all(s.initialized for s in self._states)
        return self._all_ready or all(self._states[r].initialized for r in row_ids.tolist())

    def _confirm(
        self, m: np.ndarray, cand_rows: np.ndarray, j: np.ndarray, peaks: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Which candidates can be decided now.

        Returns two bool arrays: ``full`` (``lookahead`` samples ahead seen, none higher: the
        classic rule) and ``early`` (the MWI fell below ``(1 - confirm_drop)`` x the peak
        before any higher value: decided at the fall if the decision rules find it clearly a
        QRS). Others are rejected or stay pending.
        """
        la = self.lookahead
        cols = j[:, None] + self._ahead
        available = cols < width
        if bool((j + la < width).all()):  # the whole look-ahead is in ``m``
            ahead = windows(m, la)[cand_rows, j + 1]  # rows of a sliding view
        else:  # the newest candidates: ``m`` padded (the padding is masked by ``available``)
            padded = np.empty((m.shape[0], width + la), m.dtype)
            padded[:, :width] = m
            padded[:, width:] = 0
            ahead = windows(padded, la)[cand_rows, j + 1]
        higher = (ahead > peaks[:, None]) & available
        first_higher = np.where(higher.any(axis=1), higher.argmax(axis=1), la)
        complete = available[:, -1]
        full = complete & (first_higher == la)
        drop = self.params.confirm_drop
        if drop <= 0.0:
            return full, np.zeros_like(full)
        fallen = (ahead <= ((1.0 - drop) * peaks)[:, None]) & available
        first_fallen = np.where(fallen.any(axis=1), fallen.argmax(axis=1), la)
        # judged as of the fall, whether or not later samples are already here, so the
        # outcome does not depend on how the signal was chunked
        early = first_fallen < first_higher
        return full, early


class PanTompkinsDetector:
    """Single-stream convenience wrapper around `PanTompkinsBank` (same results as one row).

    ``process(chunk_mv)`` takes a 1-D chunk (any length, including 0) and returns the R-peak
    sample indices of the beats decided by it.
    """

    def __init__(self, sampling_rate_hz: float, params: PanTompkinsParams | None = None) -> None:
        self._bank = PanTompkinsBank(sampling_rate_hz, params)
        self._last = 0.0
        self._bank.add_stream()

    @property
    def sampling_rate_hz(self) -> float:
        """Sampling rate the detector was designed for, Hz."""
        return self._bank.fs

    def process(self, chunk_mv: np.ndarray) -> list[int]:
        """Feed the next 1-D chunk (millivolts); return R-peak indices of beats decided by it."""
        chunk = np.asarray(chunk_mv, dtype=np.float64)
        if chunk.ndim != 1:
            raise ValueError(f"expected a 1-D chunk, got shape {chunk.shape}")
        if chunk.size:
            self._last = float(chunk[-1])
        return self._bank.process(chunk[None, :])[0]

    @property
    def last_classes(self) -> str:
        """Class symbols (`BEAT_SYMBOLS`: N, V, Q) of the beats the last `process` or `flush`
        returned, in the same order."""
        return "".join(BEAT_SYMBOLS[c] for c in self._bank.last_classes.tolist())

    def flush(self) -> list[int]:
        """End of the stream: decide the beats still waiting for their look-ahead.

        Feeds ``decision_delay_samples`` copies of the last sample (a flat line has no beat),
        so only complexes already seen can be decided; call once, after the last chunk.
        """
        seen = int(self._bank.samples_seen[0])
        n = self._bank.decision_delay_samples + 1
        beats = self._bank.process(np.full((1, n), self._last))[0]
        keep = [i for i, b in enumerate(beats) if b < seen]
        self._bank.last_classes = self._bank.last_classes[keep]
        return [beats[i] for i in keep]
