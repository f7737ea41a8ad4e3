"""Many ECG streams analysed in one batched numpy step: beats, heart rate, alarms.

The server feeds each stream's samples as they arrive (``feed`` only queues) and calls
``process()`` every ~100-250 ms from a worker thread. Streams of equal sampling rate share one
`PanTompkinsBank` and one `SignalQualityBank`; the queued samples of streams with equal queued
length are stacked into one 2-D block, so filtering is one ``sosfilt`` call per group and the
per-sample work is vectorised. Python loops run per candidate peak and per stream, never per
sample. Not thread-safe: call ``feed``/``process`` from one thread (or guard them with a lock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsp.alarms import Alarm, AlarmLimits, AlarmMonitor
from dsp.filters import check_sampling_rate
from dsp.heart_rate import HeartRateMeter
from dsp.qrs import PanTompkinsBank, PanTompkinsParams
from dsp.signal_quality import QualityLimits, SignalQualityBank


@dataclass(frozen=True)
class Beat:
    """A detected heartbeat: R-peak sample index (stream's own numbering) and time in s."""

    sample_index: int
    time_s: float


@dataclass
class StreamResult:
    """What one ``process()`` call found for one stream.

    ``beats``/``rr_ms`` are new since the previous call; ``heart_rate_bpm`` and
    ``irregularity`` are the current (once-per-second) values, None while unknown;
    ``active_alarms`` is the full current set, most urgent first.
    """

    stream_id: str
    beats: list[Beat] = field(default_factory=list)
    heart_rate_bpm: float | None = None
    rr_ms: list[float] = field(default_factory=list)
    irregularity: float | None = None
    alarms_raised: list[Alarm] = field(default_factory=list)
    alarms_cleared: list[Alarm] = field(default_factory=list)
    active_alarms: list[Alarm] = field(default_factory=list)


@dataclass
class _Stream:
    stream_id: str
    fs: float
    group: _Group
    meter: HeartRateMeter
    alarms: AlarmMonitor
    start_sample: int | None = None
    next_sample: int | None = None
    queue: list[np.ndarray] = field(default_factory=list)


@dataclass
class _Group:
    fs: float
    detectors: PanTompkinsBank
    quality: SignalQualityBank
    members: list[str] = field(default_factory=list)  # stream ids in row order


class MultiStreamAnalyzer:
    """Causal ECG analysis for many streams, batched per sampling rate.

    Usage: ``add_stream`` once per stream, ``feed`` contiguous chunks as they arrive,
    ``process()`` periodically; it returns a `StreamResult` for every stream that had queued
    samples. Sample indices are the stream's own (the ``first_sample`` numbering of ``feed``).
    """

    def __init__(
        self,
        qrs_params: PanTompkinsParams | None = None,
        quality_limits: QualityLimits | None = None,
    ) -> None:
        self._qrs_params = qrs_params or PanTompkinsParams()
        self._quality_limits = quality_limits or QualityLimits()
        self._streams: dict[str, _Stream] = {}
        self._groups: dict[float, _Group] = {}

    @property
    def stream_ids(self) -> list[str]:
        """Ids of the streams currently analysed."""
        return list(self._streams)

    def add_stream(
        self, stream_id: str, sampling_rate_hz: float, limits: AlarmLimits | None = None
    ) -> None:
        """Start analysing a stream.

        Raises:
            ValueError: if the id is already in use or the rate is outside 125-1000 Hz.
        """
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} already exists")
        fs = check_sampling_rate(sampling_rate_hz)
        group = self._groups.get(fs)
        if group is None:
            group = _Group(
                fs,
                PanTompkinsBank(fs, self._qrs_params),
                SignalQualityBank(fs, self._quality_limits),
            )
            self._groups[fs] = group
        group.detectors.add_stream()
        group.quality.add_stream()
        group.members.append(stream_id)
        self._streams[stream_id] = _Stream(
            stream_id,
            fs,
            group,
            HeartRateMeter(fs),
            AlarmMonitor(fs, limits or AlarmLimits()),
        )

    def remove_stream(self, stream_id: str) -> None:
        """Stop analysing a stream and drop its queued samples and state.

        Raises:
            ValueError: if the stream is unknown.
        """
        stream = self._stream(stream_id)
        group = stream.group
        row = group.members.index(stream_id)
        group.detectors.remove_stream(row)
        group.quality.remove_stream(row)
        del group.members[row]
        del self._streams[stream_id]
        if not group.members:
            del self._groups[group.fs]

    def feed(self, stream_id: str, samples_mv: np.ndarray, first_sample: int) -> None:
        """Queue the next contiguous samples of a stream (millivolts, 1-D, finite).

        ``first_sample`` is the index of ``samples_mv[0]``; the first call fixes the stream's
        start, every later call must continue exactly where the previous one ended.

        Raises:
            ValueError: unknown stream, empty/non-1-D/non-finite samples, or a gap/overlap.
        """
        stream = self._stream(stream_id)
        x = np.asarray(samples_mv, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"stream {stream_id!r}: expected at least 1 sample, got an empty chunk")
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ValueError(
                f"stream {stream_id!r}: samples must be finite, got {x[bad]} at offset {bad}"
            )
        first = int(first_sample)
        if stream.next_sample is None:
            stream.start_sample = first
        elif first != stream.next_sample:
            raise ValueError(
                f"stream {stream_id!r}: expected first_sample {stream.next_sample} "
                f"(contiguous), got {first}"
            )
        stream.next_sample = first + x.size
        stream.queue.append(x)

    def process(self) -> dict[str, StreamResult]:
        """Analyse everything queued, in one batched step per (sampling rate, queued length)."""
        results: dict[str, StreamResult] = {}
        for group in self._groups.values():
            by_length: dict[int, list[int]] = {}
            blocks: dict[int, np.ndarray] = {}
            for row, sid in enumerate(group.members):
                queue = self._streams[sid].queue
                if not queue:
                    continue
                block = queue[0] if len(queue) == 1 else np.concatenate(queue)
                queue.clear()
                by_length.setdefault(block.size, []).append(row)
                blocks[row] = block
            for length, rows in by_length.items():
                x = np.stack([blocks[r] for r in rows])
                whole = len(rows) == len(group.members)  # fast path: no gather/scatter
                sel = None if whole else np.asarray(rows)
                beats = group.detectors.process(x, sel)
                flags = group.quality.process(x, sel)
                for i, row in enumerate(rows):
                    sid = group.members[row]
                    results[sid] = self._finish(self._streams[sid], beats[i], flags[i])
        return results

    def _finish(self, stream: _Stream, beats: list[int], flags: object) -> StreamResult:
        assert stream.start_sample is not None and stream.next_sample is not None
        start, fs = stream.start_sample, stream.fs
        result = StreamResult(stream.stream_id)
        meter = stream.meter
        for b in beats:
            index = start + b
            result.beats.append(Beat(index, index / fs))
            rr = meter.on_beat(index)
            if rr is not None:
                result.rr_ms.append(rr)
        now = stream.next_sample - 1
        meter.update(now)
        raised, cleared = stream.alarms.evaluate(
            now,
            start,
            meter.last_beat_sample,
            meter.alarm_rate_bpm,
            flags,  # type: ignore[arg-type]
            decision_delay_samples=stream.group.detectors.decision_delay_samples,
        )
        result.heart_rate_bpm = meter.heart_rate_bpm
        result.irregularity = meter.irregularity
        result.alarms_raised = raised
        result.alarms_cleared = cleared
        result.active_alarms = stream.alarms.active_alarms()
        return result

    def _stream(self, stream_id: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise ValueError(f"unknown stream {stream_id!r}") from None
