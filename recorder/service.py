"""RecordingService: the recorder wired into a running medstream node.

The server calls `start(room, by)` / `stop(room, by)` when the hub emits StartRecorder /
StopRecorder, and `http(path, query, headers)` for every plain HTTP GET. Per recorded room the
service owns one `SessionRecorder` and keeps it fed:

* media: a `TrackSink` on every published track of the room (`Sfu.add_frame_sink`), and a keyframe
  request right after attaching, because a video file can only start at a keyframe and the SFU
  does not ask for one when a sink is added;
* tracks published later, participants joining and role changes: found by polling the room state
  every `poll_interval_s` (the hub has no hook for them yet, see docs/recording.md);
* waveforms: one lossless store sink on the relay group of the room (`add_store_sink`); a stream
  becomes a WFDB record at its first samples (int16 chunks -> format 16, int32 -> format 32).

When a recording stops on its own (disk full, I/O error, overload) the room is told through
`server.apply(hub.recording_failed(...))`. Everything here runs on the event loop and only
enqueues; disk work happens on each session's writer thread, and `stop()` waits for it in a worker
thread. Retention: sessions older than `retention_days` are pruned at start and then daily.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from media_server.events import MediaRequestError
from protocol.signaling import WireError
from recorder import library
from recorder.errors import (
    RangeNotSatisfiableError,
    RecorderError,
    SessionNotFoundError,
    UnsafePathError,
)
from recorder.events import RecorderEvent, RecorderOverloaded, RecordingStopped, StopReason
from recorder.manifest import MANIFEST_NAME, SessionManifest
from recorder.session import ROOM_NAME_RE, RecorderConfig, SessionRecorder, TrackSink, WaveformSink
from recorder.wfdb_file import WaveformStreamInfo
from signaling.http import CONTENT_TYPES, HttpResponse
from signaling.roles import Role
from signaling.tokens import verify_token

log = logging.getLogger(__name__)

READ_ROLES = frozenset({Role.HOST, Role.SUPERVISOR})  # who may list and download a room's recordings
MAX_RANGE_BYTES = 8 * 1024 * 1024  # one response reads at most this much from disk
MAX_WHOLE_FILE_BYTES = 8 * 1024 * 1024  # a GET without Range is answered whole only up to this
ROOM_ENDED_BY = "room_ended"  # stopped_by when the room ended without a moderator asking


@dataclass(frozen=True, slots=True)
class RecordingServiceConfig:
    """How the service records and keeps recordings.

    `retention_days`: delete sessions older than this (None keeps everything); checked at start
    and every `prune_interval_s`. `poll_interval_s`: how often the room state is checked for new
    tracks and participants while recording.
    """

    retention_days: float | None = None
    prune_interval_s: float = 86400.0
    poll_interval_s: float = 0.5
    recorder: RecorderConfig | None = None  # None: RecorderConfig(root) with defaults

    def __post_init__(self) -> None:
        if self.retention_days is not None and not self.retention_days >= 0:
            raise ValueError(f"retention_days must be >= 0 or None, got {self.retention_days}")
        if not self.prune_interval_s > 0:
            raise ValueError(f"prune_interval_s must be > 0, got {self.prune_interval_s}")
        if not self.poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0, got {self.poll_interval_s}")


@dataclass(slots=True)
class RoomRecording:
    """What the service keeps for one room being recorded (exposed for tests and metrics)."""

    room_id: str
    recorder: SessionRecorder
    track_sinks: dict[str, TrackSink] = field(default_factory=dict)
    waveform_sink: RelayWaveformSink | None = None
    participants: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # pid -> (role, identity, name)
    poll_task: asyncio.Task[None] | None = None
    failed_reason: str | None = None


class RelayWaveformSink:
    """The relay's lossless store sink for one room group, feeding the room's `SessionRecorder`.

    Never raises into the relay (a raising sink is detached from every stream of the group):
    samples it cannot store are logged and counted in `samples_refused`.
    """

    def __init__(self, recorder: SessionRecorder) -> None:
        self._recorder = recorder
        self._announces: dict[str, tuple[str, Any]] = {}  # stream_id -> (publisher_id, Announce)
        self._sinks: dict[str, WaveformSink] = {}
        self._newest: dict[str, int] = {}  # stream_id -> newest sample index received
        self.samples_refused = 0

    def on_stream(self, publisher_id: str, announce: Any) -> None:
        """A stream opened (or changed publisher): remember its description until samples come."""
        self._announces.setdefault(announce.stream_id, (publisher_id, announce))

    def on_samples(self, stream_id: str, first_sample: int, samples: np.ndarray) -> None:
        """New samples (n_channels, n) of `stream_id`, each exactly once, back-fill possibly late."""
        try:
            sink = self._sinks.get(stream_id) or self._open(stream_id, samples)
            if sink is not None:
                sink.on_chunk(first_sample, samples)
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

    def on_analysis(self, stream_id: str, analysis: Any) -> None:
        """Beats and alarm changes of a stream (`protocol.waveforms.Analysis`) as annotations.

        Beats -> "N" (the detector does not classify), raised alarms -> `"` comments at the sample
        where the condition began; a cleared alarm is noted at the newest sample seen (the relay
        says only that it cleared within the step just analysed, so that time is approximate).
        """
        sink = self._sinks.get(stream_id)
        if sink is None:
            return
        try:
            for sample in analysis.beats:
                sink.on_beat(int(sample), "N")
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
        sink = self._recorder.add_waveform_stream(stream_id, publisher_id, info)
        self._sinks[stream_id] = sink
        return sink


class RecordingService:
    """Records rooms on request and serves the recordings over HTTP (see module docstring).

    `root`: recordings folder. `hub`: `signaling.hub.Hub`; `server`: `signaling.server.
    SignalingServer` (for `apply`); `media`: `media_server.sfu.Sfu` or None; `waveforms`:
    `media_server.waveform_relay.WaveformRelay` or None. Construct on the running loop.
    """

    def __init__(
        self,
        root: Path,
        hub: Any,
        server: Any,
        media: Any = None,
        waveforms: Any = None,
        retention_days: float | None = None,
        *,
        config: RecordingServiceConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.hub = hub
        self.server = server
        self.media = media
        self.waveforms = waveforms
        self.config = config or RecordingServiceConfig(retention_days=retention_days)
        self.clock = clock
        self.rooms: dict[str, RoomRecording] = {}
        self.pruned_sessions = 0
        self._stopping: dict[str, asyncio.Task[SessionManifest | None]] = {}
        self._prune_task: asyncio.Task[None] | None = None
        self._closed = False
        if self.config.retention_days is not None:
            self._prune_task = asyncio.get_running_loop().create_task(self._prune_loop())

    # ------------------------------------------------------------------ recording

    async def start(self, room_id: str, by_participant_id: str) -> None:
        """Start recording `room_id` (the hub already checked the permission). Never raises:
        failures are reported to the room as `recording_failed`."""
        if self._closed:
            self._fail_room(room_id, "the server is shutting down")
            return
        previous = self._stopping.get(room_id)
        if previous is not None:
            await asyncio.shield(previous)  # a stop of the same room still writing its files
        if room_id in self.rooms:
            log.warning("recorder: start for room %r which is already being recorded", room_id)
            return
        room = self.hub.store.get(room_id)
        if room is None:
            log.warning("recorder: start for unknown room %r", room_id)
            return
        if not ROOM_NAME_RE.match(room_id):
            self._fail_room(room_id, f"room id {room_id!r} cannot be used as a folder name")
            return
        rec_config = self.config.recorder or RecorderConfig(self.root)
        recorder = SessionRecorder(rec_config, room_id, room.kind,
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
        self._sync(rr)
        if self.waveforms is not None:
            rr.waveform_sink = RelayWaveformSink(recorder)
            self.waveforms.add_store_sink(room_id, rr.waveform_sink)
        rr.poll_task = asyncio.get_running_loop().create_task(self._poll(rr))
        log.info("recording room %r to %s (started by %s)", room_id, recorder.directory, by_participant_id)

    async def stop(self, room_id: str, by_participant_id: str | None) -> SessionManifest | None:
        """Stop recording `room_id` and wait for its files to be final; returns the manifest
        (None if the room was not being recorded). `by_participant_id` None: the room ended."""
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

    async def _stop(self, rr: RoomRecording, stopped_by: str) -> SessionManifest | None:
        self._detach(rr)
        self._sync_participants(rr)
        try:
            manifest = await rr.recorder.stop(stopped_by)
        finally:
            self.rooms.pop(rr.room_id, None)
        log.info("recording of room %r stopped by %s: %s", rr.room_id, stopped_by, manifest.stop_reason)
        return manifest

    def _detach(self, rr: RoomRecording) -> None:
        """Unhook every sink (idempotent); open tracks and streams are finalised by the stop."""
        if rr.poll_task is not None:
            rr.poll_task.cancel()
            rr.poll_task = None
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
        self.server.apply(self.hub.recording_failed(room_id, reason))

    # ------------------------------------------------------------------ room state

    async def _poll(self, rr: RoomRecording) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                self._sync(rr)
            except Exception:  # a bug here must not end the recording silently
                log.exception("recorder: syncing room %r failed", rr.room_id)

    def _sync(self, rr: RoomRecording) -> None:
        """Bring the recording up to date with the room: participants, roles, published tracks."""
        if rr.recorder.state != "recording":
            return
        room = self.hub.store.get(rr.room_id)
        if room is None:
            return
        self._sync_participants(rr)
        if self.media is None:
            return
        for track_id, track in list(room.tracks.items()):
            if track_id in rr.track_sinks:
                continue
            try:
                sink = rr.recorder.add_track(track_id, track.participant_id, track.kind, track.codec)
            except ValueError as exc:
                log.error("recorder: track %r of room %r not recorded: %s", track_id, rr.room_id, exc)
                rr.track_sinks[track_id] = TrackSink(rr.recorder, track_id)  # don't retry
                continue
            rr.track_sinks[track_id] = sink
            try:
                self.media.add_frame_sink(track_id, sink)
            except MediaRequestError as exc:  # the track ended between the room update and now
                log.info("recorder: track %r ended before it could be recorded: %s", track_id, exc)
                sink.on_track_ended(track_id)
                continue
            if track.kind == "video":
                # the file starts at a keyframe; don't wait for the publisher's next one
                with contextlib.suppress(MediaRequestError):
                    self.media.producer(track_id).request_keyframe()

    def _sync_participants(self, rr: RoomRecording) -> None:
        if rr.recorder.state != "recording":
            return
        room = self.hub.store.get(rr.room_id)
        if room is None:
            return
        for pid, p in room.participants.items():
            role = getattr(p.role, "value", str(p.role))
            entry = (role, p.identity, p.name)
            if rr.participants.get(pid) != entry:
                rr.participants[pid] = entry
                rr.recorder.add_participant(pid, role, p.identity, p.name)

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

    # ------------------------------------------------------------------ HTTP

    def http(self, path: str, query: str, headers: Any) -> HttpResponse | None:
        """Answer `GET /recordings...`; None for other paths.

        `/recordings` lists the sessions of the token's room (JSON); `/recordings/<room>/<session>/
        <file>` serves a file with Range support. Needs `?token=` (or `Authorization: Bearer`) of a
        host or supervisor of that room: 401 without a valid token, 403 for another room or role.
        """
        if path != "/recordings" and not path.startswith("/recordings/"):
            return None
        parts = [p for p in path.split("/")[2:] if p != ""] if path != "/recordings" else []
        if len(parts) not in (0, 3):
            return _json(404, {"error": "not_found",
                               "message": "use /recordings or /recordings/<room>/<session>/<file>"})
        grant_or_error = self._authorise(query, headers, parts[0] if parts else None)
        if isinstance(grant_or_error, HttpResponse):
            return grant_or_error
        if not parts:
            sessions = library.list_sessions(self.root, room=grant_or_error.room)
            return _json(200, {"room": grant_or_error.room,
                               "sessions": [_summary_json(s) for s in sessions]})
        room_id, session_id, name = parts
        return self._file(room_id, session_id, name, headers)

    def _authorise(self, query: str, headers: Any, room_id: str | None) -> Any:
        tokens = parse_qs(query).get("token", [])
        tok = tokens[0] if tokens else ""
        auth = headers.get("Authorization", "") if headers is not None else ""
        if not tok and auth.lower().startswith("bearer "):
            tok = auth[7:].strip()
        if not tok:
            return _json(401, {"error": "unauthorized",
                               "message": "recordings need ?token=<access token of a host or supervisor>"},
                         (("WWW-Authenticate", "Bearer"),))
        try:
            grant = verify_token(self.hub.config.secret, tok, self.clock())
        except WireError as exc:
            return _json(401, {"error": exc.reason.value, "message": exc.message},
                         (("WWW-Authenticate", 'Bearer error="invalid_token"'),))
        if grant.role not in READ_ROLES:
            return _json(403, {"error": "forbidden", "message":
                               f"role must be one of {sorted(r.value for r in READ_ROLES)}, "
                               f"got {grant.role.value!r}"})
        if room_id is not None and grant.room != room_id:
            return _json(403, {"error": "forbidden", "message":
                               f"token is for room {grant.room!r}, not {room_id!r}"})
        return grant

    def _file(self, room_id: str, session_id: str, name: str, headers: Any) -> HttpResponse:
        try:
            directory = library.find_session(self.root, session_id)
            if directory.parent.name != room_id:
                raise SessionNotFoundError(f"no session {session_id!r} in room {room_id!r}")
            path = library.resolve_file(self.root, session_id, name)
        except UnsafePathError as exc:
            return _json(400, {"error": "bad_path", "message": str(exc)})
        except (SessionNotFoundError, FileNotFoundError) as exc:
            return _json(404, {"error": "not_found", "message": str(exc)})
        size = path.stat().st_size
        ctype = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        base: tuple[tuple[str, str], ...] = (("Content-Type", ctype), ("Accept-Ranges", "bytes"),
                                             ("Cache-Control", "no-store"))
        range_header = headers.get("Range") if headers is not None else None
        try:
            wanted = library.parse_range(range_header, size)
        except RangeNotSatisfiableError as exc:
            return HttpResponse(416, base[1:] + (("Content-Range", f"bytes */{size}"),
                                                 ("Content-Type", "text/plain; charset=utf-8")),
                                f"{exc}\n".encode())
        if wanted is None:
            if size > MAX_WHOLE_FILE_BYTES and name != MANIFEST_NAME:
                return _json(400, {"error": "range_required", "message":
                                   f"file is {size} bytes: request it in ranges of at most "
                                   f"{MAX_RANGE_BYTES} bytes (Range: bytes=0-)"})
            return HttpResponse(200, base, _read_range(path, 0, size))
        start, end = wanted
        end = min(end, start + MAX_RANGE_BYTES - 1)  # a shorter 206 than asked is allowed
        body = _read_range(path, start, end - start + 1)
        return HttpResponse(206, base + (("Content-Range", f"bytes {start}-{start + len(body) - 1}/{size}"),),
                            body)


def _read_range(path: Path, start: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(length)


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


def _summary_json(s: library.SessionSummary) -> dict[str, object]:
    d = s.to_dict()
    d.pop("path", None)  # the server's own folder layout is nobody's business
    d["manifest_url"] = f"/recordings/{s.room}/{s.session_id}/{MANIFEST_NAME}"
    return d


def _json(status: int, body: object, extra: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, (("Content-Type", "application/json"), ("Cache-Control", "no-store")) + extra,
                        (json.dumps(body) + "\n").encode())
