"""One session (a consultation, a broadcast or a monitoring ward) as a plain state machine.

A `Room` takes what its participants ask (`handle`), what the media layer reports
(`track_published`, `track_ended`) and what the connection layer reports (`disconnect`,
`expire`), and returns `Effect`s for the driver. It never touches a socket, so every rule
(permissions, presence, resume, promotion, recording) is tested without one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from protocol import signaling as wire
from protocol.signaling import ROOM_KINDS, Reason, RoomKind, WireError
from signaling import events as ev
from signaling.booking import Booking
from signaling.effects import (
    Audit,
    ClosePeer,
    Departed,
    Effect,
    Kick,
    MuteTrack,
    OpenPeer,
    PauseVideo,
    RemoteAnswer,
    RemoteCandidate,
    RequestPublish,
    RoomClosed,
    Send,
    StartRecorder,
    StopPublishing,
    StopRecorder,
    SubscribeTracks,
    UnsubscribeTracks,
    WaveformGroupClosed,
    WaveformPublisher,
    WaveformPublisherGone,
    WaveformViewer,
)
from signaling.roles import Action, Role, allowed, publish_action
from signaling.turn import TurnRest

POLICY = "policy"  # who started a recording that the room's policy started
# reasons a participant is taken out while its socket may still be open: it gets `bye` and a close
KICK_REASONS = frozenset({"removed", "room_ended", "replaced", "token_expired"})


@dataclass(frozen=True)
class SessionTerms:
    """What every `joined` tells a client about its session (from the hub's config)."""

    resume_grace_s: float = 20.0
    heartbeat_s: float = 10.0
    ice_servers: tuple[wire.IceServerInfo, ...] = ()
    turn: TurnRest | None = None  # per-participant TURN credentials, added to ice_servers

    def ice_servers_for(self, participant_id: str, now: float) -> tuple[wire.IceServerInfo, ...]:
        """What this participant's `joined` lists: the static servers and its own TURN credentials."""
        if self.turn is None:
            return self.ice_servers
        return (*self.ice_servers, self.turn.ice_server(participant_id, now))


@dataclass
class Participant:
    """A member of a room, connected or within its resume grace period."""

    participant_id: str
    identity: str
    name: str
    role: Role
    token_role: Role  # what a demotion returns to
    resume_key: str
    hand_raised: bool = False
    connected: bool = True
    disconnected_at: float | None = None
    media_open: bool = False
    video_paused: bool = False
    declined: set[str] = field(default_factory=set)  # tracks explicitly unsubscribed
    token_id: str = ""  # the `jti` of the token it joined (or last refreshed) with
    session_ends_at: float = float("inf")  # token exp + leeway: removed with `token_expired` then
    warned: bool = False  # `token_expiring` sent for the current token

    def info(self) -> wire.ParticipantInfo:
        return wire.ParticipantInfo(
            participant_id=self.participant_id,
            identity=self.identity,
            name=self.name,
            role=self.role.value,
            hand_raised=self.hand_raised,
            connected=self.connected,
        )

    def may(self, action: Action) -> bool:
        return allowed(self.role, action)


@dataclass
class Track:
    """A published audio or video track, as the media layer announced it."""

    track_id: str
    participant_id: str
    kind: str
    codec: str
    muted: bool = False
    source: str = "camera"  # microphone, camera, screen

    @property
    def slot(self) -> str:
        """What the publisher names it in publish/unpublish: audio, video or screen."""
        return "screen" if self.source == "screen" else self.kind

    def info(self) -> wire.TrackInfo:
        return wire.TrackInfo(self.track_id, self.participant_id, self.kind, self.codec, self.muted, self.source)


class Room:
    """Participants, tracks, hands, recording and presence of one session."""

    def __init__(
        self,
        room_id: str,
        kind: str | RoomKind,
        *,
        max_participants: int,
        created_at: float,
        persistent: bool = False,
        terms: SessionTerms | None = None,
    ) -> None:
        if kind not in ROOM_KINDS:
            raise ValueError(f"room kind must be one of {ROOM_KINDS}, got {kind!r}")
        self.room_id = room_id
        self.kind = RoomKind(kind)
        self.max_participants = max_participants
        self.created_at = created_at
        self.persistent = persistent  # configured rooms outlive their last participant
        self.terms = terms or SessionTerms()
        self.participants: dict[str, Participant] = {}
        self.tracks: dict[str, Track] = {}
        self.recording_by: str | None = None
        self.recording = False
        self.ended = False
        self.barred: dict[str, str] = {}  # identity -> who removed it; barred for the room's life
        self._chat_count = 0
        # set by the platform (signaling.admin): booked window, recording policy, its own labels
        self.booking: Booking | None = None
        self.recording_policy = "default"  # default | auto | manual | off (signaling.admin)
        self.metadata: dict[str, str] = {}

    # ------------------------------------------------------------------ queries

    def info(self) -> wire.RoomInfo:
        return wire.RoomInfo(self.room_id, self.kind, self.recording)

    def connected_ids(self, exclude: str | None = None) -> tuple[str, ...]:
        return tuple(
            pid for pid, p in self.participants.items() if p.connected and pid != exclude
        )

    def is_audience(self, p: Participant) -> bool:
        """Receive-only members whose presence only moderators see: a hall of 500 students does
        not need 500 x 500 join notices, and quality-control supervisors stay in the background."""
        return p.role is Role.SUPERVISOR or (self.kind is RoomKind.BROADCAST and p.role is Role.VIEWER)

    def presence_recipients(self, p: Participant) -> tuple[str, ...]:
        """Who is told about `p` joining, leaving, reconnecting or raising a hand."""
        if not self.is_audience(p):
            return self.connected_ids(exclude=p.participant_id)
        return tuple(
            pid for pid, q in self.participants.items()
            if q.connected and pid != p.participant_id and q.may(Action.MODERATE)
        )

    def find_by_resume(self, identity: str, resume_key: str) -> Participant | None:
        key = resume_key.encode("utf-8", "replace")  # compare_digest refuses non-ASCII str
        for p in self.participants.values():
            if p.identity == identity and secrets.compare_digest(p.resume_key.encode(), key):
                return p
        return None

    def find_by_identity(self, identity: str) -> Participant | None:
        """The participant (connected or within its grace period) joined as `identity`."""
        for p in self.participants.values():
            if p.identity == identity:
                return p
        return None

    @property
    def empty(self) -> bool:
        return not self.participants

    # ------------------------------------------------------------------ join / leave

    def join(
        self,
        participant_id: str,
        identity: str,
        name: str,
        role: Role,
        *,
        media: bool,
        request_id: wire.RequestId,
        now: float = 0.0,
    ) -> list[Effect]:
        """Admit a new participant; raises WireError(ROOM_FULL/ROOM_ENDED/ROOM_NOT_OPEN)."""
        if self.ended:
            raise WireError(Reason.ROOM_ENDED, f"room {self.room_id!r} has ended", request_id)
        if identity in self.barred:
            raise WireError(
                Reason.REMOVED,
                f"{identity!r} was removed from room {self.room_id!r}; only a moderator can readmit",
                request_id,
            )
        if self.booking is not None and not self.booking.admits(now):
            raise WireError(Reason.ROOM_NOT_OPEN, self.booking.refusal(now), request_id)
        if len(self.participants) >= self.max_participants:
            raise WireError(
                Reason.ROOM_FULL,
                f"room {self.room_id!r} is full ({self.max_participants} participants)",
                request_id,
            )
        p = Participant(
            participant_id=participant_id,
            identity=identity,
            name=name,
            role=role,
            token_role=role,
            resume_key=secrets.token_urlsafe(24),
        )
        self.participants[participant_id] = p
        effects: list[Effect] = [
            self._joined(p, request_id, resumed=False, now=now),
            Send(self.presence_recipients(p), wire.ParticipantJoined(p.info())),
            Audit("join", self.room_id, identity, role.value, {"participant_id": participant_id}),
            self._joined_event(p),
        ]
        if p.may(Action.SUBSCRIBE):
            effects.append(WaveformViewer(self.room_id, participant_id, add=True))
        if p.may(Action.PUBLISH_WAVEFORMS):
            effects.insert(0, WaveformPublisher(self.room_id, participant_id, identity))
        if media:
            effects += self._open_media(p)
        return effects

    def resume(
        self,
        p: Participant,
        *,
        request_id: wire.RequestId,
        now: float = 0.0,
    ) -> list[Effect]:
        """Re-attach a participant that came back within its grace period: no ghost, same id."""
        p.connected = True
        p.disconnected_at = None
        p.resume_key = secrets.token_urlsafe(24)
        return [
            *([WaveformPublisher(self.room_id, p.participant_id, p.identity)]
              if p.may(Action.PUBLISH_WAVEFORMS) else []),
            self._joined(p, request_id, resumed=True, now=now),
            Send(self.presence_recipients(p), wire.ParticipantUpdated(p.info())),
            Audit("resume", self.room_id, p.identity, p.role.value, {"participant_id": p.participant_id}),
        ]

    def _joined_event(self, p: Participant) -> ev.ParticipantJoined:
        return ev.ParticipantJoined(self.room_id, p.participant_id, p.identity, p.name, p.role.value)

    def _track_event(self, t: Track) -> ev.TrackPublished:
        return ev.TrackPublished(self.room_id, t.track_id, t.participant_id, t.kind, t.codec, t.source)

    def _start_recorder(self, by: str) -> StartRecorder:
        return StartRecorder(
            self.room_id, by, self.kind.value,
            tuple(self._joined_event(q) for q in self.participants.values()),
            tuple(self._track_event(t) for t in self.tracks.values()),
        )

    def _joined(self, p: Participant, request_id: wire.RequestId, *, resumed: bool, now: float = 0.0) -> Send:
        sees_all = p.may(Action.MODERATE)
        others = tuple(
            o.info() for o in self.participants.values()
            if o is not p and (sees_all or not self.is_audience(o))
        )
        return Send(
            (p.participant_id,),
            wire.Joined(
                participant=p.info(),
                room=self.info(),
                participants=others,
                tracks=tuple(t.info() for t in self.tracks.values()),
                resume=p.resume_key,
                resume_grace_s=self.terms.resume_grace_s,
                ice_servers=self.terms.ice_servers_for(p.participant_id, now),
                permissions=tuple(sorted(a.value for a in Action if p.may(a))),
                heartbeat_s=self.terms.heartbeat_s,
                resumed=resumed,
                id=request_id,
            ),
        )

    def disconnect(self, participant_id: str, now: float) -> list[Effect]:
        """The socket dropped without `leave`: keep the participant for its grace period."""
        p = self.participants.get(participant_id)
        if p is None or not p.connected:
            return []
        p.connected = False
        p.disconnected_at = now
        return [Send(self.presence_recipients(p), wire.ParticipantUpdated(p.info()))]

    def expired(self, now: float, grace_s: float) -> list[str]:
        """Participants whose grace period is over (to be removed with reason `timeout`)."""
        return [
            pid
            for pid, p in self.participants.items()
            if not p.connected and p.disconnected_at is not None and now - p.disconnected_at >= grace_s
        ]

    def remove(self, participant_id: str, reason: str) -> list[Effect]:
        """Take a participant out for good: release its media, tracks and subscriptions."""
        p = self.participants.pop(participant_id, None)
        if p is None:
            return []
        effects: list[Effect] = []
        if reason in KICK_REASONS:
            effects.append(Kick(participant_id, reason))
        if p.media_open:
            effects.append(ClosePeer(participant_id))
        for track in [t for t in self.tracks.values() if t.participant_id == participant_id]:
            del self.tracks[track.track_id]
            effects.append(Send(self.connected_ids(), wire.TrackUnpublished(track.track_id)))
            effects.append(ev.TrackUnpublished(self.room_id, track.track_id))
        if p.may(Action.SUBSCRIBE):
            effects.append(WaveformViewer(self.room_id, participant_id, add=False))
        if p.may(Action.PUBLISH_WAVEFORMS):
            effects.append(WaveformPublisherGone(self.room_id, participant_id))
        effects.append(Send(self.presence_recipients(p), wire.ParticipantLeft(participant_id, reason)))
        effects.append(
            Audit("leave", self.room_id, p.identity, p.role.value, {"participant_id": participant_id, "reason": reason})
        )
        effects.append(ev.ParticipantLeft(self.room_id, participant_id, p.identity, reason))
        effects.append(Departed(participant_id))
        if self.recording and self.recording_by == participant_id:
            self.recording_by = None  # recording goes on; the manifest keeps who started it
        return effects

    def end(self, reason: str, by: Participant | None, *, keep_open: bool | None = None) -> list[Effect]:
        """End the session for everyone; the hub closes their connections afterwards. A standing
        room (`persistent`) stays open unless `keep_open` is False (the admin API deletes it)."""
        if self.ended:
            return []
        self.ended = True
        effects: list[Effect] = [Send(self.connected_ids(), wire.RoomEnded(reason))]
        if self.recording:
            effects += self._stop_recording(by)
        for pid in list(self.participants):
            effects += [e for e in self.remove(pid, "room_ended") if not isinstance(e, Send)]
        effects.append(WaveformGroupClosed(self.room_id))
        effects.append(ev.RoomEnded(self.room_id, reason))
        if self.persistent if keep_open is None else keep_open:
            # A standing room (a ward opened by configuration): the session ends and everyone is
            # out, but the room stays open for its monitors to come back to.
            self.ended = False
            self.tracks.clear()
        else:
            effects.append(RoomClosed(self.room_id))
        effects.append(
            Audit(
                "room_ended",
                self.room_id,
                by.identity if by else None,
                by.role.value if by else None,
                {"reason": reason},
            )
        )
        return effects

    # ------------------------------------------------------------------ chat

    def chat(self, participant_id: str, msg: wire.Chat, now: float) -> list[Effect]:
        """A text message: to everyone who takes part; in a broadcast an audience member's goes to
        the moderators (and back to the asker) only. The audit notes that a message was sent,
        never its text; observers keep the text only where the room is recorded."""
        p = self.participants[participant_id]
        self._require(p, Action.CHAT, msg)
        self._chat_count += 1
        message_id = f"m{self._chat_count}"
        question = self.is_audience(p)
        if question:
            to = tuple(q for q, o in self.participants.items()
                       if o.connected and (o.may(Action.MODERATE) or q == participant_id))
        else:
            to = tuple(q for q, o in self.participants.items()
                       if o.connected and (o.may(Action.SUBSCRIBE) or o.may(Action.CHAT)))
        text = msg.text.strip()
        return [
            Send(to, wire.ChatMessage(message_id, participant_id, p.name, p.role.value, text, now, question)),
            Audit("message_sent", self.room_id, p.identity, p.role.value,
                  {"participant_id": participant_id, "message_id": message_id, "chars": len(text),
                   "to_moderators": question}),
            ev.ChatSent(self.room_id, message_id, participant_id, p.identity, p.name, p.role.value, text, now,
                        question),
            _ok(p, msg),
        ]

    # ------------------------------------------------------------------ requests

    def handle(self, participant_id: str, msg: wire.ClientMessage) -> list[Effect]:
        """Apply one request from a joined participant; raises WireError on refusal."""
        p = self.participants[participant_id]
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            raise WireError(Reason.BAD_MESSAGE, f"{msg.TYPE} is not valid after join", msg.id)
        return handler(self, p, msg)

    def _require(self, p: Participant, action: Action, msg: wire.ClientMessage) -> None:
        if not p.may(action):
            raise WireError(
                Reason.FORBIDDEN,
                f"role {p.role.value!r} may not {action.value.replace('_', ' ')} ({msg.TYPE})",
                msg.id,
            )

    def _target(self, msg: wire.Promote | wire.Demote | wire.Mute | wire.Remove) -> Participant:
        target = self.participants.get(msg.participant_id)
        if target is None:
            raise WireError(
                Reason.UNKNOWN_PARTICIPANT, f"no participant {msg.participant_id!r} in this room", msg.id
            )
        return target

    def _raise_hand(self, p: Participant, msg: wire.RaiseHand) -> list[Effect]:
        self._require(p, Action.RAISE_HAND, msg)
        p.hand_raised = msg.raised
        to = (p.participant_id, *self.presence_recipients(p))
        return [Send(to, wire.ParticipantUpdated(p.info())), _ok(p, msg)]

    def _promote(self, p: Participant, msg: wire.Promote) -> list[Effect]:
        self._require(p, Action.MODERATE, msg)
        target = self._target(msg)
        if target.role is not Role.VIEWER:
            raise WireError(
                Reason.FORBIDDEN, f"only viewers can be promoted; {target.name} is {target.role.value}", msg.id
            )
        return self._set_role(p, target, Role.SPEAKER, msg)

    def _demote(self, p: Participant, msg: wire.Demote) -> list[Effect]:
        self._require(p, Action.MODERATE, msg)
        target = self._target(msg)
        if target.role is not Role.SPEAKER:
            raise WireError(
                Reason.FORBIDDEN, f"only speakers can be demoted; {target.name} is {target.role.value}", msg.id
            )
        effects = self._set_role(p, target, target.token_role, msg)
        for track in [t for t in self.tracks.values() if t.participant_id == target.participant_id]:
            effects.insert(0, StopPublishing(target.participant_id, track.slot))
        return effects

    def _set_role(
        self, p: Participant, target: Participant, role: Role, msg: wire.ClientMessage
    ) -> list[Effect]:
        old = target.role
        target.role = role
        target.hand_raised = False
        return [
            Send(self.connected_ids(), wire.ParticipantUpdated(target.info())),
            Audit(
                "role_changed",
                self.room_id,
                target.identity,
                role.value,
                {"participant_id": target.participant_id, "from": old.value, "by": p.identity},
            ),
            ev.RoleChanged(self.room_id, target.participant_id, target.identity, target.name, role.value),
            _ok(p, msg),
        ]

    def _mute(self, p: Participant, msg: wire.Mute) -> list[Effect]:
        self._require(p, Action.MODERATE, msg)
        target = self._target(msg)
        tracks = [
            t for t in self.tracks.values() if t.participant_id == target.participant_id and t.kind == msg.kind
        ]
        if not tracks:
            raise WireError(
                Reason.UNKNOWN_TRACK, f"{target.name} publishes no {msg.kind} track", msg.id
            )
        effects: list[Effect] = []
        for t in tracks:
            t.muted = msg.muted
            effects += [MuteTrack(t.track_id, msg.muted), Send(self.connected_ids(), wire.TrackUpdated(t.info()))]
        effects.append(
            Audit("muted" if msg.muted else "unmuted", self.room_id, target.identity, target.role.value,
                  {"kind": msg.kind, "by": p.identity})
        )
        effects.append(_ok(p, msg))
        return effects

    def _remove(self, p: Participant, msg: wire.Remove) -> list[Effect]:
        self._require(p, Action.MODERATE, msg)
        target = self._target(msg)
        if target is p:
            raise WireError(Reason.FORBIDDEN, "a moderator cannot remove itself: leave instead", msg.id)
        self.barred[target.identity] = p.identity
        return [
            _ok(p, msg),
            Audit("removed", self.room_id, target.identity, target.role.value,
                  {"participant_id": target.participant_id, "by": p.identity}),
            *self.remove(target.participant_id, "removed"),
        ]

    def _readmit(self, p: Participant, msg: wire.Readmit) -> list[Effect]:
        self._require(p, Action.MODERATE, msg)
        if self.barred.pop(msg.identity, None) is None:
            raise WireError(Reason.UNKNOWN_PARTICIPANT, f"{msg.identity[:128]!r} is not barred from this room", msg.id)
        return [_ok(p, msg), Audit("readmitted", self.room_id, msg.identity, None, {"by": p.identity})]

    def _end_room(self, p: Participant, msg: wire.EndRoom) -> list[Effect]:
        self._require(p, Action.MODERATE, msg)
        return self.end("ended_by_host", p)

    def _start_recording(self, p: Participant, msg: wire.StartRecording) -> list[Effect]:
        self._require(p, Action.RECORD, msg)
        if self.recording_policy == "off":
            raise WireError(Reason.FORBIDDEN, "this room was booked without recording", msg.id)
        if self.recording:
            raise WireError(Reason.RECORDING_ACTIVE, "this room is already being recorded", msg.id)
        self.recording = True
        self.recording_by = p.participant_id
        return [  # announce first: a recorder that fails at once then announces the stop after it
            Send(self.connected_ids(), wire.Recording(True, p.participant_id)),
            self._start_recorder(p.participant_id),
            ev.RecordingStarted(self.room_id, p.participant_id),
            Audit("recording_started", self.room_id, p.identity, p.role.value),
            _ok(p, msg),
        ]

    def record_by_policy(self, by: str = POLICY) -> list[Effect]:
        """Start recording because the room's policy (or the platform, `by="api"`) says so, not a person."""
        if self.recording:
            return []
        self.recording = True
        self.recording_by = None
        return [
            Send(self.connected_ids(), wire.Recording(True, None)),
            self._start_recorder(by),
            ev.RecordingStarted(self.room_id, by),
            Audit("recording_started", self.room_id, details={"by": by}),
        ]

    def stop_recording_by(self, who: str) -> list[Effect]:
        """Stop recording on the platform's request (`who`, e.g. "api"), not a participant's."""
        if not self.recording:
            return []
        self.recording = False
        self.recording_by = None
        return [
            StopRecorder(self.room_id, who),
            ev.RecordingStopped(self.room_id, who),
            Send(self.connected_ids(), wire.Recording(False, None)),
            Audit("recording_stopped", self.room_id, details={"by": who}),
        ]

    def started_events(self) -> list[Effect]:
        """The room exists now: tell observers (webhooks: room_started)."""
        return [ev.RoomStarted(self.room_id, self.kind.value, dict(self.metadata))]

    def _stop_recording_request(self, p: Participant, msg: wire.StopRecording) -> list[Effect]:
        self._require(p, Action.RECORD, msg)
        if not self.recording:
            raise WireError(Reason.RECORDING_INACTIVE, "this room is not being recorded", msg.id)
        return [*self._stop_recording(p), _ok(p, msg)]

    def _stop_recording(self, by: Participant | None) -> list[Effect]:
        self.recording = False
        self.recording_by = None
        return [
            StopRecorder(self.room_id, by.participant_id if by else None),
            ev.RecordingStopped(self.room_id, by.participant_id if by else None),
            Send(self.connected_ids(), wire.Recording(False, None)),
            Audit("recording_stopped", self.room_id, by.identity if by else None, by.role.value if by else None),
        ]

    def recording_failed(self, reason: str) -> list[Effect]:
        """The recorder gave up (e.g. disk full): tell everyone it is off; alarm the moderators."""
        if not self.recording:
            return []
        self.recording = False
        self.recording_by = None
        moderators = tuple(pid for pid, q in self.participants.items() if q.connected and q.may(Action.MODERATE))
        return [
            Send(self.connected_ids(), wire.Recording(False, None)),
            Send(moderators, wire.Error(Reason.RECORDING_FAILED, f"recording stopped: {reason}")),
            Audit("recording_failed", self.room_id, details={"reason": reason}),
            ev.RecordingStopped(self.room_id, None, "failed"),
        ]

    def _publish(self, p: Participant, msg: wire.Publish) -> list[Effect]:
        kinds = frozenset(k for k, on in (("audio", msg.audio), ("video", msg.video), ("screen", msg.screen)) if on)
        if not kinds:
            raise WireError(Reason.BAD_MESSAGE, "publish: set audio, video and/or screen to true", msg.id)
        for kind in sorted(kinds):
            self._require(p, publish_action("video" if kind == "screen" else kind), msg)
        effects = [] if p.media_open else self._open_media(p)
        return [*effects, RequestPublish(p.participant_id, kinds), _ok(p, msg)]

    def _unpublish(self, p: Participant, msg: wire.Unpublish) -> list[Effect]:
        if not any(t.participant_id == p.participant_id and t.slot == msg.kind for t in self.tracks.values()):
            raise WireError(Reason.UNKNOWN_TRACK, f"you publish no {msg.kind} track", msg.id)
        return [StopPublishing(p.participant_id, msg.kind), _ok(p, msg)]

    def _subscribe(self, p: Participant, msg: wire.Subscribe) -> list[Effect]:
        self._require(p, Action.SUBSCRIBE, msg)
        self._known_tracks(msg.track_ids, msg)
        p.declined -= set(msg.track_ids)
        effects = [] if p.media_open else self._open_media(p)
        ids = tuple(t for t in msg.track_ids if self.tracks[t].participant_id != p.participant_id)
        return [*effects, SubscribeTracks(p.participant_id, ids), _ok(p, msg)]

    def _unsubscribe(self, p: Participant, msg: wire.Unsubscribe) -> list[Effect]:
        self._known_tracks(msg.track_ids, msg)
        p.declined |= set(msg.track_ids)
        return [UnsubscribeTracks(p.participant_id, tuple(msg.track_ids)), _ok(p, msg)]

    def _known_tracks(self, track_ids: Iterable[str], msg: wire.ClientMessage) -> None:
        unknown = [t for t in track_ids if t not in self.tracks]
        if unknown:
            raise WireError(Reason.UNKNOWN_TRACK, f"no such track(s): {', '.join(unknown[:5])}", msg.id)

    def _set_video_paused(self, p: Participant, msg: wire.SetVideoPaused) -> list[Effect]:
        self._require(p, Action.SUBSCRIBE, msg)
        p.video_paused = msg.paused
        return [PauseVideo(p.participant_id, msg.paused), _ok(p, msg)]

    def _sdp(self, p: Participant, msg: wire.Sdp) -> list[Effect]:
        if msg.sdp_type != "answer":
            raise WireError(
                Reason.INVALID_SDP, "the server always offers: send an answer, got an offer", msg.id
            )
        if not p.media_open:
            raise WireError(Reason.MEDIA_NOT_STARTED, "no media session: publish or subscribe first", msg.id)
        return [RemoteAnswer(p.participant_id, msg.sdp, msg.id)]

    def _candidate(self, p: Participant, msg: wire.Candidate) -> list[Effect]:
        if not p.media_open:
            raise WireError(Reason.MEDIA_NOT_STARTED, "no media session: publish or subscribe first", msg.id)
        return [RemoteCandidate(p.participant_id, msg.candidate, msg.sdp_mid, msg.sdp_mline_index)]

    # ------------------------------------------------------------------ media layer reports

    def _open_media(self, p: Participant) -> list[Effect]:
        p.media_open = True
        effects: list[Effect] = [OpenPeer(p.participant_id)]
        if p.may(Action.SUBSCRIBE):
            ids = tuple(t for t, track in self.tracks.items() if track.participant_id != p.participant_id)
            if ids:
                effects.append(SubscribeTracks(p.participant_id, ids))
            if p.video_paused:
                effects.append(PauseVideo(p.participant_id, True))
        return effects

    def media_closed(self, participant_id: str) -> None:
        """The participant's peer connection failed or closed: a new publish/subscribe reopens it."""
        p = self.participants.get(participant_id)
        if p is not None:
            p.media_open = False

    def track_published(self, participant_id: str, track_id: str, kind: str, codec: str,
                        source: str = "camera") -> list[Effect]:
        """A publisher's track started: announce it and subscribe everyone who receives media."""
        if participant_id not in self.participants:
            return []
        track = Track(track_id, participant_id, kind, codec, source=source)
        self.tracks[track_id] = track
        effects: list[Effect] = [Send(self.connected_ids(), wire.TrackPublished(track.info())), self._track_event(track)]
        for pid, q in self.participants.items():
            if pid != participant_id and q.media_open and q.may(Action.SUBSCRIBE) and track_id not in q.declined:
                effects.append(SubscribeTracks(pid, (track_id,)))
        return effects

    def track_ended(self, track_id: str) -> list[Effect]:
        if self.tracks.pop(track_id, None) is None:
            return []
        for q in self.participants.values():
            q.declined.discard(track_id)
        return [Send(self.connected_ids(), wire.TrackUnpublished(track_id)), ev.TrackUnpublished(self.room_id, track_id)]


def _ok(p: Participant, msg: wire.ClientMessage) -> Send:
    return Send((p.participant_id,), wire.Ok(id=msg.id))


_HANDLERS: dict[type, Callable[[Room, Participant, Any], list[Effect]]] = {
    wire.RaiseHand: Room._raise_hand,
    wire.Promote: Room._promote,
    wire.Demote: Room._demote,
    wire.Mute: Room._mute,
    wire.Remove: Room._remove,
    wire.Readmit: Room._readmit,
    wire.EndRoom: Room._end_room,
    wire.StartRecording: Room._start_recording,
    wire.StopRecording: Room._stop_recording_request,
    wire.Publish: Room._publish,
    wire.Unpublish: Room._unpublish,
    wire.Subscribe: Room._subscribe,
    wire.Unsubscribe: Room._unsubscribe,
    wire.SetVideoPaused: Room._set_video_paused,
    wire.Sdp: Room._sdp,
    wire.Candidate: Room._candidate,
}
