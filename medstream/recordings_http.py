"""`GET /recordings...`: the recordings of a room for its host or supervisor, streamed from disk.

`/recordings` lists the sessions of the token's room (JSON); `/recordings/<room>/<session>/<file>`
serves one file. Files of any size are streamed with Range support by aiohttp's `FileResponse`
(sendfile, or reads in a worker thread: never on the event loop); an encrypted file is decrypted
on the fly, chunk by chunk in a worker thread, ranges too (`recorder.crypto`). Needs `?token=` (or
`Authorization: Bearer`) of a host or supervisor of that room, or a library token covering it
(`signaling.tokens.issue_library_token`): 401 without a valid token, 403 for another room or
role. Every download is audited with who and what.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from medstream.http import Handler, content_type, json_response
from protocol.signaling import WireError
from recorder import crypto, library
from recorder.crypto import MasterKey
from recorder.errors import RangeNotSatisfiableError, SessionNotFoundError, UnsafePathError
from recorder.manifest import MANIFEST_NAME
from signaling.effects import Audit
from signaling.roles import Role
from signaling.tokens import LIBRARY_SCOPE, verify_library_token, verify_token

READ_ROLES = frozenset({Role.HOST, Role.SUPERVISOR})  # who may list and download a room's recordings
STREAM_BLOCK_BYTES = 256 * 1024  # decrypted and sent per worker-thread read


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks for recordings: `role` is the room role, or "library" for a library token."""

    identity: str
    role: str
    room: str | None  # the token's room; None for a library token
    rooms: tuple[str, ...] = ()  # a library token's rooms ("*": all)

    def may_see(self, room_id: str) -> bool:
        """Whether this viewer may watch and download the recordings of `room_id`."""
        if self.room is not None:
            return self.room == room_id
        return "*" in self.rooms or room_id in self.rooms


class RecordingsHttp:
    """The two routes; `audit` records each download (an `Audit` effect, e.g. the driver's log)."""

    def __init__(self, root: Path, secret: str, *, audit: Callable[[Audit], None] | None = None,
                 clock: Callable[[], float] = time.time, master_key: MasterKey | None = None) -> None:
        self.root = Path(root)
        self.secret = secret
        self.audit = audit
        self.clock = clock
        self.master_key = master_key

    def install(self, route: Callable[[str, str, Handler], None]) -> None:
        route("GET", "/recordings", self.listing)
        route("GET", "/recordings/{tail:.*}", self.file)

    async def listing(self, request: web.Request) -> web.StreamResponse:
        grant = self.authorise(request, None)
        if isinstance(grant, web.StreamResponse):
            return grant
        sessions = await asyncio.to_thread(library.list_sessions, self.root, grant.room, self.master_key)  # disk: off the loop
        if grant.room is None:
            sessions = [s for s in sessions if grant.may_see(s.room)]
        return json_response(200, {"room": grant.room, "sessions": [_summary_json(s) for s in sessions]})

    async def file(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p != ""]
        if len(parts) != 3:
            return json_response(404, {"error": "not_found",
                                       "message": "use /recordings or /recordings/<room>/<session>/<file>"})
        room_id, session_id, name = parts
        grant = self.authorise(request, room_id)
        if isinstance(grant, web.StreamResponse):
            return grant
        path = self.session_file(room_id, session_id, name)
        if isinstance(path, web.StreamResponse):
            return path
        if self.audit is not None:
            self.audit(Audit("recording_downloaded", room_id, grant.identity, grant.role,
                             {"session": session_id, "file": name, "range": request.headers.get("Range"),
                              "token_room": grant.room}))
        ctype = "application/json" if name == MANIFEST_NAME else content_type(path)
        headers = {"Content-Type": ctype, "Cache-Control": "no-store"}
        if await asyncio.to_thread(crypto.is_encrypted, path):
            return await self._decrypted(request, path, headers)
        return web.FileResponse(path, headers=headers)

    def session_file(self, room_id: str, session_id: str, name: str) -> Path | web.StreamResponse:
        """The path of a session's file, or the 400/404 answer."""
        try:
            directory = library.find_session(self.root, session_id)
            if directory.parent.name != room_id:
                raise SessionNotFoundError(f"no session {session_id!r} in room {room_id!r}")
            if name == "":
                return directory
            return library.resolve_file(self.root, session_id, name)
        except UnsafePathError as exc:
            return json_response(400, {"error": "bad_path", "message": str(exc)})
        except (SessionNotFoundError, FileNotFoundError) as exc:
            return json_response(404, {"error": "not_found", "message": str(exc)})

    async def _decrypted(self, request: web.Request, path: Path, headers: dict[str, str]) -> web.StreamResponse:
        """An encrypted file streamed as its plaintext, with ranges; decrypted in a worker thread."""
        try:
            source = await asyncio.to_thread(crypto.open_for_reading, path, self.master_key)
        except crypto.DecryptionError as exc:
            return json_response(500, {"error": "cannot_decrypt", "message": str(exc)})
        try:
            size = source.size
            try:
                span = library.parse_range(request.headers.get("Range"), size)
            except RangeNotSatisfiableError:
                return json_response(416, {"error": "range_not_satisfiable", "message": f"file has {size} bytes"},
                                     {"Content-Range": f"bytes */{size}"})
            start, end = span if span is not None else (0, size - 1)
            response = web.StreamResponse(status=206 if span is not None else 200,
                                          headers={**headers, "Accept-Ranges": "bytes"})
            if span is not None:
                response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            response.content_length = max(0, end - start + 1)
            await response.prepare(request)
            pos = start
            while pos <= end:
                block = await asyncio.to_thread(source.read_range, pos, min(STREAM_BLOCK_BYTES, end - pos + 1))
                if not block:
                    break
                await response.write(block)
                pos += len(block)
            await response.write_eof()
            return response
        finally:
            source.close()

    def authorise(self, request: web.Request, room_id: str | None) -> Viewer | web.StreamResponse:
        """The viewer named by the request's token, or the 401/403 answer.

        A host or supervisor token of the room, or a library token covering it (`room_id` None:
        any valid such token, the listing narrows to what it may see)."""
        tok = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if not tok and auth.lower().startswith("bearer "):
            tok = auth[7:].strip()
        if not tok:
            return json_response(401, {"error": "unauthorized",
                                       "message": "recordings need ?token=<access token of a host or supervisor>"},
                                 {"WWW-Authenticate": "Bearer"})
        try:
            lib = verify_library_token(self.secret, tok, self.clock())
        except WireError:
            lib = None
        if lib is not None:
            viewer = Viewer(lib.identity, LIBRARY_SCOPE, None, lib.rooms)
            if room_id is not None and not viewer.may_see(room_id):
                return json_response(403, {"error": "forbidden",
                                           "message": f"library token does not cover room {room_id!r}"})
            return viewer
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
        return Viewer(grant.identity, grant.role.value, grant.room)


def _summary_json(s: library.SessionSummary) -> dict[str, object]:
    d = s.to_dict()
    d.pop("path", None)  # the server's own folder layout is nobody's business
    d["manifest_url"] = f"/recordings/{s.room}/{s.session_id}/{MANIFEST_NAME}"
    return d
