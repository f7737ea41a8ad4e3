"""Participants without a websocket: WHIP encoders and WHEP players, admitted over HTTP.

A lecturer's OBS (WHIP, RFC 9725) or a hall's projector PC (WHEP) holds an access token but
speaks no signaling: it is admitted as a participant like any other (same token checks, same
roles, same room limits and booked window), and everyone in the room sees it join, publish and
leave. It receives nothing: its join reply and room notices are addressed to a participant that
has no connection, so the driver drops them; it gets no waveforms. It leaves when its HTTP
resource is deleted, its peer connection fails, or it is removed (the admin API, a moderator).
"""

from __future__ import annotations

import secrets

from protocol.signaling import Reason, WireError
from signaling.effects import Effect, WaveformViewer
from signaling.hub import Hub
from signaling.roles import Action, Role, allowed, publish_action
from signaling.room import Room
from signaling.tokens import verify_token


class HttpSessions:
    """Admits and removes connectionless participants on a hub; methods return effects."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def join(self, token: str, room_id: str, now: float, *, publish: frozenset[str] = frozenset(),
             subscribe: bool = False, name_suffix: str = "") -> tuple[str, list[Effect]]:
        """Admit the token's holder to `room_id` to publish `publish` kinds or to subscribe.

        Returns (participant id, effects). Raises WireError: the token's own reasons, FORBIDDEN
        (another room, or the role may not publish/subscribe), UNKNOWN_ROOM, ROOM_FULL,
        ROOM_ENDED, ROOM_NOT_OPEN."""
        if self.hub.draining:
            raise WireError(Reason.SERVER_DRAINING, "this server is shutting down: publish or play from another")
        grant = verify_token(self.hub.keys, token, now, self.hub.config.token_leeway_s)  # the previous key too
        if grant.room != room_id:
            raise WireError(Reason.FORBIDDEN, f"the token is for room {grant.room!r}, not {room_id!r}")
        for kind in sorted(publish):
            if not allowed(grant.role, publish_action(kind)):
                raise WireError(Reason.FORBIDDEN, f"role {grant.role.value!r} may not publish {kind}")
        if subscribe and not allowed(grant.role, Action.SUBSCRIBE):
            raise WireError(Reason.FORBIDDEN, f"role {grant.role.value!r} may not subscribe")
        room = self.hub.store.get(room_id)
        effects: list[Effect] = []
        if room is None:
            if grant.room_kind is None or grant.role is not Role.HOST:
                raise WireError(Reason.UNKNOWN_ROOM, f"no room {room_id!r} is open")
            room = self.hub.create_room(room_id, grant.room_kind, now)
            effects += room.started_events()
            if room.kind in self.hub.config.record_kinds:
                effects += room.record_by_policy()
        pid = f"p{secrets.token_hex(6)}"
        joined = room.join(pid, grant.identity, grant.name + name_suffix, grant.role, media=False,
                           request_id=None, now=now)
        # nobody reads waveforms on this participant's behalf
        effects += [e for e in joined if not isinstance(e, WaveformViewer)]
        self.hub.store.bind(pid, room.room_id)
        self.hub.metrics.joins += 1
        return pid, self.hub.finish(effects)

    def leave(self, participant_id: str, reason: str = "left") -> list[Effect]:
        """The HTTP resource was deleted (or its media failed): the participant leaves."""
        room = self.hub.store.room_of(participant_id)
        if room is None:
            return []
        return self.hub.finish([e for e in room.remove(participant_id, reason) if not isinstance(e, WaveformViewer)])

    def room_of(self, participant_id: str) -> Room | None:
        return self.hub.store.room_of(participant_id)

    def tracks_to_play(self, room_id: str) -> tuple[str, ...]:
        """What a WHEP player shows: the newest audio and video track of the room's presenters
        (hosts first, then anyone publishing), at most one of each kind."""
        room = self.hub.store.get(room_id)
        if room is None:
            return ()
        chosen: dict[str, str] = {}
        ranked = sorted(room.tracks.values(), key=lambda t: (
            room.participants[t.participant_id].role is Role.HOST if t.participant_id in room.participants else False))
        for t in ranked:  # later (hosts, newer) overwrite earlier
            chosen[t.kind] = t.track_id
        return tuple(chosen[k] for k in ("audio", "video") if k in chosen)
