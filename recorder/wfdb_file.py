"""One recorded monitor stream as a WFDB record, written incrementally and sample-exact.

`<name>.dat` holds interleaved integer samples (format 16: little-endian int16; format 32: int32)
written at their place: sample k of channel c sits at byte (k * n_channels + c) * width, so a
back-filled chunk that arrives late lands where it belongs. Samples not received yet read as the
WFDB invalid-sample value (-32768 / -2**31). `<name>.hea` is rewritten atomically at every
checkpoint and at close, so a killed process leaves a readable record up to the last checkpoint.
Beats and alarms go to `<name>.atr` (alarms as `"` comment annotations with the label as aux note).
Runs on the recorder's writer thread.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recorder.crypto import Encryption
from waveforms.ranges import IntervalSet


@functools.cache
def beat_and_event_symbols() -> frozenset[str]:
    """WFDB's annotation symbols. wfdb (and pandas with it) is imported on first use only: a
    node that forwards media never loads it (idle RSS, issue 17)."""
    from wfdb.io.annotation import ann_label_table

    return frozenset(ann_label_table["symbol"].tolist())
_UNITS_RE = re.compile(r"^[^\s()/]+$")


@dataclass(frozen=True, slots=True)
class WaveformStreamInfo:
    """Description of a monitor stream: how its integer samples map to physical values.

    physical = (adc - baseline) / gain, in `units` (e.g. "mV"). `gains` in adc units per physical
    unit, `sampling_rate_hz` > 0. `adc_resolution_bits` <= 16 stores format 16, else format 32.
    Raises ValueError on inconsistent lengths or values.
    """

    channel_names: tuple[str, ...]
    units: tuple[str, ...]
    gains: tuple[float, ...]
    baselines: tuple[int, ...]
    sampling_rate_hz: float
    adc_resolution_bits: int = 16

    def __post_init__(self) -> None:
        n = len(self.channel_names)
        if n == 0:
            raise ValueError("a waveform stream needs at least 1 channel, got 0")
        for name, values in (("units", self.units), ("gains", self.gains),
                             ("baselines", self.baselines)):
            if len(values) != n:
                raise ValueError(f"{name} must have {n} entries (one per channel), got {len(values)}")
        if not self.sampling_rate_hz > 0:
            raise ValueError(f"sampling_rate_hz must be > 0, got {self.sampling_rate_hz}")
        if not 1 <= self.adc_resolution_bits <= 32:
            raise ValueError(f"adc_resolution_bits must be 1-32, got {self.adc_resolution_bits}")
        for unit in self.units:
            if not _UNITS_RE.match(unit):
                raise ValueError(f"units must be non-empty without spaces, '/' or '()', got {unit!r}")
        for gain in self.gains:
            if not gain > 0:
                raise ValueError(f"gains must be > 0, got {gain}")

    @property
    def n_channels(self) -> int:
        """Number of channels (rows of a chunk)."""
        return len(self.channel_names)

    @property
    def wfdb_format(self) -> int:
        """WFDB storage format: 16 or 32."""
        return 16 if self.adc_resolution_bits <= 16 else 32

    @property
    def sample_dtype(self) -> np.dtype:
        """Little-endian on-disk sample type."""
        return np.dtype("<i2") if self.wfdb_format == 16 else np.dtype("<i4")

    @property
    def invalid_sample(self) -> int:
        """The WFDB 'no sample' value of the storage format; real samples must be above it."""
        return int(np.iinfo(self.sample_dtype).min)

    def check_chunk(self, samples: np.ndarray) -> None:
        """Raise ValueError unless `samples` is an integer array (n_channels, n) in storable range."""
        if samples.ndim != 2 or samples.shape[0] != self.n_channels:
            raise ValueError(
                f"samples must have shape ({self.n_channels}, n), got {samples.shape}"
            )
        if not np.issubdtype(samples.dtype, np.integer):
            raise ValueError(f"samples must be integers (ADC units), got dtype {samples.dtype}")
        if samples.size:
            lo, hi = int(samples.min()), int(samples.max())
            limit = np.iinfo(self.sample_dtype)
            if lo <= self.invalid_sample or hi > limit.max:
                raise ValueError(
                    f"samples must be in ({self.invalid_sample}, {limit.max}] for WFDB format "
                    f"{self.wfdb_format}, got [{lo}, {hi}]"
                )


@dataclass(slots=True)
class WaveformStats:
    """Counters of one waveform record, for the manifest."""

    samples_written: int = 0  # per channel, counting back-fill
    samples_duplicate: int = 0  # per channel: already on disk, ignored
    samples_before_origin: int = 0  # per channel: older than the first chunk, ignored
    gaps_open: int = 0  # holes still filled with the invalid value
    annotations: int = 0
    origin_sample_index: int | None = None


@dataclass(slots=True)
class _Annotation:
    sample: int
    symbol: str
    aux_note: str


class WfdbRecordWriter:
    """Writes one waveform stream to `<directory>/<record_name>.{dat,hea,atr}`.

    Sample 0 of the record is the first sample of the first chunk received (`origin`); chunk and
    annotation indices are the stream's own sample counters. Raises OSError from the disk.
    """

    def __init__(self, directory: Path, record_name: str, info: WaveformStreamInfo,
                 comments: tuple[str, ...] = (), encryption: Encryption | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", record_name):
            raise ValueError(f"record_name must be letters, digits and '_', got {record_name!r}")
        self.directory = directory
        self.record_name = record_name
        self.info = info
        self.comments = comments
        self.stats = WaveformStats()
        self.dat_path = directory / f"{record_name}.dat"
        self.hea_path = directory / f"{record_name}.hea"
        self.atr_path = directory / f"{record_name}.atr"
        self._frame_bytes = info.n_channels * info.sample_dtype.itemsize
        self._written = IntervalSet()
        self._file_end = 0  # samples per channel present in the .dat (real or invalid filler)
        self._checksums = [0] * info.n_channels
        self._initial_values = [0] * info.n_channels
        self._annotations: list[_Annotation] = []
        self._annotations_dirty = False
        self._encryption = encryption or Encryption()
        self._dat = self._encryption.create(self.dat_path)  # never overwrites a record
        self._closed = False
        self.write_header()

    @property
    def duration_s(self) -> float:
        """Length of the record so far, in seconds."""
        return self._file_end / self.info.sampling_rate_hz

    def write_chunk(self, first_sample_index: int, samples: np.ndarray) -> None:
        """Write samples (n_channels, n) starting at stream sample `first_sample_index`.

        Samples already written or older than the record's origin are ignored (and counted).
        """
        if self._closed:
            return
        n = samples.shape[1]
        if n == 0:
            return
        if self.stats.origin_sample_index is None:
            self.stats.origin_sample_index = first_sample_index
        start = first_sample_index - self.stats.origin_sample_index
        if start < 0:
            skipped = min(n, -start)
            self.stats.samples_before_origin += skipped
            samples, start, n = samples[:, skipped:], 0, n - skipped
            if n == 0:
                return
        stop = start + n
        missing = self._written.missing(start, stop)
        self.stats.samples_duplicate += n - sum(b - a for a, b in missing)
        invalid = self.info.invalid_sample
        for a, b in missing:
            if a > self._file_end:
                self._write_at(self._file_end,
                               np.full((self.info.n_channels, a - self._file_end), invalid))
                for c in range(self.info.n_channels):
                    self._checksums[c] += invalid * (a - self._file_end)
                self._file_end = a
            part = samples[:, a - start:b - start]
            self._write_at(a, part)
            refilled = max(0, min(b, self._file_end) - a)  # overwrites invalid filler
            sums = part.sum(axis=1, dtype=np.int64)
            for c in range(self.info.n_channels):
                self._checksums[c] += int(sums[c]) - invalid * refilled
            if a == 0:
                self._initial_values = [int(v) for v in part[:, 0]]
            self._file_end = max(self._file_end, b)
            self._written.add(a, b)
            self.stats.samples_written += b - a
        self.stats.gaps_open = max(0, len(self._written) - 1)

    def add_annotation(self, sample_index: int, symbol: str, aux_note: str = "") -> None:
        """Add a beat or event annotation at stream sample `sample_index` (written at checkpoint)."""
        if self._closed:
            return
        origin = self.stats.origin_sample_index
        if origin is None or sample_index < origin:
            return  # before the record starts
        self._annotations.append(_Annotation(sample_index - origin, symbol, aux_note))
        self._annotations_dirty = True
        self.stats.annotations = len(self._annotations)

    def checkpoint(self, fsync: bool = False) -> None:
        """Make what is written so far readable after a crash: flush samples, rewrite header and
        annotations; with `fsync` the samples reach the disk itself."""
        if self._closed:
            return
        self._dat.flush()
        if fsync:
            os.fsync(self._dat.fileno())
        self.write_header()
        if self._annotations_dirty:
            self._write_annotations()

    def close(self, fsync: bool = False) -> None:
        """Final checkpoint and close the .dat. Idempotent."""
        if self._closed:
            return
        try:
            self.checkpoint(fsync)
        finally:
            self._closed = True
            self._dat.close()

    def files(self) -> list[Path]:
        """The record's files that exist on disk."""
        return [p for p in (self.hea_path, self.dat_path, self.atr_path) if p.exists()]

    def write_header(self) -> None:
        """Atomically (re)write the .hea for the samples flushed so far."""
        info = self.info
        lines = [f"{self.record_name} {info.n_channels} {info.sampling_rate_hz:.12g} {self._file_end}"]
        for c in range(info.n_channels):
            checksum = (self._checksums[c] + 32768) % 65536 - 32768
            lines.append(
                f"{self.dat_path.name} {info.wfdb_format} {info.gains[c]:.12g}({info.baselines[c]})"
                f"/{info.units[c]} {info.adc_resolution_bits} 0 {self._initial_values[c]} "
                f"{checksum} 0 {info.channel_names[c]}"
            )
        if self.stats.origin_sample_index is not None:
            lines.append(f"# origin_sample_index {self.stats.origin_sample_index}")
        lines.extend(f"# {comment}" for comment in self.comments)
        self._encryption.write_bytes(self.hea_path, ("\n".join(lines) + "\n").encode())

    def _write_at(self, sample: int, values: np.ndarray) -> None:
        self._dat.seek(sample * self._frame_bytes)
        self._dat.write(np.ascontiguousarray(values.T, dtype=self.info.sample_dtype).tobytes())

    def _write_annotations(self) -> None:
        ordered = sorted(self._annotations, key=lambda a: a.sample)
        tmp_name = f"{self.record_name}_tmp"
        import wfdb

        # wfdb writes only to a directory: a plain recording uses its own, an encrypted one a
        # directory in RAM (/dev/shm), so no plaintext annotation ever lands on the recordings disk
        encrypted = self._encryption.key is not None
        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) if encrypted \
                else _Here(self.directory) as write_dir:
            wfdb.wrann(
                tmp_name, "atr",
                sample=np.array([a.sample for a in ordered], dtype=np.int64),
                symbol=[a.symbol for a in ordered],
                aux_note=[a.aux_note for a in ordered],
                fs=self.info.sampling_rate_hz,
                write_dir=str(write_dir),
            )
            written = Path(write_dir) / f"{tmp_name}.atr"
            if encrypted:
                self._encryption.write_bytes(self.atr_path, written.read_bytes())
            else:
                os.replace(written, self.atr_path)
        self._annotations_dirty = False


class _Here:
    """A context manager giving an existing directory (the plain case of the temp directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __enter__(self) -> str:
        return str(self.directory)

    def __exit__(self, *exc: object) -> None:
        return None

