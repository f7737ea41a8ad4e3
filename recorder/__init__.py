"""Session recording: media tracks muxed without transcoding, monitor streams as WFDB records.

Public API: `SessionRecorder`, `RecorderConfig`, `WaveformStreamInfo`, the events
(`RecorderOverloaded`, `RecordingStopped`, `StopReason`), and `recorder.library` for listing,
serving and pruning recorded sessions. See docs/recording.md.
"""

from recorder.errors import (
    RangeNotSatisfiableError,
    RecorderError,
    RecorderStateError,
    SessionNotFoundError,
    UnknownTrackError,
    UnsafePathError,
)
from recorder.events import RecorderEvent, RecorderOverloaded, RecordingStopped, StopReason
from recorder.manifest import FileEntry, ParticipantEntry, SessionManifest
from recorder.session import RecorderConfig, SessionRecorder, TrackSink, WaveformSink
from recorder.wfdb_file import WaveformStreamInfo

__all__ = [
    "FileEntry",
    "ParticipantEntry",
    "RangeNotSatisfiableError",
    "RecorderConfig",
    "RecorderError",
    "RecorderEvent",
    "RecorderOverloaded",
    "RecorderStateError",
    "RecordingStopped",
    "SessionManifest",
    "SessionNotFoundError",
    "SessionRecorder",
    "StopReason",
    "TrackSink",
    "UnknownTrackError",
    "UnsafePathError",
    "WaveformSink",
    "WaveformStreamInfo",
]
