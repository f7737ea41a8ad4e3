"""`GET /recordings...`: the recordings of a room for its host or supervisor, streamed from disk.

`/recordings` lists the sessions of the token's room (JSON); `/recordings/<room>/<session>/<file>`
serves one file. Files of any size are streamed with Range support by aiohttp's `FileResponse`
(sendfile, or reads in a worker thread: never on the event loop). Needs `?token=` (or
`Authorization: Bearer`) of a host or supervisor of that room: 401 without a valid token, 403 for
another room or role. Every download is audited with who and what.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from medstream.http import Handler, content_type, json_response
from protocol.signaling import WireError
from recorder import library
from recorder.errors import SessionNotFoundError, UnsafePathError
from recorder.manifest import MANIFEST_NAME
from signaling.effects import Audit
from signaling.roles import Role
from signaling.tokens import Grant, verify_token

READ_ROLES = frozenset({Role.HOST, Role.SUPERVISOR})  # who may list and download a room's recordings


class RecordingsHttp:
    """The two routes; `audit` records each download (an `Audit` effect, e.g. the driver's log)."""

    def __init__(self, root: Path, secret: str, *, audit: Callable[[Audit], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.secret = secret
        self.audit = audit
        self.clock = clock

    def install(self, route: Callable[[str, str, Handler], None]) -> None:
        route("GET", "/recordings", self.listing)
        route("GET", "/recordings/{tail:.*}", self.file)

    async def listing(self, request: web.Request) -> web.StreamResponse:
        grant = self._authorise(request, None)
        if isinstance(grant, web.StreamResponse):
            return grant
        sessions = library.list_sessions(self.root, room=grant.room)
        return json_response(200, {"room": grant.room, "sessions": [_summary_json(s) for s in sessions]})

    async def file(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p != ""]
        if len(parts) != 3:
            return json_response(404, {"error": "not_found",
                                       "message": "use /recordings or /recordings/<room>/<session>/<file>"})
        room_id, session_id, name = parts
        grant = self._authorise(request, room_id)
        if isinstance(grant, web.StreamResponse):
            return grant
        try:
            directory = library.find_session(self.root, session_id)
            if directory.parent.name != room_id:
                raise SessionNotFoundError(f"no session {session_id!r} in room {room_id!r}")
            path = library.resolve_file(self.root, session_id, name)
        except UnsafePathError as exc:
            return json_response(400, {"error": "bad_path", "message": str(exc)})
        except (SessionNotFoundError, FileNotFoundError) as exc:
            return json_response(404, {"error": "not_found", "message": str(exc)})
        if self.audit is not None:
            self.audit(Audit("recording_downloaded", room_id, grant.identity, grant.role.value,
                             {"session": session_id, "file": name, "range": request.headers.get("Range")}))
        ctype = "application/json" if name == MANIFEST_NAME else content_type(path)
        return web.FileResponse(path, headers={"Content-Type": ctype, "Cache-Control": "no-store"})

    def _authorise(self, request: web.Request, room_id: str | None) -> Grant | web.StreamResponse:
        tok = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if not tok and auth.lower().startswith("bearer "):
            tok = auth[7:].strip()
        if not tok:
            return json_response(401, {"error": "unauthorized",
                                       "message": "recordings need ?token=<access token of a host or supervisor>"},
                                 {"WWW-Authenticate": "Bearer"})
        try:
            grant = verify_token(self.secret, tok, self.clock())
        except WireError as exc:
            return json_response(401, {"error": exc.reason.value, "message": exc.message},
                                 {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if grant.role not in READ_ROLES:
            return json_response(403, {"error": "forbidden", "message":
                                       f"role must be one of {sorted(r.value for r in READ_ROLES)}, "
                                       f"got {grant.role.value!r}"})
        if room_id is not None and grant.room != room_id:
            return json_response(403, {"error": "forbidden",
                                       "message": f"token is for room {grant.room!r}, not {room_id!r}"})
        return grant


def _summary_json(s: library.SessionSummary) -> dict[str, object]:
    d = s.to_dict()
    d.pop("path", None)  # the server's own folder layout is nobody's business
    d["manifest_url"] = f"/recordings/{s.room}/{s.session_id}/{MANIFEST_NAME}"
    return d
