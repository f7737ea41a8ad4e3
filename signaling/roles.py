"""Roles and the permission matrix: who may do what in a room (docs/protocol.md, "Roles")."""

from __future__ import annotations

import enum


class Role(str, enum.Enum):
    """A participant's role, named in its access token (`speaker` only by promotion)."""

    HOST = "host"  # inviting doctor or presenter; moderates
    EXPERT = "expert"  # invited expert; publishes and receives
    VIEWER = "viewer"  # receive only; may raise a hand
    SPEAKER = "speaker"  # a viewer promoted to speak (broadcast)
    MONITOR = "monitor"  # bedside device: waveforms only
    SUPERVISOR = "supervisor"  # quality control: receive only, silent


class Action(str, enum.Enum):
    """Everything the permission matrix decides."""

    PUBLISH_AUDIO = "publish_audio"
    PUBLISH_VIDEO = "publish_video"
    PUBLISH_WAVEFORMS = "publish_waveforms"
    SUBSCRIBE = "subscribe"
    RAISE_HAND = "raise_hand"
    MODERATE = "moderate"  # mute, remove, promote/demote, end the room
    RECORD = "record"  # start/stop recording
    CHAT = "chat"  # send text messages (supervisors stay silent, devices have nothing to say)


_A = Action
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.HOST: frozenset(
        {_A.PUBLISH_AUDIO, _A.PUBLISH_VIDEO, _A.PUBLISH_WAVEFORMS, _A.SUBSCRIBE, _A.MODERATE, _A.RECORD, _A.CHAT}
    ),
    Role.EXPERT: frozenset({_A.PUBLISH_AUDIO, _A.PUBLISH_VIDEO, _A.SUBSCRIBE, _A.RAISE_HAND, _A.CHAT}),
    Role.VIEWER: frozenset({_A.SUBSCRIBE, _A.RAISE_HAND, _A.CHAT}),
    Role.SPEAKER: frozenset({_A.PUBLISH_AUDIO, _A.PUBLISH_VIDEO, _A.SUBSCRIBE, _A.RAISE_HAND, _A.CHAT}),
    Role.MONITOR: frozenset({_A.PUBLISH_WAVEFORMS}),
    Role.SUPERVISOR: frozenset({_A.SUBSCRIBE}),
}

# Roles a token may carry; `speaker` is reached only by a moderator's promotion.
TOKEN_ROLES: frozenset[Role] = frozenset(set(Role) - {Role.SPEAKER})


def allowed(role: Role, action: Action) -> bool:
    """Whether `role` may perform `action`."""
    return action in PERMISSIONS[role]


def permissions(role: Role) -> tuple[str, ...]:
    """The actions of `role`, sorted, as sent to the client in `joined`."""
    return tuple(sorted(a.value for a in PERMISSIONS[role]))


def publish_action(kind: str) -> Action:
    """The action that publishing media of `kind` ("audio"/"video") needs."""
    return Action.PUBLISH_AUDIO if kind == "audio" else Action.PUBLISH_VIDEO
