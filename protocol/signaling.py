"""The JSON signaling wire: every message a client sends or the server sends, and nothing else.

Clients send text frames decoded by `decode_client_message` into one of the `ClientMessage`
dataclasses (or a `WireError` naming what was expected and what came); the server's messages are
`ServerMessage` dataclasses turned into text by `encode`. No other module touches JSON.
The protocol is written down in docs/protocol.md; `PROTOCOL_VERSION` is its version.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

PROTOCOL_VERSION = 1
MAX_ID_LENGTH = 64
MAX_SDP_LENGTH = 128 * 1024
MAX_TRACK_IDS = 256
MAX_DEPTH = 8  # nesting of JSON arrays/objects; our messages need 3
MAX_CONTAINERS = 1024  # arrays/objects in one message (checked before parsing, by a byte count)
MAX_CHAT_CHARS = 1000  # a question or a drug name spelled out, not a document

# websocket close codes the server uses (RFC 6455 section 7.4.1)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class RoomKind(str, enum.Enum):
    """What a room is for; decides who sees whom (see docs/protocol.md, "Rooms")."""

    CONSULTATION = "consultation"
    BROADCAST = "broadcast"
    MONITORING = "monitoring"


ROOM_KINDS: tuple[str, ...] = tuple(k.value for k in RoomKind)


class Reason(str, enum.Enum):
    """Why a request failed: the `reason` of an `error` message (and of some closes)."""

    BAD_MESSAGE = "bad_message"
    UNSUPPORTED_VERSION = "unsupported_version"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    UNKNOWN_ROOM = "unknown_room"
    ROOM_FULL = "room_full"
    ROOM_ENDED = "room_ended"
    ROOM_NOT_OPEN = "room_not_open"  # outside the room's booked window
    FORBIDDEN = "forbidden"
    UNKNOWN_PARTICIPANT = "unknown_participant"
    UNKNOWN_TRACK = "unknown_track"
    INVALID_SDP = "invalid_sdp"
    UNSUPPORTED_CODEC = "unsupported_codec"
    MEDIA_NOT_STARTED = "media_not_started"
    RECORDING_ACTIVE = "recording_active"
    RECORDING_INACTIVE = "recording_inactive"
    RECORDING_FAILED = "recording_failed"
    RESUME_FAILED = "resume_failed"
    REMOVED = "removed"  # a moderator removed this identity from the room; only a moderator readmits
    SERVER_DRAINING = "server_draining"  # the node is shutting down: join another (resumes still work)
    CLUSTER_UNAVAILABLE = "cluster_unavailable"  # the room is on another node and the cluster cannot be reached
    MEDIA_LOST = "media_lost"  # the node carrying this participant's media went away: restart media
    INTERNAL = "internal"


class WireError(Exception):
    """A client message that cannot be accepted; becomes an `error` reply to that client only."""

    def __init__(self, reason: Reason, message: str, request_id: str | int | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.request_id = request_id


RequestId = Union[str, int, None]
Kind = Literal["audio", "video"]

# --------------------------------------------------------------------------- client -> server


@dataclass(frozen=True, slots=True)
class Join:
    """First message on a connection: authenticate with a token, optionally resume."""

    TYPE: ClassVar[str] = "join"
    v: int
    token: str
    resume: str | None = None
    media: bool = False  # open a peer connection now and receive the room's tracks
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Leave:
    TYPE: ClassVar[str] = "leave"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class RaiseHand:
    TYPE: ClassVar[str] = "raise_hand"
    raised: bool
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Promote:
    """Moderator: let a viewer speak (role becomes `speaker`)."""

    TYPE: ClassVar[str] = "promote"
    participant_id: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Demote:
    TYPE: ClassVar[str] = "demote"
    participant_id: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Mute:
    """Moderator: stop (or resume) forwarding one participant's audio or video to everyone."""

    TYPE: ClassVar[str] = "mute"
    participant_id: str
    kind: Kind
    muted: bool
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Remove:
    TYPE: ClassVar[str] = "remove"
    participant_id: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class EndRoom:
    TYPE: ClassVar[str] = "end_room"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class StartRecording:
    TYPE: ClassVar[str] = "start_recording"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class StopRecording:
    TYPE: ClassVar[str] = "stop_recording"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Publish:
    """Ask the server to offer receive slots for the client's audio and/or video, and/or a second
    video source (`screen`: a shared screen or a second camera, up to 1920x1080, shown large).
    The screen slot's m-line in the server's offer carries `a=content:slides`."""

    TYPE: ClassVar[str] = "publish"
    audio: bool = False
    video: bool = False
    screen: bool = False
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Unpublish:
    TYPE: ClassVar[str] = "unpublish"
    kind: Literal["audio", "video", "screen"]
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    TYPE: ClassVar[str] = "subscribe"
    track_ids: tuple[str, ...]
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    TYPE: ClassVar[str] = "unsubscribe"
    track_ids: tuple[str, ...]
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class SetVideoPaused:
    """Audio-only mode for weak links: stop receiving video, keep audio."""

    TYPE: ClassVar[str] = "set_video_paused"
    paused: bool
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Sdp:
    """An SDP description; clients only ever send answers (the server always offers)."""

    TYPE: ClassVar[str] = "sdp"
    sdp_type: Literal["offer", "answer"]
    sdp: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Candidate:
    TYPE: ClassVar[str] = "candidate"
    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """Replace this connection's token by a newer one for the same identity, room and role (a
    consultation that overruns its booked slot); the server answers `token_refreshed`."""

    TYPE: ClassVar[str] = "refresh_token"
    token: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Readmit:
    """Moderator: lift the bar on an identity removed from this room, so it may join again."""

    TYPE: ClassVar[str] = "readmit"
    identity: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Chat:
    """A text message to the room (in a broadcast, the audience's go to the moderators)."""

    TYPE: ClassVar[str] = "chat"
    text: str
    id: RequestId = None


ClientMessage = Union[
    Join, Leave, Ping, RaiseHand, Promote, Demote, Mute, Remove, EndRoom, StartRecording,
    StopRecording, Publish, Unpublish, Subscribe, Unsubscribe, SetVideoPaused, Sdp, Candidate, Chat,
    RefreshToken, Readmit,
]
CLIENT_MESSAGES: dict[str, type] = {cls.TYPE: cls for cls in typing.get_args(ClientMessage)}

# --------------------------------------------------------------------------- server -> client


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    participant_id: str
    identity: str
    name: str
    role: str
    hand_raised: bool = False
    connected: bool = True


@dataclass(frozen=True, slots=True)
class TrackInfo:
    track_id: str
    participant_id: str
    kind: str
    codec: str
    muted: bool = False
    source: str = "camera"  # microphone, camera, or screen (shared content)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    id: str
    kind: str
    recording: bool = False


@dataclass(frozen=True, slots=True)
class IceServerInfo:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    TYPE: ClassVar[str] = "joined"
    participant: ParticipantInfo
    room: RoomInfo
    participants: tuple[ParticipantInfo, ...]
    tracks: tuple[TrackInfo, ...]
    resume: str
    resume_grace_s: float
    ice_servers: tuple[IceServerInfo, ...]
    permissions: tuple[str, ...]
    heartbeat_s: float
    resumed: bool = False
    v: int = PROTOCOL_VERSION
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    TYPE: ClassVar[str] = "participant_joined"
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    TYPE: ClassVar[str] = "participant_left"
    participant_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParticipantUpdated:
    TYPE: ClassVar[str] = "participant_updated"
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class TrackPublished:
    TYPE: ClassVar[str] = "track_published"
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUpdated:
    TYPE: ClassVar[str] = "track_updated"
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    TYPE: ClassVar[str] = "track_unpublished"
    track_id: str


@dataclass(frozen=True, slots=True)
class ServerSdp:
    TYPE: ClassVar[str] = "sdp"
    sdp_type: str
    sdp: str


@dataclass(frozen=True, slots=True)
class ServerCandidate:
    TYPE: ClassVar[str] = "candidate"
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True, slots=True)
class Recording:
    TYPE: ClassVar[str] = "recording"
    active: bool
    by: str | None


@dataclass(frozen=True, slots=True)
class Quality:
    TYPE: ClassVar[str] = "quality"
    participant_id: str
    bitrate_kbps: float | None
    loss_pct: float | None
    rtt_ms: float | None
    jitter_ms: float | None
    estimate_kbps: float | None = None  # what the participant's downlink carries, by our estimate


@dataclass(frozen=True, slots=True)
class VideoAdapted:
    """What this participant receives of video `track_id` changed because its link is weak (or
    recovered), decided by the server for it alone: `state` "full", "reduced" (`fps_fraction` of
    the publisher's frame rate) or "paused" (audio continues; video resumes by itself)."""

    TYPE: ClassVar[str] = "video_adapted"
    track_id: str
    state: Literal["full", "reduced", "paused"]
    fps_fraction: float
    reason: Literal["weak_connection"] = "weak_connection"


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    time: float
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Ok:
    """Acknowledges a request that has no other reply (e.g. `mute`), so clients can await it."""

    TYPE: ClassVar[str] = "ok"
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class RoomEnded:
    TYPE: ClassVar[str] = "room_ended"
    reason: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Reply to a `join` on a node that does not host the room (a cluster): connect to `url`
    (the hosting node's own websocket address) and send the same `join` there."""

    TYPE: ClassVar[str] = "redirect"
    url: str
    room: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[str] = "error"
    reason: Reason
    message: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A chat message as it reaches its recipients. `to_moderators`: an audience question, seen
    by the moderators and the asker only. `time` in Unix seconds (server clock)."""

    TYPE: ClassVar[str] = "chat_message"
    message_id: str
    participant_id: str
    name: str
    role: str
    text: str
    time: float
    to_moderators: bool = False


@dataclass(frozen=True, slots=True)
class Bye:
    """Last message before the server closes: may the client come back with its resume key?"""

    TYPE: ClassVar[str] = "bye"
    reason: str
    resume: bool = False


@dataclass(frozen=True, slots=True)
class TokenExpiring:
    """The connection's token runs out at `expires_at` (epoch s, leeway included): refresh it
    with `refresh_token` before then, or the server says `bye` with reason `token_expired`."""

    TYPE: ClassVar[str] = "token_expiring"
    expires_at: float
    seconds_left: float


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    """Reply to `refresh_token`: the session now runs until `expires_at` (epoch s)."""

    TYPE: ClassVar[str] = "token_refreshed"
    expires_at: float
    id: RequestId = None


ServerMessage = Union[
    Joined, ParticipantJoined, ParticipantLeft, ParticipantUpdated, TrackPublished, TrackUpdated,
    TrackUnpublished, ServerSdp, ServerCandidate, Recording, Quality, Pong, Ok, RoomEnded, Error,
    Bye, ChatMessage, TokenExpiring, TokenRefreshed, VideoAdapted, Redirect,
]

SERVER_MESSAGES: dict[str, type] = {cls.TYPE: cls for cls in typing.get_args(ServerMessage)}

# --------------------------------------------------------------------------- codec


def encode(message: ServerMessage | ClientMessage) -> str:
    """Serialise a message (either direction) to a JSON text frame."""
    body = _to_json_value(message)
    return json.dumps({"type": message.TYPE, **body}, separators=(",", ":"))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _to_json_value(value: Any) -> Any:
    # Hot path of every fan-out: field names are cached per class, plain values returned first.
    if value is None or isinstance(value, (str, int, float)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, (tuple, list)):
        return [_to_json_value(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return value
    cls: type = type(value)  # annotated: mypy takes type(Any) for unhashable
    return {name: _to_json_value(getattr(value, name)) for name in _field_names(cls)}


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode_client_message(text: str | bytes) -> ClientMessage:
    """Parse and validate one client text frame.

    Raises WireError(BAD_MESSAGE) naming the field, what was expected and what came.
    """
    _check_nesting(text)
    try:
        obj = json.loads(text)
    except RecursionError:
        raise WireError(Reason.BAD_MESSAGE, f"message is nested more than {MAX_DEPTH} deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(Reason.BAD_MESSAGE, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError(
            Reason.BAD_MESSAGE, f"message must be a JSON object, got {_json_type(obj)}"
        )
    if _depth(obj, 1) > MAX_DEPTH:
        raise WireError(Reason.BAD_MESSAGE, f"message is nested more than {MAX_DEPTH} deep")
    request_id = obj.get("id")
    if not _valid_request_id(request_id):
        raise WireError(
            Reason.BAD_MESSAGE,
            f"id must be a string (at most {MAX_ID_LENGTH} chars) or an integer, "
            f"got {_json_type(request_id)}",
        )
    msg_type = obj.get("type")
    if not isinstance(msg_type, str):
        raise WireError(
            Reason.BAD_MESSAGE, f"type must be a string, got {_json_type(msg_type)}", request_id
        )
    cls = CLIENT_MESSAGES.get(msg_type)
    if cls is None:
        raise WireError(Reason.BAD_MESSAGE, f"unknown message type {msg_type[:40]!r}", request_id)
    kwargs: dict[str, Any] = {}
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "id":
            kwargs["id"] = request_id
            continue
        if f.name not in obj:
            if f.default is dataclasses.MISSING:
                raise WireError(
                    Reason.BAD_MESSAGE, f"{msg_type}: missing field {f.name!r}", request_id
                )
            continue
        kwargs[f.name] = _check(msg_type, f.name, hints[f.name], obj[f.name], request_id)
    message: ClientMessage = cls(**kwargs)
    _check_limits(message)
    return message


def decode_server_message(text: str | bytes) -> ServerMessage:
    """Parse one server text frame into its dataclass (what Python clients read).

    The server is trusted to send well-formed messages; this raises WireError(BAD_MESSAGE) for
    anything else (unknown type, missing field) so a client version mismatch is loud.
    """
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(Reason.BAD_MESSAGE, f"server message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise WireError(Reason.BAD_MESSAGE, "server message must be a JSON object with a string type")
    cls = SERVER_MESSAGES.get(obj["type"])
    if cls is None:
        raise WireError(Reason.BAD_MESSAGE, f"unknown server message type {obj['type'][:40]!r}")
    try:
        built: ServerMessage = _build(cls, obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(Reason.BAD_MESSAGE, f"malformed {obj['type']} message: {exc!r}") from None
    return built


def _build(hint: Any, value: Any) -> Any:
    """A value of type `hint` from its JSON form (dataclasses, tuples, optionals, enums)."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        hints = _type_hints(hint)
        kwargs = {
            f.name: _build(hints[f.name], value[f.name])
            for f in dataclasses.fields(hint)
            if f.name in value or f.default is dataclasses.MISSING
        }
        return hint(**kwargs)
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        return tuple(_build(item, v) for v in value)
    if origin in (Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        return None if value is None else _build(options[0], value) if len(options) == 1 else value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def _check(msg_type: str, name: str, hint: Any, value: Any, request_id: RequestId) -> Any:
    """Validate `value` against a field's type hint; return it converted (lists -> tuples)."""
    ok, converted, expected = _match(hint, value)
    if not ok:
        raise WireError(
            Reason.BAD_MESSAGE,
            f"{msg_type}: field {name!r} must be {expected}, got {_json_type(value)}",
            request_id,
        )
    return converted


def _match(hint: Any, value: Any) -> tuple[bool, Any, str]:
    origin = typing.get_origin(hint)
    if origin is Literal:
        options = typing.get_args(hint)
        return value in options, value, "one of " + ", ".join(repr(o) for o in options)
    if origin in (Union, types.UnionType):
        expected = []
        for option in typing.get_args(hint):
            ok, converted, exp = _match(option, value)
            if ok:
                return True, converted, exp
            expected.append(exp)
        return False, value, " or ".join(expected)
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list) or len(value) > MAX_TRACK_IDS:
            return False, value, f"a list of at most {MAX_TRACK_IDS} items"
        out = []
        for v in value:
            ok, converted, exp = _match(item, v)
            if not ok:
                return False, value, f"a list of {exp}"
            out.append(converted)
        return True, tuple(out), "a list"
    if hint is type(None):
        return value is None, value, "null"
    if hint is bool:
        return isinstance(value, bool), value, "a boolean"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if hint is str:
        return isinstance(value, str), value, "a string"
    raise TypeError(f"wire: unsupported field type {hint!r}")  # our bug, not the client's


def _check_limits(message: ClientMessage) -> None:
    if isinstance(message, Join) and message.v != PROTOCOL_VERSION:
        raise WireError(
            Reason.UNSUPPORTED_VERSION,
            f"protocol version must be {PROTOCOL_VERSION}, got {message.v}",
            message.id,
        )
    if isinstance(message, Chat):
        if not message.text.strip():
            raise WireError(Reason.BAD_MESSAGE, "chat: text must not be empty", message.id)
        if len(message.text) > MAX_CHAT_CHARS:
            raise WireError(
                Reason.MESSAGE_TOO_LARGE,
                f"chat: text must be at most {MAX_CHAT_CHARS} characters, got {len(message.text)}",
                message.id,
            )
    if isinstance(message, Sdp) and len(message.sdp) > MAX_SDP_LENGTH:
        raise WireError(
            Reason.MESSAGE_TOO_LARGE,
            f"sdp must be at most {MAX_SDP_LENGTH} characters, got {len(message.sdp)}",
            message.id,
        )


def _check_nesting(text: str | bytes) -> None:
    """Refuse, before parsing, a message with more brackets than any message needs: the parser
    recurses per level, so 100,000 nested arrays would cost a deep recursion (or a
    RecursionError) for every frame of a flood."""
    opened = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    if opened > MAX_CONTAINERS:
        raise WireError(
            Reason.BAD_MESSAGE,
            f"message must have at most {MAX_CONTAINERS} arrays/objects (and nest at most {MAX_DEPTH} deep), "
            f"got {opened} brackets",
        )


def _depth(value: Any, level: int) -> int:
    """Nesting depth of a parsed JSON value (bounded: stops counting past MAX_DEPTH)."""
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level - 1


def _valid_request_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

