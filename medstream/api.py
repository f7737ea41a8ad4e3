"""The admin API (`/api/v1`, JSON over HTTP on the signaling port) for the hospital platform.

The booking system creates and lists rooms here instead of waiting for a host's first join.
Authenticated by a bearer API key (`api_key` in the config file or MEDSTREAM_API_KEY); without a
configured key the API answers 404, so a node that nobody set up exposes nothing.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Callable

from aiohttp import web

from medstream.http import Handler, json_response
from protocol.signaling import ROOM_KINDS
from signaling.effects import Audit, Effect
from signaling.hub import Hub

ROOM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_BODY_BYTES = 64 * 1024


class AdminApi:
    """Rooms: `GET /api/v1/rooms`, `POST /api/v1/rooms` {"room_id", "kind"}, `DELETE
    /api/v1/rooms/{room_id}`. A room made here stays open, empty or not, until it is deleted.
    `apply` carries out the hub's effects (the driver's `apply`)."""

    def __init__(self, hub: Hub, api_key: str | None, apply: Callable[[list[Effect]], None], *,
                 audit: Callable[[Audit], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.hub = hub
        self.apply = apply
        self.api_key = api_key
        self.audit = audit
        self.clock = clock

    def install(self, route: Callable[[str, str, Handler], None]) -> None:
        route("GET", "/api/v1/rooms", self.list_rooms)
        route("POST", "/api/v1/rooms", self.create_room)
        route("DELETE", "/api/v1/rooms/{room_id}", self.end_room)

    def _refused(self, request: web.Request) -> web.Response | None:
        if not self.api_key:
            return json_response(404, {"error": "not_found", "message": "the admin API is not enabled on this node"})
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            return json_response(401, {"error": "unauthorized", "message": "send Authorization: Bearer <api key>"},
                                 {"WWW-Authenticate": "Bearer"})
        return None

    async def list_rooms(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refused(request)) is not None:
            return refused
        rooms = [{"room_id": r.room_id, "kind": r.kind.value, "participants": len(r.participants),
                  "recording": r.recording, "standing": r.persistent} for r in self.hub.store.rooms()]
        return json_response(200, {"rooms": rooms})

    async def create_room(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refused(request)) is not None:
            return refused
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return json_response(413, {"error": "too_large", "message": f"body must be at most {MAX_BODY_BYTES} bytes"})
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return json_response(400, {"error": "bad_request", "message": f"body is not valid JSON: {exc}"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "bad_request", "message": "body must be a JSON object"})
        room_id, kind = body.get("room_id"), body.get("kind", "consultation")
        if not isinstance(room_id, str) or not ROOM_ID_RE.match(room_id):
            return json_response(400, {"error": "bad_request",
                                       "message": f"room_id must match {ROOM_ID_RE.pattern}, got {room_id!r}"})
        if kind not in ROOM_KINDS:
            return json_response(400, {"error": "bad_request",
                                       "message": f"kind must be one of {list(ROOM_KINDS)}, got {kind!r}"})
        if self.hub.store.get(room_id) is not None:
            return json_response(409, {"error": "exists", "message": f"room {room_id!r} already exists"})
        room = self.hub.create_room(room_id, kind, self.clock(), persistent=True)
        if self.audit is not None:
            self.audit(Audit("room_created", room_id, "api", None, {"kind": kind}))
        return json_response(201, {"room_id": room.room_id, "kind": room.kind.value})

    async def end_room(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refused(request)) is not None:
            return refused
        room_id = request.match_info["room_id"]
        if self.hub.store.get(room_id) is None:
            return json_response(404, {"error": "not_found", "message": f"no room {room_id!r}"})
        self.apply(self.hub.end_room(room_id, "ended_by_api"))
        return json_response(200, {"room_id": room_id, "ended": True})
