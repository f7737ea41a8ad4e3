"""WFDB reference records: loading, resampling, beat references and EC57-style scoring.

Used by `ecg_eval`, the tests and the benchmark; not by the live path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal
from wfdb.processing import compare_annotations

#: Annotation symbols that are beats (AAMI EC57 / PhysioNet convention); everything else is not.
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
#: EC57 one-to-one matching window.
MATCH_WINDOW_S = 0.150
#: EC57 allows the first 5 minutes as the detector's learning period.
LEARNING_PERIOD_S = 300.0


@dataclass(frozen=True)
class EcgRecord:
    """One channel of a WFDB record with its reference beats and unscored intervals.

    ``signal_mv``: shape (n,), millivolts. ``beats``: reference beat sample indices.
    ``excluded``: list of (start, end) sample intervals where detections are not scored
    (ventricular flutter/fibrillation episodes, which carry no beat labels).
    """

    name: str
    sampling_rate_hz: float
    signal_mv: np.ndarray
    beats: np.ndarray
    excluded: tuple[tuple[int, int], ...]


def load_record(path: str | Path, channel: int = 0) -> EcgRecord:
    """Read a WFDB record (path without extension) and its ``.atr`` beat annotations.

    Raises:
        FileNotFoundError: if the header or the annotation file is missing.
    """
    import wfdb

    path = Path(path)
    for ext in (".hea", ".atr"):
        if not path.with_suffix(ext).exists() and not Path(str(path) + ext).exists():
            raise FileNotFoundError(f"expected WFDB file {path}{ext}, not found")
    rec = wfdb.rdrecord(str(path), channels=[channel])
    ann = wfdb.rdann(str(path), "atr")
    sig = np.asarray(rec.p_signal[:, 0], dtype=np.float64)
    symbols = np.asarray(ann.symbol)
    samples = np.asarray(ann.sample, dtype=np.int64)
    beats = samples[np.isin(symbols, list(BEAT_SYMBOLS))]
    return EcgRecord(
        name=path.name,
        sampling_rate_hz=float(rec.fs),
        signal_mv=np.nan_to_num(sig),
        beats=beats,
        excluded=_flutter_episodes(ann, len(sig)),
    )


def _flutter_episodes(ann: object, n_samples: int) -> tuple[tuple[int, int], ...]:
    """Flutter/fibrillation intervals: '[' to ']' marks, and '(VFL'/'(VF' to the next rhythm."""
    episodes: list[tuple[int, int]] = []
    start: int | None = None
    bracket: int | None = None
    for sample, sym, aux in zip(ann.sample, ann.symbol, ann.aux_note, strict=False):  # type: ignore[attr-defined]
        if sym == "[":
            bracket = int(sample)
        elif sym == "]" and bracket is not None:
            episodes.append((bracket, int(sample) + 1))
            bracket = None
        if sym != "+":
            continue
        label = (aux or "").strip("\x00 ")
        if start is not None:
            episodes.append((start, int(sample)))
            start = None
        if label in ("(VFL", "(VF"):
            start = int(sample)
    for open_start in (start, bracket):
        if open_start is not None:
            episodes.append((open_start, n_samples))
    return tuple(sorted(episodes))


def resample_record(record: EcgRecord, sampling_rate_hz: float) -> EcgRecord:
    """Resample a record (polyphase, anti-aliased) and map its beat indices to the new rate."""
    from fractions import Fraction

    ratio = Fraction(sampling_rate_hz / record.sampling_rate_hz).limit_denominator(1000)
    sig = signal.resample_poly(record.signal_mv, ratio.numerator, ratio.denominator)
    scale = sampling_rate_hz / record.sampling_rate_hz
    beats = np.round(record.beats * scale).astype(np.int64)
    excluded = tuple((int(a * scale), int(b * scale)) for a, b in record.excluded)
    return EcgRecord(record.name, float(sampling_rate_hz), sig, beats, excluded)


@dataclass(frozen=True)
class BeatScore:
    """EC57-style beat-by-beat comparison: true/false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def se(self) -> float:
        """Sensitivity tp / (tp + fn), 0-1 (1.0 if there were no reference beats)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def ppv(self) -> float:
        """Positive predictivity tp / (tp + fp), 0-1 (1.0 if nothing was detected)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    def __add__(self, other: BeatScore) -> BeatScore:
        return BeatScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def score_beats(
    record: EcgRecord, detected: np.ndarray, skip_first_s: float = 0.0
) -> BeatScore:
    """Match detections to reference beats one-to-one within +-150 ms (wfdb compare_annotations).

    Detections and references inside ``record.excluded`` and before ``skip_first_s`` are dropped.
    """
    fs = record.sampling_rate_hz
    start = int(round(skip_first_s * fs))
    ref = _scored(record.beats, record.excluded, start)
    det = _scored(np.asarray(detected, dtype=np.int64), record.excluded, start)
    if ref.size == 0 or det.size == 0:
        return BeatScore(0, int(det.size), int(ref.size))
    cmp = compare_annotations(ref, det, int(MATCH_WINDOW_S * fs))
    return BeatScore(int(cmp.tp), int(cmp.fp), int(cmp.fn))


def _scored(samples: np.ndarray, excluded: tuple[tuple[int, int], ...], start: int) -> np.ndarray:
    keep = samples >= start
    for a, b in excluded:
        keep &= (samples < a) | (samples >= b)
    return np.sort(samples[keep])


def qrs_signal_power(record: EcgRecord, window_s: float = 0.1) -> float:
    """Signal power as the MIT-BIH noise stress test defines it: (mean QRS peak-to-peak)^2 / 8.

    Peak-to-peak is measured within +-``window_s`` of each reference beat (median over beats,
    so a few artefacts do not count), as PhysioNet's ``nst`` does for its SNR calibration.
    """
    fs = record.sampling_rate_hz
    half = int(round(window_s * fs))
    x = record.signal_mv
    beats = record.beats[(record.beats > half) & (record.beats < x.size - half)]
    idx = beats[:, None] + np.arange(-half, half + 1)[None, :]
    ptp = np.ptp(x[idx], axis=1)
    return float(np.median(ptp)) ** 2 / 8.0


def noise_stress_mixture(
    record: EcgRecord, noise_mv: np.ndarray, snr_db: float, clean_s: float = 300.0,
    segment_s: float = 120.0,
) -> EcgRecord:
    """``record`` with ``noise_mv`` added like nstdb: clean for ``clean_s``, then noise on in
    alternating ``segment_s`` segments (on, off, on, ...), scaled to ``snr_db`` against
    `qrs_signal_power` (noise power = its variance). Same beats as ``record``.

    Raises:
        ValueError: if the noise is shorter than the record.
    """
    x = record.signal_mv
    if noise_mv.size < x.size:
        raise ValueError(f"noise must have at least {x.size} samples, got {noise_mv.size}")
    fs = record.sampling_rate_hz
    noise = noise_mv[: x.size] - float(np.mean(noise_mv[: x.size]))
    scale = np.sqrt(qrs_signal_power(record) / (float(np.var(noise)) * 10 ** (snr_db / 10)))
    t = np.arange(x.size) / fs
    on = (t >= clean_s) & (((t - clean_s) // segment_s) % 2 == 0)
    mixed = x + np.where(on, scale * noise, 0.0)
    return EcgRecord(record.name, fs, mixed, record.beats, record.excluded)
