"""Events the recorder reports to its host (the server), through one callback.

The recorder never raises into the relay: when it cannot keep up it reports `RecorderOverloaded`,
and when it has to stop on its own (disk full, I/O error, hopeless backlog) it reports
`RecordingStopped` with a reason. Both are delivered on the event loop that started the recorder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StopReason(str, enum.Enum):
    """Why a recording ended."""

    REQUESTED = "requested"  # stop() was called
    DISK_FULL = "disk_full"  # OSError ENOSPC (or EDQUOT) while writing
    IO_ERROR = "io_error"  # any other OSError while writing
    OVERLOADED = "overloaded"  # the write backlog passed its hard limit
    INTERNAL_ERROR = "internal_error"  # a bug: an unexpected exception in the writer thread


@dataclass(frozen=True, slots=True)
class RecorderOverloaded:
    """The write backlog passed its high-water mark: the disk or CPU does not keep up.

    Nothing has been dropped yet. Sent once per episode: again only after the backlog has fallen
    under half the high-water mark. `pending_bytes` counts encoded media and sample bytes queued.
    """

    session_id: str
    pending_items: int
    pending_bytes: int
    high_water_bytes: int
    name: str = "recorder_overloaded"


@dataclass(frozen=True, slots=True)
class RecordingStopped:
    """The recording ended; files and manifest are final (as far as the disk allowed).

    `detail` is a human message (the OSError text for disk errors, empty when requested).
    """

    session_id: str
    reason: StopReason
    detail: str = ""
    name: str = "recording_stopped"


RecorderEvent = RecorderOverloaded | RecordingStopped
