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

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dsp.filters import History, SosFilterBank, check_sampling_rate, design_qrs_bandpass
from dsp.filters import group_delay_samples

# Derivative (mV/s) quantisation step 1/64 mV/s; clip keeps squares and 150 ms sums far inside int64.
_Q_PER_MV_PER_S = 64.0
_Q_MAX = 2**20


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
    #: smallest QRS slope treated as a beat, mV/s (a 0.1 mV QRS rising in ~25 ms gives ~4 mV/s)
    min_slope_mv_per_s: float = 1.5


@dataclass
class _Candidate:
    index: int  # MWI peak, absolute sample index
    peak: float  # MWI value
    slope_sq: float  # max squared derivative within the window
    r_index: int  # R-peak estimate, absolute sample index


@dataclass
class _DecisionState:
    """Per-stream adaptive levels and recent beats (the sequential part of Pan-Tompkins)."""

    params: PanTompkinsParams
    fs: float
    floor: float
    initialized: bool = False
    learning: list[_Candidate] = field(default_factory=list)
    signal_level: float = 0.0
    noise_level: float = 0.0
    last_beat_index: int | None = None
    last_slope_sq: float = 0.0
    rr_samples: deque[int] = field(default_factory=deque)

    def _initialize(self) -> list[int]:
        self.initialized = True
        peaks = [c.peak for c in self.learning]
        if peaks:
            self.signal_level = 0.5 * max(peaks)
            self.noise_level = 0.5 * float(np.median(peaks))
        beats: list[int] = []
        for cand in self.learning:
            beat = self._decide(cand)
            if beat is not None:
                beats.append(beat)
        self.learning = []
        return beats

    def on_candidate(self, cand: _Candidate, learning_end: int) -> list[int]:
        """Classify one candidate (in stream order); return R-peak indices of beats decided."""
        if not self.initialized:
            if cand.index < learning_end:
                self.learning.append(cand)
                return []
            beats = self._initialize()
            beat = self._decide(cand)
            return beats + ([beat] if beat is not None else [])
        beat = self._decide(cand)
        return [] if beat is None else [beat]

    def on_evaluated(self, last_evaluated: int, learning_end: int) -> list[int]:
        """End the learning period once the evaluated samples pass it, even without candidates."""
        if not self.initialized and last_evaluated >= learning_end:
            return self._initialize()
        return []

    def _decide(self, cand: _Candidate) -> int | None:
        p = self.params
        since = None if self.last_beat_index is None else cand.index - self.last_beat_index
        signal_level = self.signal_level
        if since is not None and self.rr_samples:
            gap = max(p.relearn_after_s * self.fs, 2.0 * sum(self.rr_samples) / len(self.rr_samples))
            if since > gap:  # depends only on elapsed samples, so it is chunking-independent
                decay = 0.5 ** ((since - gap) / self.fs)
                signal_level = max(5.0 * self.noise_level, signal_level * decay)
        threshold = self.noise_level + p.threshold_fraction * (signal_level - self.noise_level)
        if since is not None and since < p.refractory_s * self.fs:
            return None  # refractory: physiologically impossible, not even a noise sample
        searchback = False
        if self.rr_samples and since is not None:
            rr_mean = sum(self.rr_samples) / len(self.rr_samples)
            if since > p.searchback_rr_factor * rr_mean:
                threshold *= p.searchback_threshold_factor
                searchback = True
        if cand.peak > max(threshold, self.floor):
            if (
                since is not None
                and since < p.t_wave_window_s * self.fs
                and cand.slope_sq < (p.t_wave_slope_ratio**2) * self.last_slope_sq
            ):
                self.noise_level = 0.125 * cand.peak + 0.875 * self.noise_level
                return None  # T wave
            weight = 0.25 if searchback else 0.125
            self.signal_level = weight * cand.peak + (1.0 - weight) * signal_level
            if since is not None:
                self.rr_samples.append(since)
                if len(self.rr_samples) > p.rr_history:
                    self.rr_samples.popleft()
            self.last_beat_index = cand.index
            self.last_slope_sq = cand.slope_sq
            return cand.r_index
        self.noise_level = 0.125 * cand.peak + 0.875 * self.noise_level
        return None


class PanTompkinsBank:
    """Pan-Tompkins QRS detectors for many streams sharing one sampling rate.

    Rows are streams in the order they were added. ``process`` takes a block
    (n_rows, n_samples) in millivolts for all rows or a subset (``rows``), and returns, per row,
    the R-peak sample indices (counted from each stream's first sample) of the beats decided
    by this block, in order. A beat is decided ``dominance_window_s`` after its MWI peak
    (about 0.2 s after the R peak), so it is reported by the first call whose block reaches
    that sample.
    """

    def __init__(self, sampling_rate_hz: float, params: PanTompkinsParams | None = None) -> None:
        self.fs = check_sampling_rate(sampling_rate_hz)
        self.params = params or PanTompkinsParams()
        p = self.params
        self.window = max(2, int(round(p.integration_window_s * self.fs)))
        self.half_dominance = max(2, int(round(p.dominance_window_s * self.fs)))
        self.lookahead = max(1, min(self.half_dominance, int(round(p.lookahead_s * self.fs))))
        self.learning_end = int(round(p.learning_s * self.fs))
        sos = design_qrs_bandpass(self.fs)
        # derivative adds 2 samples of delay; the R peak is where |band-pass| peaks minus its delay
        self.bandpass_delay = int(round(group_delay_samples(sos, 10.0, self.fs)))
        self.history_length = self.window + 2 * self.half_dominance + 8
        q_floor = p.min_slope_mv_per_s * _Q_PER_MV_PER_S
        self.floor = float(q_floor * q_floor * self.window) * 0.25
        self._decision_floor = float(np.sqrt(self.floor)) if p.amplitude_domain else self.floor
        self._bandpass = SosFilterBank(sos)
        self._bp_hist = History(self.history_length)
        self._sq_hist = History(self.history_length, np.int64)
        self._mwi_hist = History(self.half_dominance + self.lookahead, np.int64)
        self.samples_seen = np.zeros(0, dtype=np.int64)
        self._states: list[_DecisionState] = []

    @property
    def n_streams(self) -> int:
        """Number of streams (rows) in the bank."""
        return len(self._states)

    def add_stream(self) -> int:
        """Add a stream; return its row."""
        self._bandpass.add_streams(1)
        self._bp_hist.add_streams(1)
        self._sq_hist.add_streams(1)
        self._mwi_hist.add_streams(1)
        self.samples_seen = np.append(self.samples_seen, 0)
        self._states.append(_DecisionState(self.params, self.fs, self._decision_floor))
        return len(self._states) - 1

    def remove_stream(self, row: int) -> None:
        """Remove one stream; rows after it shift down by one."""
        self._bandpass.remove_stream(row)
        self._bp_hist.remove_stream(row)
        self._sq_hist.remove_stream(row)
        self._mwi_hist.remove_stream(row)
        self.samples_seen = np.delete(self.samples_seen, row)
        del self._states[row]

    @property
    def decision_delay_samples(self) -> int:
        """Upper bound on how far behind the newest sample a beat's R peak can be undecided."""
        return self.window + self.lookahead + self.bandpass_delay + 8

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
        x = np.asarray(x_mv, dtype=np.float64)
        row_ids = np.arange(self.n_streams) if rows is None else np.asarray(rows)
        if x.ndim != 2 or x.shape[0] != row_ids.shape[0]:
            raise ValueError(f"expected a block of shape ({row_ids.shape[0]}, n), got {x.shape}")
        n = x.shape[1]
        out: list[list[int]] = [[] for _ in range(x.shape[0])]
        if n == 0:
            return out
        sel = None if rows is None else row_ids
        hist, w, k, la = self.history_length, self.window, self.half_dominance, self.lookahead

        bp = self._bandpass.process(x, sel)
        bp_ext = self._bp_hist.extend(bp, sel)  # (R, hist + n)
        b = bp_ext[:, hist - 4 :]
        deriv = (2.0 * b[:, 4:] + b[:, 3:-1] - b[:, 1:-3] - 2.0 * b[:, :-4]) * (self.fs / 8.0)
        q = np.clip(np.rint(deriv * _Q_PER_MV_PER_S), -_Q_MAX, _Q_MAX).astype(np.int64)
        sq_ext = self._sq_hist.extend(q * q, sel)
        cs = np.cumsum(sq_ext[:, hist - w :], axis=1)
        mwi = cs[:, w:] - cs[:, :-w]  # sum of the w squared samples ending at each new sample
        # (R, k + la + n); column j is sample seen_before - (k + la) + j; judge the n columns
        # that have k samples behind and la ahead
        m = self._mwi_hist.extend(mwi, sel)

        centre = m[:, k : k + n]
        local = (centre > m[:, k - 1 : k + n - 1]) & (centre >= m[:, k + 1 : k + n + 1])
        local &= centre > self.floor
        cand_rows, cols = np.nonzero(local)
        seen_before = self.samples_seen[row_ids]
        if cand_rows.size:
            j = cols + k
            peaks = m[cand_rows, j]
            left = m[cand_rows[:, None], j[:, None] + np.arange(-k, 0)[None, :]].max(axis=1)
            ahead = np.arange(1, self.lookahead + 1)[None, :]
            right = m[cand_rows[:, None], j[:, None] + ahead].max(axis=1)
            keep = (peaks > left) & (peaks >= right)
            cand_rows, j, peaks = cand_rows[keep], j[keep], peaks[keep]
            levels = np.sqrt(peaks) if self.params.amplitude_domain else peaks.astype(np.float64)
        if cand_rows.size:
            sq_idx = j - (k + la) + hist  # same sample, in sq_ext / bp_ext columns
            win = np.arange(-w + 1, 1)[None, :]
            slope_sq = sq_ext[cand_rows[:, None], sq_idx[:, None] + win].max(axis=1)
            bp_win = np.abs(bp_ext[cand_rows[:, None], sq_idx[:, None] + win - 2])
            r_col = sq_idx - w - 1 + np.argmax(bp_win, axis=1) - self.bandpass_delay
            abs_peak = seen_before[cand_rows] - (k + la) + j
            abs_r = seen_before[cand_rows] - hist + r_col
            for r, a, pk, sl, rr in zip(
                cand_rows.tolist(),
                abs_peak.tolist(),
                levels.tolist(),
                slope_sq.tolist(),
                abs_r.tolist(),
            ):
                out[r].extend(
                    self._states[row_ids[r]].on_candidate(
                        _Candidate(a, float(pk), float(sl), max(0, rr)), self.learning_end
                    )
                )
        last_evaluated = seen_before + n - 1 - la
        for r, row in enumerate(row_ids.tolist()):
            state = self._states[row]
            if not state.initialized:
                out[r].extend(state.on_evaluated(int(last_evaluated[r]), self.learning_end))
        self.samples_seen[row_ids] = seen_before + n
        return out


class PanTompkinsDetector:
    """Single-stream convenience wrapper around `PanTompkinsBank` (same results as one row).

    ``process(chunk_mv)`` takes a 1-D chunk (any length, including 0) and returns the R-peak
    sample indices of the beats decided by it.
    """

    def __init__(self, sampling_rate_hz: float, params: PanTompkinsParams | None = None) -> None:
        self._bank = PanTompkinsBank(sampling_rate_hz, params)
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
        return self._bank.process(chunk[None, :])[0]
