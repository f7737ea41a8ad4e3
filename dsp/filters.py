"""Causal, stateful filters for many streams at once.

Every filter here holds its coefficients and its state explicitly and processes a 2-D block
``(n_streams, n_samples)`` in one call, so filtering a record in chunks of any size gives exactly
the same output as filtering it whole (the state carried between calls is the exact state the
whole-record call would have had at that point). Rows of the state arrays are streams; a call may
work on a subset of rows (``rows=``) so streams with different amounts of queued data can share
one bank.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

MIN_SAMPLING_RATE_HZ = 125.0
MAX_SAMPLING_RATE_HZ = 1000.0


def check_sampling_rate(sampling_rate_hz: float) -> float:
    """Validate a sampling rate; return it as float.

    Raises:
        ValueError: if it is not a finite number within 125-1000 Hz.
    """
    fs = float(sampling_rate_hz)
    if not np.isfinite(fs) or not MIN_SAMPLING_RATE_HZ <= fs <= MAX_SAMPLING_RATE_HZ:
        raise ValueError(
            f"sampling rate must be {MIN_SAMPLING_RATE_HZ:g}-{MAX_SAMPLING_RATE_HZ:g} Hz, "
            f"got {sampling_rate_hz!r}"
        )
    return fs


def design_qrs_bandpass(sampling_rate_hz: float) -> np.ndarray:
    """Band-pass for QRS energy (5-15 Hz, 2nd-order Butterworth, as in Pan & Tompkins 1985).

    Designed from the sampling rate so the pass band is the same at 125-1000 Hz.
    Returns SOS coefficients, shape (n_sections, 6).
    """
    fs = check_sampling_rate(sampling_rate_hz)
    return np.asarray(signal.butter(2, [5.0, 15.0], btype="bandpass", fs=fs, output="sos"))


def design_highpass(sampling_rate_hz: float, cutoff_hz: float, order: int = 2) -> np.ndarray:
    """Butterworth high-pass in SOS form, cut-off clamped below Nyquist.

    Returns SOS coefficients, shape (n_sections, 6).
    """
    fs = check_sampling_rate(sampling_rate_hz)
    cutoff = min(float(cutoff_hz), 0.45 * fs)
    return np.asarray(signal.butter(order, cutoff, btype="highpass", fs=fs, output="sos"))


def group_delay_samples(sos: np.ndarray, frequency_hz: float, sampling_rate_hz: float) -> float:
    """Group delay of an SOS filter at one frequency, in samples."""
    b, a = signal.sos2tf(sos)
    _, gd = signal.group_delay((b, a), w=[frequency_hz], fs=sampling_rate_hz)
    return float(gd[0])


@dataclass
class SosFilterBank:
    """One IIR filter (SOS form) applied to many streams, state carried between calls.

    ``zi`` has shape (n_sections, n_streams, 2), the layout ``scipy.signal.sosfilt`` takes for a
    2-D input filtered along ``axis=-1``. A stream's state starts at the steady state for its
    first sample (no start-up transient from a DC offset), which depends only on that sample, so
    chunking never changes the output.
    """

    sos: np.ndarray
    zi: np.ndarray = field(init=False)
    started: np.ndarray = field(init=False)
    _zi_unit: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sos = np.ascontiguousarray(self.sos, dtype=np.float64)
        self._zi_unit = signal.sosfilt_zi(self.sos)  # (n_sections, 2) for a unit step
        self.zi = np.zeros((self.sos.shape[0], 0, 2))
        self.started = np.zeros(0, dtype=bool)

    @property
    def n_streams(self) -> int:
        """Number of streams (rows) the bank holds state for."""
        return int(self.started.shape[0])

    def add_streams(self, count: int) -> None:
        """Append ``count`` fresh streams at the end of the row order."""
        self.zi = np.concatenate([self.zi, np.zeros((self.sos.shape[0], count, 2))], axis=1)
        self.started = np.concatenate([self.started, np.zeros(count, dtype=bool)])

    def remove_stream(self, row: int) -> None:
        """Drop one stream's state; later rows shift down by one."""
        self.zi = np.delete(self.zi, row, axis=1)
        self.started = np.delete(self.started, row)

    def process(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Filter a block, shape (n_rows, n_samples), for all streams or the given ``rows``.

        Returns the filtered block, same shape, float64.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] == 0:
            return x.copy()
        zi = self.zi if rows is None else self.zi[:, rows, :]
        started = self.started if rows is None else self.started[rows]
        if not started.all():
            fresh = ~started
            zi[:, fresh, :] = self._zi_unit[:, None, :] * x[fresh, 0][None, :, None]
        y, zf = signal.sosfilt(self.sos, x, axis=-1, zi=zi)
        if rows is None:
            self.zi = zf
            self.started[:] = True
        else:
            self.zi[:, rows, :] = zf
            self.started[rows] = True
        return np.asarray(y)


@dataclass
class History:
    """The last ``length`` samples of many streams, kept as one 2-D numpy array.

    ``extend`` returns the history joined with the new block (so windowed computations can look
    back across call boundaries) and keeps the tail as the new history.
    """

    length: int
    dtype: type = np.float64
    data: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.data = np.zeros((0, self.length), dtype=self.dtype)

    def add_streams(self, count: int) -> None:
        """Append ``count`` streams with zero history."""
        self.data = np.concatenate([self.data, np.zeros((count, self.length), self.dtype)])

    def remove_stream(self, row: int) -> None:
        """Drop one stream's history; later rows shift down by one."""
        self.data = np.delete(self.data, row, axis=0)

    def extend(self, block: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Return ``history ++ block`` (shape (n_rows, length + n)) and keep its last samples."""
        old = self.data if rows is None else self.data[rows]
        joined = np.concatenate([old, block.astype(self.dtype, copy=False)], axis=1)
        tail = joined[:, joined.shape[1] - self.length :]
        if rows is None:
            self.data = np.ascontiguousarray(tail)
        else:
            self.data[rows] = tail
        return joined
