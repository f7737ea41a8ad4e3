"""What happened in a room, as typed events for whoever observes rooms (recorder, metrics,
webhooks, the cluster).

The room returns them among its effects; the driver hands them to the node, which fans them out
to its observers. They are facts, not commands: an observer that is absent or slow changes
nothing in the room. `match` on the class, never on names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, slots=True)
class RoomStarted:
    room_id: str
    kind: str
    metadata: dict[str, str]  # the platform's labels (referral number...), empty for rooms made on join


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    room_id: str
    participant_id: str
    identity: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    room_id: str
    participant_id: str
    identity: str
    reason: str  # left, removed, timeout, room_ended


@dataclass(frozen=True, slots=True)
class RoleChanged:
    room_id: str
    participant_id: str
    identity: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class TrackPublished:
    room_id: str
    track_id: str
    participant_id: str
    kind: str  # audio | video
    codec: str
    source: str = "camera"  # microphone, camera, screen


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    room_id: str
    track_id: str


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    room_id: str
    by: str  # participant id, or "policy"


@dataclass(frozen=True, slots=True)
class RecordingStopped:
    room_id: str
    by: str | None  # participant id; None when the room ended or the recorder failed
    reason: str = "requested"


@dataclass(frozen=True, slots=True)
class ChatSent:
    """A chat message; observers keep its text only where the room is recorded."""

    room_id: str
    message_id: str
    participant_id: str
    identity: str
    name: str
    role: str
    text: str
    time: float
    to_moderators: bool


@dataclass(frozen=True, slots=True)
class RoomEnded:
    room_id: str
    reason: str


RoomEvent = Union[
    RoomStarted, ParticipantJoined, ParticipantLeft, RoleChanged, TrackPublished, TrackUnpublished,
    RecordingStarted, RecordingStopped, ChatSent, RoomEnded,
]
ROOM_EVENTS: tuple[type, ...] = RoomEvent.__args__  # type: ignore[attr-defined]
