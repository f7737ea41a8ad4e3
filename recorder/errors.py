"""The recorder's exception tree.

    RecorderError                 base of everything the recorder raises on purpose
    ├── RecorderStateError        a call out of order (stop before start, add_track after stop)
    ├── UnknownTrackError         a frame or end-of-track for a track never added
    ├── SessionNotFoundError      library: no session with that id under the root
    ├── UnsafePathError           library: a file name that would escape the session folder
    └── RangeNotSatisfiableError  library: an HTTP Range outside the file (answer 416)

Disk errors while recording are never raised to the caller (the relay): they stop the recording
and are reported as a `RecordingStopped` event instead (see `recorder.events`).
"""

from __future__ import annotations


class RecorderError(Exception):
    """Base class of the recorder's own errors."""


class RecorderStateError(RecorderError):
    """A method was called in a state that does not allow it (e.g. stop() before start())."""


class UnknownTrackError(RecorderError, KeyError):
    """A frame, chunk or end-of-track names a track or stream that was never added."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SessionNotFoundError(RecorderError, LookupError):
    """No recorded session with the given id exists under the recordings root."""


class UnsafePathError(RecorderError, ValueError):
    """A requested name is not a plain file of the session (path traversal, hidden file...)."""


class RangeNotSatisfiableError(RecorderError, ValueError):
    """A syntactically valid HTTP Range that lies outside the file; the answer is 416."""
