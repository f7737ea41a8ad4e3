"""`GET /playback/<room>/<session>`: what the playback page (clients/web/playback.html) plays.

One JSON document per session (`recorder.playback.session_timeline`): its media files, its
waveform records with their beats and alarms, its participants' comings and goings, all on the
session clock, with the file URLs the page then fetches from `/recordings/...` (ranges, decrypted
on the fly). Same authorisation as the downloads (`RecordingsHttp.authorise`: host or supervisor
of the room, or a library token covering it); every opening is audited (`recording_viewed`).
Built in a worker thread: it reads headers and annotations from the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from medstream.http import Handler, json_response
from medstream.recordings_http import RecordingsHttp
from recorder.crypto import DecryptionError
from recorder.playback import session_timeline
from signaling.effects import Audit


class PlaybackHttp:
    """The playback route, on top of the recordings routes (their root, key, audit and tokens)."""

    def __init__(self, recordings: RecordingsHttp) -> None:
        self.recordings = recordings

    def install(self, route: Callable[[str, str, Handler], None]) -> None:
        route("GET", "/playback/{room}/{session}", self.timeline)

    async def timeline(self, request: web.Request) -> web.StreamResponse:
        room_id, session_id = request.match_info["room"], request.match_info["session"]
        viewer = self.recordings.authorise(request, room_id)
        if isinstance(viewer, web.StreamResponse):
            return viewer
        directory = self.recordings.session_file(room_id, session_id, "")
        if isinstance(directory, web.StreamResponse):
            return directory
        prefix = f"/recordings/{room_id}/{session_id}/"
        try:
            body = await asyncio.to_thread(session_timeline, directory, prefix, self.recordings.master_key)
        except DecryptionError as exc:
            return json_response(500, {"error": "cannot_decrypt", "message": str(exc)})
        except (OSError, ValueError) as exc:
            return json_response(404, {"error": "not_found", "message": f"session is not readable: {exc}"})
        if self.recordings.audit is not None:
            self.recordings.audit(Audit("recording_viewed", room_id, viewer.identity, viewer.role,
                                        {"session": session_id, "token_room": viewer.room}))
        return json_response(200, body, {"Cache-Control": "no-store"})
