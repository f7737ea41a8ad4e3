"""The signaling core: connections in, effects out. No sockets, no clocks of its own.

The `Hub` authenticates joins, enforces per-connection limits (message size and rate, handshake
and idle timeouts), maps connections to participants, routes requests to their `Room` and turns
media-layer reports into room updates. The websockets driver (`signaling/server.py`) feeds it
frames and time and carries out the `Effect`s it returns.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field

from protocol import signaling as wire
from protocol.signaling import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, Reason, RoomKind, WireError
from signaling.effects import (
    Audit,
    CloseConn,
    Departed,
    Effect,
    Kick,
    RoomClosed,
    Send,
    SendConn,
    WaveformPublisherGone,
)
from signaling.roles import Action, Role
from signaling.room import Room, SessionTerms
from signaling.state import InMemoryRoomStore, RoomStore
from signaling.tokens import verify_token
from signaling.turn import TurnRest

log = logging.getLogger("medstream.signaling")



@dataclass(frozen=True)
class SignalingConfig:
    """Limits and timings of the signaling service (units in the names)."""

    secret: str
    max_message_bytes: int = 64 * 1024  # larger text frames get an error; the socket stays
    max_frame_bytes: int = 1024 * 1024  # larger frames close the socket (1009), enforced by the driver
    rate_per_s: float = 30.0  # text messages per second, sustained
    rate_burst: int = 60
    binary_rate_per_s: float = 400.0  # waveform frames per second, sustained
    binary_rate_burst: int = 2000  # a monitor back-filling sends a burst
    flood_close_after: int = 200  # refused messages in a row before the socket is closed
    max_participants_per_room: int = 1000
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 45.0  # clients ping every heartbeat_s; websockets pings catch dead links sooner
    heartbeat_s: float = 10.0
    resume_grace_s: float = 20.0
    token_leeway_s: float = 30.0
    ice_servers: tuple[wire.IceServerInfo, ...] = ()
    record_kinds: tuple[str, ...] = ()  # room kinds recorded from creation by policy (e.g. consultations)
    turn: TurnRest | None = None  # TURN servers with per-participant REST credentials (signaling.turn)


class TokenBucket:
    """Classic token bucket: `rate_per_s` sustained, `burst` at once."""

    __slots__ = ("burst", "rate_per_s", "tokens", "updated")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Connection:
    conn_id: str
    opened_at: float
    last_seen: float
    text_bucket: TokenBucket
    binary_bucket: TokenBucket
    participant_id: str | None = None
    refused_in_a_row: int = 0
    rate_error_sent_at: float = -1e9
    closing: bool = False


@dataclass
class Metrics:
    """Counters for /metrics."""

    messages_in: Counter[str] = field(default_factory=Counter)  # by message type
    errors: Counter[str] = field(default_factory=Counter)  # by reason
    joins: int = 0
    resumes: int = 0
    connections_opened: int = 0


class Hub:
    """All rooms and connections of this node."""

    def __init__(self, config: SignalingConfig, store: RoomStore | None = None) -> None:
        self.config = config
        self.store = store if store is not None else InMemoryRoomStore()
        self.connections: dict[str, Connection] = {}
        self.conn_of: dict[str, str] = {}  # participant id -> connection id
        self.metrics = Metrics()
        self.draining = False  # set by start_draining: new joins refused, resumes still admitted
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ rooms

    def create_room(self, room_id: str, kind: str, now: float, *, persistent: bool = False) -> Room:
        """Create a room up front (configured wards, tests); hosts may also create on join."""
        room = Room(
            room_id,
            kind,
            max_participants=self.config.max_participants_per_room,
            created_at=now,
            persistent=persistent,
            terms=SessionTerms(self.config.resume_grace_s, self.config.heartbeat_s, self.config.ice_servers,
                               self.config.turn),
        )
        self.store.add(room)
        return room

    def end_room(self, room_id: str, reason: str) -> list[Effect]:
        """End a room from outside (the admin API): everyone is told and closed, it is discarded."""
        room = self.store.get(room_id)
        return self._finish(room.end(reason, None)) if room is not None else []

    def start_policy_recordings(self) -> list[Effect]:
        """Rooms opened by configuration whose kind is recorded by policy (called once at start)."""
        effects: list[Effect] = []
        for room in self.store.rooms():
            if room.kind in self.config.record_kinds and not room.recording:
                effects += room.record_by_policy()
        return self._finish(effects)

    def start_draining(self, deadline_s: float) -> list[Effect]:
        """The node is going down within `deadline_s`: refuse new joins from now on and tell
        everyone connected (an `error` with reason server_draining, no request id), so clients
        can finish and join another node; those who stay are closed with GOING_AWAY at the end."""
        self.draining = True
        everyone = tuple(pid for room in self.store.rooms() for pid in room.connected_ids())
        return [Send(everyone, wire.Error(Reason.SERVER_DRAINING,
                                          f"this server shuts down within {deadline_s:.0f} s: finish and reconnect"))]

    def participant_count(self) -> int:
        return sum(len(r.participants) for r in self.store.rooms())

    # ------------------------------------------------------------------ connections

    def connect(self, now: float) -> str:
        """A socket opened; returns its connection id."""
        conn_id = f"c{next(self._ids)}"
        self.connections[conn_id] = Connection(
            conn_id,
            opened_at=now,
            last_seen=now,
            text_bucket=TokenBucket(self.config.rate_per_s, self.config.rate_burst, now),
            binary_bucket=TokenBucket(self.config.binary_rate_per_s, self.config.binary_rate_burst, now),
        )
        self.metrics.connections_opened += 1
        return conn_id

    def participant_of(self, conn_id: str) -> str | None:
        conn = self.connections.get(conn_id)
        return conn.participant_id if conn else None

    def receive_text(self, conn_id: str, text: str, now: float) -> list[Effect]:
        """One text frame from a connection: decode, check limits, apply."""
        conn = self.connections.get(conn_id)
        if conn is None or conn.closing:
            return []
        conn.last_seen = now
        # Counted in characters, a cheap stand-in for bytes (a frame's bytes are capped by the
        # driver's max_frame_bytes): multi-byte text may exceed the byte figure by up to 4x.
        if len(text) > self.config.max_message_bytes:
            return self._refuse(conn, WireError(
                Reason.MESSAGE_TOO_LARGE,
                f"messages must be at most {self.config.max_message_bytes} bytes, got {len(text)} characters",
            ), now)
        if not conn.text_bucket.take(now):
            return self._rate_limited(conn, now)
        try:
            msg = wire.decode_client_message(text)
            self.metrics.messages_in[msg.TYPE] += 1
            effects = self._dispatch(conn, msg, now)
        except WireError as err:
            return self._refuse(conn, err, now)
        conn.refused_in_a_row = 0
        return self._finish(effects)

    def receive_binary(self, conn_id: str, nbytes: int, now: float) -> tuple[list[Effect], tuple[str, str] | None]:
        """A binary (waveform) frame: returns effects and, if admitted, (room id, publisher id)."""
        conn = self.connections.get(conn_id)
        if conn is None or conn.closing:
            return [], None
        conn.last_seen = now
        self.metrics.messages_in["waveform"] += 1
        if not conn.binary_bucket.take(now):
            return self._rate_limited(conn, now), None
        pid = conn.participant_id
        room = self.store.room_of(pid) if pid else None
        if pid is None or room is None:
            return self._refuse(conn, WireError(Reason.NOT_JOINED, "join before sending waveforms"), now), None
        if not room.participants[pid].may(Action.PUBLISH_WAVEFORMS):
            role = room.participants[pid].role.value
            return self._refuse(conn, WireError(Reason.FORBIDDEN, f"role {role!r} may not publish waveforms"), now), None
        conn.refused_in_a_row = 0
        return [], (room.room_id, pid)

    def disconnect(self, conn_id: str, now: float) -> list[Effect]:
        """The socket is gone. A joined participant keeps its place for the resume grace period."""
        conn = self.connections.pop(conn_id, None)
        if conn is None or conn.participant_id is None:
            return []
        pid = conn.participant_id
        if self.conn_of.get(pid) != conn_id:
            return []
        del self.conn_of[pid]
        room = self.store.room_of(pid)
        if room is None:
            return []
        effects = room.disconnect(pid, now)
        if room.participants[pid].may(Action.PUBLISH_WAVEFORMS):
            effects.append(WaveformPublisherGone(room.room_id, pid))
        return self._finish(effects)

    def tick(self, now: float) -> list[Effect]:
        """Time passes: handshake and idle timeouts, resume grace expiry."""
        effects: list[Effect] = []
        for conn in list(self.connections.values()):
            if conn.closing:
                continue
            if conn.participant_id is None and now - conn.opened_at > self.config.handshake_timeout_s:
                conn.closing = True
                effects.append(CloseConn(conn.conn_id, CLOSE_POLICY, "join timeout"))
            elif now - conn.last_seen > self.config.idle_timeout_s:
                conn.closing = True
                effects.append(CloseConn(conn.conn_id, CLOSE_GOING_AWAY, "idle timeout"))
        for room in self.store.rooms():
            for pid in room.expired(now, self.config.resume_grace_s):
                effects += room.remove(pid, "timeout")
            if room.empty and not room.persistent and not room.ended:
                effects += room.end("empty", None)
            elif room.booking is not None and room.booking.over(now) and not room.ended:
                effects += room.end("booking_over", None)
        return self._finish(effects)

    # ------------------------------------------------------------------ media-layer reports

    def track_published(self, participant_id: str, track_id: str, kind: str, codec: str) -> list[Effect]:
        room = self.store.room_of(participant_id)
        return self._finish(room.track_published(participant_id, track_id, kind, codec)) if room else []

    def track_ended(self, participant_id: str, track_id: str) -> list[Effect]:
        room = self.store.room_of(participant_id)
        return self._finish(room.track_ended(track_id)) if room else []

    def media_closed(self, participant_id: str) -> None:
        room = self.store.room_of(participant_id)
        if room is not None:
            room.media_closed(participant_id)

    def to_participant(self, participant_id: str, message: wire.ServerMessage) -> list[Effect]:
        """A media message (offer, candidate, error, quality) for one participant."""
        return [Send((participant_id,), message)]

    def quality(self, participant_id: str, message: wire.Quality) -> list[Effect]:
        """Connection quality of one participant: to itself and the room's moderators, and to
        everyone in a consultation (small rooms where each doctor wants to see whose link is
        weak). Broadcasting every viewer's report to a whole hall would cost N*N messages."""
        room = self.store.room_of(participant_id)
        if room is None:
            return []
        if room.kind is RoomKind.CONSULTATION:
            return [Send(room.connected_ids(), message)]
        to = tuple(
            pid for pid, p in room.participants.items()
            if p.connected and (pid == participant_id or p.may(Action.MODERATE))
        )
        return [Send(to, message)]

    def recording_failed(self, room_id: str, reason: str) -> list[Effect]:
        room = self.store.get(room_id)
        return self._finish(room.recording_failed(reason)) if room else []

    # ------------------------------------------------------------------ internals

    def _dispatch(self, conn: Connection, msg: wire.ClientMessage, now: float) -> list[Effect]:
        if isinstance(msg, wire.Join):
            return self._join(conn, msg, now)
        if conn.participant_id is None:
            raise WireError(Reason.NOT_JOINED, f"join before sending {msg.TYPE}", msg.id)
        pid = conn.participant_id
        if isinstance(msg, wire.Ping):
            return [Send((pid,), wire.Pong(time=now, id=msg.id))]
        room = self.store.room_of(pid)
        if room is None:  # the room ended between frames
            raise WireError(Reason.ROOM_ENDED, "your room has ended", msg.id)
        if isinstance(msg, wire.Leave):
            conn.closing = True
            return [*room.remove(pid, "left"), CloseConn(conn.conn_id, CLOSE_NORMAL, "left")]
        return room.handle(pid, msg)

    def _join(self, conn: Connection, msg: wire.Join, now: float) -> list[Effect]:
        if conn.participant_id is not None:
            raise WireError(Reason.ALREADY_JOINED, "this connection has joined already", msg.id)
        try:
            grant = verify_token(self.config.secret, msg.token, now, self.config.token_leeway_s)
        except WireError as err:
            raise WireError(err.reason, err.message, msg.id) from None
        room = self.store.get(grant.room)
        if msg.resume is not None:
            return self._resume(conn, msg, grant.identity, room, now)
        if self.draining:
            raise WireError(Reason.SERVER_DRAINING, "this server is shutting down: join another", msg.id)
        if room is None:
            if grant.room_kind is None or grant.role is not Role.HOST:
                raise WireError(Reason.UNKNOWN_ROOM, f"no room {grant.room!r} is open", msg.id)
            room = self.create_room(grant.room, grant.room_kind, now)
            created: list[Effect] = [Audit("room_created", room.room_id, grant.identity, grant.role.value, {"kind": room.kind}),
                                     *room.started_events()]
            if room.kind in self.config.record_kinds:
                created += room.record_by_policy()
        else:
            created = []
        pid = f"p{secrets.token_hex(6)}"
        effects = room.join(
            pid,
            grant.identity,
            grant.name,
            grant.role,
            media=msg.media,
            request_id=msg.id,
            now=now,
        )
        self.store.bind(pid, room.room_id)
        conn.participant_id = pid
        self.conn_of[pid] = conn.conn_id
        self.metrics.joins += 1
        return [*created, *effects]

    def _resume(self, conn: Connection, msg: wire.Join, identity: str, room: Room | None,
                now: float = 0.0) -> list[Effect]:
        p = room.find_by_resume(identity, msg.resume or "") if room else None
        if room is None or p is None:
            raise WireError(
                Reason.RESUME_FAILED,
                "nothing to resume (grace period over or wrong key): join again without `resume`",
                msg.id,
            )
        old_conn = self.conn_of.get(p.participant_id)
        effects: list[Effect] = []
        if old_conn is not None and old_conn in self.connections:
            # The old socket has not noticed it is dead yet: the new one takes over.
            self.connections[old_conn].participant_id = None
            self.connections[old_conn].closing = True
            effects.append(CloseConn(old_conn, CLOSE_POLICY, "replaced by a resumed connection"))
        conn.participant_id = p.participant_id
        self.conn_of[p.participant_id] = conn.conn_id
        self.metrics.resumes += 1
        return [
            *effects,
            *room.resume(p, request_id=msg.id, now=now),
        ]

    def finish(self, effects: list[Effect]) -> list[Effect]:
        """Turn room-level effects into connection-level ones and keep the indexes in step (for
        callers outside the hub that act on rooms: signaling.admin)."""
        return self._finish(effects)

    def _finish(self, effects: list[Effect]) -> list[Effect]:
        """Turn room-level effects into connection-level ones and keep the indexes in step."""
        out: list[Effect] = []
        for e in effects:
            if isinstance(e, Kick):
                conn_id = self.conn_of.pop(e.participant_id, None)
                self.store.unbind(e.participant_id)
                if conn_id is not None and conn_id in self.connections:
                    conn = self.connections[conn_id]
                    conn.participant_id = None
                    conn.closing = True
                    # Sends to this participant earlier in the batch (room_ended) are resolved by
                    # the driver after this unbinding: address them to the connection instead.
                    out += [SendConn(conn_id, s.message) for s in out
                            if isinstance(s, Send) and e.participant_id in s.to]
                    out.append(SendConn(conn_id, wire.Bye(e.reason, resume=False)))
                    out.append(CloseConn(conn_id, CLOSE_NORMAL, e.reason))
                continue
            if isinstance(e, Departed):
                self.store.unbind(e.participant_id)
                self.conn_of.pop(e.participant_id, None)
                continue
            if isinstance(e, RoomClosed):
                self.store.discard(e.room_id)
                continue
            out.append(e)
        return out

    def _refuse(self, conn: Connection, err: WireError, now: float) -> list[Effect]:
        self.metrics.errors[err.reason.value] += 1
        conn.refused_in_a_row += 1
        log.info("refused %s from %s: %s", err.reason.value, conn.conn_id, err.message)
        effects: list[Effect] = [SendConn(conn.conn_id, wire.Error(err.reason, err.message, err.request_id))]
        if conn.refused_in_a_row >= self.config.flood_close_after:
            conn.closing = True
            effects.append(CloseConn(conn.conn_id, CLOSE_POLICY, "too many refused messages"))
        return effects

    def _rate_limited(self, conn: Connection, now: float) -> list[Effect]:
        self.metrics.errors[Reason.RATE_LIMITED.value] += 1
        conn.refused_in_a_row += 1
        effects: list[Effect] = []
        if now - conn.rate_error_sent_at >= 1.0:  # one error a second, not one per dropped frame
            conn.rate_error_sent_at = now
            effects.append(SendConn(conn.conn_id, wire.Error(
                Reason.RATE_LIMITED,
                f"more than {self.config.rate_per_s:g} messages/s: messages are being dropped",
            )))
        if conn.refused_in_a_row >= self.config.flood_close_after:
            conn.closing = True
            effects.append(CloseConn(conn.conn_id, CLOSE_POLICY, "message flood"))
        return effects
