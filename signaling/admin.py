"""What the hospital platform may do to rooms (the admin API's core), sans-I/O.

The booking system creates a consultation for 14:00-15:00 with at most four participants and a
recording policy, lists who is in it, removes or mutes someone, starts and stops the recording and
ends it. `RoomSpec.parse` validates what the API was sent (naming what was expected and what was
got); `Admin` applies it to the `Hub` and returns the effects for the driver, as the hub does for
websocket messages. Nothing here touches HTTP: the node's handlers only translate `AdminError`
reasons to status codes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocol import signaling as wire
from protocol.signaling import ROOM_KINDS
from signaling.booking import Booking
from signaling.effects import Audit, Effect, MuteTrack, Send
from signaling.hub import Hub
from signaling.room import Room

ROOM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RECORDING_POLICIES = ("default", "auto", "manual", "off")  # default: the node's --record kinds; auto: from
# creation; manual: only on request; off: nobody may record
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE_CHARS = 512
API = "api"  # who did it, in audit records and recording events


class AdminReason(str, enum.Enum):
    """Why an admin request failed (the HTTP edge maps each to one status code)."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    CONFLICT = "conflict"  # e.g. recording already on, or the policy forbids it


class AdminError(Exception):
    """An admin request that cannot be done: `reason` and a message for the person calling."""

    def __init__(self, reason: AdminReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class RoomSpec:
    """A room as the platform asks for it."""

    room_id: str
    kind: str = "consultation"
    booking: Booking | None = None
    max_participants: int | None = None  # None: the node's limit
    recording: str = "default"
    metadata: dict[str, str] = field(default_factory=dict)  # e.g. {"referral": "ZJ-2026-0412"}

    @classmethod
    def parse(cls, body: Any, *, max_participants_limit: int) -> RoomSpec:
        """Validate a JSON body; raises AdminError(BAD_REQUEST) naming the field, expected, got."""
        if not isinstance(body, dict):
            raise _bad(f"body must be a JSON object, got {type(body).__name__}")
        unknown = set(body) - {"room_id", "kind", "booked_from", "booked_until", "early_join_s",
                               "max_participants", "recording", "metadata"}
        if unknown:
            raise _bad(f"unknown field(s): {', '.join(sorted(unknown))}")
        room_id, kind = body.get("room_id"), body.get("kind", "consultation")
        if not isinstance(room_id, str) or not ROOM_ID_RE.match(room_id):
            raise _bad(f"room_id must match {ROOM_ID_RE.pattern}, got {room_id!r}")
        if kind not in ROOM_KINDS:
            raise _bad(f"kind must be one of {list(ROOM_KINDS)}, got {kind!r}")
        booking = None
        if "booked_from" in body or "booked_until" in body:
            opens, closes = _when(body.get("booked_from"), "booked_from"), _when(body.get("booked_until"), "booked_until")
            if closes <= opens:
                raise _bad(f"booked_until must be after booked_from, got {body['booked_from']!r} .. {body['booked_until']!r}")
            early = body.get("early_join_s", 600)
            if not _number(early) or not 0 <= early <= 86400:
                raise _bad(f"early_join_s must be a number of seconds 0-86400, got {early!r}")
            booking = Booking(opens, closes, float(early))
        cap = body.get("max_participants")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= max_participants_limit):
            raise _bad(f"max_participants must be an integer 1-{max_participants_limit}, got {cap!r}")
        recording = body.get("recording", "default")
        if recording not in RECORDING_POLICIES:
            raise _bad(f"recording must be one of {list(RECORDING_POLICIES)}, got {recording!r}")
        metadata = body.get("metadata", {})
        if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= MAX_METADATA_VALUE_CHARS
            for k, v in metadata.items()
        ):
            raise _bad(f"metadata must be an object of at most {MAX_METADATA_KEYS} string keys (<= 64 chars) "
                       f"to string values (<= {MAX_METADATA_VALUE_CHARS} chars), got {str(metadata)[:80]!r}")
        return cls(room_id, kind, booking, cap, recording, dict(metadata))


def _bad(message: str) -> AdminError:
    return AdminError(AdminReason.BAD_REQUEST, message)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _when(v: Any, name: str) -> float:
    """Epoch seconds, or an ISO 8601 time with its UTC offset (e.g. 2026-12-01T14:00:00+08:00)."""
    if _number(v):
        return float(v)
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            pass
        else:
            if t.tzinfo is not None:
                return t.timestamp()
    raise _bad(f"{name} must be epoch seconds or ISO 8601 with a UTC offset, got {v!r}")


def room_summary(room: Room) -> dict[str, Any]:
    """A room as the API lists it (JSON-ready)."""
    b = room.booking
    return {
        "room_id": room.room_id,
        "kind": room.kind.value,
        "participants": len(room.participants),
        "max_participants": room.max_participants,
        "recording": room.recording,
        "recording_policy": room.recording_policy,
        "standing": room.persistent,
        "booked_from": b.opens_at if b else None,
        "booked_until": b.closes_at if b else None,
        "created_at": room.created_at,
        "metadata": dict(room.metadata),
    }


def participant_summary(room: Room, participant_id: str) -> dict[str, Any]:
    p = room.participants[participant_id]
    return {
        "participant_id": p.participant_id, "identity": p.identity, "name": p.name, "role": p.role.value,
        "connected": p.connected, "hand_raised": p.hand_raised,
        "tracks": [{"track_id": t.track_id, "kind": t.kind, "codec": t.codec, "muted": t.muted}
                   for t in room.tracks.values() if t.participant_id == participant_id],
    }


class Admin:
    """The platform's requests on one hub; every method returns the effects to carry out."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def room(self, room_id: str) -> Room:
        room = self.hub.store.get(room_id)
        if room is None or room.ended:
            raise AdminError(AdminReason.NOT_FOUND, f"no room {room_id!r}")
        return room

    def create_room(self, spec: RoomSpec, now: float) -> tuple[Room, list[Effect]]:
        """Open a standing room (it stays while empty, until ended or its booked window closes)."""
        if self.hub.store.get(spec.room_id) is not None:
            raise AdminError(AdminReason.EXISTS, f"room {spec.room_id!r} already exists")
        if spec.booking is not None and spec.booking.closes_at <= now:
            raise _bad(f"the booked window is over (booked_until {spec.booking.closes_at:.0f} <= now {now:.0f})")
        room = self.hub.create_room(spec.room_id, spec.kind, now, persistent=True)
        if spec.max_participants is not None:
            room.max_participants = spec.max_participants
        room.booking = spec.booking
        room.recording_policy = spec.recording
        room.metadata = dict(spec.metadata)
        effects: list[Effect] = [
            Audit("room_created", room.room_id, API, None, {"kind": spec.kind, "recording": spec.recording}),
        ]
        effects += room.started_events()
        if spec.recording == "auto" or (spec.recording == "default" and room.kind in self.hub.config.record_kinds):
            effects += room.record_by_policy()
        return room, self.hub.finish(effects)

    def end_room(self, room_id: str) -> list[Effect]:
        self.room(room_id)
        return self.hub.end_room(room_id, "ended_by_api")

    def remove(self, room_id: str, participant_id: str) -> list[Effect]:
        room = self.room(room_id)
        p = self._participant(room, participant_id)
        return self.hub.finish([
            Audit("removed", room.room_id, p.identity, p.role.value, {"participant_id": participant_id, "by": API}),
            *room.remove(participant_id, "removed"),
        ])

    def mute(self, room_id: str, participant_id: str, kind: str, muted: bool) -> list[Effect]:
        """Mute (or unmute) a participant's audio or video tracks, as a moderator would."""
        room = self.room(room_id)
        p = self._participant(room, participant_id)
        if kind not in ("audio", "video"):
            raise _bad(f"kind must be 'audio' or 'video', got {kind!r}")
        tracks = [t for t in room.tracks.values() if t.participant_id == participant_id and t.kind == kind]
        if not tracks:
            raise AdminError(AdminReason.CONFLICT, f"{p.name} publishes no {kind} track")
        effects: list[Effect] = []
        for t in tracks:
            t.muted = muted
            effects += [MuteTrack(t.track_id, muted), Send(room.connected_ids(), wire.TrackUpdated(t.info()))]
        effects.append(Audit("muted" if muted else "unmuted", room.room_id, p.identity, p.role.value,
                             {"kind": kind, "by": API}))
        return effects

    def start_recording(self, room_id: str) -> list[Effect]:
        room = self.room(room_id)
        if room.recording_policy == "off":
            raise AdminError(AdminReason.CONFLICT, f"room {room_id!r} was created with recording 'off'")
        if room.recording:
            raise AdminError(AdminReason.CONFLICT, f"room {room_id!r} is already being recorded")
        return self.hub.finish(room.record_by_policy(by=API))

    def stop_recording(self, room_id: str) -> list[Effect]:
        room = self.room(room_id)
        if not room.recording:
            raise AdminError(AdminReason.CONFLICT, f"room {room_id!r} is not being recorded")
        return self.hub.finish(room.stop_recording_by(API))

    @staticmethod
    def _participant(room: Room, participant_id: str) -> Any:
        p = room.participants.get(participant_id)
        if p is None:
            raise AdminError(AdminReason.NOT_FOUND, f"no participant {participant_id!r} in room {room.room_id!r}")
        return p
