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


def windows(a: np.ndarray, length: int) -> np.ndarray:
    """All windows of ``length`` columns of a 2-D array, a read-only view: ``[r, c]`` is
    ``a[r, c : c + length]``. Gathering windows as rows of it (``windows(a, w)[rows, starts]``)
    copies each window as one strided run instead of computing an index per element (what
    ``a[rows[:, None], starts[:, None] + np.arange(w)]`` does), with the same values. Like
    `numpy.lib.stride_tricks.sliding_window_view` without its per-call checks."""
    rows, cols = a.shape
    return np.lib.stride_tricks.as_strided(
        a, (rows, cols - length + 1, length), (a.strides[0], a.strides[1], a.strides[1]),
        writeable=False,
    )


def _grow(array: np.ndarray, axis: int, count: int) -> np.ndarray:
    """``array`` with ``count`` zero rows appended along ``axis`` (a copy)."""
    shape = list(array.shape)
    shape[axis] = count
    return np.concatenate([array, np.zeros(shape, dtype=array.dtype)], axis=axis)


try:  # scipy's own compiled kernel behind `scipy.signal.sosfilt`, called without the
    # wrapper's argument checks and layout copies (~20 % of the filter's cost for 1,000 short
    # rows); the public function is the fallback and the reference (tests/dsp/test_filters.py)
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - a scipy without it
    _sosfilt_kernel = None


@dataclass
class SosFilterBank:
    """One IIR filter (SOS form) applied to many streams, state carried between calls.

    ``zi`` has shape (n_sections, n_streams, 2), the layout ``scipy.signal.sosfilt`` takes for a
    2-D input filtered along ``axis=-1`` (held as (n_streams, n_sections, 2), the layout of
    scipy's kernel, so a call for all streams filters them in place). A stream's state starts at
    the steady state for its first sample (no start-up transient from a DC offset), which
    depends only on that sample, so chunking never changes the output. Streams are stored with
    spare capacity so adding a thousand streams one by one costs linear, not quadratic, copying.
    """

    sos: np.ndarray
    #: call scipy's kernel directly (False: `scipy.signal.sosfilt`, same numbers)
    direct: bool = True
    _zi: np.ndarray = field(init=False, repr=False)
    _started: np.ndarray = field(init=False, repr=False)
    _n: int = field(init=False, default=0)
    _zi_unit: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sos = np.ascontiguousarray(self.sos, dtype=np.float64)
        self._zi_unit = signal.sosfilt_zi(self.sos)  # (n_sections, 2) for a unit step
        self._zi = np.zeros((0, self.sos.shape[0], 2))
        self._started = np.zeros(0, dtype=bool)
        self.direct = self.direct and _sosfilt_kernel is not None

    @property
    def n_streams(self) -> int:
        """Number of streams (rows) the bank holds state for."""
        return self._n

    @property
    def zi(self) -> np.ndarray:
        """Filter state, shape (n_sections, n_streams, 2) (a view)."""
        return self._zi[: self._n].transpose(1, 0, 2)

    def add_streams(self, count: int) -> None:
        """Append ``count`` fresh streams at the end of the row order."""
        need = self._n + count
        if need > self._started.shape[0]:
            extra = max(need, 2 * self._started.shape[0]) - self._started.shape[0]
            self._zi = _grow(self._zi, 0, extra)
            self._started = _grow(self._started, 0, extra)
        self._zi[self._n : need] = 0.0
        self._started[self._n : need] = False
        self._n = need

    def remove_stream(self, row: int) -> None:
        """Drop one stream's state; later rows shift down by one."""
        n = self._n
        self._zi[row : n - 1] = self._zi[row + 1 : n].copy()
        self._started[row : n - 1] = self._started[row + 1 : n].copy()
        self._n = n - 1

    def process(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Filter a block, shape (n_rows, n_samples), for all streams or the given ``rows``.

        Returns the filtered block, same shape, float64.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] == 0:
            return x.copy()
        n = self._n
        # all rows: the state is filtered in place; some rows: a gathered copy, written back
        zi = self._zi[:n] if rows is None else self._zi[rows]
        started = self._started[:n] if rows is None else self._started[rows]
        if not started.all():
            fresh = ~started
            zi[fresh] = self._zi_unit[None, :, :] * x[fresh, 0][:, None, None]
        if self.direct:
            y = np.array(x, dtype=np.float64, order="C")  # the kernel filters in place
            _sosfilt_kernel(self.sos, y, zi)
        else:
            y, zf = signal.sosfilt(self.sos, x, axis=-1, zi=zi.transpose(1, 0, 2))
            zi[...] = np.asarray(zf).transpose(1, 0, 2)
        if rows is None:
            self._started[:n] = True
        else:
            self._zi[rows] = zi
            self._started[rows] = True
        return np.asarray(y)


@dataclass
class History:
    """The last ``length`` samples of many streams, kept as one 2-D numpy array.

    ``extend`` returns the history joined with the new block (so windowed computations can look
    back across call boundaries) and keeps the tail as the new history. Rows have spare capacity
    (adding streams one by one is linear). The history sits in a window of a wider buffer: a
    call for all rows writes the block just after it and returns that stretch as a view, then
    moves the window forward (the history itself is not copied; it is moved back to the start of
    the buffer only when the buffer's end is reached). A call for some rows gathers them.
    """

    length: int
    dtype: type = np.float64
    #: spare columns after the window (default ``2 * length + 256``): how many samples can be
    #: appended before the window moves back once
    spare: int = 0
    _buf: np.ndarray = field(init=False, repr=False)
    _start: int = field(init=False, default=0)
    _n: int = field(init=False, default=0)
    _work: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.spare <= 0:
            self.spare = 2 * self.length + 256
        self._buf = np.zeros((0, self.length + self.spare), dtype=self.dtype)
        self._work = np.zeros((0, 0), dtype=self.dtype)

    @property
    def data(self) -> np.ndarray:
        """The kept history, shape (n_streams, length) (a view)."""
        return self._buf[: self._n, self._start : self._start + self.length]

    def add_streams(self, count: int) -> None:
        """Append ``count`` streams with zero history."""
        need = self._n + count
        if need > self._buf.shape[0]:
            extra = max(need, 2 * self._buf.shape[0]) - self._buf.shape[0]
            self._buf = _grow(self._buf, 0, extra)
        self._buf[self._n : need] = 0
        self._n = need

    def remove_stream(self, row: int) -> None:
        """Drop one stream's history; later rows shift down by one."""
        n = self._n
        self._buf[row : n - 1] = self._buf[row + 1 : n].copy()
        self._n = n - 1

    def extend(self, block: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Return ``history ++ block`` (shape (n_rows, length + n)) and keep its last samples.

        The returned array is a view of a reused buffer, valid until the next ``extend`` call;
        do not write to it.
        """
        r, n = block.shape
        length = self.length
        if rows is None and n <= self.spare:
            if self._start + length + n > self._buf.shape[1]:  # move the window back
                self._buf[: self._n, :length] = self.data
                self._start = 0
            a = self._start
            joined = self._buf[: self._n, a : a + length + n]
            joined[:, length:] = block
            self._start = a + n
            return joined
        width = length + n
        if self._work.shape[0] < r or self._work.shape[1] < width:
            self._work = np.empty(
                (max(r, self._work.shape[0]), max(width, self._work.shape[1])), self.dtype
            )
        joined = self._work[:r, :width]
        data = self.data
        joined[:, :length] = data if rows is None else data[rows]
        joined[:, length:] = block
        tail = joined[:, n:]
        if rows is None:
            data[:] = tail
        else:
            data[rows] = tail
        return joined
