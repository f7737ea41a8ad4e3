"""Technical-alarm signal checks (leads off / flat line, ADC saturation, noise), batched.

Evaluated on the trailing window (default 2 s) that ends at the newest sample of each stream, once
per processed block, for all streams of one sampling rate in a few numpy reductions:

* flat line: peak-to-peak below ``flat_ptp_mv`` (a disconnected lead or a dead amplifier);
* saturation: a large share of samples sitting exactly on the window's maximum or minimum,
  entered at least three times, the signature of an ADC clipped at its rails (a live signal almost
  never repeats its extreme value);
* noise: median absolute value of the >25 Hz high-passed signal above ``noise_mv``. The median
  ignores the QRS complexes (about a tenth of the time), so it measures the baseline's
  broadband (muscle/electrical) noise, not the ECG's own high-frequency content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsp.filters import History, SosFilterBank, check_sampling_rate, design_highpass


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds for the technical checks (millivolts, seconds, fractions 0-1)."""

    window_s: float = 2.0
    flat_ptp_mv: float = 0.02
    saturation_fraction: float = 0.2
    noise_mv: float = 0.12
    noise_highpass_hz: float = 25.0


@dataclass(frozen=True)
class QualityFlags:
    """Outcome of the technical checks for one stream over its trailing window."""

    flat: bool
    saturated: bool
    noisy: bool
    ptp_mv: float
    noise_mv: float

    @property
    def analysable(self) -> bool:
        """True when rhythm alarms can be trusted (no technical condition present)."""
        return not (self.flat or self.saturated or self.noisy)


class SignalQualityBank:
    """Trailing-window technical checks for many streams of one sampling rate (rows)."""

    def __init__(self, sampling_rate_hz: float, limits: QualityLimits | None = None) -> None:
        self.fs = check_sampling_rate(sampling_rate_hz)
        self.limits = limits or QualityLimits()
        self.window = int(round(self.limits.window_s * self.fs))
        self._highpass = SosFilterBank(design_highpass(self.fs, self.limits.noise_highpass_hz))
        self._raw = History(self.window)
        self._hp = History(self.window)
        self._seen = np.zeros(0, dtype=np.int64)

    def add_stream(self) -> int:
        """Add a stream; return its row."""
        self._highpass.add_streams(1)
        self._raw.add_streams(1)
        self._hp.add_streams(1)
        self._seen = np.append(self._seen, 0)
        return int(self._seen.shape[0] - 1)

    def remove_stream(self, row: int) -> None:
        """Remove one stream; rows after it shift down by one."""
        self._highpass.remove_stream(row)
        self._raw.remove_stream(row)
        self._hp.remove_stream(row)
        self._seen = np.delete(self._seen, row)

    def process(self, x_mv: np.ndarray, rows: np.ndarray | None = None) -> list[QualityFlags]:
        """Feed a block (n_rows, n_samples) in millivolts; return flags per row for its window.

        Until a stream has a full window, it is judged on what it has (at least one sample).
        """
        x = np.asarray(x_mv, dtype=np.float64)
        hp = self._highpass.process(x, rows)
        raw_ext = self._raw.extend(x, rows)
        hp_ext = self._hp.extend(hp, rows)
        row_ids = np.arange(self._seen.shape[0]) if rows is None else np.asarray(rows)
        self._seen[row_ids] += x.shape[1]
        have = np.minimum(self._seen[row_ids], self.window)
        raw = raw_ext[:, -self.window :]
        hpw = np.abs(hp_ext[:, -self.window :: 2])  # every other sample: the median is robust
        young = bool((have < self.window).any())
        if young:  # streams shorter than a window: ignore their zero-filled history
            valid = np.arange(self.window)[None, :] >= (self.window - have)[:, None]
            first = raw[np.arange(raw.shape[0]), self.window - np.maximum(have, 1)]
            raw = np.where(valid, raw, first[:, None])
            hpw = np.where(valid[:, ::2], hpw, np.nan)
            with np.errstate(all="ignore"):
                noise = np.nan_to_num(np.nanmedian(hpw, axis=1))
        else:
            noise = np.median(hpw, axis=1)
        top = raw.max(axis=1)
        bottom = raw.min(axis=1)
        ptp = top - bottom
        on_top, on_bottom = raw == top[:, None], raw == bottom[:, None]
        if young:
            on_top &= valid
            on_bottom &= valid
        at_rail = on_top.sum(axis=1) + on_bottom.sum(axis=1)
        # clipping hits the rail again and again (each QRS); a signal that just went flat enters
        # its final value once, so require at least three separate visits to a rail
        entries = (on_top[:, 1:] & ~on_top[:, :-1]).sum(axis=1)
        entries += (on_bottom[:, 1:] & ~on_bottom[:, :-1]).sum(axis=1)
        lim = self.limits
        flat = ptp < lim.flat_ptp_mv
        saturated = (
            ~flat & (at_rail >= lim.saturation_fraction * np.maximum(have, 1)) & (entries >= 3)
        )
        noisy = ~flat & ~saturated & (noise > lim.noise_mv)
        return [
            QualityFlags(bool(f), bool(s), bool(nz), float(p), float(nm))
            for f, s, nz, p, nm in zip(flat, saturated, noisy, ptp, noise)
        ]
