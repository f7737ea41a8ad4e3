"""Live waveform relay: validate monitor frames, keep every sample exactly once, fan out, analyse.

Knows nothing of rooms: a *group* is an opaque string the server chooses (the room id) and a
publisher/viewer id is whatever the server uses for a participant. Everything here is synchronous
and socket-free (`on_publisher_frame` bytes in, reply frames out; viewers drain a `ViewerOutbox`)
except `run_analysis`, the small async driver that runs the DSP step in a worker thread.

Guarantees (see docs/protocol-waveforms.md for the wire side):

* **Nothing is lost.** A stream's samples are numbered from its first sample. The relay keeps the
  set of sample ranges it has received; a chunk is trimmed sample-exactly to what is new, so store
  sinks see every sample exactly once (back-filled ranges may come after later ones). `ack.next_seq`
  is the end of the contiguous prefix that is stored (or declared lost by the monitor through
  `announce.oldest_seq`), so a monitor frees only what is safe.
* **Fan-out never waits for the slowest.** Each viewer has a bounded `ViewerOutbox`; when it is full
  the oldest queued chunk is dropped and replaced by a `skipped` notice for that stream. Control
  messages (announce, analysis with alarms, numerics, gap, stream_ended) are never dropped; analysis
  and numerics are coalesced per stream so they stay bounded.
* **Store sinks lose nothing.** They are called synchronously with every new sample; one that
  raises (e.g. because it cannot keep up) is detached and reported at ERROR level and through
  `on_sink_failure`, never silently skipped.
* **Store sinks get the analysis too.** A sink with an ``on_analysis`` method receives every
  analysis result with news (beats, alarm changes) unmerged, so a recorder can write beat and
  alarm annotations (see `WaveformSink`).
* **Analysis sees contiguous samples only.** Out-of-order samples are held until the hole is
  back-filled; after `gap_timeout_s` (or when the monitor declares the hole lost, or the held data
  exceeds `max_hold_s`) the analyzer's state for that stream is reset and feeding resumes after the
  hole, so beats are never computed across missing data.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, auto
from typing import Any, Protocol

import numpy as np

from protocol.waveforms import (
    Ack,
    AlarmInfo,
    Analysis,
    Announce,
    ChannelInfo,
    Chunk,
    Gap,
    Numerics,
    RateLimits,
    Skipped,
    StreamAnnounce,
    StreamEnded,
    ViewerChunk,
    WaveformError,
    WaveformErrorReason,
    WaveformWireError,
    decode_client_frame,
    encode,
    physical,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WaveformConfig:
    """Relay limits and policies.

    viewer_max_chunks: chunks queued per viewer before the oldest is dropped (at 10 chunks/s per
      stream and 20 streams a room, 400 is 2 s of backlog).
    max_ahead_s: a chunk may start at most this far beyond the highest sample received so far.
    max_open_gaps: unfilled holes per stream before further out-of-order chunks are refused.
    gap_timeout_s / max_hold_s: how long (wall time) / how much (stream time) analysis waits for a
      back-fill before it resets and continues after the hole.
    """

    max_streams_per_group: int = 64
    viewer_max_chunks: int = 400
    max_ahead_s: float = 3600.0
    max_open_gaps: int = 64
    gap_timeout_s: float = 10.0
    max_hold_s: float = 120.0
    analysis: bool = True


@dataclass(frozen=True, slots=True)
class WaveformStats:
    """Counters for /metrics (monotonic since start, except the gauges groups/streams/viewers)."""

    groups: int
    streams: int
    viewers: int
    frames_in: int
    frames_rejected: int
    chunks_in: int
    samples_in: int  # new samples accepted (per channel), duplicates excluded
    duplicate_samples: int
    gaps: int  # holes opened by a chunk that started beyond the highest sample received
    backfilled_samples: int  # new samples that arrived behind the live edge or flagged backfill
    lost_samples: int  # declared lost by a monitor (its buffer overflowed)
    dropped_chunks_slow_viewers: int
    sink_failures: int
    analysis_steps: int
    analysis_last_step_ms: float


class WaveformSink(Protocol):
    """A lossless consumer of a group's samples (recorder, store-and-forward).

    Called on the event loop: must not block (queue and return). To refuse (e.g. its queue is full)
    it raises; the relay then detaches it and reports the failure loudly.

    Optional method (called only if the sink has it, looked up with ``getattr``)::

        def on_analysis(self, stream_id: str, analysis: Analysis) -> None

    gets every analysis result that has news (beats found, alarms raised or cleared), once, in
    order, never merged nor dropped (unlike viewers' copies). ``analysis.beats`` are stream sample
    indices (the numbering of ``on_samples``) of QRS complexes; each alarm in ``alarms_raised`` /
    ``alarms_cleared`` has ``kind``, ``priority``, ``message`` and ``since_sample`` (stream sample
    index where the condition began; a cleared alarm keeps the ``since_sample`` it was raised
    with, the clearing itself happened within the samples this step analysed). A recorder maps
    beats to WFDB beat annotations (symbol "N": the detector does not classify beats) and raised
    alarms to comment annotations at ``since_sample``. Results arrive ~0.2-0.5 s after their
    samples (analysis runs in steps), never before those samples went through ``on_samples``.
    """

    def on_stream(self, publisher_id: str, announce: Announce) -> None:
        """A stream opened (or its publisher changed). Samples follow through `on_samples`."""

    def on_samples(self, stream_id: str, first_sample: int, samples: np.ndarray) -> None:
        """New samples (ADC integers, shape (n_channels, n)); never a sample twice."""

    def on_stream_ended(self, stream_id: str) -> None:
        """The stream is closed; no more samples."""


class MultiStreamAnalyzerLike(Protocol):
    """The part of `dsp.analyzer.MultiStreamAnalyzer` the relay uses."""

    def add_stream(self, stream_id: str, sampling_rate_hz: float, limits: Any = None) -> None: ...
    def remove_stream(self, stream_id: str) -> None: ...
    def feed(self, stream_id: str, samples_mv: np.ndarray, first_sample: int) -> None: ...
    def process(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- viewer outbox


class _Kind(Enum):
    SKIPPED = auto()
    ANALYSIS = auto()
    NUMERICS = auto()
    CONTROL = auto()


_ChunkEntry = tuple[str, bytes, int, int]  # stream id, encoded frame, from_sample, to_sample


@dataclass(slots=True)
class _Entry:
    kind: _Kind
    stream_id: str
    frame: bytes | None = None  # encoded (shared between viewers) or None: encode `msg` at get
    msg: Any = None
    from_sample: int = 0
    to_sample: int = 0
    chunks: int = 0


class ViewerOutbox:
    """Bounded queue of frames for one viewer; the server's writer task drains it with `get()`.

    Overflow policy: at most `max_chunks` chunk frames are queued; a new chunk beyond that drops the
    oldest queued chunk and puts a `skipped` notice (coalesced per stream) where it was. Other
    messages are never dropped; analysis and numerics are merged per stream while unsent.
    """

    def __init__(self, viewer_id: str, max_chunks: int, on_drop: Callable[[int], None]) -> None:
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        self.viewer_id = viewer_id
        self.max_chunks = max_chunks
        self.dropped_chunks = 0
        self._on_drop = on_drop
        self._entries: OrderedDict[int, _Entry | _ChunkEntry] = OrderedDict()
        self._chunk_ids: deque[int] = deque()
        self._merge: dict[tuple[_Kind, str], int] = {}  # unsent coalescable entry per stream
        self._ids = itertools.count()
        self._closed = False
        self._wakeup: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        """True once closed; `get()` still returns what was queued, then None."""
        return self._closed

    def __len__(self) -> int:
        return len(self._entries)

    def _append(self, entry: _Entry | _ChunkEntry) -> int:
        key = next(self._ids)
        self._entries[key] = entry
        if self._wakeup is not None:
            self._wakeup.set()
        return key

    def put_chunk(self, stream_id: str, from_sample: int, to_sample: int, frame: bytes) -> None:
        """Queue an encoded chunk frame (samples [from_sample, to_sample)); may drop the oldest."""
        if self._closed:
            return
        if len(self._chunk_ids) >= self.max_chunks:
            self._drop_oldest_chunk()
        # a plain tuple, not an _Entry: this runs once per chunk per viewer
        key = self._append((stream_id, frame, from_sample, to_sample))
        self._chunk_ids.append(key)

    def _drop_oldest_chunk(self) -> None:
        key = self._chunk_ids.popleft()
        stream_id, _, lo, hi = self._entries[key]  # type: ignore[misc]
        self.dropped_chunks += 1
        self._on_drop(1)
        merge_key = (_Kind.SKIPPED, stream_id)
        existing = self._merge.get(merge_key)
        if existing is not None:
            s = self._merged(existing)
            s.from_sample = min(s.from_sample, lo)
            s.to_sample = max(s.to_sample, hi)
            s.chunks += 1
            del self._entries[key]
        else:  # the notice takes the dropped chunk's place, so it arrives in stream order
            self._entries[key] = _Entry(_Kind.SKIPPED, stream_id, None, None, lo, hi, 1)
            self._merge[merge_key] = key

    def put_control(self, msg: StreamAnnounce | Gap | StreamEnded, frame: bytes | None = None) -> None:
        """Queue a message that is never dropped nor merged."""
        if not self._closed:
            self._append(_Entry(_Kind.CONTROL, "", frame or encode(msg)))

    def _merged(self, key: int) -> _Entry:
        entry = self._entries[key]
        assert isinstance(entry, _Entry)  # merge keys only ever point at _Entry objects
        return entry

    def put_analysis(self, msg: Analysis, frame: bytes | None = None) -> None:
        """Queue an analysis message (`frame`: its encoding, if already made), merged with an
        unsent one of the same stream."""
        if self._closed:
            return
        key = self._merge.get((_Kind.ANALYSIS, msg.stream_id))
        if key is not None:
            entry = self._merged(key)
            entry.msg = merge_analysis(entry.msg, msg)
            entry.frame = None  # encoded when sent
        else:
            self._merge[(_Kind.ANALYSIS, msg.stream_id)] = self._append(
                _Entry(_Kind.ANALYSIS, msg.stream_id, frame, msg))

    def put_numerics(self, msg: Numerics) -> None:
        """Queue numerics, merged (newest value per name) with unsent numerics of the stream."""
        if self._closed:
            return
        key = self._merge.get((_Kind.NUMERICS, msg.stream_id))
        if key is not None:
            entry = self._merged(key)
            old: Numerics = entry.msg
            entry.msg = Numerics(msg.stream_id, msg.time, {**old.values, **msg.values})
        else:
            self._merge[(_Kind.NUMERICS, msg.stream_id)] = self._append(
                _Entry(_Kind.NUMERICS, msg.stream_id, None, msg))

    def get_nowait(self) -> bytes | None:
        """The next frame, or None when nothing is queued."""
        if not self._entries:
            return None
        key, entry = self._entries.popitem(last=False)
        if type(entry) is tuple:
            self._chunk_ids.popleft()
            return entry[1]
        assert isinstance(entry, _Entry)
        if self._merge.get((entry.kind, entry.stream_id)) == key:
            del self._merge[(entry.kind, entry.stream_id)]
        if entry.frame is not None:
            return entry.frame
        if entry.kind is _Kind.SKIPPED:
            return encode(Skipped(entry.stream_id, entry.from_sample, entry.to_sample, entry.chunks))
        return encode(entry.msg)

    async def get(self) -> bytes | None:
        """Wait for the next frame; None once the outbox is closed and drained."""
        while True:
            frame = self.get_nowait()
            if frame is not None or self._closed:
                return frame
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self, discard: bool = False) -> None:
        """Stop accepting frames; `discard` also forgets what is queued. Idempotent."""
        self._closed = True
        if discard:
            self._entries.clear()
            self._chunk_ids.clear()
            self._merge.clear()
        if self._wakeup is not None:
            self._wakeup.set()


def merge_analysis(old: Analysis, new: Analysis) -> Analysis:
    """Two consecutive analysis messages of one stream as one (beats and alarm changes joined)."""
    return Analysis(
        new.stream_id,
        old.beats + new.beats,
        new.heart_rate_bpm if new.heart_rate_bpm is not None else old.heart_rate_bpm,
        new.rr_ms if new.rr_ms is not None else old.rr_ms,
        new.irregularity if new.irregularity is not None else old.irregularity,
        new.active_alarms,
        old.alarms_raised + new.alarms_raised,
        old.alarms_cleared + new.alarms_cleared,
    )


# --------------------------------------------------------------------------- analysis ops


@dataclass(frozen=True, slots=True)
class _AddStream:
    key: str
    sampling_rate_hz: float
    limits: Any  # dsp.alarms.AlarmLimits | None, built (and validated) on the event loop

    def apply(self, analyzer: MultiStreamAnalyzerLike) -> None:
        analyzer.add_stream(self.key, self.sampling_rate_hz, self.limits)


def alarm_limits(limits: RateLimits | None) -> Any:
    """The monitor's brady/tachy limits as `dsp.alarms.AlarmLimits` (None: analyzer defaults).

    The extreme limits keep their defaults unless that would break their ordering, in which case
    they are moved 10 bpm below brady / 30 bpm above tachy. Raises ValueError for limits the
    analyzer refuses.
    """
    if limits is None or (limits.brady_bpm is None and limits.tachy_bpm is None):
        return None
    from dsp.alarms import AlarmLimits

    d = AlarmLimits()
    brady = limits.brady_bpm if limits.brady_bpm is not None else d.bradycardia_bpm
    tachy = limits.tachy_bpm if limits.tachy_bpm is not None else d.tachycardia_bpm
    return AlarmLimits(
        bradycardia_bpm=brady,
        tachycardia_bpm=tachy,
        extreme_bradycardia_bpm=min(d.extreme_bradycardia_bpm, brady - 10.0),
        extreme_tachycardia_bpm=max(d.extreme_tachycardia_bpm, tachy + 30.0),
        asystole_s=d.asystole_s,
    )


@dataclass(frozen=True, slots=True)
class _RemoveStream:
    key: str

    def apply(self, analyzer: MultiStreamAnalyzerLike) -> None:
        analyzer.remove_stream(self.key)


@dataclass(frozen=True, slots=True, eq=False)
class _Feed:
    """ADC integers of the ECG channel; converted to mV in the worker thread, off the loop."""

    key: str
    adc: np.ndarray
    channel: ChannelInfo
    first_sample: int

    def apply(self, analyzer: MultiStreamAnalyzerLike) -> None:
        analyzer.feed(self.key, physical(self.adc, self.channel), self.first_sample)


_Op = _AddStream | _RemoveStream | _Feed


def _default_analyzer() -> MultiStreamAnalyzerLike | None:
    try:
        from dsp.analyzer import MultiStreamAnalyzer
    except ImportError as exc:
        log.warning("waveform analysis disabled: dsp.analyzer not importable (%s)", exc)
        return None
    analyzer: MultiStreamAnalyzerLike = MultiStreamAnalyzer()
    return analyzer


def _enum_text(v: Any) -> str:
    """A DSP enum member as wire text: its string value, else its lower-case name."""
    value = getattr(v, "value", None)
    if isinstance(value, str):
        return value
    name = getattr(v, "name", None)
    return name.lower() if isinstance(name, str) else str(v)


def _alarm_info(a: Any) -> AlarmInfo:
    return AlarmInfo(_enum_text(a.kind), _enum_text(a.priority), str(a.message),
                     int(getattr(a, "since_sample", 0)))


def _last_float(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, Sequence | np.ndarray):
        return float(v[-1]) if len(v) else None
    f = float(v)
    return f if np.isfinite(f) else None


# --------------------------------------------------------------------------- streams


@dataclass(slots=True)
class _Stream:
    group: str
    announce: Announce
    publisher_id: str
    analysis_key: str
    alarm_limits: Any  # dsp.alarms.AlarmLimits | None
    connected: bool = True
    settled_end: int = 0  # every sample before it is stored (or declared lost)
    pending: list[tuple[int, int]] = field(default_factory=list)  # received ranges beyond
    highest_end: int = 0
    gap_opened_at: float | None = None
    # analysis feeding: samples in mV of the ECG channel, fed strictly in order
    analysis_next: int = 0
    held: dict[int, np.ndarray] = field(default_factory=dict)  # ADC rows of the ECG channel
    held_samples: int = 0
    last_numerics: Numerics | None = None
    last_analysis: Analysis | None = None

    @property
    def ecg_index(self) -> int | None:
        a = self.announce
        if a.ecg_channel is not None:
            return a.ecg_channel
        return next((i for i, c in enumerate(a.channels) if c.unit == "mV"), None)


@dataclass(slots=True)
class _Group:
    streams: dict[str, _Stream] = field(default_factory=dict)
    viewers: dict[str, ViewerOutbox] = field(default_factory=dict)
    sinks: list[WaveformSink] = field(default_factory=list)


def _subtract(start: int, end: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[start, end) minus the sorted disjoint ranges `taken`."""
    out: list[tuple[int, int]] = []
    i = bisect.bisect_right(taken, (start, start)) - 1
    i = max(i, 0)
    cur = start
    for s, e in taken[i:]:
        if s >= end:
            break
        if e <= cur:
            continue
        if s > cur:
            out.append((cur, s))
        cur = max(cur, e)
        if cur >= end:
            break
    if cur < end:
        out.append((cur, end))
    return out


def _insert(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Add [start, end) (disjoint from `ranges`) to sorted `ranges`, merging neighbours."""
    i = bisect.bisect_left(ranges, (start, end))
    ranges.insert(i, (start, end))
    if i + 1 < len(ranges) and ranges[i + 1][0] == end:
        ranges[i] = (start, ranges[i + 1][1])
        del ranges[i + 1]
    if i > 0 and ranges[i - 1][1] == start:
        ranges[i - 1] = (ranges[i - 1][0], ranges[i][1])
        del ranges[i]


class WaveformRelay:
    """All waveform streams of all groups: validation, exactly-once storage, fan-out, analysis.

    `analyzer`: a `dsp.analyzer.MultiStreamAnalyzer` (default: created if importable and
    `config.analysis`); `clock`: monotonic seconds (tests pass a fake); `on_sink_failure(group,
    sink, exc)`: called when a store sink raised and was detached.
    """

    def __init__(
        self,
        config: WaveformConfig | None = None,
        *,
        analyzer: MultiStreamAnalyzerLike | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_sink_failure: Callable[[str, WaveformSink, BaseException], None] | None = None,
    ) -> None:
        self.config = config or WaveformConfig()
        if analyzer is None and self.config.analysis:
            analyzer = _default_analyzer()
        self._analyzer = analyzer
        self._clock = clock
        self._on_sink_failure = on_sink_failure
        self._groups: dict[str, _Group] = {}
        self._by_key: dict[str, _Stream] = {}
        self._keys = itertools.count()
        self._ops: list[_Op] = []
        self._analysis_lock = asyncio.Lock()
        self._c: dict[str, float] = dict.fromkeys(
            ("frames_in", "frames_rejected", "chunks_in", "samples_in", "duplicate_samples",
             "gaps", "backfilled_samples", "lost_samples", "dropped", "sink_failures",
             "analysis_steps", "analysis_last_step_ms"), 0)

    # ------------------------------------------------------------------ publishers

    def on_publisher_frame(self, group: str, publisher_id: str, data: bytes) -> list[bytes]:
        """Handle one binary frame from a monitor; returns the frames to send back to it.

        Never raises for bad input: a refused frame gives one `error` frame, and the stream and
        connection stay as they were.
        """
        self._c["frames_in"] += 1
        try:
            msg = decode_client_frame(data)
            g = self._groups.setdefault(group, _Group())
            match msg:
                case Announce():
                    replies = self._on_announce(g, group, publisher_id, msg)
                case Chunk():
                    replies = self._on_chunk(g, publisher_id, msg)
                case Numerics():
                    replies = self._on_numerics(g, publisher_id, msg)
        except WaveformWireError as exc:
            self._c["frames_rejected"] += 1
            return [encode(WaveformError(exc.reason, exc.message, exc.stream_id))]
        return [encode(r) for r in replies]

    def _owned(self, g: _Group, publisher_id: str, stream_id: str, what: str) -> _Stream:
        s = g.streams.get(stream_id)
        if s is None or (s.publisher_id != publisher_id and not s.connected):
            raise WaveformWireError(WaveformErrorReason.UNKNOWN_STREAM,
                                    f"{what} for stream {stream_id!r} before its announce",
                                    stream_id)
        if s.publisher_id != publisher_id:
            raise WaveformWireError(WaveformErrorReason.STREAM_TAKEN,
                                    f"stream {stream_id!r} is published by another participant",
                                    stream_id)
        return s

    def _on_announce(self, g: _Group, group: str, publisher_id: str, a: Announce) -> list[Any]:
        s = g.streams.get(a.stream_id)
        if s is None:
            if len(g.streams) >= self.config.max_streams_per_group:
                raise WaveformWireError(
                    WaveformErrorReason.TOO_MANY_STREAMS,
                    f"a group may have at most {self.config.max_streams_per_group} streams, "
                    f"got one more ({a.stream_id!r})")
            try:
                limits = alarm_limits(a.limits) if self._analyzer is not None else None
            except ValueError as exc:
                raise WaveformWireError(WaveformErrorReason.BAD_MESSAGE,
                                        f"announce.limits refused by the analyzer: {exc}",
                                        a.stream_id) from None
            key = f"w{next(self._keys)}"
            s = _Stream(group, a, publisher_id, key, limits, settled_end=a.oldest_seq,
                        highest_end=a.oldest_seq, analysis_next=a.oldest_seq)
            g.streams[a.stream_id] = s
            self._by_key[key] = s
            if s.ecg_index is not None and self._analyzer is not None:
                self._ops.append(_AddStream(key, a.sampling_rate_hz, limits))
            self._announce_to(g, s)
            return [Ack(a.stream_id, s.settled_end)]
        if s.publisher_id != publisher_id and s.connected:
            raise WaveformWireError(WaveformErrorReason.STREAM_TAKEN,
                                    f"stream {a.stream_id!r} is published by another participant")
        if replace(a, oldest_seq=0) != replace(s.announce, oldest_seq=0):
            raise WaveformWireError(
                WaveformErrorReason.STREAM_MISMATCH,
                f"re-announce of {a.stream_id!r} must equal the open stream's description "
                f"(channels, sampling_rate_hz, ecg_channel, limits), got a different one")
        changed = s.publisher_id != publisher_id
        s.publisher_id, s.connected = publisher_id, True
        if changed:
            self._announce_to(g, s)
        if a.oldest_seq > s.settled_end:
            self._declare_lost(g, s, a.oldest_seq)
        return [Ack(a.stream_id, s.settled_end)]

    def _announce_to(self, g: _Group, s: _Stream) -> None:
        msg = StreamAnnounce(s.publisher_id, s.announce)
        frame = encode(msg)
        for v in g.viewers.values():
            v.put_control(msg, frame)
        for sink in list(g.sinks):
            self._call_sink(s.group, g, sink, "on_stream", s.publisher_id, s.announce)

    def _declare_lost(self, g: _Group, s: _Stream, upto: int) -> None:
        """The monitor no longer has samples before `upto`: stop waiting for the holes there."""
        for lo, hi in _subtract(s.settled_end, upto, [r for r in s.pending if r[0] < upto]):
            self._c["lost_samples"] += hi - lo
            msg = Gap(s.announce.stream_id, lo, hi, lost=True)
            frame = encode(msg)
            for v in g.viewers.values():
                v.put_control(msg, frame)
        s.pending = [(max(lo, upto), hi) for lo, hi in s.pending if hi > upto]
        s.settled_end = upto
        self._advance_settled(s)
        s.highest_end = max(s.highest_end, upto)
        if s.analysis_next < upto:
            self._skip_analysis_to(s, upto)

    def _advance_settled(self, s: _Stream) -> None:
        while s.pending and s.pending[0][0] <= s.settled_end:
            s.settled_end = max(s.settled_end, s.pending.pop(0)[1])
        if not s.pending:
            s.gap_opened_at = None
        elif s.gap_opened_at is None:
            s.gap_opened_at = self._clock()

    def _on_chunk(self, g: _Group, publisher_id: str, c: Chunk) -> list[Any]:
        s = self._owned(g, publisher_id, c.stream_id, "chunk")
        a = s.announce
        if c.samples.shape[0] != len(a.channels):
            raise WaveformWireError(
                WaveformErrorReason.STREAM_MISMATCH,
                f"chunk.n_channels must be {len(a.channels)} (as announced), "
                f"got {c.samples.shape[0]}")
        fs = a.sampling_rate_hz
        max_ahead = int(self.config.max_ahead_s * fs)
        start, end = c.seq, c.seq + c.n_samples
        if start > s.highest_end + max_ahead:
            raise WaveformWireError(
                WaveformErrorReason.SEQUENCE_ERROR,
                f"chunk.seq must be at most {s.highest_end + max_ahead} "
                f"({self.config.max_ahead_s:g} s beyond the newest sample), got {start}")
        in_order = start == s.settled_end and not s.pending  # the common case: no range work
        if in_order:
            new = [(start, end)]
        elif end > s.settled_end:
            new = _subtract(max(start, s.settled_end), end, s.pending)
        else:
            new = []
        if new and start > s.highest_end and len(s.pending) >= self.config.max_open_gaps:
            raise WaveformWireError(
                WaveformErrorReason.SEQUENCE_ERROR,
                f"stream {c.stream_id!r} has {len(s.pending)} unfilled gaps (max "
                f"{self.config.max_open_gaps}); back-fill from seq {s.settled_end}, got {start}")
        self._c["chunks_in"] += 1
        n_new = sum(hi - lo for lo, hi in new)
        self._c["duplicate_samples"] += c.n_samples - n_new
        if start > s.highest_end:
            self._c["gaps"] += 1
            msg = Gap(c.stream_id, s.highest_end, start, lost=False)
            frame = encode(msg)
            for v in g.viewers.values():
                v.put_control(msg, frame)
        catching_up = c.backfill or start < s.highest_end
        for lo, hi in new:
            piece = c.samples if in_order else c.samples[:, lo - start:hi - start]
            self._c["samples_in"] += hi - lo
            if catching_up:
                self._c["backfilled_samples"] += hi - lo
            if g.sinks:
                for sink in list(g.sinks):
                    self._call_sink(s.group, g, sink, "on_samples", c.stream_id, lo, piece)
            if not in_order:
                _insert(s.pending, lo, hi)
            out = c if lo == start and hi == end else Chunk(
                c.stream_id, lo, c.t0 + (lo - start) / fs, piece, c.backfill)
            frame = encode(ViewerChunk(out, live=not catching_up))
            for v in g.viewers.values():
                v.put_chunk(c.stream_id, lo, hi, frame)
            self._hold_for_analysis(s, lo, piece)
        s.highest_end = max(s.highest_end, end)
        if in_order:
            s.settled_end = end
        else:
            self._advance_settled(s)
        return [Ack(c.stream_id, s.settled_end)]

    def _on_numerics(self, g: _Group, publisher_id: str, n: Numerics) -> list[Any]:
        s = self._owned(g, publisher_id, n.stream_id, "numerics")
        s.last_numerics = n if s.last_numerics is None else Numerics(
            n.stream_id, n.time, {**s.last_numerics.values, **n.values})
        for v in g.viewers.values():
            v.put_numerics(n)
        return []

    def publisher_disconnected(self, group: str, publisher_id: str) -> None:
        """The monitor's connection dropped: its streams stay open for it (or a successor) to
        re-announce and back-fill."""
        g = self._groups.get(group)
        if g is None:
            return
        for s in g.streams.values():
            if s.publisher_id == publisher_id:
                s.connected = False

    # ------------------------------------------------------------------ sinks

    def _call_sink(self, group: str, g: _Group, sink: WaveformSink, method: str,
                   *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception as exc:
            self._c["sink_failures"] += 1
            if sink in g.sinks:
                g.sinks.remove(sink)
            log.error("waveform store sink %r failed in %s and was detached from group %r: %r",
                      sink, method, group, exc)
            if self._on_sink_failure is not None:
                self._on_sink_failure(group, sink, exc)

    def add_store_sink(self, group: str, sink: WaveformSink) -> None:
        """Attach a lossless sink: it gets `on_stream` for open streams now, then every new sample.

        Samples received before it was attached are not replayed (the relay does not keep them).
        """
        g = self._groups.setdefault(group, _Group())
        g.sinks.append(sink)
        for s in g.streams.values():
            self._call_sink(group, g, sink, "on_stream", s.publisher_id, s.announce)

    def remove_store_sink(self, group: str, sink: WaveformSink) -> None:
        """Detach a sink (idempotent)."""
        g = self._groups.get(group)
        if g is not None and sink in g.sinks:
            g.sinks.remove(sink)

    # ------------------------------------------------------------------ viewers

    def add_viewer(self, group: str, viewer_id: str) -> ViewerOutbox:
        """Register a viewer; its outbox starts with every open stream's announce, latest numerics
        and analysis. A viewer id already present is replaced (its old outbox is closed)."""
        g = self._groups.setdefault(group, _Group())
        old = g.viewers.pop(viewer_id, None)
        if old is not None:
            old.close(discard=True)
        out = ViewerOutbox(viewer_id, self.config.viewer_max_chunks, self._count_drop)
        for s in g.streams.values():
            out.put_control(StreamAnnounce(s.publisher_id, s.announce))
            if s.last_numerics is not None:
                out.put_numerics(s.last_numerics)
            if s.last_analysis is not None:
                out.put_analysis(s.last_analysis)
        g.viewers[viewer_id] = out
        return out

    def _count_drop(self, n: int) -> None:
        self._c["dropped"] += n

    def remove_viewer(self, group: str, viewer_id: str) -> None:
        """Forget a viewer and close its outbox, discarding what is queued (idempotent)."""
        g = self._groups.get(group)
        if g is not None and (out := g.viewers.pop(viewer_id, None)) is not None:
            out.close(discard=True)

    # ------------------------------------------------------------------ groups

    def close_group(self, group: str) -> None:
        """End every stream of the group: sinks get `on_stream_ended`, viewers `stream_ended`
        then their outboxes close (they still drain what is queued). Idempotent."""
        g = self._groups.pop(group, None)
        if g is None:
            return
        for s in g.streams.values():
            if s.pending:
                lost = _subtract(s.settled_end, s.pending[-1][1], s.pending)
                for lo, hi in lost:
                    self._c["lost_samples"] += hi - lo
                    for v in g.viewers.values():
                        v.put_control(Gap(s.announce.stream_id, lo, hi, lost=True))
            for sink in list(g.sinks):
                self._call_sink(group, g, sink, "on_stream_ended", s.announce.stream_id)
            for v in g.viewers.values():
                v.put_control(StreamEnded(s.announce.stream_id, "group_closed"))
            self._by_key.pop(s.analysis_key, None)
            if s.ecg_index is not None and self._analyzer is not None:
                self._ops.append(_RemoveStream(s.analysis_key))
        for v in g.viewers.values():
            v.close()

    # ------------------------------------------------------------------ analysis

    def _hold_for_analysis(self, s: _Stream, first: int, piece: np.ndarray) -> None:
        idx = s.ecg_index
        if idx is None or self._analyzer is None:
            return
        end = first + piece.shape[1]
        if end <= s.analysis_next:
            return  # behind the analysis point (a hole it already gave up on)
        mv = piece[idx]  # ADC integers; the worker thread converts them to mV
        if first < s.analysis_next:
            mv, first = mv[s.analysis_next - first:], s.analysis_next
        if first == s.analysis_next:
            self._ops.append(_Feed(s.analysis_key, mv, s.announce.channels[idx], first))
            s.analysis_next = end
            self._drain_held(s)
        else:
            s.held[first] = mv
            s.held_samples += len(mv)

    def _drain_held(self, s: _Stream) -> None:
        while s.held:
            first = min(s.held)
            if first > s.analysis_next:
                return
            mv = s.held.pop(first)
            s.held_samples -= len(mv)
            end = first + len(mv)
            if end > s.analysis_next:
                self._ops.append(_Feed(s.analysis_key, mv[s.analysis_next - first:],
                                       s.announce.channels[s.ecg_index or 0], s.analysis_next))
                s.analysis_next = end

    def _skip_analysis_to(self, s: _Stream, to: int) -> None:
        """Give up on samples before `to`: reset the analyzer's state for the stream after a hole."""
        if s.ecg_index is not None and self._analyzer is not None:
            self._ops.append(_RemoveStream(s.analysis_key))
            self._ops.append(_AddStream(s.analysis_key, s.announce.sampling_rate_hz,
                                        s.alarm_limits))
        for first in [f for f in s.held if f + len(s.held[f]) <= to]:
            s.held_samples -= len(s.held.pop(first))
        s.analysis_next = to
        self._drain_held(s)

    def _expire_holds(self) -> None:
        now = self._clock()
        for s in list(self._by_key.values()):
            if not s.held:
                continue
            too_old = s.gap_opened_at is not None and now - s.gap_opened_at >= self.config.gap_timeout_s
            too_big = s.held_samples > self.config.max_hold_s * s.announce.sampling_rate_hz
            if too_old or too_big:
                self._skip_analysis_to(s, min(s.held))

    def _take_ops(self) -> list[_Op]:
        self._expire_holds()
        ops, self._ops = self._ops, []
        return ops

    def _apply_and_process(self, ops: list[_Op]) -> dict[str, Any]:
        """Runs in a worker thread: the only place the analyzer is touched."""
        assert self._analyzer is not None
        for op in ops:
            try:
                op.apply(self._analyzer)
            except ValueError:  # our bug (the relay feeds contiguously); keep the others going
                log.exception("waveform analysis: %s failed", type(op).__name__)
        return self._analyzer.process()

    def _publish(self, results: dict[str, Any]) -> None:
        for key, r in results.items():
            s = self._by_key.get(key)
            if s is None:
                continue  # stream closed while the step ran
            g = self._groups.get(s.group)
            if g is None:
                continue
            hr, rr, irr = (_last_float(r.heart_rate_bpm), _last_float(r.rr_ms),
                           _last_float(r.irregularity))
            news = bool(r.beats or r.alarms_raised or r.alarms_cleared)
            prev = s.last_analysis
            if not news and prev is not None and (prev.heart_rate_bpm, prev.rr_ms,
                                                  prev.irregularity) == (hr, rr, irr):
                continue  # nothing new (active alarms only change through raised/cleared)
            msg = Analysis(
                s.announce.stream_id,
                tuple(int(b.sample_index) for b in r.beats),
                hr, rr, irr,
                tuple(_alarm_info(a) for a in r.active_alarms),
                tuple(_alarm_info(a) for a in r.alarms_raised),
                tuple(_alarm_info(a) for a in r.alarms_cleared),
            )
            if news and g.sinks:
                for sink in list(g.sinks):
                    if getattr(sink, "on_analysis", None) is not None:
                        self._call_sink(s.group, g, sink, "on_analysis", msg.stream_id, msg)
            s.last_analysis = Analysis(msg.stream_id, (), hr, rr, irr, msg.active_alarms)
            frame = encode(msg)  # once for all viewers (re-encoded only if merged in an outbox)
            for v in g.viewers.values():
                v.put_analysis(msg, frame)

    def analyze_once(self) -> None:
        """One analysis step in the calling thread (tests, tools): feed, process, fan out."""
        if self._analyzer is None:
            return
        t = time.perf_counter()
        self._publish(self._apply_and_process(self._take_ops()))
        self._note_step(t)

    def _note_step(self, t_start: float) -> None:
        self._c["analysis_steps"] += 1
        self._c["analysis_last_step_ms"] = (time.perf_counter() - t_start) * 1000.0

    async def run_analysis(self, interval_s: float = 0.2) -> None:
        """Run an analysis step every `interval_s` seconds, the DSP in a worker thread, until
        cancelled. Samples keep arriving on the loop while a step runs; they go to the next one."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if self._analyzer is None:
            return
        while True:
            await asyncio.sleep(interval_s)
            async with self._analysis_lock:
                t = time.perf_counter()
                try:
                    results = await asyncio.to_thread(self._apply_and_process, self._take_ops())
                except Exception:  # a DSP bug must not stop live analysis for every bed
                    log.exception("waveform analysis step failed")
                    continue
                self._publish(results)
                self._note_step(t)

    # ------------------------------------------------------------------ introspection

    def stats(self) -> WaveformStats:
        """A snapshot of the counters for /metrics."""
        c = self._c
        return WaveformStats(
            groups=len(self._groups),
            streams=sum(len(g.streams) for g in self._groups.values()),
            viewers=sum(len(g.viewers) for g in self._groups.values()),
            frames_in=int(c["frames_in"]), frames_rejected=int(c["frames_rejected"]),
            chunks_in=int(c["chunks_in"]), samples_in=int(c["samples_in"]),
            duplicate_samples=int(c["duplicate_samples"]), gaps=int(c["gaps"]),
            backfilled_samples=int(c["backfilled_samples"]), lost_samples=int(c["lost_samples"]),
            dropped_chunks_slow_viewers=int(c["dropped"]), sink_failures=int(c["sink_failures"]),
            analysis_steps=int(c["analysis_steps"]),
            analysis_last_step_ms=float(c["analysis_last_step_ms"]),
        )

    def stream_ack(self, group: str, stream_id: str) -> int | None:
        """The stream's `next_seq` (end of the stored contiguous prefix), None if unknown."""
        g = self._groups.get(group)
        s = g.streams.get(stream_id) if g else None
        return None if s is None else s.settled_end
