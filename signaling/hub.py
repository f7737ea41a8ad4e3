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
from signaling.room import Participant, Room, SessionTerms
from signaling.state import InMemoryRoomStore, RoomStore
from signaling.tokens import Grant, KeyRing, verify_token
from signaling.turn import TurnRest

log = logging.getLogger("medstream.signaling")



@dataclass(frozen=True)
class SignalingConfig:
    """Limits and timings of the signaling service (units in the names)."""

    secret: str
    previous_secret: str | None = None  # accepted for tokens signed before a rotation
    secret_kid: str = "k1"  # the current key's id (`kid` in tokens' headers)
    previous_kid: str = "k0"
    max_message_bytes: int = 64 * 1024  # larger text frames get an error; the socket stays
    max_frame_bytes: int = 1024 * 1024  # larger frames close the socket (1009), enforced by the driver
    rate_per_s: float = 30.0  # text messages per second, sustained
    rate_burst: int = 60
    binary_rate_per_s: float = 400.0  # waveform frames per second, sustained
    binary_rate_burst: int = 2000  # a monitor back-filling sends a burst
    chat_per_s: float = 1.0  # chat messages per second per connection, sustained
    chat_burst: int = 5
    flood_close_after: int = 200  # refused messages in a row before the socket is closed
    max_participants_per_room: int = 1000
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 45.0  # clients ping every heartbeat_s; websockets pings catch dead links sooner
    heartbeat_s: float = 10.0
    resume_grace_s: float = 20.0
    token_leeway_s: float = 30.0
    token_warning_s: float = 120.0  # `token_expiring` this long before the session's token runs out
    token_join_burst: int = 20  # joins with one token (reloads, resumes, takeovers) at once ...
    token_join_rate_per_s: float = 0.5  # ... and sustained
    max_connections: int = 8192  # websockets open at once (the HTTP edge also caps by descriptors)
    max_connections_per_address: int = 512  # a hospital's NAT puts many staff behind one address
    max_pending: int = 1024  # connections open but not joined yet (unfinished handshakes)
    max_pending_per_address: int = 256  # a lecture hall behind one NAT joins at once
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
    chat_bucket: TokenBucket
    participant_id: str | None = None
    refused_in_a_row: int = 0
    rate_error_sent_at: float = -1e9
    closing: bool = False
    address: str | None = None
    pending: bool = True  # has not joined yet (counts against the handshake caps)


@dataclass
class Metrics:
    """Counters for /metrics."""

    messages_in: Counter[str] = field(default_factory=Counter)  # by message type
    errors: Counter[str] = field(default_factory=Counter)  # by reason
    joins: int = 0
    resumes: int = 0
    connections_opened: int = 0
    connections_refused: int = 0
    connections_evicted: int = 0  # unjoined connections closed to make room (pending cap)
    takeovers: int = 0
    expiries: int = 0
    refreshes: int = 0


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


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
        self.keys = KeyRing.of(config.secret, config.secret_kid) if config.previous_secret is None else KeyRing(
            KeyRing.of(config.secret, config.secret_kid).current,
            KeyRing.of(config.previous_secret, config.previous_kid).current,
        )
        self._per_address: Counter[str] = Counter()
        self._pending_per_address: Counter[str] = Counter()
        self._pending = 0
        self._conn_cap = config.max_connections
        self._pending_cap = config.max_pending
        self._token_joins: dict[str, TokenBucket] = {}
        self._pending_audit: list[Effect] = []

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
        """End a room from outside (the admin API): everyone is told and closed, it is discarded
        (standing rooms too: a host's `end_room` keeps those open)."""
        room = self.store.get(room_id)
        return self._finish(room.end(reason, None, keep_open=False)) if room is not None else []

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

    def set_descriptor_cap(self, sockets: int) -> None:
        """The HTTP edge can hold at most `sockets` websockets (its descriptor limit): connections
        are capped there, and connections not yet joined at half of it, so stalled handshakes can
        never take the places of people who joined."""
        self._conn_cap = min(self.config.max_connections, sockets)
        self._pending_cap = min(self.config.max_pending, max(1, sockets // 2))

    def admit(self, address: str | None) -> tuple[str | None, list[Effect]]:
        """May a new connection from `address` open? (None, effects) if so, else (why not, [])
        for an HTTP 503 before the websocket upgrade: a refused connection costs no state.

        When the unjoined connections are at their cap, the oldest one of the address that has
        the most is closed to make room (the effects), rather than the newcomer refused: a flood
        of stalled handshakes from a few addresses cannot keep a doctor from another one out."""
        c = self.config
        why = None
        if len(self.connections) >= self._conn_cap:
            why = f"server full ({self._conn_cap} connections)"
        elif address is not None and self._per_address[address] >= c.max_connections_per_address:
            why = f"too many connections from your address ({c.max_connections_per_address})"
        elif address is not None and self._pending_per_address[address] >= c.max_pending_per_address:
            why = f"too many connections from your address not joined yet ({c.max_pending_per_address})"
        if why is not None:
            self.metrics.connections_refused += 1
            return why, []
        effects: list[Effect] = []
        if self._pending >= self._pending_cap and (victim := self._eviction_victim(address)) is not None:
            victim.closing = True
            self._not_pending(victim)
            self.metrics.connections_evicted += 1
            effects.append(CloseConn(victim.conn_id, CLOSE_POLICY, "too many connections waiting to join", abort=True))
        elif self._pending >= self._pending_cap:
            self.metrics.connections_refused += 1
            return f"too many connections not joined yet ({self._pending_cap})", []
        return None, effects

    def _eviction_victim(self, newcomer: str | None) -> Connection | None:
        heaviest = max(self._pending_per_address, key=self._pending_per_address.__getitem__, default=None)
        if heaviest is None or (heaviest == newcomer and self._pending_per_address[heaviest] <= 1):
            return next((k for k in self.connections.values() if k.pending and not k.closing), None)
        return next((k for k in self.connections.values()  # oldest first (insertion order)
                     if k.pending and not k.closing and k.address == heaviest), None)

    def connect(self, now: float, address: str | None = None) -> str:
        """A socket opened; returns its connection id."""
        conn_id = f"c{next(self._ids)}"
        self.connections[conn_id] = Connection(
            conn_id,
            opened_at=now,
            last_seen=now,
            text_bucket=TokenBucket(self.config.rate_per_s, self.config.rate_burst, now),
            binary_bucket=TokenBucket(self.config.binary_rate_per_s, self.config.binary_rate_burst, now),
            chat_bucket=TokenBucket(self.config.chat_per_s, self.config.chat_burst, now),
            address=address,
        )
        self._pending += 1
        if address is not None:
            self._per_address[address] += 1
            self._pending_per_address[address] += 1
        self.metrics.connections_opened += 1
        return conn_id

    def _not_pending(self, conn: Connection) -> None:
        if conn.pending:
            conn.pending = False
            self._pending -= 1
            if conn.address is not None:
                _decrement(self._pending_per_address, conn.address)

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
        except Exception as exc:  # our bug: one line (no traceback a flood could multiply), a reply
            log.error("internal error on a message from %s: %s: %s", conn_id, type(exc).__name__, str(exc)[:200])
            return self._refuse(conn, WireError(Reason.INTERNAL, "the server failed on this message"), now)
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
        if conn is None:
            return []
        self._not_pending(conn)
        if conn.address is not None:
            _decrement(self._per_address, conn.address)
        if conn.participant_id is None:
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
            effects += self._token_deadlines(room, now)
            if room.empty and not room.persistent and not room.ended:
                effects += room.end("empty", None)
            elif room.booking is not None and room.booking.over(now) and not room.ended:
                effects += room.end("booking_over", None, keep_open=False)  # the booked slot is over
        if len(self._token_joins) > 1024:  # forget tokens whose bucket has refilled
            full = [k for k, b in self._token_joins.items()
                    if b.tokens + (now - b.updated) * b.rate_per_s >= b.burst]
            for k in full:
                del self._token_joins[k]
        return self._finish(effects)

    def _token_deadlines(self, room: Room, now: float) -> list[Effect]:
        """Expiry during the session: `token_expiring` once, `token_warning_s` before the token
        (plus leeway) runs out, then `bye` with reason `token_expired`."""
        effects: list[Effect] = []
        for p in list(room.participants.values()):
            if now >= p.session_ends_at:
                self.metrics.expiries += 1
                effects.append(Audit("token_expired", room.room_id, p.identity, p.role.value,
                                     {"participant_id": p.participant_id, "token_id": p.token_id}))
                effects += room.remove(p.participant_id, "token_expired")
            elif not p.warned and p.connected and now >= p.session_ends_at - self.config.token_warning_s:
                p.warned = True
                effects.append(Send((p.participant_id,), wire.TokenExpiring(
                    expires_at=p.session_ends_at, seconds_left=round(p.session_ends_at - now, 3))))
        return effects

    # ------------------------------------------------------------------ media-layer reports

    def track_published(self, participant_id: str, track_id: str, kind: str, codec: str,
                        source: str = "camera") -> list[Effect]:
        room = self.store.room_of(participant_id)
        return self._finish(room.track_published(participant_id, track_id, kind, codec, source)) if room else []

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
        if isinstance(msg, wire.RefreshToken):
            return self._refresh(room, room.participants[pid], msg, now)
        if isinstance(msg, wire.Chat):
            if not conn.chat_bucket.take(now):
                raise WireError(Reason.RATE_LIMITED, f"at most {self.config.chat_per_s:g} chat messages a second", msg.id)
            return room.chat(pid, msg, now)
        return room.handle(pid, msg)

    def _refresh(self, room: Room, p: Participant, msg: wire.RefreshToken, now: float) -> list[Effect]:
        """A newer token for the same identity, room and role extends the session (the booking
        system extended the slot); anything else is refused and the session keeps its old end."""
        try:
            grant = verify_token(self.keys, msg.token, now, self.config.token_leeway_s)
        except WireError as err:
            raise WireError(err.reason, f"refresh refused: {err.message}", msg.id) from None
        if (grant.identity, grant.room, grant.role) != (p.identity, room.room_id, p.token_role):
            raise WireError(
                Reason.INVALID_TOKEN,
                "refresh refused: the new token must name the same identity, room and role",
                msg.id,
            )
        self._set_token(p, grant)
        self.metrics.refreshes += 1
        return [
            Send((p.participant_id,), wire.TokenRefreshed(expires_at=p.session_ends_at, id=msg.id)),
            Audit("token_refreshed", room.room_id, p.identity, p.role.value,
                  {"participant_id": p.participant_id, "token_id": grant.token_id, "kid": grant.kid,
                   "session_ends_at": p.session_ends_at}),
        ]

    def _set_token(self, p: Participant, grant: Grant) -> None:
        p.token_id = grant.token_id
        p.session_ends_at = grant.expires + self.config.token_leeway_s
        p.warned = False

    def _join(self, conn: Connection, msg: wire.Join, now: float) -> list[Effect]:
        if conn.participant_id is not None:
            raise WireError(Reason.ALREADY_JOINED, "this connection has joined already", msg.id)
        grant: Grant | None = None
        try:
            grant = verify_token(self.keys, msg.token, now, self.config.token_leeway_s)
            bucket = self._token_joins.get(grant.token_id)
            if bucket is None:
                bucket = self._token_joins[grant.token_id] = TokenBucket(
                    self.config.token_join_rate_per_s, self.config.token_join_burst, now)
            if not bucket.take(now):
                raise WireError(Reason.RATE_LIMITED, "this token has joined too often: wait a few seconds")
            effects = self._admit(conn, msg, grant, now)
        except WireError as err:
            # Refused joins are audited (supervision wants failed attempts too), never the token.
            self._audit_refusal(conn, grant, err)
            raise WireError(err.reason, err.message, msg.id) from None
        self._not_pending(conn)
        return effects

    def _audit_refusal(self, conn: Connection, grant: Grant | None, err: WireError) -> None:
        room = grant.room if grant is not None else ""
        details: dict[str, object] = {"reason": err.reason.value, "address": conn.address}
        if grant is not None:
            details["token_id"] = grant.token_id
        self._pending_audit.append(Audit("join_refused", room, grant.identity if grant else None,
                                         grant.role.value if grant else None, details))

    def _admit(self, conn: Connection, msg: wire.Join, grant: Grant, now: float) -> list[Effect]:
        room = self.store.get(grant.room)
        if room is not None and grant.identity in room.barred:
            raise WireError(
                Reason.REMOVED,
                f"{grant.identity!r} was removed from room {grant.room!r}; only a moderator can readmit",
            )
        if msg.resume is not None:
            return self._resume(conn, msg, grant, room, now)
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
        # One live connection per identity per room: a second join (a reload, a second device, a
        # monitor back after a restart) takes over the first at once, so no ghost and no copy.
        old = room.find_by_identity(grant.identity)
        if old is not None:
            if room.ended:
                raise WireError(Reason.ROOM_ENDED, f"room {room.room_id!r} has ended", msg.id)
            self.metrics.takeovers += 1
            created += [
                Audit("takeover", room.room_id, grant.identity, grant.role.value,
                      {"participant_id": old.participant_id, "token_id": grant.token_id}),
                *room.remove(old.participant_id, "replaced"),
            ]
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
        self._set_token(room.participants[pid], grant)
        self.store.bind(pid, room.room_id)
        conn.participant_id = pid
        self.conn_of[pid] = conn.conn_id
        self.metrics.joins += 1
        return [*created, *effects]

    def _resume(self, conn: Connection, msg: wire.Join, grant: Grant, room: Room | None,
                now: float = 0.0) -> list[Effect]:
        p = room.find_by_resume(grant.identity, msg.resume or "") if room else None
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
        self._set_token(p, grant)  # the newest token the client holds decides the session's end
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
        """Turn room-level effects into connection-level ones and keep the indexes in step.

        A participant kicked in this batch loses its connection index here, before the driver
        sends anything: messages addressed to it earlier in the batch (`room_ended` before the
        `bye`) are bound to its connection now, so they still reach it, in order."""
        kicked = {e.participant_id: c for e in effects if isinstance(e, Kick)
                  and (c := self.conn_of.get(e.participant_id)) is not None}
        out: list[Effect] = []
        if self._pending_audit:
            out += self._pending_audit
            self._pending_audit.clear()
        for e in effects:
            if kicked and isinstance(e, Send) and any(pid in kicked for pid in e.to):
                out += [SendConn(kicked[pid], e.message) for pid in e.to if pid in kicked]
                rest = tuple(pid for pid in e.to if pid not in kicked)
                if rest:
                    out.append(Send(rest, e.message))
                continue
            if isinstance(e, Kick):
                conn_id = self.conn_of.pop(e.participant_id, None)
                self.store.unbind(e.participant_id)
                if conn_id is not None and conn_id in self.connections:
                    conn = self.connections[conn_id]
                    conn.participant_id = None
                    conn.closing = True
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
        log.info("refused %s from %s: %s", err.reason.value, conn.conn_id, err.message[:200])
        effects: list[Effect] = [*self._pending_audit,
                                 SendConn(conn.conn_id, wire.Error(err.reason, err.message, err.request_id))]
        self._pending_audit.clear()
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
