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
* motion artefact: low-frequency noise (electrode motion, fast baseline shifts) in the band the
  QRS detector uses. Each segment's peak-to-peak minus its net drift (``|last - first|``, which
  removes slow, monotone baseline wander that the detector's band-pass ignores anyway) is a local
  "activity" level; on a clean ECG most segments are quiet and a few hold a QRS. When the lower
  third of segments is active at more than ``motion_ratio`` of the largest (QRS-sized) activity
  and above ``motion_mv``, beats can no longer be told from artefact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp.filters import SosFilterBank, check_sampling_rate, design_highpass

# per-segment statistics, axis 1 of the state array
_MAX, _MIN, _N_MAX, _N_MIN, _HP, _ACTIVITY, _VALID = 0, 1, 2, 3, 4, 5, 6
_N_STATS = 7


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
    motion_ratio: float = 0.45
    motion_mv: float = 0.15


@dataclass(frozen=True)
class QualityFlags:
    """Outcome of the technical checks for one stream over its trailing window."""

    flat: bool
    saturated: bool
    noisy: bool
    ptp_mv: float
    noise_mv: float
    motion: bool = False
    motion_ratio: float = 0.0

    @property
    def analysable(self) -> bool:
        """True when rhythm alarms can be trusted (no technical condition present)."""
        return not (self.flat or self.saturated or self.noisy or self.motion)


@dataclass
class QualityArrays:
    """The checks for many streams at once, one entry per row (numpy arrays, shape (n,)).

    ``noisy`` covers both broadband noise and motion artefact; ``motion`` tells which.
    """

    flat: np.ndarray
    saturated: np.ndarray
    noisy: np.ndarray
    motion: np.ndarray
    ptp_mv: np.ndarray
    noise_mv: np.ndarray
    motion_ratio: np.ndarray

    @property
    def analysable(self) -> np.ndarray:
        """Rows where rhythm alarms can be trusted, bool array."""
        return ~(self.flat | self.saturated | self.noisy)

    def row(self, i: int) -> QualityFlags:
        """The flags of one row as a `QualityFlags`."""
        return QualityFlags(
            bool(self.flat[i]),
            bool(self.saturated[i]),
            bool(self.noisy[i] and not self.motion[i]),
            float(self.ptp_mv[i]),
            float(self.noise_mv[i]),
            bool(self.motion[i]),
            float(self.motion_ratio[i]),
        )


class SignalQualityBank:
    """Trailing-window technical checks for many streams of one sampling rate (rows)."""

    def __init__(self, sampling_rate_hz: float, limits: QualityLimits | None = None) -> None:
        self.fs = check_sampling_rate(sampling_rate_hz)
        self.limits = limits or QualityLimits()
        self.segment = max(2, int(round(self.limits.segment_s * self.fs)))
        self.n_segments = max(2, int(round(self.limits.window_s / self.limits.segment_s)))
        self._highpass = SosFilterBank(design_highpass(self.fs, self.limits.noise_highpass_hz))
        self._n = 0
        self._stats = np.zeros((0, _N_STATS, self.n_segments))
        self._part_raw = np.zeros((0, self.segment))
        self._part_hp = np.zeros((0, self.segment))
        self._part_len = np.zeros(0, dtype=np.int64)

    @property
    def n_streams(self) -> int:
        """Number of streams (rows)."""
        return self._n

    def add_stream(self) -> int:
        """Add a stream; return its row."""
        self._highpass.add_streams(1)
        if self._n == self._stats.shape[0]:
            extra = max(1, self._n)
            self._stats = np.concatenate([self._stats, np.zeros((extra,) + self._stats.shape[1:])])
            self._part_raw = np.concatenate([self._part_raw, np.zeros((extra, self.segment))])
            self._part_hp = np.concatenate([self._part_hp, np.zeros((extra, self.segment))])
            self._part_len = np.concatenate([self._part_len, np.zeros(extra, np.int64)])
        row = self._n
        self._stats[row] = 0.0
        self._part_len[row] = 0
        self._n += 1
        return row

    def remove_stream(self, row: int) -> None:
        """Remove one stream; rows after it shift down by one."""
        self._highpass.remove_stream(row)
        n = self._n
        for a in (self._stats, self._part_raw, self._part_hp, self._part_len):
            a[row : n - 1] = a[row + 1 : n].copy()
        self._n = n - 1

    def process(self, x_mv: np.ndarray, rows: np.ndarray | None = None) -> list[QualityFlags]:
        """Feed a block (n_rows, n_samples) in millivolts; return flags per row for its window."""
        q = self.process_arrays(x_mv, rows)
        return [q.row(i) for i in range(q.flat.shape[0])]

    def process_arrays(self, x_mv: np.ndarray, rows: np.ndarray | None = None) -> QualityArrays:
        """Feed a block (n_rows, n_samples) in millivolts; return the flags as arrays.

        Until a stream has a full window it is judged on its complete segments (none: no flag).
        """
        x = np.asarray(x_mv, dtype=np.float64)
        row_ids = np.arange(self._n) if rows is None else np.asarray(rows)
        hp = self._highpass.process(x, None if rows is None else row_ids)
        part = self._part_len[row_ids]
        phases = np.unique(part)
        if phases.size == 1:
            self._absorb(row_ids, x, hp, int(phases[0]))
        else:  # streams at different positions within their segment: one pass per position
            for p in phases.tolist():
                sub = np.flatnonzero(part == p)
                self._absorb(row_ids[sub], x[sub], hp[sub], p)
        return self._evaluate(self._stats[row_ids])

    def _absorb(self, row_ids: np.ndarray, x: np.ndarray, hp: np.ndarray, p: int) -> None:
        """Summarise the complete segments of ``partial ++ x`` and keep the remainder."""
        seg, r = self.segment, x.shape[0]
        total = p + x.shape[1]
        c = total // seg
        if c == 0:
            self._part_raw[row_ids, p:total] = x
            self._part_hp[row_ids, p:total] = hp
            self._part_len[row_ids] = total
            return
        raw = np.concatenate([self._part_raw[row_ids, :p], x], axis=1)
        hpj = np.concatenate([self._part_hp[row_ids, :p], hp], axis=1)
        rest = total - c * seg
        self._part_raw[row_ids, :rest] = raw[:, c * seg :]
        self._part_hp[row_ids, :rest] = hpj[:, c * seg :]
        self._part_len[row_ids] = rest
        keep_c = min(c, self.n_segments)
        s = raw[:, (c - keep_c) * seg : c * seg].reshape(r, keep_c, seg)
        h = hpj[:, (c - keep_c) * seg : c * seg].reshape(r, keep_c, seg)
        mx = s.max(axis=2)
        mn = s.min(axis=2)
        whole = r == self._n and row_ids[0] == 0  # all rows in order: update in place
        stats = self._stats[: self._n] if whole else self._stats[row_ids]
        stats[:, :, :-keep_c] = stats[:, :, keep_c:].copy()
        new = stats[:, :, -keep_c:]
        new[:, _MAX], new[:, _MIN] = mx, mn
        new[:, _N_MAX] = (s == mx[:, :, None]).sum(axis=2)
        new[:, _N_MIN] = (s == mn[:, :, None]).sum(axis=2)
        new[:, _HP] = np.abs(h).mean(axis=2)
        new[:, _ACTIVITY] = (mx - mn) - np.abs(s[:, :, -1] - s[:, :, 0])
        new[:, _VALID] = 1.0
        if not whole:
            self._stats[row_ids] = stats

    def _evaluate(self, st: np.ndarray) -> QualityArrays:
        lim = self.limits
        valid = st[:, _VALID] > 0.5
        n_valid = valid.sum(axis=1)
        any_valid = n_valid > 0
        top = np.where(valid, st[:, _MAX], -np.inf).max(axis=1)
        bottom = np.where(valid, st[:, _MIN], np.inf).min(axis=1)
        ptp = np.where(any_valid, top - bottom, 0.0)
        on_top = valid & (st[:, _MAX] == top[:, None])
        on_bottom = valid & (st[:, _MIN] == bottom[:, None])
        at_rail = (st[:, _N_MAX] * on_top).sum(axis=1) + (st[:, _N_MIN] * on_bottom).sum(axis=1)
        # segments that reach a rail without sitting on it throughout: one per clipped excursion
        partial = on_top & (st[:, _N_MAX] < self.segment)
        partial_b = on_bottom & (st[:, _N_MIN] < self.segment)
        entries = partial.sum(axis=1) + partial_b.sum(axis=1)
        flat = any_valid & (ptp < lim.flat_ptp_mv)
        have = n_valid * self.segment
        saturated = ~flat & any_valid & (at_rail >= lim.saturation_fraction * have)
        saturated &= entries >= 3
        # order statistics over the valid segments (invalid ones sort last)
        rows = np.arange(st.shape[0])
        last = np.maximum(n_valid - 1, 0)
        k_noise = (last * 0.25).astype(np.int64)
        k_low = (last / 3).astype(np.int64)
        if bool((n_valid == self.n_segments).all()):  # full windows: partial sorts suffice
            kn, kl, kt = int(k_noise[0]), int(k_low[0]), self.n_segments - 1
            hp_sorted = np.partition(st[:, _HP], kn, axis=1)
            act_sorted = np.partition(st[:, _ACTIVITY], [kl, kt], axis=1)
        else:
            hp_sorted = np.sort(np.where(valid, st[:, _HP], np.inf), axis=1)
            act_sorted = np.sort(np.where(valid, st[:, _ACTIVITY], np.inf), axis=1)
        noise = np.where(any_valid, hp_sorted[rows, k_noise], 0.0)
        low_activity = np.where(any_valid, act_sorted[rows, k_low], 0.0)
        top_activity = np.where(any_valid, act_sorted[rows, last], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            motion_ratio = np.where(top_activity > 0, low_activity / top_activity, 0.0)
        ok = ~flat & ~saturated & any_valid
        broadband = ok & (noise > lim.noise_mv)
        motion = ok & ~broadband & (motion_ratio > lim.motion_ratio)
        motion &= low_activity > lim.motion_mv
        return QualityArrays(
            flat, saturated, broadband | motion, motion, ptp, noise, motion_ratio
        )
