"""Live waveform relay: validate monitor frames, keep every sample exactly once, fan out.

Knows nothing of rooms: a *group* is an opaque string the server chooses (the room id) and a
publisher/viewer id is whatever the server uses for a participant. Everything here is synchronous
and socket-free (`on_publisher_frame` bytes in, reply frames out; viewers drain a `ViewerOutbox`)
except `run_analysis`, the small async driver that runs the DSP step in a worker thread
(`waveforms.analysis`).

Guarantees (see docs/protocol-waveforms.md for the wire side):

* **Nothing is lost.** A stream's samples are numbered from its first sample. The relay keeps the
  set of sample ranges it has received (`waveforms.ranges.IntervalSet`); a chunk is trimmed
  sample-exactly to what is new, so store sinks see every sample exactly once (back-filled ranges
  may come after later ones). `ack.next_seq` is the end of the contiguous prefix that is stored (or
  declared lost by the monitor through `announce.oldest_seq`), so a monitor frees only what is safe.
* **Fan-out never waits for the slowest.** Each viewer has a bounded `ViewerOutbox`; when it is full
  the oldest queued chunk is dropped and replaced by a `skipped` notice for that stream. Control
  messages (announce, analysis with alarms, numerics, gap, stream_ended) are never dropped; analysis
  and numerics are coalesced per stream so they stay bounded (`waveforms.outbox`).
* **Store sinks lose nothing.** They are called synchronously with every new sample; one that
  raises (e.g. because it cannot keep up) is detached and reported at ERROR level and through
  `on_sink_failure`, never silently skipped.
* **Store sinks get the analysis too.** Every `StoreSink` receives each analysis result with news
  (beats, alarm changes) unmerged through `on_analysis`, so a recorder can write beat and alarm
  annotations (see `waveforms.sinks.StoreSink`).
* **A stream belongs to a device.** The first announce binds the stream id to the publisher's
  *owner* (the device identity of the monitor's token, `set_publisher_identity`); no other owner
  can publish it, connected or not. The same device comes back (resume or fresh join, any
  participant id) and gets its stream back. A device that restarted (an announce with a new
  `session`) starts a new *segment*: sinks get `on_stream_ended` for the old one and `on_stream`
  with `announce.segment` + 1, so a recorder keeps both; nothing is dropped as a duplicate.
* **Departed devices' streams close.** A stream whose publisher has been gone for
  `stream_retention_s` is closed (sinks `on_stream_ended`, viewers `stream_ended` with reason
  `publisher_gone`) and its slot freed.
* **Analysis sees contiguous samples only.** Out-of-order samples are held until the hole is
  back-filled; after `gap_timeout_s` (or when the monitor declares the hole lost, or the held data
  exceeds `max_hold_s`) the analyzer's state for that stream is reset and feeding resumes after the
  hole, so beats are never computed across missing data (`waveforms.analysis.AnalysisScheduler`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from protocol.waveforms import (
    Ack,
    Announce,
    Chunk,
    Ecg12Snapshot,
    Gap,
    Numerics,
    StreamAnnounce,
    StreamEnded,
    ViewerChunk,
    WaveformError,
    WaveformErrorReason,
    WaveformWireError,
    decode_client_frame,
    encode,
)
from waveforms.analysis import (
    AnalysisScheduler,
    AnalysisUpdate,
    MultiStreamAnalyzerLike,
    StreamAnalysis,
    default_analyzer,
)
from waveforms.outbox import ViewerOutbox
from waveforms.ranges import IntervalSet
from waveforms.sinks import StoreSink

SnapshotIntake = Callable[[str, str, str, Ecg12Snapshot], None]
"""(group, publisher id, device identity, snapshot): takes a device's 12-lead snapshot."""

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
    analysis_block_s: the analysis grid, stream seconds per DSP step (`waveforms.analysis`).
    """

    max_streams_per_group: int = 64
    stream_retention_s: float = 600.0  # a departed monitor's stream waits this long for it
    viewer_max_chunks: int = 400
    max_ahead_s: float = 3600.0
    max_open_gaps: int = 64
    gap_timeout_s: float = 10.0
    max_hold_s: float = 120.0
    analysis: bool = True
    analysis_block_s: float = 0.2


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
    segments: int = 0  # new segments started by restarted monitors
    streams_expired: int = 0  # streams closed after their publisher's retention period


# --------------------------------------------------------------------------- streams


@dataclass(slots=True)
class _Stream:
    group: str
    announce: Announce
    publisher_id: str
    analysis: StreamAnalysis | None  # None: no ECG channel, or analysis disabled
    owner: str = ""  # the device identity that may publish it
    connected: bool = True
    disconnected_at: float | None = None
    settled_end: int = 0  # every sample before it is stored (or declared lost)
    pending: IntervalSet = field(default_factory=IntervalSet)  # received ranges beyond it
    highest_end: int = 0
    last_numerics: Numerics | None = None


@dataclass(slots=True)
class _Group:
    streams: dict[str, _Stream] = field(default_factory=dict)
    viewers: dict[str, ViewerOutbox] = field(default_factory=dict)
    sinks: list[StoreSink] = field(default_factory=list)


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
        on_sink_failure: Callable[[str, StoreSink, BaseException], None] | None = None,
    ) -> None:
        self.config = config or WaveformConfig()
        if analyzer is None and self.config.analysis:
            analyzer = default_analyzer()
        self._analysis = AnalysisScheduler(
            analyzer, on_update=self._on_analysis, gap_timeout_s=self.config.gap_timeout_s,
            max_hold_s=self.config.max_hold_s, block_s=self.config.analysis_block_s, clock=clock)
        self._on_sink_failure = on_sink_failure
        self._clock = clock
        # 12-lead snapshots are not stream data: they go whole to the node's reading intake
        self.on_snapshot: SnapshotIntake | None = None
        self._identities: dict[tuple[str, str], str] = {}  # (group, publisher id) -> device identity
        self._groups: dict[str, _Group] = {}
        self._by_key: dict[str, _Stream] = {}  # analysed streams by their analysis key
        self._c: dict[str, int] = dict.fromkeys(
            ("frames_in", "frames_rejected", "chunks_in", "samples_in", "duplicate_samples",
             "gaps", "backfilled_samples", "lost_samples", "dropped", "sink_failures",
             "segments", "streams_expired"), 0)

    # ------------------------------------------------------------------ publishers

    def set_publisher_identity(self, group: str, publisher_id: str, identity: str) -> None:
        """`publisher_id` publishes as device `identity` (from its token). Without a call, a
        publisher is its own identity."""
        self._identities[(group, publisher_id)] = identity

    def _owner(self, group: str, publisher_id: str) -> str:
        return self._identities.get((group, publisher_id), publisher_id)

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
                case Ecg12Snapshot():
                    if self.on_snapshot is None:
                        raise WaveformWireError(WaveformErrorReason.BAD_MESSAGE,
                                                "12-lead snapshots are not taken on this server", msg.snapshot_id)
                    self.on_snapshot(group, publisher_id, self._owner(group, publisher_id), msg)
                    replies = []  # the intake replies when the snapshot is stored (or refused)
                case _:
                    raise WaveformWireError(WaveformErrorReason.BAD_MESSAGE, "not a monitor message")
        except WaveformWireError as exc:
            self._c["frames_rejected"] += 1
            return [encode(WaveformError(exc.reason, exc.message, exc.stream_id))]
        return [encode(r) for r in replies]

    def _owned(self, g: _Group, publisher_id: str, stream_id: str, what: str) -> _Stream:
        s = g.streams.get(stream_id)
        if s is None:
            raise WaveformWireError(WaveformErrorReason.UNKNOWN_STREAM,
                                    f"{what} for stream {stream_id!r} before its announce",
                                    stream_id)
        if s.owner != self._owner(s.group, publisher_id):
            raise WaveformWireError(WaveformErrorReason.STREAM_TAKEN,
                                    f"stream {stream_id!r} belongs to another device",
                                    stream_id)
        if s.publisher_id != publisher_id:
            raise WaveformWireError(WaveformErrorReason.UNKNOWN_STREAM,
                                    f"{what} for stream {stream_id!r}: re-announce it after reconnecting",
                                    stream_id)
        s.connected, s.disconnected_at = True, None
        return s

    def _on_announce(self, g: _Group, group: str, publisher_id: str, a: Announce) -> list[Ack]:
        a = replace(a, segment=0)  # segments are the relay's to number
        owner = self._owner(group, publisher_id)
        s = g.streams.get(a.stream_id)
        if s is not None and s.owner != owner:
            raise WaveformWireError(WaveformErrorReason.STREAM_TAKEN,
                                    f"stream {a.stream_id!r} belongs to another device", a.stream_id)
        if s is not None and a.session is not None and a.session != s.announce.session:
            # The device restarted (its sample counter begins again): close the segment it was
            # writing and start the next one of the same bed's record.
            segment = s.announce.segment + 1
            self._close_stream(g, s, StreamEnded(s.announce.stream_id, "new_segment"))
            self._c["segments"] += 1
            a = replace(a, segment=segment)
            s = None
        if s is None:
            if len(g.streams) >= self.config.max_streams_per_group:
                self.expire_streams()
            if len(g.streams) >= self.config.max_streams_per_group:
                raise WaveformWireError(
                    WaveformErrorReason.TOO_MANY_STREAMS,
                    f"a group may have at most {self.config.max_streams_per_group} streams, "
                    f"got one more ({a.stream_id!r})")
            try:
                limits = self._analysis.limits_for(a.limits)
            except ValueError as exc:
                raise WaveformWireError(WaveformErrorReason.BAD_MESSAGE,
                                        f"announce.limits refused by the analyzer: {exc}",
                                        a.stream_id) from None
            analysis = self._analysis.open(a, a.oldest_seq, limits)
            s = _Stream(group, a, publisher_id, analysis, owner=owner, settled_end=a.oldest_seq,
                        highest_end=a.oldest_seq)
            g.streams[a.stream_id] = s
            if analysis is not None:
                self._by_key[analysis.key] = s
            self._announce_to(g, s)
            return [Ack(a.stream_id, s.settled_end)]
        if a.description() != s.announce.description():
            raise WaveformWireError(
                WaveformErrorReason.STREAM_MISMATCH,
                f"re-announce of {a.stream_id!r} must equal the open stream's description "
                f"(channels, sampling_rate_hz, ecg_channel, limits), got a different one")
        changed = s.publisher_id != publisher_id
        s.publisher_id, s.connected, s.disconnected_at = publisher_id, True, None
        if a.session is not None and s.announce.session is None:
            s.announce = replace(s.announce, session=a.session)
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
            self._call_sink(s.group, g, sink, sink.on_stream, s.publisher_id, s.announce)

    def _declare_lost(self, g: _Group, s: _Stream, upto: int) -> None:
        """The monitor no longer has samples before `upto`: stop waiting for the holes there."""
        for lo, hi in s.pending.missing(s.settled_end, upto):
            self._c["lost_samples"] += hi - lo
            msg = Gap(s.announce.stream_id, lo, hi, lost=True)
            frame = encode(msg)
            for v in g.viewers.values():
                v.put_control(msg, frame)
        s.pending.discard_below(upto)
        s.settled_end = upto
        self._advance_settled(s)
        s.highest_end = max(s.highest_end, upto)
        if s.analysis is not None and s.analysis.next_sample < upto:
            self._analysis.skip_to(s.analysis, upto)

    def _advance_settled(self, s: _Stream) -> None:
        pending = s.pending
        while (first := pending.first) is not None and first[0] <= s.settled_end:
            s.settled_end = max(s.settled_end, pending.pop_first()[1])
        if s.analysis is not None:
            self._analysis.note_gap(s.analysis, bool(pending))

    def _on_chunk(self, g: _Group, publisher_id: str, c: Chunk) -> list[Ack]:
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
            new = s.pending.missing(max(start, s.settled_end), end)
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
                    self._call_sink(s.group, g, sink, sink.on_samples, c.stream_id, lo, piece,
                                    c.t0 + (lo - start) / fs)
            if not in_order:
                s.pending.add(lo, hi)
            out = c if lo == start and hi == end else Chunk(
                c.stream_id, lo, c.t0 + (lo - start) / fs, piece, c.backfill)
            frame = encode(ViewerChunk(out, live=not catching_up))
            for v in g.viewers.values():
                v.put_chunk(c.stream_id, lo, hi, frame)
            if s.analysis is not None:
                self._analysis.feed(s.analysis, lo, piece)
        s.highest_end = max(s.highest_end, end)
        if in_order:
            s.settled_end = end
        else:
            self._advance_settled(s)
        return [Ack(c.stream_id, s.settled_end)]

    def _on_numerics(self, g: _Group, publisher_id: str, n: Numerics) -> list[Ack]:
        s = self._owned(g, publisher_id, n.stream_id, "numerics")
        s.last_numerics = n if s.last_numerics is None else Numerics(
            n.stream_id, n.time, {**s.last_numerics.values, **n.values})
        for v in g.viewers.values():
            v.put_numerics(n)
        return []

    def publisher_disconnected(self, group: str, publisher_id: str) -> None:
        """The monitor's connection dropped: its streams stay open for it (or a successor) to
        re-announce and back-fill."""
        self._identities.pop((group, publisher_id), None)
        g = self._groups.get(group)
        if g is None:
            return
        now = self._clock()
        for s in g.streams.values():
            if s.publisher_id == publisher_id and s.connected:
                s.connected = False
                s.disconnected_at = now
        if self.config.stream_retention_s <= 0:
            self.expire_streams()

    def expire_streams(self) -> int:
        """Close streams whose publisher has been gone for `stream_retention_s`; returns how many."""
        now = self._clock()
        closed = 0
        for g in list(self._groups.values()):
            for s in list(g.streams.values()):
                if not s.connected and s.disconnected_at is not None \
                        and now - s.disconnected_at >= self.config.stream_retention_s:
                    self._close_stream(g, s, StreamEnded(s.announce.stream_id, "publisher_gone"))
                    self._c["streams_expired"] += 1
                    closed += 1
        return closed

    def _close_stream(self, g: _Group, s: _Stream, ended: StreamEnded) -> None:
        """End one stream: holes declared lost, sinks `on_stream_ended`, viewers `ended`."""
        stream_id = s.announce.stream_id
        if g.streams.get(stream_id) is s:
            del g.streams[stream_id]
        if s.pending:
            for lo, hi in s.pending.missing(s.settled_end, s.pending.end):
                self._c["lost_samples"] += hi - lo
                for v in g.viewers.values():
                    v.put_control(Gap(stream_id, lo, hi, lost=True))
        for sink in list(g.sinks):
            self._call_sink(s.group, g, sink, sink.on_stream_ended, stream_id)
        for v in g.viewers.values():
            v.put_control(ended)
        if s.analysis is not None:
            self._by_key.pop(s.analysis.key, None)
            self._analysis.close(s.analysis)

    async def _expire_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.expire_streams()
            except Exception as exc:
                log.error("expiring waveform streams failed: %r", exc)

    # ------------------------------------------------------------------ sinks

    def _call_sink(self, group: str, g: _Group, sink: StoreSink, method: Callable[..., None],
                   *args: Any) -> None:
        """`method` (a bound method of `sink`) with `args`; a sink that raises is detached."""
        try:
            method(*args)
        except Exception as exc:
            self._c["sink_failures"] += 1
            if sink in g.sinks:
                g.sinks.remove(sink)
            log.error("waveform store sink %r failed in %s and was detached from group %r: %r",
                      sink, method.__name__, group, exc)
            if self._on_sink_failure is not None:
                self._on_sink_failure(group, sink, exc)

    def observe_analysis_steps(self, observe: Callable[[float], None]) -> None:
        """Call `observe(seconds)` after every analysis step (a metrics histogram)."""
        self._analysis.step_observers.append(observe)

    def add_store_sink(self, group: str, sink: StoreSink) -> None:
        """Attach a lossless sink: it gets `on_stream` for open streams now, then every new sample.

        Samples received before it was attached are not replayed (the relay does not keep them).
        """
        g = self._groups.setdefault(group, _Group())
        g.sinks.append(sink)
        for s in g.streams.values():
            self._call_sink(group, g, sink, sink.on_stream, s.publisher_id, s.announce)

    def remove_store_sink(self, group: str, sink: StoreSink) -> None:
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
            if s.analysis is not None and s.analysis.last is not None:
                out.put_analysis(s.analysis.last)
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
        for s in list(g.streams.values()):
            self._close_stream(g, s, StreamEnded(s.announce.stream_id, "group_closed"))
        for v in g.viewers.values():
            v.close()
        for key in [k for k in self._identities if k[0] == group]:
            del self._identities[key]

    # ------------------------------------------------------------------ analysis

    def _on_analysis(self, u: AnalysisUpdate) -> None:
        """A stream's analysis result: store sinks get news (unmerged), viewers everything."""
        s = self._by_key.get(u.stream.key)
        g = self._groups.get(s.group) if s is not None else None
        if s is None or g is None:
            return
        msg = u.analysis
        if u.news and g.sinks:
            for sink in list(g.sinks):
                self._call_sink(s.group, g, sink, sink.on_analysis, msg.stream_id, msg)
        frame = encode(msg)  # once for all viewers (re-encoded only if merged in an outbox)
        for v in g.viewers.values():
            v.put_analysis(msg, frame)

    def analyze_once(self) -> None:
        """One analysis step in the calling thread (tests, tools): feed, process, fan out."""
        self._analysis.analyze_once()

    async def run_analysis(self, interval_s: float = 0.2) -> None:
        """Run an analysis step every `interval_s` seconds, the DSP in a worker thread, until
        cancelled. Samples keep arriving on the loop while a step runs; they go to the next one.
        Raises ValueError if `interval_s` <= 0. Also closes departed devices' streams (every
        second at most, `stream_retention_s`)."""
        sweep = asyncio.ensure_future(self._expire_loop(min(1.0, max(0.05, self.config.stream_retention_s / 4))))
        try:
            await self._analysis.run(interval_s)
        finally:
            sweep.cancel()

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
            analysis_steps=self._analysis.steps,
            analysis_last_step_ms=self._analysis.last_step_ms,
            segments=int(c["segments"]), streams_expired=int(c["streams_expired"]),
        )

    def stream_ack(self, group: str, stream_id: str) -> int | None:
        """The stream's `next_seq` (end of the stored contiguous prefix), None if unknown."""
        g = self._groups.get(group)
        s = g.streams.get(stream_id) if g else None
        return None if s is None else s.settled_end
