"""One node's membership of the cluster: heartbeats, the registry cache, routing joins, room state.

The node heartbeats its record and load every `heartbeat_s` (the record expires after `ttl_s`),
re-asserts the rooms it hosts (after a Redis restart that lost them) and writes the state of
rooms that changed. When Redis cannot be reached the node stays up: it keeps its own rooms and
answers joins for rooms elsewhere with `ClusterUnavailable` until a heartbeat gets through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.config import ClusterConfig
from cluster.directory import Directory
from cluster.journal import WaveformJournal
from cluster.placement import Local, Place, Redirect, Route, Unavailable, route_join
from cluster.records import NodeInfo, NodeLoad, RoomState

__all__ = ["ClusterConfig", "ClusterNode", "ClusterUnavailable", "Decision"]

log = logging.getLogger("medstream.cluster")

REASSERT_EVERY = 30  # heartbeats: a backstop re-assertion of every room (a key evicted alone)
# how long a room's owner, read once, answers redirects here without asking Redis again. Rooms move
# only when their node dies (its record leaves the registry: the entry is dropped at once) or when
# a room ended and was opened again elsewhere (its client then takes one more redirect)
OWNER_CACHE_S = 30.0


class ClusterUnavailable(Exception):
    """Redis cannot be reached: only rooms hosted here can be served."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a join: serve here or redirect. `take_over`: the directory gives the room
    to this node but it is not here (its node died, or this node restarted): replay its waveform
    journal and, with its `state`, recreate it before the hub sees the join."""

    route: Local | Redirect
    state: RoomState | None = None
    take_over: bool = False


Snapshot = Callable[[str], RoomState | None]


class ClusterNode:
    """This node in the cluster. `load()`: its load now; `hosted()`: ids of its rooms;
    `snapshot(room_id)`: a room's state (None once it has ended)."""

    def __init__(self, config: ClusterConfig, *, load: Callable[[], NodeLoad], hosted: Callable[[], Iterable[str]],
                 snapshot: Snapshot, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.secret = config.secret.encode()
        self.redis: Redis = Redis.from_url(config.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                           health_check_interval=0)
        self.directory = Directory(self.redis, self.secret, config.prefix)
        self.journal = WaveformJournal(self.redis, self.secret, config.prefix)
        self._load = load
        self._hosted = hosted
        self._snapshot = snapshot
        self.clock = clock
        self.available = False
        self.draining = False
        self.nodes: dict[str, NodeInfo] = {}
        self._placed: dict[str, int] = {}  # rooms this node placed per target since its last heartbeat
        # room -> (owner, until): joins for a room elsewhere cost one Redis read per OWNER_CACHE_S,
        # not one each; a stale entry (the room moved) costs its client one more redirect
        self._owners: dict[str, tuple[str, float]] = {}
        self._dirty: set[str] = set()
        self._fresh: set[str] = set()  # rooms opened here the directory may not have yet
        # after Redis came back (or lost its data): until then, a room's owner without a record may
        # only not have heartbeated yet, so nobody is declared dead (and its rooms taken) before
        self._settled_at = 0.0
        self._ended: set[str] = set()
        self._state_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._cpu = (time.process_time(), time.monotonic())
        self._cpu_last = 0.0
        self.heartbeats = 0

    @property
    def node_id(self) -> str:
        return self.config.node_id

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Register (raises RedisError if Redis cannot be reached at start) and start the loops."""
        self._cpu = (time.process_time(), time.monotonic())  # the start-up's imports are no load
        await self._beat()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat_loop()), loop.create_task(self._state_loop())]
        self.journal.start()
        log.info("cluster node %s (%s) joined %d live node(s)", self.node_id, self.config.url, len(self.nodes))

    async def stop(self) -> None:
        """Leave: flush room state, drop the registry record (rooms stay claimed until they end or
        are taken over), close Redis."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self.journal.close()
        with contextlib.suppress(RedisError, OSError):
            await self._flush_states()
            await self.directory.forget_node(self.node_id)
        await self.redis.aclose()

    # ------------------------------------------------------------------ heartbeats

    def _cpu_share(self) -> float:
        """CPU seconds per second over the last heartbeat or more (shorter spans are noise)."""
        cpu, wall = time.process_time(), time.monotonic()
        cpu0, wall0 = self._cpu
        if wall - wall0 >= 0.5:
            self._cpu = (cpu, wall)
            self._cpu_last = round((cpu - cpu0) / (wall - wall0), 3)
        return self._cpu_last

    def info(self) -> NodeInfo:
        return NodeInfo(self.node_id, self.config.url, self.clock(), self._load_with_cpu(), self.draining)

    def _load_with_cpu(self) -> NodeLoad:
        load = self._load()
        return NodeLoad(load.participants, load.rooms, load.forwarded_streams, self._cpu_share())

    async def _beat(self) -> None:
        lost = await self.directory.heartbeat(self.info(), self.config.ttl_s)
        self.nodes = await self.directory.nodes()
        self._placed.clear()
        reasserted: list[str] = []
        if lost or not self.available or self.heartbeats % REASSERT_EVERY == 0:
            fresh, self._fresh = self._fresh, set()
            reasserted = await self.directory.assert_rooms(self.node_id, self._hosted())
            reasserted = [r for r in reasserted if r not in fresh]  # new rooms are no loss
        if reasserted:
            log.warning("re-asserted %d room(s) the directory had lost: %s", len(reasserted), reasserted[:10])
        if self.heartbeats and (lost or not self.available):
            self._settled_at = time.monotonic() + self.config.ttl_s
        if not self.available or reasserted:
            if not self.available and self.heartbeats:
                log.warning("Redis is reachable again: cluster work resumes")
            self._dirty.update(self._hosted() if not self.available else reasserted)
            self._state_wake.set()
        self.journal.resume()  # Redis answers: journal again (idempotent)
        self.available = True
        self.heartbeats += 1

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                if self.available:
                    log.error("Redis unreachable (%s): serving this node's rooms only, refusing "
                              "joins for rooms elsewhere until it is back", exc)
                self.available = False  # (the journal decides for itself when to stop holding acks)
            except Exception:
                log.exception("cluster heartbeat failed")

    # ------------------------------------------------------------------ room state

    def room_started(self, room_id: str) -> None:
        """A room opened here (by a join, the admin API, configuration): claimed with its first
        state write if nobody claimed it already (SET NX: never taken from another node)."""
        self._fresh.add(room_id)
        self.room_changed(room_id)

    def room_changed(self, room_id: str) -> None:
        """The room's participants, roles, tracks or recording changed: write its state soon."""
        self._dirty.add(room_id)
        self._state_wake.set()

    def room_ended(self, room_id: str) -> None:
        self._ended.add(room_id)
        self._dirty.discard(room_id)
        self._state_wake.set()

    async def _state_loop(self) -> None:
        while True:
            await self._state_wake.wait()
            self._state_wake.clear()
            if not self.available:
                continue  # the next successful heartbeat marks everything dirty again
            try:
                await self._flush_states()
            except (RedisError, OSError) as exc:
                log.warning("room state not written (Redis: %s); retried after the next heartbeat", exc)
            await asyncio.sleep(self.config.state_flush_s)  # coalesce a burst of joins into one write

    async def _flush_states(self) -> None:
        fresh, self._fresh = self._fresh, set()
        if fresh:  # rooms opened here (admin API, configuration): in the directory before their state
            hosted = set(self._hosted())
            try:
                await self.directory.assert_rooms(self.node_id, [r for r in fresh if r in hosted])
            except BaseException:
                self._fresh |= fresh
                raise
        dirty, self._dirty = self._dirty, set()
        ended, self._ended = self._ended, set()
        states = [s for r in dirty if (s := self._snapshot(r)) is not None]
        try:
            if states:
                await self.directory.put_states(states)
            for room in ended:
                if await self.directory.release(room, self.node_id):
                    await self.journal.drop(room)
        except BaseException:
            self._dirty |= dirty
            self._ended |= ended
            raise

    # ------------------------------------------------------------------ routing

    def live_nodes(self) -> list[NodeInfo]:
        """The nodes of the last registry read (this one always among them)."""
        return list(self._with_self(self.nodes).values())

    def _with_self(self, nodes: dict[str, NodeInfo]) -> dict[str, NodeInfo]:
        return {**nodes, self.node_id: self.info_cached()}

    def info_cached(self) -> NodeInfo:
        mine = self.nodes.get(self.node_id)
        return NodeInfo(self.node_id, self.config.url, self.clock(), mine.load if mine else NodeLoad(), self.draining)

    def _remember(self, room_id: str, owner_id: str) -> None:
        if len(self._owners) > 100_000:
            self._owners.clear()
        self._owners[room_id] = (owner_id, time.monotonic() + OWNER_CACHE_S)

    async def route(self, room_id: str, *, hosted_here: bool, may_create: bool) -> Decision:
        """Where a verified join for `room_id` goes. Raises ClusterUnavailable when Redis cannot
        be reached (unless the room is hosted here) or no live node can take the room."""
        if hosted_here:
            return Decision(Local())
        if not self.available:
            raise ClusterUnavailable("the cluster directory (Redis) is unreachable")
        cached = self._owners.get(room_id)
        if cached is not None:
            owner_id, until = cached
            info = self.nodes.get(owner_id)
            if until > time.monotonic() and info is not None and owner_id != self.node_id:
                return Decision(Redirect(owner_id, info.url))
            del self._owners[room_id]
        try:
            for _ in range(3):  # a lost compare-and-set race: read again
                owner = await self.directory.owner(room_id)
                nodes = self._with_self(self.nodes)
                if owner is not None and owner not in nodes:
                    # newer than our last heartbeat, or gone: a fresh read decides (its record expired)
                    nodes = self._with_self(await self.directory.nodes())
                    if owner not in nodes and time.monotonic() < self._settled_at:
                        raise ClusterUnavailable("the cluster is settling after a Redis outage")
                state = None
                if owner is None or owner not in nodes or owner == self.node_id:
                    state = await self.directory.state(room_id)
                route: Route = route_join(self_id=self.node_id, hosted_here=False, owner=owner, nodes=nodes,
                                          may_open=may_create or state is not None, placed=self._placed)
                match route:
                    case Local():
                        mine = owner == self.node_id
                        return Decision(Local(), state if mine else None, take_over=mine)
                    case Redirect(node_id=owner_id):
                        self._remember(room_id, owner_id)
                        return Decision(route)
                    case Unavailable():
                        raise ClusterUnavailable("no live node can take this room")
                    case Place(node=target, previous=previous):
                        if not await self.directory.claim(room_id, target.node_id, previous):
                            continue
                        self._placed[target.node_id] = self._placed.get(target.node_id, 0) + 1
                        if previous is not None:
                            log.warning("room %s: its node %s is gone, placed on %s", room_id, previous,
                                        target.node_id)
                        if target.node_id == self.node_id:
                            return Decision(Local(takeover=previous is not None), state, take_over=True)
                        self._remember(room_id, target.node_id)
                        return Decision(Redirect(target.node_id, target.url))
            raise ClusterUnavailable("the room's placement keeps changing: try again")
        except (RedisError, OSError) as exc:
            self.available = False
            raise ClusterUnavailable(f"the cluster directory (Redis) is unreachable: {exc}") from None
