"""Session recording: media tracks muxed without transcoding, monitor streams as WFDB records.

Public API: `SessionRecorder`, `RecorderConfig`, `WaveformStreamInfo`, the events
(`RecorderOverloaded`, `RecordingStopped`, `StopReason`), and `recorder.library` for listing,
serving and pruning recorded sessions. See docs/recording.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Imported on first use (PEP 562): `import recorder.crypto` (the node's config, the library
# routes) must not bring in the session writer's numpy, PyAV and waveforms (issue 17: idle RSS).
_LAZY = {
    **dict.fromkeys(("RangeNotSatisfiableError", "RecorderError", "RecorderStateError",
                     "SessionNotFoundError", "UnknownTrackError", "UnsafePathError"), "errors"),
    **dict.fromkeys(("RecorderEvent", "RecorderOverloaded", "RecordingStopped", "StopReason"),
                    "events"),
    **dict.fromkeys(("FileEntry", "ParticipantEntry", "SessionManifest"), "manifest"),
    **dict.fromkeys(("RecorderConfig", "SessionRecorder", "TrackSink", "WaveformSink"), "session"),
    "WaveformStreamInfo": "wfdb_file",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'recorder' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"recorder.{module}"), name)
    globals()[name] = value
    return value


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
