"""The Redis edge: node registry, room directory, room state. Every call may raise
`redis.exceptions.RedisError` (the node decides what losing Redis means; see `cluster.node`).

Keys (prefix `ms:` by default):
  {p}nodes                 set of node ids ever registered (members without a live record are gone)
  {p}node:{id}             sealed NodeInfo, expires `ttl_s` after the last heartbeat
  {p}room:{room}:node      id of the node hosting the room (claimed with compare-and-set)
  {p}room:{room}:state     sealed RoomState
  {p}rooms                 set of room ids with a directory entry
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.asyncio import Redis

from cluster.records import NodeInfo, RoomState, SealError, as_bytes, as_text, seal_json, unseal_json

log = logging.getLogger("medstream.cluster")

# claim KEYS[1] for ARGV[1] if it is unset (ARGV[2] == "") or still held by ARGV[2]
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[2] == '') or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
return 0
"""
# release KEYS[1] (and the state KEYS[2]) only if ARGV[1] still holds it
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 1
end
return 0
"""


class Directory:
    """Node registry + room directory + room state in one Redis, sealed with the cluster secret."""

    def __init__(self, redis: Redis, secret: bytes, prefix: str = "ms:") -> None:
        self.redis = redis
        self.secret = secret
        self.p = prefix
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    # ------------------------------------------------------------------ nodes

    async def heartbeat(self, node: NodeInfo, ttl_s: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.p}node:{node.node_id}", seal_json(self.secret, node.to_json()), px=int(ttl_s * 1000))
            pipe.sadd(f"{self.p}nodes", node.node_id)
            await pipe.execute()

    async def forget_node(self, node_id: str) -> None:
        await self.redis.delete(f"{self.p}node:{node_id}")

    async def nodes(self) -> dict[str, NodeInfo]:
        """Every node with a live record (a record that fails its seal is skipped, loudly)."""
        ids = sorted(as_text(m) for m in await self.redis.smembers(f"{self.p}nodes"))
        if not ids:
            return {}
        values = await self.redis.mget([f"{self.p}node:{i}" for i in ids])
        out: dict[str, NodeInfo] = {}
        gone = []
        for node_id, raw in zip(ids, values):
            if raw is None:
                gone.append(node_id)
                continue
            try:
                info = NodeInfo.from_json(unseal_json(self.secret, as_bytes(raw)))
            except (SealError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the registry record of node %r: %s", node_id, exc)
                continue
            out[info.node_id] = info
        return out

    # ------------------------------------------------------------------ rooms

    async def owner(self, room_id: str) -> str | None:
        raw = await self.redis.get(f"{self.p}room:{room_id}:node")
        return as_text(raw) if raw is not None else None

    async def claim(self, room_id: str, node_id: str, previous: str | None) -> bool:
        """Make `node_id` the room's host if the directory still says `previous` (None: unset)."""
        done = await self._claim(keys=[f"{self.p}room:{room_id}:node", f"{self.p}rooms"],
                                 args=[node_id, previous or "", room_id])
        return bool(done)

    async def assert_rooms(self, node_id: str, room_ids: Iterable[str]) -> list[str]:
        """After Redis lost its data (a restart without persistence): set this node as the host of
        each of its rooms where the directory has no host; returns the rooms it had to re-assert."""
        rooms = list(room_ids)
        if not rooms:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.set(f"{self.p}room:{room}:node", node_id, nx=True)
                pipe.sadd(f"{self.p}rooms", room)
            results = await pipe.execute()
        return [room for room, done in zip(rooms, results[0::2]) if done]

    async def release(self, room_id: str, node_id: str) -> bool:
        """The room ended on `node_id`: drop its directory entry and state (if still its host)."""
        return bool(await self._release(
            keys=[f"{self.p}room:{room_id}:node", f"{self.p}room:{room_id}:state", f"{self.p}rooms"],
            args=[node_id, room_id]))

    async def put_states(self, states: Iterable[RoomState]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in states:
                pipe.set(f"{self.p}room:{s.room_id}:state", seal_json(self.secret, s.to_json()))
            await pipe.execute()

    async def state(self, room_id: str) -> RoomState | None:
        raw = await self.redis.get(f"{self.p}room:{room_id}:state")
        if raw is None:
            return None
        try:
            return RoomState.from_json(unseal_json(self.secret, as_bytes(raw)))
        except (SealError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the state of room %r: %s", room_id, exc)
            return None

    async def room_ids(self) -> list[str]:
        return sorted(as_text(m) for m in await self.redis.smembers(f"{self.p}rooms"))
