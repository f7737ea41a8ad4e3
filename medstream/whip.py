"""WHIP ingest (RFC 9725) and WHEP playback: HTTP offer/answer for clients that speak no
signaling, forwarded without transcoding like every other track.

- `POST /whip/{room_id}` with `Authorization: Bearer <access token>` and an SDP offer
  (`Content-Type: application/sdp`) -> `201 Created`, the SDP answer, `Location:
  /whip/{room_id}/{session}`. The encoder (OBS, a surgery-room box) is a participant of the
  room with its token's identity and role (a broadcast's host: the presenter); its audio and video
  are announced to the room and forwarded to every subscriber. `DELETE` on the Location ends it.
- `POST /whep/{room_id}` likewise, with a token of a role that may subscribe: the answer carries
  the newest audio and video of the room's presenters (`HttpSessions.tracks_to_play`). When
  they end (the encoder stopped or reconnects), the WHEP session ends: the player's connection
  closes and a player that retries gets the presenter's new tracks.
- No trickle ICE and no ICE restart: the answer has all our candidates, the offer should have the
  client's (what OBS and browsers do once gathering is complete); `PATCH` on a session answers
  405 with `Allow: DELETE` (aiohttp's router; RFC 9725 section 4.3.1), so no ETag/If-Match.
- ICE servers (RFC 9725 section 4.4): the 201 carries one `Link: <url>; rel="ice-server"` per
  configured STUN/TURN URL, with `username`, `credential` and `credential-type="password"` where
  there are credentials: the node's `--ice-server` entries and, with TURN REST configured, a
  time-limited credential for this session's participant (what a join reply carries), so an
  encoder behind a hospital firewall can relay through coturn on 443. RFC 9725 lets the server
  send them only in the 201 (not through OPTIONS), which is what clients read them from.

The handlers are thin: `signaling.sessions.HttpSessions` admits and removes the participant (its
rules, returned as effects), the SFU answers the offer (`answer_publish`, `answer_subscribe`) in
that participant's command order (`MediaBridge.call`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from media_server.events import MediaErrorReason, MediaRequestError
from medstream.http import json_response
from medstream.media_bridge import MEDIA_REASONS, MediaBridge
from medstream.openapi import Operation
from protocol.signaling import Reason, WireError
from signaling import events as ev
from signaling.effects import Effect
from signaling.sessions import HttpSessions

log = logging.getLogger("medstream.whip")

SDP = "application/sdp"
MAX_SDP_BYTES = 32 * 1024

# protocol reasons -> HTTP status for WHIP/WHEP answers
STATUS = {
    Reason.INVALID_TOKEN: 401, Reason.TOKEN_EXPIRED: 401, Reason.TOKEN_NOT_YET_VALID: 401,
    Reason.FORBIDDEN: 403, Reason.UNKNOWN_ROOM: 404, Reason.ROOM_FULL: 503, Reason.ROOM_ENDED: 404,
    Reason.ROOM_NOT_OPEN: 403, Reason.INVALID_SDP: 400, Reason.UNSUPPORTED_CODEC: 406,
    Reason.UNKNOWN_TRACK: 409, Reason.SERVER_DRAINING: 503,
}


@dataclass
class Session:
    """One WHIP or WHEP resource: its URL's secret part and the participant behind it."""

    key: str
    room_id: str
    participant_id: str
    kind: str  # whip | whep
    tracks: set[str] = field(default_factory=set)  # WHEP: what it plays


class WhipEndpoint:
    """The `/whip` and `/whep` routes. `apply` carries out effects (the driver's)."""

    def __init__(self, sessions: HttpSessions, media: MediaBridge, apply: Callable[[list[Effect]], None],
                 *, clock: Callable[[], float] = time.time) -> None:
        self.sessions = sessions
        self.media = media
        self.apply = apply
        self.clock = clock
        self.active: dict[str, Session] = {}  # key -> session
        self._by_participant: dict[str, str] = {}  # participant id -> key

    def install(self, route: Any) -> None:
        responses = {201: "created: the SDP answer, Location of the session", 400: "invalid SDP",
                     401: "no or invalid token", 403: "role or room not allowed", 404: "no such room",
                     406: "no codec in common", 415: "not application/sdp"}
        route("POST", "/whip/{room_id}", self.publish, Operation(
            "WHIP ingest (RFC 9725): publish into a room with an SDP offer", "whip", "accessToken",
            request={"type": "string"}, request_type=SDP, response={"type": "string"}, response_type=SDP,
            responses=responses))
        route("DELETE", "/whip/{room_id}/{session}", self.delete, Operation(
            "end a WHIP session", "whip", None, responses={200: "ended", 404: "no such session"},
            response_type="text/plain"))
        route("POST", "/whep/{room_id}", self.play, Operation(
            "WHEP playback: receive a room's presenter with an SDP offer", "whip", "accessToken",
            request={"type": "string"}, request_type=SDP, response={"type": "string"}, response_type=SDP,
            responses={**responses, 409: "nothing is being published in the room yet"}))
        route("DELETE", "/whep/{room_id}/{session}", self.delete, Operation(
            "end a WHEP session", "whip", None, responses={200: "ended", 404: "no such session"},
            response_type="text/plain"))

    # ------------------------------------------------------------------ handlers

    async def publish(self, request: web.Request) -> web.StreamResponse:
        return await self._open(request, "whip")

    async def play(self, request: web.Request) -> web.StreamResponse:
        return await self._open(request, "whep")

    async def _open(self, request: web.Request, kind: str) -> web.StreamResponse:
        room_id = request.match_info["room_id"]
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token:
            return _error(401, "unauthorized", "send Authorization: Bearer <access token>", {"WWW-Authenticate": "Bearer"})
        if request.content_type != SDP:
            return _error(415, "unsupported_media_type", f"Content-Type must be {SDP}, got {request.content_type!r}")
        if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
            return _error(413, "too_large", f"an offer must be at most {MAX_SDP_BYTES} bytes")
        offer = (await request.read()).decode("utf-8", "replace")
        kinds = frozenset(k for k in ("audio", "video") if f"\nm={k} " in "\n" + offer.replace("\r\n", "\n"))
        if not kinds:
            return _error(400, "bad_request", "the offer has no audio or video m-line")
        tracks: tuple[str, ...] = ()
        if kind == "whep":
            tracks = self.sessions.tracks_to_play(room_id)
        try:
            pid, effects = self.sessions.join(token, room_id, self.clock(), publish=kinds if kind == "whip" else frozenset(),
                                              subscribe=kind == "whep", name_suffix=f" ({kind.upper()})")
        except WireError as err:
            return _error(STATUS.get(err.reason, 400), err.reason.value, err.message)
        if kind == "whep" and not tracks:
            self.apply(effects)
            self.apply(self.sessions.leave(pid))
            return _error(409, "nothing_published", f"nobody publishes in room {room_id!r} yet: try again later",
                          {"Retry-After": "5"})
        self.apply(effects)
        session = Session(secrets.token_urlsafe(18), room_id, pid, kind, set(tracks))
        self.active[session.key] = session
        self._by_participant[pid] = session.key
        sfu = self.media.media
        try:
            if sfu is None:
                raise MediaRequestError(MediaErrorReason.INVALID_STATE, "media is not enabled on this server")
            await self.media.call(pid, lambda: sfu.open_peer(pid))
            if kind == "whip":
                answer = await self.media.call(pid, lambda: sfu.answer_publish(pid, offer))
            else:
                answer = await self.media.call(pid, lambda: sfu.answer_subscribe(pid, offer, tracks))
        except MediaRequestError as exc:
            self._end(session, "left")
            reason = MEDIA_REASONS[exc.reason]
            return _error(STATUS.get(reason, 500), reason.value, str(exc))
        location = f"/{kind}/{room_id}/{session.key}"
        log.info("%s session %s: participant %s in room %s", kind.upper(), session.key[:6], pid, room_id)
        headers = CIMultiDict({"Content-Type": SDP, "Location": location, "Cache-Control": "no-store"})
        for link in self.ice_links(pid):
            headers.add("Link", link)
        return web.Response(status=201, body=answer.encode(), headers=headers)

    def ice_links(self, pid: str) -> list[str]:
        """`Link` header values for the ICE servers a session's client may use (RFC 9725 4.4),
        with TURN REST credentials made for participant `pid`."""
        config = self.sessions.hub.config
        servers = list(config.ice_servers)
        if config.turn is not None:
            servers.append(config.turn.ice_server(pid, self.clock()))
        links = []
        for server in servers:
            for url in server.urls:
                link = f'<{url}>; rel="ice-server"'
                if server.username is not None and server.credential is not None:
                    link += (f'; username="{_quoted(server.username)}"; credential="{_quoted(server.credential)}"'
                             '; credential-type="password"')
                links.append(link)
        return links

    async def delete(self, request: web.Request) -> web.StreamResponse:
        session = self.active.get(request.match_info["session"])
        if session is None or session.room_id != request.match_info["room_id"]:
            return _error(404, "not_found", "no such session (ended already?)")
        self._end(session, "left")
        return web.Response(status=200, text="ended\n")

    # ------------------------------------------------------------------ lifecycle

    def _end(self, session: Session, reason: str) -> None:
        """Idempotent: forget the session, the participant leaves, its peer is closed."""
        if self.active.pop(session.key, None) is None:
            return
        self._by_participant.pop(session.participant_id, None)
        self.apply(self.sessions.leave(session.participant_id, reason))
        self._close_peer(session.participant_id)

    def _close_peer(self, pid: str) -> None:
        sfu = self.media.media
        if sfu is not None:
            self.media.submit(pid, lambda: sfu.close_peer(pid))

    def observe(self, event: ev.RoomEvent) -> None:
        """Room observer: a session's participant removed (admin API, moderator, room ended);
        a WHEP session whose tracks have all ended is ended too, so the player sees its
        connection close and reconnects to whatever the presenter publishes next (a WHEP
        session cannot be renegotiated by the server)."""
        match event:
            case ev.ParticipantLeft(participant_id=pid):
                key = self._by_participant.pop(pid, None)
                if key is not None and self.active.pop(key, None) is not None:
                    self._close_peer(pid)
            case ev.TrackUnpublished(track_id=track_id):
                for session in [s for s in self.active.values() if track_id in s.tracks]:
                    session.tracks.discard(track_id)
                    if not session.tracks:
                        log.info("WHEP session %s: its presenter's tracks ended", session.key[:6])
                        self._end(session, "left")
            case _:
                pass

    def peer_failed(self, pid: str) -> None:
        """The SFU gave up on a session's peer connection (ICE/DTLS): the participant leaves."""
        key = self._by_participant.get(pid)
        if key is not None and (session := self.active.get(key)) is not None:
            self._end(session, "timeout")


def _quoted(text: str) -> str:
    """An RFC 8288 quoted-string's content."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": error, "message": message}, headers)
