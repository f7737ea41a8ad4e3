"""What the sans-I/O signaling core asks its driver to do: send, close, drive media, audit.

The room and the hub never touch a socket, the SFU or a file; they return these, and
`signaling/server.py` carries them out in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from protocol.signaling import ServerMessage
from signaling.events import ParticipantJoined, RoomEvent, TrackPublished


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to these participants' connections (encoded once for all of them)."""

    to: tuple[str, ...]  # participant ids
    message: ServerMessage


@dataclass(frozen=True, slots=True)
class SendConn:
    """Send to a connection that has not joined (yet): errors before or during join."""

    conn_id: str
    message: ServerMessage


@dataclass(frozen=True, slots=True)
class CloseConn:
    """Close a connection with a websocket close code and reason (after any queued sends)."""

    conn_id: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Kick:
    """Say `bye` to a participant and close its connection (removed, room ended)."""

    participant_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Departed:
    """A participant is gone for good: the hub drops its indexes (never reaches the driver)."""

    participant_id: str


@dataclass(frozen=True, slots=True)
class RoomClosed:
    """A room has ended: the hub discards it from the store (never reaches the driver)."""

    room_id: str


# ---- media (carried out on media_server.Sfu; peer id = participant id)


@dataclass(frozen=True, slots=True)
class OpenPeer:
    participant_id: str


@dataclass(frozen=True, slots=True)
class ClosePeer:
    participant_id: str


@dataclass(frozen=True, slots=True)
class RequestPublish:
    participant_id: str
    kinds: frozenset[str]


@dataclass(frozen=True, slots=True)
class StopPublishing:
    participant_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class SubscribeTracks:
    participant_id: str
    track_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnsubscribeTracks:
    participant_id: str
    track_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PauseVideo:
    participant_id: str
    paused: bool


@dataclass(frozen=True, slots=True)
class MuteTrack:
    track_id: str
    muted: bool


@dataclass(frozen=True, slots=True)
class RemoteAnswer:
    participant_id: str
    sdp: str
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class RemoteCandidate:
    participant_id: str
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


# ---- waveforms (carried out on media_server.WaveformRelay; group = room id)


@dataclass(frozen=True, slots=True)
class WaveformViewer:
    room_id: str
    participant_id: str
    add: bool


@dataclass(frozen=True, slots=True)
class WaveformPublisherGone:
    room_id: str
    participant_id: str


@dataclass(frozen=True, slots=True)
class WaveformGroupClosed:
    room_id: str


# ---- recording and audit


@dataclass(frozen=True, slots=True)
class StartRecorder:
    """Start recording; carries the room as it is now so the recorder needs no look into it."""

    room_id: str
    by: str  # participant id, or "policy"
    kind: str = "consultation"
    participants: tuple[ParticipantJoined, ...] = ()
    tracks: tuple[TrackPublished, ...] = ()


@dataclass(frozen=True, slots=True)
class StopRecorder:
    room_id: str
    by: str | None


@dataclass(frozen=True, slots=True)
class Audit:
    """One line of the audit log (who did what, where, as which role)."""

    event: str
    room_id: str
    identity: str | None = None
    role: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


MediaEffect = Union[
    OpenPeer, ClosePeer, RequestPublish, StopPublishing, SubscribeTracks, UnsubscribeTracks,
    PauseVideo, MuteTrack, RemoteAnswer, RemoteCandidate,
]
Effect = Union[
    Send, SendConn, CloseConn, Kick, Departed, RoomClosed, MediaEffect, WaveformViewer, WaveformPublisherGone,
    WaveformGroupClosed, StartRecorder, StopRecorder, Audit, RoomEvent,
]
