"""Causal ventricular fibrillation / tachycardia detection, independent of QRS detection.

A QRS detector cannot be trusted in VF: there are no QRS complexes, and a wide, sinusoid-like VT
barely shows in a 5-15 Hz band. So this bank looks at the ECG itself, in 3 s windows judged every
0.5 s, with three features from the VF-detection literature (compared on vfdb/cudb by Amann A,
Tratnig R, Unterkofler K. *Reliability of old and new ventricular fibrillation detection
algorithms for automated external defibrillators.* BioMed Eng OnLine 4:60 (2005)):

* **TCSC**, threshold crossing sample count (Arafat MA, Chowdhury AW, Hasan MK. *A simple time
  domain algorithm for the detection of ventricular fibrillation in electrocardiogram.* Signal
  Image Video Process 5:1-10 (2011)): the share of samples of the tapered window whose magnitude
  exceeds 0.2 of its maximum. Narrow QRS complexes leave most samples near the baseline; VF and
  wide VT fill the window.
* **VF-filter leakage** (Kuo S, Dillman R. *Computer detection of ventricular fibrillation.*
  Computers in Cardiology 1978:347-349): a notch at the window's mean frequency; a
  quasi-sinusoidal signal (VF, flutter, fast wide VT) leaks little through it.
* **Dominant frequency** of the windowed spectrum (Barro S, Ruiz R, Cabello D, Mira J.
  *Algorithmic sequential decision-making in the frequency domain for life threatening
  ventricular arrhythmias and imitative artefacts.* J Biomed Eng 11:320-328 (1989)): the
  rate of the activity, at least 2 Hz (120/min, a ventricular tachycardia) for an alarm; 4 Hz
  (240/min) and above is called fibrillation/flutter, below it tachycardia. (The floor was
  2.5 Hz, the extreme-tachycardia limit; vfdb 419's slow flutter at 130-140/min fell under it.)

A window is *ventricular* when TCSC >= 0.45, leakage < 0.5, dominant frequency >= 2 Hz and
peak-to-peak >= 0.15 mV (a flatter line is asystole, not VF). The condition starts
after two consecutive ventricular windows (1 s of agreement) and ends after four that are not.
Every feature is amplitude-invariant, so x0.5 and x2 signals give the same decisions.
VT slower than 120/min, or too short for 1 s of agreement, is left to the QRS-based rule the
analyzer applies with ``vt_run_beats``/``vt_rate_bpm`` (a run of wide beats from
`dsp.qrs.PanTompkinsBank.wide_runs`).
Tried and not kept: the phase-space box count of the time-delay method (Amann A, Tratnig R,
Unterkofler K. *Detecting ventricular fibrillation by time-delay methods.* IEEE Trans Biomed
Eng 54(1):174-177 (2007)) changed no decision on these records once the other three were
applied, and it rejects a strictly regular monomorphic VT (one loop in phase space).
Thresholds are round values set on physiology (rates, QRS width) and checked on vfdb 418/419,
cudb cu01 and mitdb; they were not searched finely on those records.

The signal is decimated to ~50-60 Hz by the mean of each block of ``decimation`` samples
(counted from the stream's first sample, partial blocks carried between calls), then band-passed
1-20 Hz at that rate: about a tenth of the cost of filtering at the full rate. (The thresholds
were first set at ~100-125 Hz on a 1-30 Hz band; the VF/VT figures in docs/dsp.md are those of
this decimated path.) Windows end on fixed multiples of 0.5 s of each stream's own sample count, so the
decisions depend only on the samples, never on how they were chunked. All rows are handled in
a few numpy operations per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from dsp.filters import History, SosFilterBank, check_sampling_rate, windows


@dataclass(frozen=True)
class VentricularParams:
    """Window, evaluation step and thresholds of `VentricularBank` (seconds, Hz, mV, 0-1)."""

    window_s: float = 3.0
    step_s: float = 0.5
    #: features on every ``floor(fs / this)``-th band-passed sample (VF lies at 3-10 Hz)
    analysis_rate_hz: float = 50.0
    band_hz: tuple[float, float] = (1.0, 20.0)
    tcsc_threshold: float = 0.2
    min_tcsc: float = 0.45
    max_leakage: float = 0.5
    #: 2 Hz = 120/min, where ventricular tachycardia begins (was 2.5 Hz: vfdb 419's flutter at
    #: 2.15-2.34 Hz (130-140/min) was alarmed only 5.3 s after its onset)
    min_frequency_hz: float = 2.0
    fibrillation_frequency_hz: float = 4.0
    min_ptp_mv: float = 0.15
    windows_to_raise: int = 2
    windows_to_clear: int = 4
    #: QRS-based VT (for slow and short VT the spectral rule misses): this many consecutive
    #: wide beats (`PanTompkinsParams.wide_ratio`) at a rate of at least ``vt_rate_bpm``
    #: (defaults as common monitors ship them); 0 turns the QRS-based rule off
    vt_run_beats: int = 5
    vt_rate_bpm: float = 100.0
    #: ...or this many beats alternating ventricular / not at a steady rate of at least
    #: ``vt_rate_bpm`` (bidirectional VT, whose every other complex can look like the
    #: patient's normal beat in one lead; `dsp.qrs.PanTompkinsBank.alternating_runs`): twice
    #: the run length, so 5 complexes of each axis; 0 turns it off
    vt_alternating_beats: int = 10


@dataclass
class VentricularFeatures:
    """Features of evaluated windows, one entry per window (arrays)."""

    tcsc: np.ndarray
    leakage: np.ndarray
    frequency_hz: np.ndarray
    ptp_mv: np.ndarray


class VentricularBank:
    """VF/VT condition for many streams of one sampling rate (rows).

    ``process(x_mv, rows)`` takes the next block of each row; afterwards ``fibrillation`` and
    ``tachycardia`` (bool, one per row) tell whether the condition is present, and
    ``onset_sample`` where it began (stream sample index of the first ventricular window's end).
    """

    def __init__(self, sampling_rate_hz: float, params: VentricularParams | None = None) -> None:
        self.fs = check_sampling_rate(sampling_rate_hz)
        self.params = p = params or VentricularParams()
        self.decimation = max(1, int(self.fs // p.analysis_rate_hz))
        self.fs_v = self.fs / self.decimation
        self.window = int(round(p.window_s * self.fs_v))
        self.step = max(1, int(round(p.step_s * self.fs_v)))
        self.nfft = 1 << int(np.ceil(np.log2(self.window)))
        self._band = SosFilterBank(  # run at the analysis rate, after boxcar decimation
            np.asarray(signal.butter(2, list(p.band_hz), btype="bandpass", fs=self.fs_v,
                                     output="sos"))
        )
        self._part = np.zeros((0, self.decimation))
        self._hist = History(self.window + self.step)
        self._taper = signal.windows.tukey(self.window, 1.0 / 6.0)[None, :]
        self._hann = np.hanning(self.window)[None, :]
        freqs = np.fft.rfftfreq(self.nfft, 1.0 / self.fs_v)
        self._band_bins = np.flatnonzero((freqs >= p.band_hz[0]) & (freqs <= p.band_hz[1]))
        self._freqs = freqs[self._band_bins]
        self._seen = np.zeros(0, dtype=np.int64)  # full-rate samples per row
        self._on = np.zeros(0, dtype=np.int64)  # consecutive ventricular windows
        self._off = np.zeros(0, dtype=np.int64)  # consecutive other windows
        self.fibrillation = np.zeros(0, dtype=bool)
        self.tachycardia = np.zeros(0, dtype=bool)
        self.onset_sample = np.zeros(0, dtype=np.int64)
        self._first_on = np.zeros(0, dtype=np.int64)

    @property
    def n_streams(self) -> int:
        """Number of rows."""
        return int(self._seen.shape[0])

    def add_stream(self) -> int:
        """Add a stream; return its row."""
        self._band.add_streams(1)
        self._hist.add_streams(1)
        self._part = np.concatenate([self._part, np.zeros((1, self.decimation))])
        for name in ("_seen", "_on", "_off", "onset_sample", "_first_on"):
            setattr(self, name, np.append(getattr(self, name), 0))
        self.fibrillation = np.append(self.fibrillation, False)
        self.tachycardia = np.append(self.tachycardia, False)
        return self.n_streams - 1

    def remove_stream(self, row: int) -> None:
        """Remove one stream; later rows shift down by one."""
        self._band.remove_stream(row)
        self._hist.remove_stream(row)
        self._part = np.delete(self._part, row, axis=0)
        for name in ("_seen", "_on", "_off", "onset_sample", "_first_on", "fibrillation",
                     "tachycardia"):
            setattr(self, name, np.delete(getattr(self, name), row))

    def process(self, x_mv: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Feed the next block (n_rows, n) in millivolts of all rows or of ``rows``."""
        x = np.asarray(x_mv, dtype=np.float64)
        row_ids = np.arange(self.n_streams) if rows is None else np.asarray(rows)
        n = x.shape[1]
        if n == 0 or row_ids.size == 0:
            return
        dec = self.decimation
        seen = self._seen[row_ids]
        self._seen[row_ids] = seen + n
        part = seen % dec  # samples already waiting in the current decimation block
        same = part.size == 0 or bool((part == part[0]).all())
        phases = part[:1] if same else np.unique(part)  # (np.unique costs ~30 us)
        for p in phases.tolist():
            if phases.size == 1:  # the common case: no gather/scatter when all rows come
                pos, sel = np.arange(row_ids.size), None if rows is None else row_ids
                xs = x
            else:
                pos = np.flatnonzero(part == p)
                sel = row_ids[pos]
                xs = x[pos]
            ids = row_ids[pos]
            joined = np.concatenate([self._part[ids, :p], xs], axis=1) if p else xs
            blocks = (p + n) // dec
            rest = p + n - blocks * dec
            self._part[ids, :rest] = joined[:, blocks * dec :]
            if blocks == 0:
                continue
            # boxcar mean of each block: the anti-alias filter (nulls at multiples of fs/dec,
            # mains 50 Hz included at 500 Hz), then the band-pass at the analysis rate
            means = joined[:, : blocks * dec].reshape(ids.size, blocks, dec).mean(axis=2)
            self._absorb(ids, self._band.process(means, sel), seen[pos] // dec, sel)

    def _absorb(self, row_ids: np.ndarray, yd: np.ndarray, seen_d: np.ndarray,
                sel: np.ndarray | None) -> None:
        """Add decimated samples ``yd`` of ``row_ids`` (``sel``: the same, or None for all rows
        in order; ``seen_d``: decimated samples before them); evaluate every due window."""
        dec, w, step = self.decimation, self.window, self.step
        nd = yd.shape[1]
        hl = self._hist.length
        if nd > hl - w:  # long blocks: in pieces, so every due window is still in the history
            piece = hl - w
            for a in range(0, nd, piece):
                self._absorb(row_ids, yd[:, a : a + piece], seen_d + a, sel)
            return
        ext = self._hist.extend(yd, sel)  # (R, hl + nd)
        # window ends (decimated index, exclusive) that are multiples of step in the new part
        first = (seen_d // step + 1) * step
        last = seen_d + nd
        count = np.where(last >= first, (last - first) // step + 1, 0)
        if not count.any():
            return
        for k in range(int(count.max())):
            pick = np.flatnonzero(count > k)
            end = first[pick] + k * step
            cols = end - seen_d[pick] + hl  # exclusive end column in ext
            ready = end >= w
            ventricular = np.zeros(pick.size, dtype=bool)
            fib = np.zeros(pick.size, dtype=bool)
            if ready.any():
                # rows of a sliding view: a strided copy per window, not an index per sample
                win = windows(ext, w)[pick[ready], cols[ready] - w]
                # TCSC and p-p first: most windows (narrow QRS) fail them, and only the rest
                # pay for the spectrum and the leakage (same decisions, a fraction of the cost)
                tcsc, ptp = self._tcsc_ptp(win)
                maybe = (tcsc >= self.params.min_tcsc) & (ptp >= self.params.min_ptp_mv)
                if maybe.any():
                    v, fb = self.classify(self.features(win[maybe]))
                    at = np.flatnonzero(ready)[maybe]
                    ventricular[at] = v
                    fib[at] = fb
            self._update(row_ids[pick], ventricular, fib, end * dec)

    def _update(self, rows: np.ndarray, ventricular: np.ndarray, fib: np.ndarray,
                end_sample: np.ndarray) -> None:
        """Advance the raise/clear counters of ``rows`` by one window each."""
        p = self.params
        on = np.where(ventricular, self._on[rows] + 1, 0)
        off = np.where(ventricular, 0, self._off[rows] + 1)
        first_on = np.where(ventricular & (on == 1), end_sample, self._first_on[rows])
        self._on[rows], self._off[rows], self._first_on[rows] = on, off, first_on
        active = self.fibrillation[rows] | self.tachycardia[rows]
        start = ~active & (on >= p.windows_to_raise)
        stop = active & (off >= p.windows_to_clear)
        now_active = (active & ~stop) | start
        # the kind follows the latest ventricular window (flutter can slow into VT and back)
        fib_now = np.where(ventricular, fib, self.fibrillation[rows])
        self.fibrillation[rows] = now_active & fib_now
        self.tachycardia[rows] = now_active & ~fib_now
        self.onset_sample[rows] = np.where(start, first_on, self.onset_sample[rows])

    def _tcsc_ptp(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCSC and peak-to-peak (mV) of windows ``win`` (n, window)."""
        tapered = np.abs(win * self._taper)
        peak = tapered.max(axis=1, keepdims=True)
        peak[peak == 0] = 1.0
        above = tapered > self.params.tcsc_threshold * peak
        if above.shape[1] < 256:  # counted as bytes (no buffered bool cast); the count is
            # exact either way, so count / n is np.mean's value
            tcsc = above.view(np.uint8).sum(axis=1, dtype=np.uint8) / above.shape[1]
        else:
            tcsc = above.mean(axis=1)
        return tcsc, win.max(axis=1) - win.min(axis=1)

    def features(self, win: np.ndarray) -> VentricularFeatures:
        """Features of windows ``win`` (n, window) of band-passed, decimated ECG (mV)."""
        tcsc, ptp = self._tcsc_ptp(win)
        spec = np.abs(np.fft.rfft(win * self._hann, n=self.nfft, axis=1)[:, self._band_bins])
        freq = self._freqs[np.argmax(spec, axis=1)]
        a = np.abs(win[:, 1:]).sum(axis=1)
        b = np.abs(np.diff(win, axis=1)).sum(axis=1)
        half_period = np.floor(np.pi * a / np.where(b > 0, b, 1.0) + 0.5).astype(np.int64)
        half_period = np.clip(half_period, 1, self.window - 1)
        cols = np.arange(self.window)[None, :]
        back = cols - half_period[:, None]
        valid = back >= 0
        lagged = np.take_along_axis(win, np.maximum(back, 0), axis=1)
        num = np.where(valid, np.abs(win + lagged), 0.0).sum(axis=1)
        den = np.where(valid, np.abs(win) + np.abs(lagged), 0.0).sum(axis=1)
        leakage = num / np.where(den > 0, den, 1.0)
        return VentricularFeatures(tcsc, leakage, freq, ptp)

    def classify(self, f: VentricularFeatures) -> tuple[np.ndarray, np.ndarray]:
        """(ventricular, fibrillation) per window: see the module docstring for the rule."""
        p = self.params
        ventricular = (
            (f.tcsc >= p.min_tcsc)
            & (f.leakage < p.max_leakage)
            & (f.frequency_hz >= p.min_frequency_hz)
            & (f.ptp_mv >= p.min_ptp_mv)
        )
        return ventricular, ventricular & (f.frequency_hz >= p.fibrillation_frequency_hz)
