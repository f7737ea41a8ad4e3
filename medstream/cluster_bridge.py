"""The node in a cluster: joins routed to the room's node, room state in Redis, the waveform journal.

Only with `--redis`. Before a connection's first `join` reaches the hub, `gate` verifies its
token and asks `cluster.node` where the room lives: here (the hub takes it as a single node
would), on another node (the client gets `redirect` to that node's own address and nothing
else: no room state, no other room), or nowhere alive (placed by load; a room whose node died
is recreated here and its waveform journal replayed into the relay). See docs/cluster.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from redis.exceptions import RedisError

from cluster.config import ClusterConfig
from cluster.node import ClusterNode, ClusterUnavailable
from cluster.placement import Redirect
from cluster.records import MemberState, NodeLoad, RoomState, TrackState
from medstream.openapi import Operation
from protocol import signaling as wire
from protocol.signaling import Reason, WireError
from signaling import effects as fx
from signaling import events as ev
from signaling.roles import Role
from signaling.tokens import unverified_room, verify_token

if TYPE_CHECKING:
    from medstream.app import MedstreamApp

log = logging.getLogger("medstream.cluster")


class ClusterBridge:
    """Wires one `MedstreamApp` into the cluster described by `config`."""

    def __init__(self, app: MedstreamApp, config: ClusterConfig) -> None:
        self.app = app
        self.hub = app.hub
        self.node = ClusterNode(config, load=self._load, hosted=self._hosted, snapshot=self.snapshot)
        self.redirects = 0
        self.takeovers = 0
        self._takeovers: dict[str, asyncio.Future[None]] = {}  # rooms being taken over now
        app.http.before_join = self.gate  # until registered, only rooms hosted here are served
        app.http.origin_of_peer = self.is_node_origin

    # ------------------------------------------------------------------ lifecycle

    async def start(self, own_url: str) -> None:
        """Register in the cluster as `own_url` (unless the config names an address to advertise)
        and claim the rooms opened by configuration (a room another node already hosts is left
        to it)."""
        if not self.node.config.url:
            self.node.config = dataclasses.replace(self.node.config, url=own_url)
        await self.node.start()
        for room in list(self.hub.store.rooms()):
            owner = await self.node.directory.owner(room.room_id)
            if owner == self.node.node_id:
                continue
            if owner is not None and owner in self.node.nodes:
                log.info("configured room %s is hosted by node %s: not opened here", room.room_id, owner)
                self.hub.store.discard(room.room_id)
            elif not await self.node.directory.claim(room.room_id, self.node.node_id, owner):
                log.info("configured room %s was claimed by another node meanwhile: not opened here", room.room_id)
                self.hub.store.discard(room.room_id)
        self.app.observers.append(self._observe)
        for room in self.hub.store.rooms():
            self.node.room_changed(room.room_id)
        if self.app.waveform_bridge is not None:
            self.app.waveform_bridge.journal = self.node.journal.append

    async def stop(self) -> None:
        await self.node.stop()

    def draining(self) -> None:
        self.node.draining = True  # placement stops choosing this node at its next heartbeat

    def is_node_origin(self, origin: str) -> bool:
        """Is `origin` (a browser's) the web address of a live node of this cluster? A page
        loaded from one node is redirected to another, whose Origin check must let it in."""
        origin = origin.lower()
        for n in self.node.live_nodes():
            scheme, _, rest = n.url.partition("://")
            web_origin = f"{'https' if scheme == 'wss' else 'http'}://{rest.split('/', 1)[0]}".lower()
            if origin == web_origin:
                return True
        return False

    # ------------------------------------------------------------------ joins

    async def gate(self, conn_id: str, text: str) -> bool:
        """Before the hub sees a not-yet-joined connection's frame: True if the cluster answered
        it (redirect, or cluster_unavailable), False to let the hub take it."""
        if '"join"' not in text:
            return False
        try:
            msg = wire.decode_client_message(text)
            if not isinstance(msg, wire.Join):
                return False
            claimed = unverified_room(msg.token)
            if claimed is None or self.hub.store.get(claimed) is not None:
                return False  # hosted here (or unreadable): the hub verifies, as a single node does
            # only a verified token learns anything of the cluster (even which node hosts a room)
            grant = verify_token(self.hub.keys, msg.token, time.time(), self.hub.config.token_leeway_s)
        except WireError:
            return False  # the hub refuses it with the reason, as a single node would
        room_id = grant.room
        try:
            decision = await self.node.route(
                room_id, hosted_here=self.hub.store.get(room_id) is not None,
                may_create=grant.role is Role.HOST and grant.room_kind is not None)
        except ClusterUnavailable as exc:
            log.warning("join for room %s refused: %s", room_id, exc)
            self.app.driver.apply([fx.SendConn(conn_id, wire.Error(
                Reason.CLUSTER_UNAVAILABLE, f"room {room_id!r} is not on this server and {exc}: try again shortly",
                msg.id))])
            return True
        if isinstance(decision.route, Redirect):
            self.redirects += 1
            self.app.driver.apply([fx.SendConn(conn_id, wire.Redirect(decision.route.url, room_id, msg.id))])
            return True
        if decision.take_over and (self.hub.store.get(room_id) is None or room_id in self._takeovers):
            try:
                await self._take_over(room_id, decision.state)
            except (RedisError, OSError) as exc:
                log.warning("room %s not taken over: %s", room_id, exc)
                self.app.driver.apply([fx.SendConn(conn_id, wire.Error(
                    Reason.CLUSTER_UNAVAILABLE, f"room {room_id!r} is moving to this server and the cluster cannot "
                                                "be reached: try again shortly", msg.id))])
                return True
        return False

    async def _take_over(self, room_id: str, state: RoomState | None) -> None:
        """A room the directory gives this node but that is not here: replay its waveform journal
        into the relay first, then recreate it from its state (without state, e.g. a room its
        dead node had not written yet, the host's join opens it). The room appears only once its
        streams are what they were, so no monitor that comes back meanwhile is taken for a new
        stream; joins arriving during the replay wait for it."""
        pending = self._takeovers.get(room_id)
        if pending is not None:
            await asyncio.shield(pending)
            return
        done = self._takeovers[room_id] = asyncio.get_running_loop().create_future()
        try:
            await self._replay(room_id)
            if state is not None and self.hub.store.get(state.room_id) is None:
                self.takeovers += 1
                room = self.hub.create_room(state.room_id, state.kind, time.time(), persistent=state.persistent)
                log.warning("room %s (%s) taken over from node %s: %d participant(s) there to come back",
                            state.room_id, state.kind, state.node_id, len(state.participants))
                self.app.driver.apply(room.started_events())
                self.node.room_changed(state.room_id)
        finally:
            del self._takeovers[room_id]
            done.set_result(None)

    async def _replay(self, room_id: str) -> None:
        relay = self.app.waveforms
        if relay is not None and self.app.waveform_bridge is not None:
            entries = await self.node.journal.replay(room_id)
            publishers = set()
            for e in entries:
                relay.set_publisher_identity(room_id, e.publisher_id, e.identity)
                relay.on_publisher_frame(room_id, e.publisher_id, e.frame)
                publishers.add(e.publisher_id)
            for pid in publishers:  # their monitors come back under new participant ids
                relay.publisher_disconnected(room_id, pid)
            if entries:
                log.info("room %s: replayed %d journaled waveform frame(s)", room_id, len(entries))

    # ------------------------------------------------------------------ state

    def _load(self) -> NodeLoad:
        media = self.app.media
        rooms = list(self.hub.store.rooms())
        return NodeLoad(participants=sum(len(r.participants) for r in rooms), rooms=len(rooms),
                        forwarded_streams=len(media.tracks()) if media is not None else 0)

    def _hosted(self) -> list[str]:
        return [r.room_id for r in self.hub.store.rooms()]

    def snapshot(self, room_id: str) -> RoomState | None:
        room = self.hub.store.get(room_id)
        if room is None or room.ended:
            return None
        return RoomState(
            room_id, room.kind.value, self.node.node_id, room.persistent, room.recording,
            tuple(MemberState(p.participant_id, p.identity, p.name, p.role.value, p.connected)
                  for p in room.participants.values()),
            tuple(TrackState(t.track_id, t.participant_id, t.kind, t.source) for t in room.tracks.values()),
            time.time(),
        )

    def _observe(self, event: ev.RoomEvent) -> None:
        match event:
            case ev.RoomEnded(room_id=room):
                self.node.room_ended(room)
            case ev.ChatSent():
                pass
            case _:
                self.node.room_changed(event.room_id)

    # ------------------------------------------------------------------ HTTP: any node answers for any room

    def install(self, route: Callable[..., None]) -> None:
        route("GET", "/cluster/v1/nodes", self._nodes, Operation(
            "the cluster's live nodes and their load", "cluster", "apiKey"))
        route("GET", "/cluster/v1/rooms/{room_id}", self._room, Operation(
            "a room's node, participants, roles, tracks and recording, from any node", "cluster", "apiKey",
            responses={200: "the room", 404: "no such room in the cluster", 503: "Redis unreachable"}))

    def _authorised(self, request: web.Request) -> bool:
        key = self.app.config.api_key
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return key is not None and hmac.compare_digest(given.encode(), key.encode())

    async def _nodes(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.json_response({"error": "the cluster API needs the admin API key"}, status=401)
        return web.json_response({"self": self.node.node_id, "available": self.node.available,
                                  "nodes": [n.to_json() for n in self.node.live_nodes()]})

    async def _room(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return web.json_response({"error": "the cluster API needs the admin API key"}, status=401)
        room_id = request.match_info["room_id"]
        local = self.snapshot(room_id)
        try:
            state = local or await self.node.directory.state(room_id)
        except Exception as exc:
            return web.json_response({"error": f"Redis unreachable: {exc}"}, status=503)
        if state is None:
            return web.json_response({"error": f"no room {room_id!r} in the cluster"}, status=404)
        return web.json_response(state.to_json())
