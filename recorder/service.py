"""RecordingService: the recorder wired into a running medstream node.

The node calls `start(...)` / `stop(room, by)` when the room asks for it, and tells the service
what happens in a recorded room as it happens (`participant`, `track_published`): no polling.
Per recorded room the service owns one `SessionRecorder` and keeps it fed:

* media: a `TrackSink` on every published track of the room (`add_frame_sink` on the media
  layer), attached the moment the track is published (before its first frame can pass) and
  followed by a keyframe request, because a video file can only start at a keyframe;
* waveforms: one lossless store sink on the relay group of the room (`add_store_sink`); a stream
  becomes a WFDB record at its first samples (int16 chunks -> format 16, int32 -> format 32).

When a recording stops on its own (disk full, I/O error, overload) the service calls `on_failed`
(room id, reason) so the node can tell the room. Everything here runs on the event loop and only
enqueues; disk work happens on each session's writer thread, and `stop()` waits for it in a worker
thread. Retention: sessions older than `retention_days` are pruned at start and then daily.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from media_server.events import MediaRequestError
from media_server.frames import FrameSink
from protocol.waveforms import Analysis, Announce
from recorder import edf_export, library, remux, repair
from recorder.crypto import MasterKey
from recorder.errors import RecorderError
from recorder.events import RecorderEvent, RecorderOverloaded, RecordingStopped, StopReason
from recorder.manifest import SessionManifest, read_manifest
from recorder.session import ROOM_NAME_RE, RecorderConfig, SessionRecorder, TrackSink, WaveformSink
from recorder.wfdb_file import WaveformStreamInfo
from waveforms import StoreSink

log = logging.getLogger(__name__)

ROOM_ENDED_BY = "room_ended"
KEYFRAME_RETRY_S = 1.0  # a recorded video track without a keyframe yet is asked again this often
KEYFRAME_RETRIES = 30  # stopped_by when the room ended without a moderator asking


@dataclass(frozen=True, slots=True)
class RecordingServiceConfig:
    """How the service records and keeps recordings.

    `retention_days`: delete sessions older than this (None keeps everything); checked at start
    and every `prune_interval_s`.
    """

    retention_days: float | None = None
    prune_interval_s: float = 86400.0
    recorder: RecorderConfig | None = None  # None: RecorderConfig(root) with defaults
    finalize: bool = True  # after a stop: one file per participant and EDF+ (in a worker thread)
    repair_at_start: bool = True  # crash-cut sessions found at start are made playable

    def __post_init__(self) -> None:
        if self.retention_days is not None and not self.retention_days >= 0:
            raise ValueError(f"retention_days must be >= 0 or None, got {self.retention_days}")
        if not self.prune_interval_s > 0:
            raise ValueError(f"prune_interval_s must be > 0, got {self.prune_interval_s}")


@dataclass(slots=True)
class RoomRecording:
    """What the service keeps for one room being recorded (exposed for tests and metrics)."""

    room_id: str
    recorder: SessionRecorder
    track_sinks: dict[str, TrackSink] = field(default_factory=dict)
    waveform_sink: RelayWaveformSink | None = None
    participants: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # pid -> (role, identity, name)
    failed_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ParticipantNote:
    """Who is in a recorded room, as the manifest keeps it."""

    participant_id: str
    role: str
    identity: str
    name: str


@dataclass(frozen=True, slots=True)
class TrackNote:
    """A published track of a recorded room."""

    track_id: str
    participant_id: str
    kind: str  # audio | video
    codec: str


@dataclass(slots=True)
class _PendingStart:
    by: str
    kind: str
    participants: list[ParticipantNote]
    tracks: list[TrackNote]


class FrameSource(Protocol):
    """What the service needs of the media layer (`media_server.sfu.Sfu`)."""

    def add_frame_sink(self, track_id: str, sink: FrameSink) -> None: ...
    def remove_frame_sink(self, track_id: str, sink: FrameSink) -> None: ...
    def request_keyframe(self, track_id: str) -> None: ...


class StoreSinkHost(Protocol):
    """What the service needs of the waveform relay (`waveforms.relay.WaveformRelay`)."""

    def add_store_sink(self, group: str, sink: StoreSink) -> None: ...
    def remove_store_sink(self, group: str, sink: StoreSink) -> None: ...


class RelayWaveformSink:
    """The relay's lossless store sink for one room group, feeding the room's `SessionRecorder`.

    Never raises into the relay (a raising sink is detached from every stream of the group):
    samples it cannot store are logged and counted in `samples_refused`.
    """

    def __init__(self, recorder: SessionRecorder) -> None:
        self._recorder = recorder
        self._announces: dict[str, tuple[str, Announce]] = {}  # stream_id -> (publisher_id, Announce)
        self._sinks: dict[str, WaveformSink] = {}
        self._newest: dict[str, int] = {}  # stream_id -> newest sample index received
        self.samples_refused = 0

    def on_stream(self, publisher_id: str, announce: Announce) -> None:
        """A stream opened (or changed publisher, or began a new segment after its monitor
        restarted): remember its description until samples come. Each segment is its own record
        (`bed-1`, then `bed-1.seg1`, ...), so a restart never overwrites or drops anything."""
        known = self._announces.get(announce.stream_id)
        if known is None or known[1].segment != announce.segment:
            self._announces[announce.stream_id] = (publisher_id, announce)

    def on_samples(self, stream_id: str, first_sample: int, samples: np.ndarray, t0: float) -> None:
        """New samples (n_channels, n) of `stream_id`, each exactly once, back-fill possibly late."""
        try:
            sink = self._sinks.get(stream_id) or self._open(stream_id, samples)
            if sink is not None:
                sink.on_chunk(first_sample, samples, t0)
                end = first_sample + samples.shape[1] - 1
                if end > self._newest.get(stream_id, -1):
                    self._newest[stream_id] = end
        except RecorderError:
            pass  # the recording is over; the service detaches this sink
        except ValueError as exc:
            self.samples_refused += samples.shape[1] if samples.ndim == 2 else 0
            log.error("recorder %s: samples of %r refused: %s", self._recorder.session_id, stream_id, exc)

    def on_stream_ended(self, stream_id: str) -> None:
        """The stream closed: finalise its record."""
        sink = self._sinks.pop(stream_id, None)
        if sink is not None:
            with contextlib.suppress(RecorderError):
                sink.on_stream_ended()

    def on_analysis(self, stream_id: str, analysis: Analysis) -> None:
        """Beats and alarm changes of a stream (`protocol.waveforms.Analysis`) as annotations.

        Beats -> their class symbol (`Analysis.labels`: N, V, Q), raised alarms -> `"` comments at the sample
        where the condition began; a cleared alarm is noted at the newest sample seen (the relay
        says only that it cleared within the step just analysed, so that time is approximate).
        """
        sink = self._sinks.get(stream_id)
        if sink is None:
            return
        try:
            for sample, label in zip(analysis.beats, analysis.labels, strict=True):
                sink.on_beat(int(sample), label)
            for alarm in analysis.alarms_raised:
                sink.on_alarm(int(alarm.since_sample), f"{alarm.kind} {alarm.priority}: {alarm.message}")
            cleared_at = self._newest.get(stream_id, 0)
            for alarm in analysis.alarms_cleared:
                sink.on_alarm(cleared_at, f"cleared {alarm.kind}")
        except (RecorderError, ValueError) as exc:
            log.warning("recorder %s: analysis of %r not stored: %s", self._recorder.session_id,
                        stream_id, exc)

    def end_all(self) -> None:
        """Finalise every open record (the recording is stopping)."""
        for stream_id in list(self._sinks):
            self.on_stream_ended(stream_id)

    def _open(self, stream_id: str, samples: np.ndarray) -> WaveformSink | None:
        known = self._announces.get(stream_id)
        if known is None:
            log.error("recorder %s: samples of %r before its announce", self._recorder.session_id, stream_id)
            return None
        publisher_id, a = known
        info = WaveformStreamInfo(
            channel_names=tuple(c.name for c in a.channels),
            units=tuple(c.unit for c in a.channels),
            gains=tuple(float(c.gain) for c in a.channels),
            baselines=tuple(int(c.baseline) for c in a.channels),
            sampling_rate_hz=float(a.sampling_rate_hz),
            adc_resolution_bits=16 if samples.dtype.itemsize <= 2 else 32,
        )
        record_id = stream_id if a.segment == 0 else f"{stream_id}.seg{a.segment}"
        sink = self._recorder.add_waveform_stream(record_id, publisher_id, info)
        self._sinks[stream_id] = sink
        return sink


class RecordingService:
    """Records rooms on request (see module docstring).

    `root`: recordings folder; `media` / `waveforms`: where frames and samples come from (None
    when that part is off); `on_failed(room_id, reason)`: a recording stopped on its own;
    `on_stopped(room_id, manifest)`: a session's files are final (requested stop, room end, shutdown).
    Construct on the running loop.
    """

    def __init__(
        self,
        root: Path,
        *,
        media: FrameSource | None = None,
        waveforms: StoreSinkHost | None = None,
        on_failed: Callable[[str, str], None] | None = None,
        on_stopped: Callable[[str, SessionManifest], None] | None = None,
        retention_days: float | None = None,
        config: RecordingServiceConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.media = media
        self.waveforms = waveforms
        self.on_failed = on_failed
        self.on_stopped = on_stopped  # (room id, final manifest) of every session that stopped
        self.config = config or RecordingServiceConfig(retention_days=retention_days)
        self.clock = clock
        self.rooms: dict[str, RoomRecording] = {}
        self.pruned_sessions = 0
        self._stopping: dict[str, asyncio.Task[SessionManifest | None]] = {}
        self._pending: dict[str, _PendingStart] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._prune_task: asyncio.Task[None] | None = None
        self._closed = False
        self.repaired_sessions: list[str] = []
        self._started_at = clock() - 1.0  # sessions from before: an earlier run's
        self.finalized_sessions = 0
        self._repair_task: asyncio.Task[None] | None = None
        if self.config.repair_at_start:
            self._repair_task = asyncio.get_running_loop().create_task(self._repair())
        if self.config.retention_days is not None:
            self._prune_task = asyncio.get_running_loop().create_task(self._prune_loop())

    # ------------------------------------------------------------------ recording

    def start(
        self,
        room_id: str,
        by_participant_id: str,
        kind: str,
        participants: tuple[ParticipantNote, ...] = (),
        tracks: tuple[TrackNote, ...] = (),
    ) -> None:
        """Start recording `room_id` as it is now (the room already checked the permission).

        Synchronous, so a track published right after is attached before its first frame. If a
        stop of the same room is still writing its files, the start waits for it and keeps the
        participants and tracks that arrive meanwhile. Never raises: failures go to `on_failed`."""
        if self._closed:
            self._fail_room(room_id, "the server is shutting down")
            return
        previous = self._stopping.get(room_id)
        if previous is None:
            self._begin(room_id, by_participant_id, kind, list(participants), list(tracks))
            return
        pending = _PendingStart(by_participant_id, kind, list(participants), list(tracks))
        self._pending[room_id] = pending

        async def after_stop() -> None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
            if self._pending.get(room_id) is pending:
                del self._pending[room_id]
                self._begin(room_id, pending.by, pending.kind, pending.participants, pending.tracks)

        task = asyncio.get_running_loop().create_task(after_stop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _begin(self, room_id: str, by_participant_id: str, kind: str,
               participants: list[ParticipantNote], tracks: list[TrackNote]) -> None:
        if room_id in self.rooms:
            log.warning("recorder: start for room %r which is already being recorded", room_id)
            return
        if not ROOM_NAME_RE.match(room_id):
            self._fail_room(room_id, f"room id {room_id!r} cannot be used as a folder name")
            return
        rec_config = self.config.recorder or RecorderConfig(self.root)
        recorder = SessionRecorder(rec_config, room_id, kind,
                                   on_event=functools.partial(self._on_recorder_event, room_id),
                                   clock=self.clock)
        try:
            recorder.start(started_by=by_participant_id)
        except OSError as exc:
            log.error("recorder: cannot start recording room %r: %s", room_id, exc)
            self._fail_room(room_id, f"cannot create the recording: {exc.strerror or exc}")
            return
        rr = RoomRecording(room_id, recorder)
        self.rooms[room_id] = rr
        for p in participants:
            self.participant(room_id, p)
        for t in tracks:
            self.track_published(room_id, t)
        if self.waveforms is not None:
            rr.waveform_sink = RelayWaveformSink(recorder)
            self.waveforms.add_store_sink(room_id, rr.waveform_sink)
        log.info("recording room %r to %s (started by %s)", room_id, recorder.directory, by_participant_id)

    async def stop(self, room_id: str, by_participant_id: str | None) -> SessionManifest | None:
        """Stop recording `room_id` and wait for its files to be final; returns the manifest
        (None if the room was not being recorded). `by_participant_id` None: the room ended."""
        self._pending.pop(room_id, None)  # a start still waiting for an earlier stop is off
        running = self._stopping.get(room_id)
        if running is not None:
            return await asyncio.shield(running)
        rr = self.rooms.get(room_id)
        if rr is None:
            log.info("recorder: stop for room %r which is not being recorded", room_id)
            return None
        task = asyncio.ensure_future(self._stop(rr, by_participant_id or ROOM_ENDED_BY))
        self._stopping[room_id] = task
        task.add_done_callback(functools.partial(self._stop_done, room_id))
        return await asyncio.shield(task)

    def _stop_done(self, room_id: str, _task: asyncio.Task[SessionManifest | None]) -> None:
        self._stopping.pop(room_id, None)

    async def close(self) -> None:
        """Stop every recording (stopped_by "server_shutdown") and the prune timer. Idempotent."""
        self._closed = True
        self._pending.clear()
        if self._repair_task is not None:
            with contextlib.suppress(Exception):
                await self._repair_task
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune_task
            self._prune_task = None
        for room_id in list(self.rooms):
            await self.stop(room_id, "server_shutdown")
        for task in list(self._stopping.values()):
            with contextlib.suppress(Exception):
                await task

    @property
    def master_key(self) -> MasterKey | None:
        """The recordings master key (None: recordings are not encrypted)."""
        return self.config.recorder.master_key if self.config.recorder is not None else None

    async def _repair(self) -> None:
        """Crash-cut sessions of an earlier run made playable, in a worker thread."""
        active = frozenset(rr.recorder.session_id for rr in self.rooms.values())
        try:
            self.repaired_sessions = await asyncio.to_thread(
                repair.repair_all, self.root, self.master_key, active, self._started_at)
        except Exception:
            log.exception("recorder: repairing %s failed", self.root)

    async def repaired(self) -> list[str]:
        """Wait for the start-up repair; the ids of the sessions it repaired."""
        if self._repair_task is not None:
            await asyncio.shield(self._repair_task)
        return self.repaired_sessions

    async def _finalize(self, directory: Path) -> None:
        """One file per participant and EDF+ of every record: offline, in a worker thread."""
        def work() -> None:
            remux.remux_participants(directory, self.master_key)
            edf_export.export_session(directory, self.master_key)
        try:
            await asyncio.to_thread(work)
            self.finalized_sessions += 1
        except Exception:
            log.exception("recorder: finalizing %s failed (the track files are intact)", directory)

    async def _stop(self, rr: RoomRecording, stopped_by: str) -> SessionManifest | None:
        self._detach(rr)
        try:
            manifest = await rr.recorder.stop(stopped_by)
            if self.config.finalize and rr.recorder.directory is not None:
                await self._finalize(rr.recorder.directory)
                with contextlib.suppress(OSError, ValueError):
                    manifest = read_manifest(rr.recorder.directory, self.master_key)
        finally:
            self.rooms.pop(rr.room_id, None)
        log.info("recording of room %r stopped by %s: %s", rr.room_id, stopped_by, manifest.stop_reason)
        if self.on_stopped is not None:
            try:
                self.on_stopped(rr.room_id, manifest)
            except Exception:  # an observer's bug must not lose the manifest for the caller
                log.exception("recorder: on_stopped failed for room %r", rr.room_id)
        return manifest

    def _detach(self, rr: RoomRecording) -> None:
        """Unhook every sink (idempotent); open tracks and streams are finalised by the stop."""
        if self.media is not None:
            for track_id, sink in rr.track_sinks.items():
                self.media.remove_frame_sink(track_id, sink)
        if rr.waveform_sink is not None and self.waveforms is not None:
            self.waveforms.remove_store_sink(rr.room_id, rr.waveform_sink)
            rr.waveform_sink.end_all()

    def _on_recorder_event(self, room_id: str, event: RecorderEvent) -> None:
        if isinstance(event, RecorderOverloaded):
            log.warning("recorder of room %r overloaded: %d bytes waiting to be written",
                        room_id, event.pending_bytes)
            return
        if not isinstance(event, RecordingStopped) or event.reason is StopReason.REQUESTED:
            return
        rr = self.rooms.get(room_id)
        if rr is None or rr.recorder.session_id != event.session_id:
            return
        reason = {StopReason.DISK_FULL: "the recordings disk is full",
                  StopReason.OVERLOADED: "the recorder could not keep up",
                  StopReason.IO_ERROR: "a disk error",
                  StopReason.INTERNAL_ERROR: "an internal error"}.get(event.reason, event.reason.value)
        rr.failed_reason = event.reason.value
        self._detach(rr)
        self.rooms.pop(room_id, None)
        self._fail_room(room_id, reason)

    def _fail_room(self, room_id: str, reason: str) -> None:
        if self.on_failed is not None:
            self.on_failed(room_id, reason)

    # ------------------------------------------------------------------ room events

    def participant(self, room_id: str, p: ParticipantNote) -> None:
        """Someone joined a recorded room, or their role changed: the manifest keeps both."""
        if (pending := self._pending.get(room_id)) is not None:
            pending.participants.append(p)
            return
        rr = self.rooms.get(room_id)
        if rr is None or rr.recorder.state != "recording":
            return
        entry = (p.role, p.identity, p.name)
        if rr.participants.get(p.participant_id) != entry:
            rr.participants[p.participant_id] = entry
            rr.recorder.add_participant(p.participant_id, p.role, p.identity, p.name)

    def participant_left(self, room_id: str, participant_id: str) -> None:
        """Someone left a recorded room: the timeline shows when."""
        rr = self.rooms.get(room_id)
        if rr is None or rr.recorder.state != "recording" or participant_id not in rr.participants:
            return
        with contextlib.suppress(RecorderError):
            rr.recorder.participant_left(participant_id)

    def chat(self, room_id: str, message_id: str, participant_id: str, name: str, text: str,
             time_unix_s: float, to_moderators: bool) -> None:
        """A chat message in a room: kept only while that room is being recorded."""
        rr = self.rooms.get(room_id)
        if rr is None or rr.recorder.state != "recording":
            return
        with contextlib.suppress(RecorderError):
            rr.recorder.add_chat(message_id, participant_id, name, text, time_unix_s, to_moderators)

    def track_published(self, room_id: str, t: TrackNote) -> None:
        """A track appeared in a recorded room: attach at once, ask for a keyframe at once."""
        if (pending := self._pending.get(room_id)) is not None:
            pending.tracks.append(t)
            return
        rr = self.rooms.get(room_id)
        if rr is None or rr.recorder.state != "recording" or self.media is None or t.track_id in rr.track_sinks:
            return
        try:
            sink = rr.recorder.add_track(t.track_id, t.participant_id, t.kind, t.codec)
        except ValueError as exc:
            log.error("recorder: track %r of room %r not recorded: %s", t.track_id, room_id, exc)
            rr.track_sinks[t.track_id] = TrackSink(rr.recorder, t.track_id)  # don't retry
            return
        rr.track_sinks[t.track_id] = sink
        try:
            self.media.add_frame_sink(t.track_id, sink)
        except MediaRequestError as exc:  # the track ended between the room update and now
            log.info("recorder: track %r ended before it could be recorded: %s", t.track_id, exc)
            sink.on_track_ended(t.track_id)
            return
        if t.kind == "video":
            # the file starts at a keyframe; don't wait for the publisher's next one, and ask
            # again while none has come (a request or the keyframe itself can be lost)
            with contextlib.suppress(MediaRequestError):
                self.media.request_keyframe(t.track_id)
            self._keyframe_retry(room_id, t.track_id, sink, 1)

    def _keyframe_retry(self, room_id: str, track_id: str, sink: TrackSink, attempt: int) -> None:
        def again() -> None:
            rr = self.rooms.get(room_id)
            if sink.keyframe_seen or rr is None or rr.track_sinks.get(track_id) is not sink or self.media is None:
                return
            log.info("recorder: no keyframe yet on track %r of room %r: asking again", track_id, room_id)
            try:
                self.media.request_keyframe(track_id)
            except MediaRequestError:
                return
            if attempt < KEYFRAME_RETRIES:
                self._keyframe_retry(room_id, track_id, sink, attempt + 1)
        asyncio.get_running_loop().call_later(KEYFRAME_RETRY_S, again)

    # ------------------------------------------------------------------ retention

    async def _prune_loop(self) -> None:
        while True:
            await self.prune_now()
            await asyncio.sleep(self.config.prune_interval_s)

    async def prune_now(self) -> int:
        """Delete sessions older than the retention period now (in a worker thread); returns how
        many. Sessions being recorded are never deleted."""
        days = self.config.retention_days
        if days is None:
            return 0
        active = {rr.recorder.session_id for rr in self.rooms.values()}
        try:
            removed = await asyncio.to_thread(_prune_except, self.root, days * 86400.0, self.clock(), active)
        except Exception:
            log.exception("recorder: pruning %s failed", self.root)
            return 0
        for s in removed:
            log.info("retention: deleted recording %s/%s", s.room, s.session_id)
        self.pruned_sessions += len(removed)
        return len(removed)


def _prune_except(root: Path, older_than_s: float, now: float, keep: set[str]) -> list[Any]:
    """library.prune, minus the sessions in `keep` (being recorded right now)."""
    candidates = library.prune(root, older_than_s, now=now, dry_run=True)
    removed = []
    for s in candidates:
        if s.session_id in keep:
            continue
        shutil.rmtree(s.path, ignore_errors=True)
        removed.append(s)
    return removed
