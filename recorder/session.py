"""SessionRecorder: records one room session (media tracks and monitor streams) to one directory.

Threading: the public methods run on the event loop and only validate and enqueue; one writer
thread per session owns every file (muxers, WFDB writers, manifest) and does all disk I/O, so a
slow disk never blocks the loop. The queue is bounded in bytes, not by dropping: past
`high_water_bytes` the host gets `RecorderOverloaded`; past `hard_limit_bytes` the recording stops
with `RecordingStopped(reason=OVERLOADED)`: nothing is ever lost silently. Disk errors (ENOSPC...)
stop the recording with an event and are never raised into the relay.

Closing: `stop()` is idempotent; it ends every track and stream, writes trailers and headers,
hashes the files and writes the final manifest. A stopped recorder ignores late frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import functools
import json
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from media_server.frames import EncodedFrame
from recorder.codecs import codec_spec
from recorder.crypto import ALGORITHMS, Encryption, MasterKey, SessionKey
from recorder.errors import RecorderStateError, UnknownTrackError
from recorder.events import RecorderEvent, RecorderOverloaded, RecordingStopped, StopReason
from recorder.manifest import (
    ALARM_SYMBOL,
    ROOM_NAME_RE,
    FileEntry,
    ParticipantEntry,
    SessionManifest,
    file_sha256,
    write_manifest,
)
from recorder.media_file import MediaTrackWriter, sender_clock_plausible
from recorder.wfdb_file import (
    WaveformStreamInfo,
    WfdbRecordWriter,
    beat_and_event_symbols,
)

log = logging.getLogger(__name__)

RESERVE_NAME = ".manifest-reserve"  # hidden: the library neither lists nor serves it
_FRAME_OVERHEAD_BYTES = 200  # queue bookkeeping per item, so tiny items still count

State = Literal["idle", "recording", "stopping", "stopped"]
FsyncPolicy = Literal["none", "second", "cluster"]
FSYNC_POLICIES: tuple[str, ...] = ("none", "second", "cluster")
ANCHOR_WINDOW_S = 10.0  # a record's place on the session clock: the best of its first chunks
SYNC_INTERVAL_S = 1.0  # open files are handed to the OS (and fsynced with "second") this often


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    """Where and how sessions are recorded.

    `root`: recordings folder. `checkpoint_interval_s`: how often WFDB headers, annotations and the
    manifest are refreshed (bounds what a crash loses on waveforms). `cluster_time_limit_ms`: the
    longest Matroska cluster (bounds what a crash loses on media). Backlog limits in bytes.
    `manifest_reserve_bytes`: size of a spare file kept in the session directory and deleted just
    before the final manifest is written, so a full disk still gets a manifest with the stop reason
    (0 disables it). `fsync`: "none" (the OS decides: survives a process kill, not a power cut),
    "second" (every open file fsynced every second), "cluster" (a media file at each closed
    Matroska cluster, waveforms at each checkpoint). `master_key`: encrypt every file of a
    session (but the manifest, the index) with a fresh data key wrapped by it, with
    `encryption_algorithm` "aes-256-gcm" or "sm4-gcm".
    """

    root: Path
    checkpoint_interval_s: float = 2.0
    cluster_time_limit_ms: int = 1000
    high_water_bytes: int = 32 * 1024 * 1024
    hard_limit_bytes: int = 256 * 1024 * 1024
    manifest_reserve_bytes: int = 128 * 1024
    fsync: FsyncPolicy = "none"
    master_key: MasterKey | None = None
    encryption_algorithm: str = "aes-256-gcm"

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {self.fsync!r}")
        if self.encryption_algorithm not in ALGORITHMS:
            raise ValueError(f"encryption_algorithm must be one of {sorted(ALGORITHMS)}, "
                             f"got {self.encryption_algorithm!r}")
        if not self.checkpoint_interval_s > 0:
            raise ValueError(f"checkpoint_interval_s must be > 0, got {self.checkpoint_interval_s}")
        if self.manifest_reserve_bytes < 0:
            raise ValueError(f"manifest_reserve_bytes must be >= 0, got {self.manifest_reserve_bytes}")
        if not 0 < self.high_water_bytes <= self.hard_limit_bytes:
            raise ValueError(
                "need 0 < high_water_bytes <= hard_limit_bytes, got "
                f"{self.high_water_bytes} and {self.hard_limit_bytes}"
            )


# ---- commands from the loop to the writer thread ------------------------------------------

@dataclass(slots=True)
class _AddTrack:
    track_id: str
    participant_id: str
    kind: str
    codec: str
    stem: str


@dataclass(slots=True)
class _Frame:
    frame: EncodedFrame


@dataclass(slots=True)
class _EndTrack:
    track_id: str


@dataclass(slots=True)
class _AddStream:
    stream_id: str
    participant_id: str
    info: WaveformStreamInfo
    record_name: str


@dataclass(slots=True)
class _Chunk:
    stream_id: str
    first_sample_index: int
    samples: np.ndarray
    received_at: float
    t0: float | None = None  # the monitor's clock at the first sample (epoch s)


@dataclass(slots=True)
class _Annotate:
    stream_id: str
    sample_index: int
    symbol: str
    aux_note: str


@dataclass(slots=True)
class _ManifestChanged:
    participants: dict[str, ParticipantEntry]  # a snapshot: the loop side keeps mutating its own


@dataclass(slots=True)
class _Chat:
    line: str  # one JSON object, already encoded on the loop


@dataclass(slots=True)
class _Checkpoint:
    done: threading.Event


@dataclass(slots=True)
class _Stop:
    stopped_by: str
    reason: StopReason
    detail: str = ""


_Command = (_AddTrack | _Frame | _EndTrack | _AddStream | _Chunk | _Annotate | _ManifestChanged
            | _Chat | _Checkpoint | _Stop)

CHAT_NAME = "chat.jsonl"  # chat messages of a recorded session, one JSON object a line


# ---- sinks handed to the relay ------------------------------------------------------------

class TrackSink:
    """The `FrameSink` of one recorded track (see `media_server.frames.FrameSink`). Never blocks."""

    def __init__(self, recorder: SessionRecorder, track_id: str) -> None:
        self._recorder = recorder
        self.track_id = track_id
        self.keyframe_seen = False  # a video file can start only once one has passed
        self.frames_seen = 0

    def on_frame(self, frame: EncodedFrame) -> None:
        """Queue a frame of this track. Raises UnknownTrackError if it belongs to another track."""
        if frame.track_id != self.track_id:
            raise UnknownTrackError(
                f"frame for track {frame.track_id!r} given to the sink of track {self.track_id!r}"
            )
        self.keyframe_seen = self.keyframe_seen or frame.keyframe
        self.frames_seen += 1
        self._recorder.on_frame(frame)

    def on_track_ended(self, track_id: str) -> None:
        """The track ended: its file is finalised (trailer written) now."""
        self._recorder.on_track_ended(track_id)


class WaveformSink:
    """Receives one monitor stream's chunks, beats and alarms. Never blocks."""

    def __init__(self, recorder: SessionRecorder, stream_id: str, info: WaveformStreamInfo) -> None:
        self._recorder = recorder
        self.stream_id = stream_id
        self.info = info

    def on_chunk(self, first_sample_index: int, samples: np.ndarray, t0: float | None = None) -> None:
        """Queue samples, int array of shape (n_channels, n), starting at the stream's sample index;
        `t0` is the monitor's clock at the first of them (epoch s), when it said.

        Late (back-filled) chunks land at their place. Raises ValueError on a malformed chunk.
        """
        if first_sample_index < 0:
            raise ValueError(f"first_sample_index must be >= 0, got {first_sample_index}")
        self.info.check_chunk(samples)
        self._recorder._enqueue(
            _Chunk(self.stream_id, first_sample_index, np.array(samples, copy=True),
                   self._recorder._clock(), t0),
            samples.nbytes,
        )

    def on_beat(self, sample_index: int, symbol: str = "N") -> None:
        """Record a detected beat with its WFDB symbol ("N", "V"...). Raises ValueError if unknown."""
        if symbol not in beat_and_event_symbols():
            raise ValueError(f"symbol must be a WFDB annotation symbol, got {symbol!r}")
        self._recorder._enqueue(_Annotate(self.stream_id, sample_index, symbol, ""), 0)

    def on_alarm(self, sample_index: int, label: str) -> None:
        """Record an alarm as a WFDB comment annotation (`"`) with `label` as its aux note."""
        if not label or "\x00" in label:
            raise ValueError(f"alarm label must be a non-empty string, got {label!r}")
        self._recorder._enqueue(_Annotate(self.stream_id, sample_index, ALARM_SYMBOL, label), 0)

    def on_stream_ended(self) -> None:
        """The stream ended: its record is finalised now."""
        self._recorder._end_stream(self.stream_id)


# ---- the recorder -------------------------------------------------------------------------

class SessionRecorder:
    """Records one session of one room into `<root>/<room>/<UTC timestamp>-<short id>/`.

    Typical use by the host: `start(by)`, `add_participant`, `add_track` (hand the returned sink to
    the relay), `add_waveform_stream`, ..., `await stop(by)`. `on_event` receives
    `RecorderOverloaded` and `RecordingStopped`, on the loop that called `start()` (or on the
    writer thread if there was none). `clock` gives Unix time in seconds (tests may fake it).
    """

    def __init__(
        self,
        config: RecorderConfig,
        room: str,
        room_kind: str = "consultation",
        on_event: Callable[[RecorderEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ROOM_NAME_RE.match(room):
            raise ValueError(
                f"room must be 1-64 of [A-Za-z0-9._-] not starting with '.', '_' or '-', got {room!r}"
            )
        self.config = config
        self.room = room
        self.room_kind = room_kind
        self._on_event = on_event
        self._clock = clock
        self._state: State = "idle"
        self._accepting = False
        self.session_id = ""
        self.directory: Path | None = None
        self._tracks: dict[str, str] = {}  # track_id -> kind, on the loop side
        self._ended_tracks: set[str] = set()
        self._streams: dict[str, WaveformStreamInfo] = {}
        self._participants: dict[str, ParticipantEntry] = {}
        self._queue: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._pending_lock = threading.Lock()
        self._pending_bytes = 0
        self._pending_items = 0
        self._overloaded = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._writer: _Writer | None = None
        self.frames_ignored = 0  # frames that arrived after the recording stopped
        self._session_start = 0.0
        self.encryption = Encryption()

    @property
    def state(self) -> State:
        """"idle" before start(), "recording", "stopping" (stop queued) or "stopped"."""
        return self._state

    @property
    def manifest(self) -> SessionManifest | None:
        """The final manifest once stopped (None before)."""
        return self._writer.final_manifest if self._writer else None

    def start(self, started_by: str) -> Path:
        """Create the session directory (never reusing one) and start writing; returns the directory.

        Raises RecorderStateError if already started, OSError if the directory cannot be created.
        """
        if self._state != "idle":
            raise RecorderStateError(f"start() needs an idle recorder, state is {self._state!r}")
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._loop_thread = threading.current_thread()
        session_start = self._clock()
        self._session_start = session_start
        if self.config.master_key is not None:
            self.encryption = Encryption(SessionKey.new(self.config.master_key, self.config.encryption_algorithm))
        room_dir = Path(self.config.root) / self.room
        room_dir.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.fromtimestamp(session_start, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        while True:
            session_id = f"{stamp}-{secrets.token_hex(3)}"
            try:
                (room_dir / session_id).mkdir()  # fails rather than reuse an existing session
                break
            except FileExistsError:
                continue
        self.session_id = session_id
        self.directory = room_dir / session_id
        manifest = SessionManifest(
            session_id=session_id,
            room=self.room,
            room_kind=self.room_kind,
            started_at=_iso(session_start),
            started_by=started_by,
            session_start_unix_s=session_start,
            encryption=None if self.encryption.key is None else {
                "algorithm": self.config.encryption_algorithm, "key_id": self.encryption.key.key_id},
        )
        write_manifest(self.directory, manifest, self.encryption)
        _write_reserve(self.directory / RESERVE_NAME, self.config.manifest_reserve_bytes)
        self._writer = _Writer(self, manifest)
        self._thread = threading.Thread(
            target=self._writer.run, name=f"recorder-{session_id}", daemon=True
        )
        self._state = "recording"
        self._accepting = True
        self._thread.start()
        return self.directory

    def add_participant(self, participant_id: str, role: str, identity: str = "",
                        name: str = "") -> None:
        """Note a participant, their role and identity in the manifest (again to change them)."""
        self._require_recording("add_participant")
        known = self._participants.get(participant_id)
        joined = known.joined_offset_s if known is not None and known.joined_offset_s is not None \
            else round(max(0.0, self._clock() - self._session_start), 3)
        self._participants[participant_id] = ParticipantEntry(participant_id, role, identity, name, joined)
        self._enqueue(_ManifestChanged(dict(self._participants)), 0)

    def participant_left(self, participant_id: str) -> None:
        """Note when a participant left (the playback timeline shows it)."""
        self._require_recording("participant_left")
        known = self._participants.get(participant_id)
        if known is None:
            return
        self._participants[participant_id] = dataclasses.replace(
            known, left_offset_s=round(max(0.0, self._clock() - self._session_start), 3))
        self._enqueue(_ManifestChanged(dict(self._participants)), 0)

    def add_chat(self, message_id: str, participant_id: str, name: str, text: str, time_unix_s: float,
                 to_moderators: bool = False) -> None:
        """Keep a chat message of the session (`chat.jsonl`, written by the writer thread)."""
        self._require_recording("add_chat")
        line = json.dumps({"message_id": message_id, "participant_id": participant_id, "name": name,
                           "text": text, "time": time_unix_s, "to_moderators": to_moderators},
                          ensure_ascii=False)
        self._enqueue(_Chat(line), len(line))

    def add_track(self, track_id: str, participant_id: str, kind: str, codec: str) -> TrackSink:
        """Start recording a published track; returns the FrameSink to attach to the relay.

        kind "audio"/"video"; codec "VP8", "H264" or "opus". Raises ValueError on a bad codec/kind
        or a track id already added, RecorderStateError if not recording.
        """
        self._require_recording("add_track")
        spec = codec_spec(codec)
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
        if track_id in self._tracks:
            raise ValueError(f"track {track_id!r} is already being recorded")
        if participant_id not in self._participants:
            self._participants[participant_id] = ParticipantEntry(participant_id, "unknown")
            self._enqueue(_ManifestChanged(dict(self._participants)), 0)
        index = len(self._tracks) + 1
        stem = f"{kind}{index:02d}_{_safe_name(participant_id)}"
        self._tracks[track_id] = kind
        self._enqueue(_AddTrack(track_id, participant_id, kind, spec.rtp_name, stem), 0)
        return TrackSink(self, track_id)

    def add_waveform_stream(
        self, stream_id: str, participant_id: str, info: WaveformStreamInfo
    ) -> WaveformSink:
        """Start recording a monitor stream as a WFDB record; returns its sink.

        Raises ValueError on a stream id already added, RecorderStateError if not recording.
        """
        self._require_recording("add_waveform_stream")
        if stream_id in self._streams:
            raise ValueError(f"waveform stream {stream_id!r} is already being recorded")
        if participant_id not in self._participants:
            self._participants[participant_id] = ParticipantEntry(participant_id, "unknown")
            self._enqueue(_ManifestChanged(dict(self._participants)), 0)
        index = len(self._streams) + 1
        record_name = f"wave{index:02d}_{_safe_name(participant_id).replace('-', '_')}"
        self._streams[stream_id] = info
        self._enqueue(_AddStream(stream_id, participant_id, info, record_name), 0)
        return WaveformSink(self, stream_id, info)

    def on_frame(self, frame: EncodedFrame) -> None:
        """FrameSink entry for any added track. Raises UnknownTrackError for a track never added."""
        if not self._accepting:
            if self._state == "idle":
                raise RecorderStateError("on_frame() before start(): add the track after start()")
            self.frames_ignored += 1
            return
        if frame.track_id not in self._tracks:
            raise UnknownTrackError(
                f"frame for unknown track {frame.track_id!r}; recorded tracks: {sorted(self._tracks)}"
            )
        if frame.track_id in self._ended_tracks:
            self.frames_ignored += 1
            return
        self._enqueue(_Frame(frame), len(frame.data))

    def on_track_ended(self, track_id: str) -> None:
        """Finalise a track's file. Raises UnknownTrackError for a track never added."""
        if track_id not in self._tracks:
            raise UnknownTrackError(f"on_track_ended for unknown track {track_id!r}")
        if not self._accepting or track_id in self._ended_tracks:
            return
        self._ended_tracks.add(track_id)
        self._enqueue(_EndTrack(track_id), 0)

    async def checkpoint(self) -> None:
        """Wait until everything queued so far is on disk and readable (headers, manifest)."""
        done = self._checkpoint_event()
        await asyncio.to_thread(done.wait)

    def checkpoint_blocking(self, timeout_s: float | None = None) -> bool:
        """Like `checkpoint()` for code without a loop; False on timeout."""
        return self._checkpoint_event().wait(timeout_s)

    async def stop(self, stopped_by: str) -> SessionManifest:
        """Stop recording and wait for the files to be final; returns the final manifest.

        Idempotent. Raises RecorderStateError if the recorder was never started.
        """
        thread = self._request_stop(stopped_by)
        await asyncio.to_thread(thread.join)
        assert self._writer is not None and self._writer.final_manifest is not None
        self._state = "stopped"
        return self._writer.final_manifest

    def stop_blocking(self, stopped_by: str) -> SessionManifest:
        """Like `stop()` for code without an event loop (CLI, benchmarks)."""
        thread = self._request_stop(stopped_by)
        thread.join()
        assert self._writer is not None and self._writer.final_manifest is not None
        self._state = "stopped"
        return self._writer.final_manifest

    # -- internals --------------------------------------------------------------------------

    def _request_stop(self, stopped_by: str) -> threading.Thread:
        if self._state == "idle" or self._thread is None:
            raise RecorderStateError("stop() called before start(): nothing is being recorded")
        if self._state == "recording":
            self._state = "stopping"
            self._accepting = False
            self._queue.put(_Stop(stopped_by, StopReason.REQUESTED))
        return self._thread

    def _checkpoint_event(self) -> threading.Event:
        if self._state == "idle":
            raise RecorderStateError("checkpoint() called before start()")
        done = threading.Event()
        if self._thread is None or not self._thread.is_alive():
            done.set()
        else:
            self._queue.put(_Checkpoint(done))
        return done

    def _require_recording(self, what: str) -> None:
        if self._state != "recording" or not self._accepting:
            raise RecorderStateError(f"{what}() needs a recording in progress, state is {self._state!r}")

    def _end_stream(self, stream_id: str) -> None:
        if stream_id not in self._streams:
            raise UnknownTrackError(f"unknown waveform stream {stream_id!r}")
        self._enqueue(_EndTrack(stream_id), 0)

    def _enqueue(self, command: _Command, nbytes: int) -> None:
        if not self._accepting:
            self.frames_ignored += isinstance(command, _Frame)
            return
        nbytes += _FRAME_OVERHEAD_BYTES
        with self._pending_lock:
            self._pending_bytes += nbytes
            self._pending_items += 1
            pending_bytes, pending_items = self._pending_bytes, self._pending_items
            newly_overloaded = pending_bytes > self.config.high_water_bytes and not self._overloaded
            if newly_overloaded:
                self._overloaded = True
        self._queue.put(command)
        if pending_bytes > self.config.hard_limit_bytes:
            self._accepting = False
            self._state = "stopping"
            self._queue.put(_Stop("recorder", StopReason.OVERLOADED,
                                  f"write backlog {pending_bytes} bytes > hard limit "
                                  f"{self.config.hard_limit_bytes} bytes"))
            return
        if newly_overloaded:
            log.warning("recorder %s overloaded: %d bytes pending", self.session_id, pending_bytes)
            self._emit(RecorderOverloaded(self.session_id, pending_items, pending_bytes,
                                          self.config.high_water_bytes))

    def _done_item(self, nbytes: int) -> None:
        with self._pending_lock:
            self._pending_bytes -= nbytes + _FRAME_OVERHEAD_BYTES
            self._pending_items -= 1
            if self._overloaded and self._pending_bytes < self.config.high_water_bytes // 2:
                self._overloaded = False

    def _emit(self, event: RecorderEvent) -> None:
        if self._on_event is None:
            return
        loop = self._loop
        if loop is not None and threading.current_thread() is not self._loop_thread:
            try:
                loop.call_soon_threadsafe(self._call_handler, event)
            except RuntimeError:  # loop closed: the host is gone
                log.warning("recorder event %s lost: event loop closed", event)
            return
        self._call_handler(event)

    def _call_handler(self, event: RecorderEvent) -> None:
        assert self._on_event is not None
        try:
            self._on_event(event)
        except Exception:  # a broken handler must not break recording
            log.exception("recorder event handler failed on %s", event)

    def _writer_finished(self) -> None:
        self._accepting = False
        self._state = "stopped"


# ---- the writer thread --------------------------------------------------------------------

@dataclass(slots=True)
class _MediaTrack:
    participant_id: str
    codec: str
    writer: MediaTrackWriter


@dataclass(slots=True)
class _Stream:
    participant_id: str
    writer: WfdbRecordWriter
    arrival_offset_s: float | None = None  # sample 0 on the session clock, by arrival (an upper bound)
    device_offset_s: float | None = None  # the same by the monitor's own clock

    @property
    def start_offset_s(self) -> float | None:
        """Where sample 0 lies on the session clock: by the monitor's clock when it is plausible
        (the media tracks go by their publishers' clocks too, so a stalled server delays neither),
        else by the least-delayed arrival."""
        a, d = self.arrival_offset_s, self.device_offset_s
        # both bound the truth from above when the clocks agree: the earlier is the closer
        return min(a, d) if a is not None and d is not None and sender_clock_plausible(a, d) else a

    @property
    def anchored_by(self) -> str:
        a, d = self.arrival_offset_s, self.device_offset_s
        if a is None:
            return ""
        if d is not None and sender_clock_plausible(a, d):
            return "device_clock"
        return "arrival"


@dataclass(slots=True)
class _Writer:
    """Owns every file of the session; runs on the writer thread."""

    recorder: SessionRecorder
    manifest: SessionManifest
    tracks: dict[str, _MediaTrack] = field(default_factory=dict)
    streams: dict[str, _Stream] = field(default_factory=dict)
    participants: dict[str, ParticipantEntry] = field(default_factory=dict)
    final_manifest: SessionManifest | None = None
    failed: bool = False
    chat_file: Any = None
    fsyncs: int = 0  # fsync rounds (for the benchmark) and the time they took on the writer thread
    fsync_s: float = 0.0

    def run(self) -> None:
        rec = self.recorder
        interval = rec.config.checkpoint_interval_s
        next_checkpoint = time.monotonic() + interval
        next_sync = time.monotonic() + SYNC_INTERVAL_S
        stop: _Stop | None = None
        while stop is None:
            try:
                wake = min(next_checkpoint, next_sync)
                command = rec._queue.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                command = None
            if command is not None:
                nbytes = _command_bytes(command)
                try:
                    if isinstance(command, _Stop):
                        stop = command
                    elif not self.failed:
                        self._handle(command)
                    elif isinstance(command, _Checkpoint):
                        command.done.set()
                except Exception as e:
                    stop = _stop_for(e)
                    if isinstance(command, _Checkpoint):
                        command.done.set()
                finally:
                    if not isinstance(command, (_Stop, _Checkpoint)):
                        rec._done_item(nbytes)
            if stop is None and time.monotonic() >= next_sync:
                try:
                    self._sync(rec.config.fsync == "second")
                except Exception as e:
                    stop = _stop_for(e)
                next_sync = time.monotonic() + SYNC_INTERVAL_S
            if stop is None and time.monotonic() >= next_checkpoint:
                try:
                    self._checkpoint()
                except Exception as e:
                    stop = _stop_for(e)
                next_checkpoint = time.monotonic() + interval
        self._finish(stop)

    def _handle(self, command: _Command) -> None:
        rec = self.recorder
        assert rec.directory is not None
        if isinstance(command, _Frame):
            frame = command.frame
            media = self.tracks[frame.track_id].writer
            if media.write(frame) and rec.config.fsync == "cluster":
                t = time.perf_counter()
                media.sync(fsync=True)
                self.fsyncs += 1
                self.fsync_s += time.perf_counter() - t
        elif isinstance(command, _Chunk):
            self.streams[command.stream_id].writer.write_chunk(
                command.first_sample_index, command.samples)
            stream = self.streams[command.stream_id]
            # Where sample 0 of the record lies on the session clock: a chunk's last sample was
            # measured at best as it arrived, so each chunk bounds it from above; the smallest
            # bound over the first seconds is the least-delayed chunk's (the first one alone
            # carries whatever delay the network or the monitor had at that moment).
            w = stream.writer
            fs = w.info.sampling_rate_hz
            origin = w.stats.origin_sample_index or 0
            end = command.first_sample_index + command.samples.shape[1] - origin
            if end <= ANCHOR_WINDOW_S * fs or stream.arrival_offset_s is None:
                start = self.manifest.session_start_unix_s
                bound = max(0.0, command.received_at - end / fs - start)
                prev = stream.arrival_offset_s
                stream.arrival_offset_s = bound if prev is None else min(prev, bound)
                if command.t0 is not None:
                    device = command.t0 - (command.first_sample_index - origin) / fs - start
                    prev = stream.device_offset_s
                    stream.device_offset_s = device if prev is None else min(prev, device)
        elif isinstance(command, _Annotate):
            self.streams[command.stream_id].writer.add_annotation(
                command.sample_index, command.symbol, command.aux_note)
        elif isinstance(command, _AddTrack):
            writer = MediaTrackWriter(
                rec.directory / command.stem, command.codec, command.kind,
                self.manifest.session_start_unix_s, rec.config.cluster_time_limit_ms, rec.encryption)
            self.tracks[command.track_id] = _MediaTrack(command.participant_id, command.codec, writer)
            self._write_manifest()
        elif isinstance(command, _AddStream):
            writer_w = WfdbRecordWriter(
                rec.directory, command.record_name, command.info,
                comments=(f"stream_id {command.stream_id}", f"participant {command.participant_id}",
                          f"session {self.manifest.session_id}"), encryption=rec.encryption)
            self.streams[command.stream_id] = _Stream(command.participant_id, writer_w)
            self._write_manifest()
        elif isinstance(command, _EndTrack):
            fsync = rec.config.fsync != "none"
            if command.track_id in self.tracks:
                self.tracks[command.track_id].writer.close(fsync)
            elif command.track_id in self.streams:
                self.streams[command.track_id].writer.close(fsync)
            self._write_manifest()
        elif isinstance(command, _Chat):
            if self.chat_file is None:
                self.chat_file = rec.encryption.create(rec.directory / CHAT_NAME)
            self.chat_file.write((command.line + "\n").encode())
        elif isinstance(command, _ManifestChanged):
            self.participants = command.participants
            self._write_manifest()
        elif isinstance(command, _Checkpoint):
            self._checkpoint()
            command.done.set()

    def _checkpoint(self) -> None:
        fsync = self.recorder.config.fsync != "none"
        for track in self.tracks.values():
            track.writer.sync(fsync=False)  # an encrypted file seals its open chunk
        for stream in self.streams.values():
            stream.writer.checkpoint(fsync)
        if self.chat_file is not None:
            self.chat_file.flush()
        self._write_manifest()

    def _sync(self, fsync: bool) -> None:
        """Every open media file to the OS (an encrypted one seals its open chunk); fsync if asked."""
        t = time.perf_counter()
        for track in self.tracks.values():
            track.writer.sync(fsync)
        if fsync:
            for stream in self.streams.values():
                stream.writer.checkpoint(fsync=True)
            self.fsyncs += 1
            self.fsync_s += time.perf_counter() - t

    def _write_manifest(self, with_hashes: bool = False) -> None:
        assert self.recorder.directory is not None
        self.manifest.participants = list(self.participants.values())
        self.manifest.files = self._file_entries(with_hashes)
        write_manifest(self.recorder.directory, self.manifest, self.recorder.encryption)

    def _file_entries(self, with_hashes: bool) -> list[FileEntry]:
        entries: list[FileEntry] = []
        for track_id, track in self.tracks.items():
            w = track.writer
            if not w.path.exists():
                continue
            entries.append(FileEntry(
                name=w.path.name, kind=w.kind, track_id=track_id,
                participant_id=track.participant_id, codec=track.codec,
                start_offset_s=w.stats.start_offset_s, duration_s=w.stats.duration_s,
                frame_count=w.stats.frames_written, size_bytes=w.path.stat().st_size,
                sha256=file_sha256(w.path) if with_hashes else None,
                details={"frames_before_keyframe": w.stats.frames_before_keyframe,
                         "frames_out_of_order": w.stats.frames_out_of_order,
                         "frames_before_start": w.stats.frames_before_start,
                         "timeline_resyncs": w.stats.timeline_resyncs,
                         "anchored_by": w.stats.anchor},
            ))
        for stream_id, stream in self.streams.items():
            ww = stream.writer
            st = ww.stats
            for path in ww.files():
                kind = {".dat": "waveform", ".hea": "waveform_header", ".atr": "annotations"}[path.suffix]
                entries.append(FileEntry(
                    name=path.name, kind=kind, track_id=stream_id,
                    participant_id=stream.participant_id, codec=f"wfdb{ww.info.wfdb_format}",
                    start_offset_s=stream.start_offset_s, duration_s=ww.duration_s,
                    frame_count=st.annotations if kind == "annotations" else ww._file_end,
                    size_bytes=path.stat().st_size,
                    sha256=file_sha256(path) if with_hashes else None,
                    details={"record": ww.record_name,
                             "sampling_rate_hz": ww.info.sampling_rate_hz,
                             "channels": list(ww.info.channel_names),
                             "origin_sample_index": st.origin_sample_index,
                             "samples_duplicate": st.samples_duplicate,
                             "samples_before_origin": st.samples_before_origin,
                             "gaps_open": st.gaps_open,
                             "anchored_by": stream.anchored_by} if kind == "waveform" else {},
                ))
        return entries

    def _finish(self, stop: _Stop) -> None:
        rec = self.recorder
        reason, detail = stop.reason, stop.detail
        # Close everything we can even after an error: each file is independent.
        fsync = rec.config.fsync != "none"
        closers: list[Callable[[], None]] = [functools.partial(t.writer.close, fsync) for t in self.tracks.values()]
        closers += [functools.partial(s.writer.close, fsync) for s in self.streams.values()]
        if self.chat_file is not None:
            closers.append(self.chat_file.close)
        for closer in closers:
            try:
                closer()
            except Exception as e:
                log.warning("recorder %s: closing a file failed: %s", rec.session_id, e)
                if reason == StopReason.REQUESTED:
                    reason, detail = _stop_for(e).reason, str(e)
        self.manifest.stopped_at = _iso(rec._clock())
        self.manifest.stopped_by = stop.stopped_by
        self.manifest.stop_reason = reason.value
        self.manifest.stop_detail = detail
        # The spare file gives its blocks back now: the final manifest fits even on a full disk.
        assert rec.directory is not None
        try:
            (rec.directory / RESERVE_NAME).unlink(missing_ok=True)
        except OSError as e:
            log.warning("recorder %s: reserve file not removed: %s", rec.session_id, e)
        try:
            self._write_manifest(with_hashes=True)
        except Exception as e:
            log.error("recorder %s: final manifest not written: %s", rec.session_id, e)
            with contextlib.suppress(OSError):
                self.manifest.files = self._file_entries(with_hashes=False)
        self.final_manifest = self.manifest
        # Drain what was queued after the stop so the pending counters settle.
        rec._writer_finished()
        while True:
            try:
                command = rec._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(command, _Checkpoint):
                command.done.set()
            elif not isinstance(command, _Stop):
                rec._done_item(_command_bytes(command))
        if reason != StopReason.REQUESTED:
            log.error("recorder %s stopped: %s %s", rec.session_id, reason.value, detail)
        rec._emit(RecordingStopped(rec.session_id, reason, detail))


def _stop_for(error: BaseException) -> _Stop:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return _Stop("recorder", StopReason.DISK_FULL, str(error))
    if isinstance(error, (OSError, av.error.FFmpegError)):
        return _Stop("recorder", StopReason.IO_ERROR, str(error))
    log.exception("recorder writer failed")
    return _Stop("recorder", StopReason.INTERNAL_ERROR, f"{type(error).__name__}: {error}")


def _command_bytes(command: _Command) -> int:
    if isinstance(command, _Frame):
        return len(command.frame.data)
    if isinstance(command, _Chunk):
        return command.samples.nbytes
    if isinstance(command, _Chat):
        return len(command.line)
    return 0


def _write_reserve(path: Path, size_bytes: int) -> None:
    """Allocate `size_bytes` of real blocks (zeros written, not a sparse file)."""
    if size_bytes <= 0:
        return
    with open(path, "wb") as f:
        f.write(bytes(size_bytes))



def _safe_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", text)[:40]
    return cleaned or "anon"


def _iso(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).isoformat(timespec="milliseconds")
