"""What nodes write to Redis, and the seal that proves a node with the cluster secret wrote it.

Every value a node reads back from Redis (a node's address, a room's owner, a waveform frame to
replay) is HMAC-SHA256-sealed with the shared cluster secret: whoever can write to Redis without
the secret cannot steer a client to an address of their choosing or inject samples.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_CLUSTER_SECRET_BYTES = 32


class SealError(ValueError):
    """A value in Redis that no node of this cluster sealed (wrong secret, tampered, truncated)."""


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


def seal(secret: bytes, body: bytes) -> bytes:
    """`body` with its 32-byte MAC in front."""
    return _mac(secret, body) + body


def unseal(secret: bytes, sealed: bytes) -> bytes:
    """The body of a sealed value; raises SealError if its MAC does not verify."""
    if len(sealed) < 32 or not hmac.compare_digest(sealed[:32], _mac(secret, sealed[32:])):
        raise SealError("value not sealed with this cluster's secret")
    return sealed[32:]


def as_bytes(value: object) -> bytes:
    """A Redis reply as bytes (the client runs with decode_responses off)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise SealError(f"expected bytes from Redis, got {type(value).__name__}")


def as_text(value: object) -> str:
    return as_bytes(value).decode()


def seal_json(secret: bytes, value: dict[str, Any]) -> bytes:
    return seal(secret, json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def unseal_json(secret: bytes, sealed: bytes) -> dict[str, Any]:
    out = json.loads(unseal(secret, sealed))
    if not isinstance(out, dict):
        raise SealError("sealed value is not an object")
    return out


def token_b64(secret: bytes, text: str) -> str:
    """A bearer value for node-to-node HTTP: base64(MAC(text)) (e.g. over the request path)."""
    return base64.urlsafe_b64encode(_mac(secret, text.encode())).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """A node's load as placement weighs it."""

    participants: int = 0
    rooms: int = 0
    forwarded_streams: int = 0  # tracks forwarded by its SFU
    cpu: float = 0.0  # share of one core this process used over the last heartbeat, 0-1+


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node as the registry holds it. `url`: the websocket address clients are redirected
    to (the node's own, not the load balancer's); `seen_at`: Unix seconds of its last heartbeat."""

    node_id: str
    url: str
    seen_at: float
    load: NodeLoad = field(default_factory=NodeLoad)
    draining: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NodeInfo:
        return cls(str(d["node_id"]), str(d["url"]), float(d["seen_at"]), NodeLoad(**d.get("load", {})),
                   bool(d.get("draining", False)))


@dataclass(frozen=True, slots=True)
class MemberState:
    participant_id: str
    identity: str
    name: str
    role: str
    connected: bool


@dataclass(frozen=True, slots=True)
class TrackState:
    track_id: str
    participant_id: str
    kind: str
    source: str


@dataclass(frozen=True, slots=True)
class RoomState:
    """A room as any node can answer for it: who is in it, in which role, what is published,
    whether it records, and which node hosts it."""

    room_id: str
    kind: str
    node_id: str
    persistent: bool
    recording: bool
    participants: tuple[MemberState, ...] = ()
    tracks: tuple[TrackState, ...] = ()
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every field, which cost a third of a join burst
        return {"room_id": self.room_id, "kind": self.kind, "node_id": self.node_id, "persistent": self.persistent,
                "recording": self.recording, "updated_at": self.updated_at,
                "participants": [{"participant_id": m.participant_id, "identity": m.identity, "name": m.name,
                                  "role": m.role, "connected": m.connected} for m in self.participants],
                "tracks": [{"track_id": t.track_id, "participant_id": t.participant_id, "kind": t.kind,
                            "source": t.source} for t in self.tracks]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoomState:
        return cls(
            str(d["room_id"]), str(d["kind"]), str(d["node_id"]), bool(d["persistent"]), bool(d["recording"]),
            tuple(MemberState(**m) for m in d.get("participants", ())),
            tuple(TrackState(**t) for t in d.get("tracks", ())),
            float(d.get("updated_at", 0.0)),
        )
