"""The admin API (`/api/v1`, JSON over HTTP on the signaling port) for the hospital platform.

The booking system creates a consultation for a booked window, lists rooms and who is in them,
removes or mutes someone, starts and stops recording, lists recordings and mints access tokens.
Authenticated by a bearer credential, checked in one place (`AdminApi.guarded`, wrapped around
every handler at install): the node's API key (`api_key` in the config file or MEDSTREAM_API_KEY),
which reaches every room, or an admin-grant token (`medstream token --grant admin [--room R]`,
signed with the node's token secret, `signaling.tokens.issue_admin_token`) for one room or all.
No or a bad credential: 401; a grant for another room: 403. The document of every route is served
at `/api/v1/openapi.json` (medstream.openapi).

The handlers are thin: parse, call `signaling.admin.Admin` (the sans-I/O core, which returns the
effects), hand the effects to the driver, answer. `AdminError` reasons map to one status each.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from medstream.http import Handler, json_response
from medstream.openapi import Operation
from protocol.signaling import ROOM_KINDS, WireError
from signaling.admin import (
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    RECORDING_POLICIES,
    ROOM_ID_RE,
    Admin,
    AdminError,
    AdminReason,
    RoomSpec,
    participant_summary,
    room_summary,
)
from signaling.effects import Audit, Effect
from signaling.hub import Hub
from signaling.roles import TOKEN_ROLES
from signaling.tokens import AdminGrant, issue_token, verify_admin_token

if TYPE_CHECKING:
    from recorder.crypto import MasterKey

MAX_BODY_BYTES = 64 * 1024
MAX_TOKEN_VALIDITY_S = 7 * 86400

STATUS = {AdminReason.BAD_REQUEST: 400, AdminReason.NOT_FOUND: 404, AdminReason.EXISTS: 409,
          AdminReason.CONFLICT: 409}


class Route(Protocol):
    def __call__(self, method: str, path: str, handler: Handler, op: Operation | None = None) -> None: ...


ROOM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "room_id": {"type": "string"}, "kind": {"type": "string", "enum": list(ROOM_KINDS)},
        "participants": {"type": "integer"}, "max_participants": {"type": "integer"},
        "recording": {"type": "boolean"}, "recording_policy": {"type": "string", "enum": list(RECORDING_POLICIES)},
        "standing": {"type": "boolean"}, "booked_from": {"type": ["number", "null"]},
        "booked_until": {"type": ["number", "null"]}, "created_at": {"type": "number"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["room_id"], "additionalProperties": False,
    "properties": {
        "room_id": {"type": "string", "pattern": ROOM_ID_RE.pattern},
        "kind": {"type": "string", "enum": list(ROOM_KINDS), "default": "consultation"},
        "booked_from": {"type": ["number", "string"], "description": "epoch seconds or ISO 8601 with offset"},
        "booked_until": {"type": ["number", "string"],
                         "description": "the room ends for everyone then; must be after booked_from (else 400)"},
        "early_join_s": {"type": "number", "minimum": 0, "maximum": 86400, "default": 600,
                         "description": "joins admitted this early"},
        "max_participants": {"type": "integer", "minimum": 1,
                             "description": "at most the node's max_participants_per_room (else 400)"},
        "recording": {"type": "string", "enum": list(RECORDING_POLICIES), "default": "default",
                      "description": "default: the node's --record kinds; auto: from creation; manual: on request; off: never"},
        "metadata": {"type": "object", "maxProperties": MAX_METADATA_KEYS, "propertyNames": {"maxLength": 64},
                     "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE_CHARS},
                     "description": "the platform's labels, e.g. the referral number; sent back in webhooks"},
    },
    "dependentRequired": {"booked_from": ["booked_until"], "booked_until": ["booked_from"]},
}
PARTICIPANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"participant_id": {"type": "string"}, "identity": {"type": "string"}, "name": {"type": "string"},
                   "role": {"type": "string"}, "connected": {"type": "boolean"}, "hand_raised": {"type": "boolean"},
                   "tracks": {"type": "array", "items": {"type": "object"}}},
}
TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["room", "identity", "role"], "additionalProperties": False,
    "properties": {
        "room": {"type": "string", "minLength": 1, "maxLength": 128},
        "identity": {"type": "string", "minLength": 1, "maxLength": 128},
        "name": {"type": "string", "maxLength": 128},
        "role": {"type": "string", "enum": sorted(r.value for r in TOKEN_ROLES)},
        "kind": {"type": "string", "enum": list(ROOM_KINDS), "description": "host tokens: create the room on join"},
        "valid_from": {"type": "number", "minimum": 0, "maximum": 253402300799,
                       "description": "epoch seconds; default: the booking's opening or now"},
        "valid_for_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TOKEN_VALIDITY_S,
                        "description": "default: until the booking closes, or 3600"},
    },
}
AUTH_ERRORS = {401: "no or wrong API key or admin-grant token", 403: "the admin grant is for another room"}
ROOM_ERRORS = {**AUTH_ERRORS, 404: "no such room or participant"}


@dataclass(frozen=True, slots=True)
class Access:
    """Who is calling: `by` ("api-key" or the grant's identity) and the room it may administer
    (None: every room)."""

    by: str
    room: str | None

    def covers(self, room_id: str) -> bool:
        """Whether this caller may act on `room_id`."""
        return self.room is None or self.room == room_id


GuardedHandler = Callable[[web.Request, Access], Awaitable[web.StreamResponse]]


class AdminApi:
    """Installs the `/api/v1` routes. `apply` carries out the core's effects (the driver's `apply`);
    `recordings_dir`: where `GET /api/v1/recordings` looks (None: recording is off on this node);
    `document`: the OpenAPI document to serve."""

    def __init__(self, hub: Hub, api_key: str | None, apply: Callable[[list[Effect]], None], *,
                 audit: Callable[[Audit], None] | None = None, clock: Callable[[], float] = time.time,
                 recordings_dir: Path | None = None, recordings_key: MasterKey | None = None,
                 document: Callable[[], dict[str, Any]] | None = None) -> None:
        self.hub = hub
        self.admin = Admin(hub)
        self.apply = apply
        self.api_key = api_key
        self.audit = audit
        self.clock = clock
        self.recordings_dir = recordings_dir
        self.recordings_key = recordings_key  # reads encrypted sessions' manifests
        self.document = document

    def install(self, route: Route) -> None:
        route("GET", "/api/v1/openapi.json", self.openapi, Operation(
            "this document", "meta", None, response={"type": "object"}))
        route("GET", "/api/v1/rooms", self.guarded(self.list_rooms), Operation(
            "list open rooms", response={"type": "object", "properties": {"rooms": {"type": "array", "items": ROOM_SCHEMA}}},
            responses={200: "rooms", **AUTH_ERRORS}))
        route("POST", "/api/v1/rooms", self.guarded(self.create_room), Operation(
            "create a standing room, optionally for a booked window", request=CREATE_SCHEMA, response=ROOM_SCHEMA,
            responses={201: "created", 400: "invalid body", 409: "exists", 413: "body too large", **AUTH_ERRORS}))
        route("GET", "/api/v1/rooms/{room_id}", self.guarded(self.get_room), Operation(
            "one room", response=ROOM_SCHEMA, responses={200: "the room", **ROOM_ERRORS}))
        route("DELETE", "/api/v1/rooms/{room_id}", self.guarded(self.end_room), Operation(
            "end a room: everyone is told and closed", responses={200: "ended", **ROOM_ERRORS}))
        route("GET", "/api/v1/rooms/{room_id}/participants", self.guarded(self.list_participants), Operation(
            "who is in a room", response={"type": "object", "properties": {
                "participants": {"type": "array", "items": PARTICIPANT_SCHEMA}}},
            responses={200: "participants", **ROOM_ERRORS}))
        route("DELETE", "/api/v1/rooms/{room_id}/participants/{participant_id}", self.guarded(self.remove_participant), Operation(
            "remove a participant (it gets bye, reason removed)", responses={200: "removed", **ROOM_ERRORS}))
        route("POST", "/api/v1/rooms/{room_id}/participants/{participant_id}/mute", self.guarded(self.mute_participant), Operation(
            "mute or unmute a participant's audio or video",
            request={"type": "object", "required": ["kind"], "properties": {
                "kind": {"type": "string", "enum": ["audio", "video"]}, "muted": {"type": "boolean", "default": True}}},
            responses={200: "done", 400: "invalid body", 409: "no such track", **ROOM_ERRORS}))
        route("POST", "/api/v1/rooms/{room_id}/recording", self.guarded(self.start_recording), Operation(
            "start recording a room", responses={200: "recording", 409: "already recording or policy off", **ROOM_ERRORS}))
        route("DELETE", "/api/v1/rooms/{room_id}/recording", self.guarded(self.stop_recording), Operation(
            "stop recording a room (the recording_ready webhook follows when the files are final)",
            responses={200: "stopped", 409: "not recording", **ROOM_ERRORS}))
        route("GET", "/api/v1/recordings", self.guarded(self.list_recordings), Operation(
            "recorded sessions, newest first", query=(("room", "only this room's"),),
            response={"type": "object", "properties": {"sessions": {"type": "array", "items": {"type": "object"}}}},
            responses={200: "sessions", **AUTH_ERRORS}))
        route("POST", "/api/v1/tokens", self.guarded(self.mint_token), Operation(
            "mint an access token (default validity: the room's booked window)", request=TOKEN_SCHEMA,
            response={"type": "object", "properties": {"token": {"type": "string"}, "not_before": {"type": "number"},
                                                       "expires": {"type": "number"}}},
            responses={201: "token", 400: "invalid body", **AUTH_ERRORS}))

    # ------------------------------------------------------------------ plumbing

    def guarded(self, handler: GuardedHandler) -> Handler:
        """`handler` behind the API's authentication: it runs only for a valid credential, and
        for a `{room_id}` route only if the credential reaches that room."""
        async def guarded(request: web.Request) -> web.StreamResponse:
            access = self.authenticate(request)
            if isinstance(access, web.Response):
                return access
            room_id = request.match_info.get("room_id")
            if room_id is not None and not access.covers(room_id):
                return _forbidden(access)
            return await handler(request, access)

        guarded.__name__ = getattr(handler, "__name__", "guarded")
        return guarded

    def authenticate(self, request: web.Request) -> Access | web.Response:
        """The caller's `Access` from `Authorization: Bearer ...`, or the 401 to answer."""
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not given:
            return _unauthorized("send Authorization: Bearer <api key or admin-grant token>")
        if self.api_key and hmac.compare_digest(given.encode(), self.api_key.encode()):
            return Access("api-key", None)
        if given.count(".") != 2:  # not a JWT: a wrong key (no token parsing, no detail)
            return _unauthorized("wrong API key")
        try:
            grant: AdminGrant = verify_admin_token(self.hub.keys, given, self.clock())
        except WireError as err:
            return _unauthorized(err.message)
        return Access(grant.identity, grant.room)

    async def _body(self, request: web.Request, *, optional: bool = False) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _HttpError(413, "too_large", f"body must be at most {MAX_BODY_BYTES} bytes")
        raw = await request.read()
        if optional and not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _HttpError(400, "bad_request", f"body is not valid JSON: {exc}") from None

    def _run(self, request: web.Request, fn: Callable[[], Any], status: int = 200) -> web.Response:
        try:
            result = fn()
        except AdminError as err:
            return _error(STATUS[err.reason], err.reason.value, err.message)
        except _HttpError as err:
            return err.response()
        return json_response(status, result)

    # ------------------------------------------------------------------ handlers

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return json_response(200, self.document() if self.document else {})

    async def list_rooms(self, request: web.Request, access: Access) -> web.StreamResponse:
        return json_response(200, {"rooms": [room_summary(r) for r in self.hub.store.rooms()
                                             if not r.ended and access.covers(r.room_id)]})

    async def create_room(self, request: web.Request, access: Access) -> web.StreamResponse:
        try:
            body = await self._body(request)
        except _HttpError as err:
            return err.response()

        def create() -> dict[str, Any]:
            spec = RoomSpec.parse(body, max_participants_limit=self.hub.config.max_participants_per_room)
            if not access.covers(spec.room_id):
                raise _HttpError(403, "forbidden", f"the admin grant of {access.by!r} is for room {access.room!r}")
            room, effects = self.admin.create_room(spec, self.clock())
            self.apply(effects)
            return room_summary(room)

        return self._run(request, create, 201)

    async def get_room(self, request: web.Request, access: Access) -> web.StreamResponse:
        return self._run(request, lambda: room_summary(self.admin.room(request.match_info["room_id"])))

    async def end_room(self, request: web.Request, access: Access) -> web.StreamResponse:
        room_id = request.match_info["room_id"]

        def end() -> dict[str, Any]:
            self.apply(self.admin.end_room(room_id))
            return {"room_id": room_id, "ended": True}

        return self._run(request, end)

    async def list_participants(self, request: web.Request, access: Access) -> web.StreamResponse:

        def listing() -> dict[str, Any]:
            room = self.admin.room(request.match_info["room_id"])
            return {"room_id": room.room_id, "participants": [participant_summary(room, pid) for pid in room.participants]}

        return self._run(request, listing)

    async def remove_participant(self, request: web.Request, access: Access) -> web.StreamResponse:
        room_id, pid = request.match_info["room_id"], request.match_info["participant_id"]

        def remove() -> dict[str, Any]:
            self.apply(self.admin.remove(room_id, pid))
            return {"room_id": room_id, "participant_id": pid, "removed": True}

        return self._run(request, remove)

    async def mute_participant(self, request: web.Request, access: Access) -> web.StreamResponse:
        try:
            body = await self._body(request)
        except _HttpError as err:
            return err.response()
        room_id, pid = request.match_info["room_id"], request.match_info["participant_id"]
        if not isinstance(body, dict) or not isinstance(body.get("muted", True), bool):
            return _error(400, "bad_request", f"body must be {{\"kind\": \"audio\"|\"video\", \"muted\": bool}}, got {str(body)[:80]!r}")
        kind, muted = body.get("kind"), bool(body.get("muted", True))

        def mute() -> dict[str, Any]:
            self.apply(self.admin.mute(room_id, pid, str(kind), muted))
            return {"room_id": room_id, "participant_id": pid, "kind": kind, "muted": muted}

        return self._run(request, mute)

    async def start_recording(self, request: web.Request, access: Access) -> web.StreamResponse:
        room_id = request.match_info["room_id"]

        def start() -> dict[str, Any]:
            self.apply(self.admin.start_recording(room_id))
            return {"room_id": room_id, "recording": self.admin.room(room_id).recording}

        return self._run(request, start)

    async def stop_recording(self, request: web.Request, access: Access) -> web.StreamResponse:
        room_id = request.match_info["room_id"]

        def stop() -> dict[str, Any]:
            self.apply(self.admin.stop_recording(room_id))
            return {"room_id": room_id, "recording": False}

        return self._run(request, stop)

    async def list_recordings(self, request: web.Request, access: Access) -> web.StreamResponse:
        room = request.query.get("room") or access.room
        if room is not None and not access.covers(room):
            return _forbidden(access)
        if self.recordings_dir is None:
            return json_response(200, {"sessions": []})
        from recorder import library

        sessions = await asyncio.to_thread(library.list_sessions, self.recordings_dir, room,
                                           self.recordings_key)  # disk: off the loop
        return json_response(200, {"sessions": [s.to_dict() for s in sessions]})

    async def mint_token(self, request: web.Request, access: Access) -> web.StreamResponse:
        try:
            body = await self._body(request)
        except _HttpError as err:
            return err.response()
        if not isinstance(body, dict):
            return _error(400, "bad_request", f"body must be a JSON object, got {type(body).__name__}")
        unknown = set(body) - set(TOKEN_SCHEMA["properties"])
        if unknown:
            return _error(400, "bad_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        room_id, identity = body.get("room"), body.get("identity")
        for name, value in (("room", room_id), ("identity", identity)):
            if not isinstance(value, str) or not 0 < len(value) <= 128:
                return _error(400, "bad_request", f"{name} must be a string of 1-128 characters, got {value!r}")
        for name in ("name", "kind"):
            if name in body and not (isinstance(body[name], str) and len(body[name]) <= 128):
                return _error(400, "bad_request", f"{name} must be a string of at most 128 characters, "
                                                  f"got {str(body[name])[:40]!r}")
        if not access.covers(str(room_id)):
            return _forbidden(access)
        room = self.hub.store.get(str(room_id))
        booking = room.booking if room is not None else None
        now = self.clock()
        valid_from = body.get("valid_from", booking.opens_at - booking.early_join_s if booking else now)
        valid_for = body.get("valid_for_s", booking.closes_at - valid_from if booking else 3600.0)
        for name, value in (("valid_from", valid_from), ("valid_for_s", valid_for)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return _error(400, "bad_request", f"{name} must be a number, got {value!r}")
        if not 0 < valid_for <= MAX_TOKEN_VALIDITY_S:
            return _error(400, "bad_request", f"valid_for_s must be 0-{MAX_TOKEN_VALIDITY_S} s, got {valid_for!r}")
        try:
            token = issue_token(self.hub.config.secret, room=str(room_id), identity=str(identity),
                                role=str(body.get("role")), name=body.get("name"), valid_from=float(valid_from),
                                valid_for_s=float(valid_for), room_kind=body.get("kind"))
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        if self.audit is not None:
            self.audit(Audit("token_issued", str(room_id), str(identity), str(body.get("role")),
                             {"by": "api" if access.by == "api-key" else f"admin:{access.by}"}))
        return json_response(201, {"token": token, "not_before": int(valid_from),
                                   "expires": int(valid_from + valid_for)})


class _HttpError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def response(self) -> web.Response:
        return _error(self.status, self.error, self.message)


def _unauthorized(message: str) -> web.Response:
    return json_response(401, {"error": "unauthorized", "message": message}, {"WWW-Authenticate": "Bearer"})


def _forbidden(access: Access) -> web.Response:
    return _error(403, "forbidden", f"the admin grant of {access.by!r} is for room {access.room!r} only")


def _error(status: int, error: str, message: str) -> web.Response:
    return json_response(status, {"error": error, "message": message})
