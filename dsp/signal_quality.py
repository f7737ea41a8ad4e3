"""Technical-alarm signal checks (leads off / flat line, ADC saturation, noise), batched.

Samples are summarised once, in consecutive segments of ``segment_s`` (0.1 s) counted from each
stream's first sample; the checks run over the last ``window_s`` (2 s) of complete segments, for
all streams of one sampling rate in a few numpy reductions over (streams, segments) arrays. Each
sample is touched once, and the flags depend only on the samples, never on how they were chunked.

* flat line: peak-to-peak below ``flat_ptp_mv`` (a disconnected lead or a dead amplifier);
* saturation: a large share of samples sitting exactly on the window's maximum or minimum,
  reached in at least three segments that are not entirely on the rail, the signature of an ADC
  clipped at its rails (a live signal almost never repeats its extreme value; a signal that just
  went flat at its extreme reaches it once and stays);
* broadband noise: the lower quartile of the segments' mean absolute >25 Hz high-passed signal
  above ``noise_mv``. QRS complexes fill at most about half the segments even at high rates, so
  the lower quartile measures the baseline's muscle/electrical noise, not the ECG's own
  high-frequency content;
* artefact in the QRS band (electrode artefact, muscle): what actually stops beat detection is
  noise in the band the detector looks at (5-15 Hz), so this check works on that band-passed
  signal (the detector's own, passed in by the analyzer). On a clean ECG most 0.1 s segments are
  quiet in that band and a few hold a QRS; when the lower third of the segments' mean |band|
  reaches ``artefact_ratio`` of the window's largest |band| (the QRS), beats can no longer be
  told from artefact. Baseline wander lies below the band and, rightly, does not count.
  Measured always (``artefact_ratio``); raising the condition is opt-in (see `QualityLimits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp.filters import SosFilterBank, check_sampling_rate, design_highpass, design_qrs_bandpass

# per-segment statistics, axis 0 of the state array (statistic, segment, row): sample-major, so
# the reductions over a window's segments run long inner loops over the rows
_MAX, _MIN, _N_MAX, _N_MIN, _HP, _BAND_MEAN, _BAND_MAX, _VALID = 0, 1, 2, 3, 4, 5, 6, 7
_N_STATS = 8


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds for the technical checks (millivolts, seconds, fractions 0-1)."""

    window_s: float = 2.0
    segment_s: float = 0.1
    flat_ptp_mv: float = 0.02
    saturation_fraction: float = 0.2
    #: lower quartile of 0.1 s mean |high-passed| (0.14 mV ~ Gaussian noise of 0.18 mV rms)
    noise_mv: float = 0.14
    noise_highpass_hz: float = 25.0
    #: lower third of 0.1 s mean |QRS band| over the largest |QRS band| in the window: the
    #: artefact condition starts above ``artefact_ratio`` and ends below ``artefact_clear_ratio``
    #: (hysteresis). Off by default (None): at 150-170 bpm the QRS band is busy in most
    #: segments and the ratio reaches ~0.25, so the check would freeze tachycardia alarms;
    #: ``artefact_ratio`` is reported either way.
    artefact_ratio: float | None = None
    artefact_clear_ratio: float = 0.10
    #: and the band floor must exceed this (an isoelectric line is never "artefact")
    artefact_floor_mv: float = 0.05


@dataclass(frozen=True)
class QualityFlags:
    """Outcome of the technical checks for one stream over its trailing window."""

    flat: bool
    saturated: bool
    noisy: bool
    ptp_mv: float
    noise_mv: float
    artefact: bool = False
    artefact_ratio: float = 0.0

    @property
    def analysable(self) -> bool:
        """True when rhythm alarms can be trusted (no technical condition present)."""
        return not (self.flat or self.saturated or self.noisy or self.artefact)


@dataclass
class QualityArrays:
    """The checks for many streams at once, one entry per row (numpy arrays, shape (n,)).

    ``noisy`` covers both broadband noise and artefact artefact; ``artefact`` tells which.
    """

    flat: np.ndarray
    saturated: np.ndarray
    noisy: np.ndarray
    artefact: np.ndarray
    ptp_mv: np.ndarray
    noise_mv: np.ndarray
    artefact_ratio: np.ndarray

    @property
    def analysable(self) -> np.ndarray:
        """Rows where rhythm alarms can be trusted, bool array."""
        return ~(self.flat | self.saturated | self.noisy)

    def row(self, i: int) -> QualityFlags:
        """The flags of one row as a `QualityFlags`."""
        return QualityFlags(
            bool(self.flat[i]),
            bool(self.saturated[i]),
            bool(self.noisy[i] and not self.artefact[i]),
            float(self.ptp_mv[i]),
            float(self.noise_mv[i]),
            bool(self.artefact[i]),
            float(self.artefact_ratio[i]),
        )


def _count_true(mask: np.ndarray, axis: int) -> np.ndarray:
    """``np.count_nonzero(mask, axis=axis)``: summed as bytes when the count fits in one (no
    buffered bool -> int cast, the slow part of counting short rows)."""
    if mask.shape[axis] < 256:
        return mask.view(np.uint8).sum(axis=axis, dtype=np.uint8)
    return np.count_nonzero(mask, axis=axis)


class SignalQualityBank:
    """Trailing-window technical checks for many streams of one sampling rate (rows)."""

    def __init__(self, sampling_rate_hz: float, limits: QualityLimits | None = None) -> None:
        self.fs = check_sampling_rate(sampling_rate_hz)
        self.limits = limits or QualityLimits()
        self.segment = max(2, int(round(self.limits.segment_s * self.fs)))
        self.n_segments = max(2, int(round(self.limits.window_s / self.limits.segment_s)))
        self._highpass = SosFilterBank(design_highpass(self.fs, self.limits.noise_highpass_hz))
        self._band = SosFilterBank(design_qrs_bandpass(self.fs))  # used when none is passed in
        self._n = 0
        self._stats = np.zeros((_N_STATS, self.n_segments, 0))
        self._part_raw = np.zeros((0, self.segment))
        self._part_hp = np.zeros((0, self.segment))
        self._part_band = np.zeros((0, self.segment))
        self._part_len = np.zeros(0, dtype=np.int64)
        self._artefact = np.zeros(0, dtype=bool)

    @property
    def n_streams(self) -> int:
        """Number of streams (rows)."""
        return self._n

    def add_stream(self) -> int:
        """Add a stream; return its row."""
        self._highpass.add_streams(1)
        self._band.add_streams(1)
        if self._n == self._stats.shape[2]:
            extra = max(1, self._n)
            self._stats = np.concatenate(
                [self._stats, np.zeros((_N_STATS, self.n_segments, extra))], axis=2)
            self._part_raw = np.concatenate([self._part_raw, np.zeros((extra, self.segment))])
            self._part_hp = np.concatenate([self._part_hp, np.zeros((extra, self.segment))])
            self._part_band = np.concatenate([self._part_band, np.zeros((extra, self.segment))])
            self._part_len = np.concatenate([self._part_len, np.zeros(extra, np.int64)])
            self._artefact = np.concatenate([self._artefact, np.zeros(extra, bool)])
        row = self._n
        self._stats[:, :, row] = 0.0
        self._part_len[row] = 0
        self._artefact[row] = False
        self._n += 1
        return row

    def remove_stream(self, row: int) -> None:
        """Remove one stream; rows after it shift down by one."""
        self._highpass.remove_stream(row)
        self._band.remove_stream(row)
        n = self._n
        self._stats[:, :, row : n - 1] = self._stats[:, :, row + 1 : n].copy()
        for a in (
            self._part_raw, self._part_hp, self._part_band, self._part_len,
            self._artefact,
        ):
            a[row : n - 1] = a[row + 1 : n].copy()
        self._n = n - 1

    def process(self, x_mv: np.ndarray, rows: np.ndarray | None = None) -> list[QualityFlags]:
        """Feed a block (n_rows, n_samples) in millivolts; return flags per row for its window."""
        q = self.process_arrays(x_mv, rows, None)
        return [q.row(i) for i in range(q.flat.shape[0])]

    def process_arrays(
        self,
        x_mv: np.ndarray,
        rows: np.ndarray | None = None,
        qrs_band_mv: np.ndarray | None = None,
    ) -> QualityArrays:
        """Feed a block (n_rows, n_samples) in millivolts; return the flags as arrays.

        ``qrs_band_mv``: the same block through the QRS detector's 5-15 Hz band-pass, if the
        caller has it (the analyzer passes the detector's); else the bank filters it itself.
        Until a stream has a full window it is judged on its complete segments (none: no flag).
        """
        x = np.asarray(x_mv, dtype=np.float64)
        row_ids = np.arange(self._n) if rows is None else np.asarray(rows)
        sel = None if rows is None else row_ids
        hp = self._highpass.process(x, sel)
        band = self._band.process(x, sel) if qrs_band_mv is None else qrs_band_mv
        part = self._part_len[row_ids]
        same = part.size == 0 or bool((part == part[0]).all())
        phases = part[:1] if same else np.unique(part)  # (np.unique costs ~30 us)
        if phases.size == 1:
            self._absorb(row_ids, x, hp, band, int(phases[0]))
        else:  # streams at different positions within their segment: one pass per position
            for p in phases.tolist():
                sub = np.flatnonzero(part == p)
                self._absorb(row_ids[sub], x[sub], hp[sub], band[sub], p)
        stats = self._stats[:, :, : self._n] if rows is None else self._stats[:, :, row_ids]
        return self._evaluate(stats, row_ids)

    def _absorb(
        self, row_ids: np.ndarray, x: np.ndarray, hp: np.ndarray, band: np.ndarray, p: int
    ) -> None:
        """Summarise the complete segments of ``partial ++ x`` and keep the remainder."""
        seg, r = self.segment, x.shape[0]
        total = p + x.shape[1]
        c = total // seg
        if c == 0:
            self._part_raw[row_ids, p:total] = x
            self._part_hp[row_ids, p:total] = hp
            self._part_band[row_ids, p:total] = band
            self._part_len[row_ids] = total
            return
        if p:
            raw = np.concatenate([self._part_raw[row_ids, :p], x], axis=1)
            hpj = np.concatenate([self._part_hp[row_ids, :p], hp], axis=1)
            bandj = np.abs(np.concatenate([self._part_band[row_ids, :p], band], axis=1))
        else:  # steps of whole segments (the analyzer's): no partial segment to join
            raw, hpj, bandj = x, hp, np.abs(band)
        rest = total - c * seg
        self._part_raw[row_ids, :rest] = raw[:, c * seg :]
        self._part_hp[row_ids, :rest] = hpj[:, c * seg :]
        self._part_band[row_ids, :rest] = bandj[:, c * seg :]
        self._part_len[row_ids] = rest
        keep_c = min(c, self.n_segments)
        # extremes and their counts (exact in any order) on a sample-major copy: reducing its
        # middle axis runs long inner loops over the rows instead of one short loop per
        # segment (~3x fewer instructions for these four, the copy included)
        s = np.ascontiguousarray(raw[:, (c - keep_c) * seg : c * seg].T).reshape(keep_c, seg, r)
        h = hpj[:, (c - keep_c) * seg : c * seg].reshape(r, keep_c, seg)
        bd = bandj[:, (c - keep_c) * seg : c * seg].reshape(r, keep_c, seg)
        mx = s.max(axis=1)  # (keep_c, r)
        mn = s.min(axis=1)
        whole = r == self._n and row_ids[0] == 0  # all rows in order: update in place
        stats = self._stats[:, :, : self._n] if whole else self._stats[:, :, row_ids]
        stats[:, :-keep_c] = stats[:, keep_c:].copy()
        new = stats[:, -keep_c:]  # (statistic, keep_c, rows)
        new[_MAX], new[_MIN] = mx, mn
        new[_N_MAX] = _count_true(s == mx[:, None, :], 1)
        new[_N_MIN] = _count_true(s == mn[:, None, :], 1)
        new[_HP] = np.abs(h).mean(axis=2).T  # means segment by segment (pairwise sums)
        new[_BAND_MEAN] = bd.mean(axis=2).T
        new[_BAND_MAX] = bd.max(axis=2).T
        new[_VALID] = 1.0
        if not whole:
            self._stats[:, :, row_ids] = stats

    def _evaluate(self, st: np.ndarray, row_ids: np.ndarray) -> QualityArrays:
        """The checks over the window ``st`` (statistic, segment, row) of ``row_ids``."""
        lim = self.limits
        n_rows = st.shape[2]
        valid = st[_VALID] > 0.5
        full = bool(valid.all())  # every window full (streams past their first 2 s): no masks
        if full:
            n_valid = np.full(n_rows, self.n_segments, dtype=np.int64)
            top = st[_MAX].max(axis=0)
            bottom = st[_MIN].min(axis=0)
            on_top = st[_MAX] == top
            on_bottom = st[_MIN] == bottom
        else:
            n_valid = valid.sum(axis=0)
            top = np.where(valid, st[_MAX], -np.inf).max(axis=0)
            bottom = np.where(valid, st[_MIN], np.inf).min(axis=0)
            on_top = valid & (st[_MAX] == top)
            on_bottom = valid & (st[_MIN] == bottom)
        any_valid = n_valid > 0
        ptp = np.where(any_valid, top - bottom, 0.0)
        # sums of whole sample counts: exact in any order
        at_rail = (np.where(on_top, st[_N_MAX], 0.0).sum(axis=0)
                   + np.where(on_bottom, st[_N_MIN], 0.0).sum(axis=0))
        # segments that reach a rail without sitting on it throughout: one per clipped excursion
        partial = on_top & (st[_N_MAX] < self.segment)
        partial_b = on_bottom & (st[_N_MIN] < self.segment)
        entries = _count_true(partial, 0).astype(np.int64) + _count_true(partial_b, 0)
        flat = any_valid & (ptp < lim.flat_ptp_mv)
        have = n_valid * self.segment
        saturated = ~flat & any_valid & (at_rail >= lim.saturation_fraction * have)
        saturated &= entries >= 3
        # order statistics over the valid segments (invalid ones sort last)
        rows = np.arange(n_rows)
        last = np.maximum(n_valid - 1, 0)
        k_noise = (last * 0.25).astype(np.int64)
        k_low = (last / 3).astype(np.int64)
        # (row, segment) copies for the order statistics
        if bool((n_valid == self.n_segments).all()):  # full windows: partial sorts suffice
            hp_sorted = st[_HP].T.copy()  # a copy even when the view is contiguous (1 row)
            hp_sorted.partition(int(k_noise[0]), axis=1)
            band_sorted = st[_BAND_MEAN].T.copy()
            band_sorted.partition(int(k_low[0]), axis=1)
        else:
            hp_sorted = np.sort(np.where(valid, st[_HP], np.inf).T, axis=1)
            band_sorted = np.sort(np.where(valid, st[_BAND_MEAN], np.inf).T, axis=1)
        noise = np.where(any_valid, hp_sorted[rows, k_noise], 0.0)
        band_floor = np.where(any_valid, band_sorted[rows, k_low], 0.0)
        band_peak = (st[_BAND_MAX] if full else np.where(valid, st[_BAND_MAX], 0.0)).max(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            artefact_ratio = np.where(band_peak > 0, band_floor / band_peak, 0.0)
        ok = ~flat & ~saturated & any_valid
        # the lower quartile is the baseline's noise only once the segments outnumber the QRS
        # complexes' by far: judged from half a window (1 s) on, not on a stream's first
        # 0.1-0.2 s, which may be all QRS (a false "noise" at the start of every stream)
        broadband = ok & (noise > lim.noise_mv) & (2 * n_valid >= self.n_segments)
        # judged on full windows only: the first seconds may not hold a QRS yet
        was = self._artefact[row_ids]
        if lim.artefact_ratio is None:
            artefact = np.zeros(n_rows, dtype=bool)
        else:
            limit = np.where(was, lim.artefact_clear_ratio, lim.artefact_ratio)
            artefact = (n_valid == self.n_segments) & (artefact_ratio > limit)
            artefact &= band_floor > lim.artefact_floor_mv
        self._artefact[row_ids] = artefact
        artefact &= ok & ~broadband
        return QualityArrays(
            flat, saturated, broadband | artefact, artefact, ptp, noise, artefact_ratio
        )
