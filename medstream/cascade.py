"""Lecture cascade: a broadcast's viewers spread over nodes, each node receiving each track once.

Signaling stays on the room's node (the origin): every participant's websocket, the `Room` state
machine, raised hands, promotion, chat. Only media moves. When a lecture's viewers on the origin
reach the cluster's `cascade_share`, the media peer of the next viewer is opened on another node
(an edge): the origin's media bridge drives that peer over a node-to-node websocket
(`/cluster/v1/media`) instead of its own SFU, and the edge's SFU events (offers, tracks, failures)
come back over it to the origin's hub. A viewer's browser thus signals with the origin and sends
its ICE and media to the edge.

An SFU asked to forward a track it does not have pulls it once from the track's home node: it
opens an upstream peer connection (one recvonly m-line, WebRTC like any other) and POSTs its offer
to the home's `/cluster/v1/cascade`, which answers it as a subscriber (the WHEP path). The track is
then a producer on the edge under the same id, forwarded to every local viewer as is; their
keyframe requests go upstream as PLI (rate-limited at each hop). A promoted viewer publishes on
its edge; the origin and other edges pull its tracks from there the same way.

Every node-to-node request carries a credential only a holder of the cluster secret can mint
(`cluster.credentials`), naming the node it is for. See docs/cluster.md, "Lecture cascade".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from cluster.credentials import CredentialError, mint, verify
from cluster.placement import choose_node
from media_server import events as me
from media_server.events import MediaErrorReason, MediaRequestError
from media_server.frames import FrameSink
from medstream.openapi import Operation
from medstream.ops import NodeState
from protocol import signaling as wire
from protocol.signaling import RoomKind
from signaling.roles import Role

if TYPE_CHECKING:
    from cluster.node import ClusterNode
    from media_server.sfu import Sfu
    from medstream.app import MedstreamApp

log = logging.getLogger("medstream.cascade")

RECEIVERS = (Role.VIEWER, Role.SUPERVISOR)  # whose media may go to an edge
CALL_TIMEOUT_S = 20.0
PULL_ATTEMPTS = 4  # a pull that fails (a busy home, an upstream whose ICE/DTLS failed) is tried again
PULL_RETRY_S = 0.5  # doubling after each failed attempt
_EVENTS: dict[str, type] = {t.__name__: t for t in (me.OfferReady, me.CandidateReady, me.TrackPublished,
                                                      me.TrackEnded, me.PeerFailed, me.MediaError,
                                                      me.QualityReport)}


def _event_json(e: me.MediaEvent) -> dict[str, Any]:
    data = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(e).items()}
    return {"ev": type(e).__name__, "data": data}


def _event_from(msg: dict[str, Any]) -> me.MediaEvent:
    cls, data = _EVENTS[msg["ev"]], dict(msg["data"])
    if cls is me.MediaError:
        data["reason"] = MediaErrorReason(data["reason"])
    if cls is me.QualityReport:
        data["quality"] = me.PeerQuality(**data["quality"])
    return cls(**data)  # type: ignore[no-any-return]


def http_base(ws_url: str) -> str:
    """`ws://host:port/ws` -> `http://host:port` (a node's advertised address)."""
    scheme, _, rest = ws_url.partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest.split('/', 1)[0]}"


class _Link:
    """One websocket between two nodes: the origin sends requests, the edge replies and sends
    its SFU's events for the peers the origin opened there."""

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, node_id: str) -> None:
        self.ws = ws
        self.node_id = node_id
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._out: asyncio.Queue[str] = asyncio.Queue()  # one writer: messages leave in the order made
        self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await self.ws.send_str(await self._out.get())

    def send(self, msg: dict[str, Any]) -> None:
        if not self.ws.closed:
            self._out.put_nowait(json.dumps(msg))

    async def call(self, op: str, **args: Any) -> Any:
        n = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[n] = fut
        try:
            if self.ws.closed:
                raise ConnectionError("link closed")
            self.send({"id": n, "op": op, "args": args})
            return await asyncio.wait_for(fut, CALL_TIMEOUT_S)
        except (TimeoutError, ConnectionError) as exc:
            raise MediaRequestError(MediaErrorReason.INVALID_STATE, f"node {self.node_id}: {exc!r}") from None
        finally:
            self._waiting.pop(n, None)

    def notify(self, op: str, **args: Any) -> None:
        self.send({"op": op, "args": args})

    def send_event(self, e: me.MediaEvent) -> None:
        self.send(_event_json(e))

    def reply(self, msg: dict[str, Any]) -> None:
        fut = self._waiting.get(msg["re"])
        if fut is None or fut.done():
            return
        if "err" in msg:
            reason, message = msg["err"]
            fut.set_exception(MediaRequestError(MediaErrorReason(reason), message))
        else:
            fut.set_result(msg.get("ok"))

    def fail_all(self) -> None:
        self._writer.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(MediaRequestError(MediaErrorReason.INVALID_STATE, f"node {self.node_id} is gone"))


class Cascade:
    """This node's part in lecture cascades: as origin (media of its viewers placed on edges,
    their tracks pulled), as edge (peers driven by an origin) and as home of tracks others pull.

    `backend()` is the `MediaBackend` the node's media bridge drives; `on_sfu_event` is the SFU's
    callback (events of peers driven by an origin go back to it, the rest to the bridge)."""

    def __init__(self, app: MedstreamApp, node: ClusterNode) -> None:
        self.app = app
        self.hub = app.hub
        self.node = node
        self.share = node.config.cascade_share
        self.sfu: Sfu | None = None
        self._session: aiohttp.ClientSession | None = None
        # as origin
        self.placement: dict[str, str] = {}  # participant -> edge node carrying its media
        self.homes: dict[str, tuple[str, str, str]] = {}  # track -> (node, kind, publisher) of every track known
        self.links: dict[str, _Link] = {}  # edges this node drives
        self._linking: dict[str, asyncio.Future[_Link]] = {}
        self.avoid: dict[str, float] = {}  # node -> monotonic time until which no media is placed there
        # as edge
        self.driven: dict[str, _Link] = {}  # peer -> the origin's link that drives it
        # as any node
        self.upstreams: dict[str, tuple[str, str]] = {}  # track -> (upstream peer id, home node)
        self.sourced: dict[str, dict[str, str]] = {}  # track pulled here -> where from (until it ends at home)
        self.urls: dict[str, str] = {}  # node -> its last known http address (a late heartbeat is no reason to fail)
        self.repulls = 0
        self._pulls: dict[str, asyncio.Future[None]] = {}
        self.served: dict[str, set[str]] = {}  # track -> cascade peer ids sending it to other nodes
        # cascade peer id -> its lock: a re-pull that arrives while the previous one is still being
        # answered waits, instead of closing the peer under it (and being closed by its cleanup)
        self._serving: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def node_id(self) -> str:
        return self.node.node_id

    def backend(self, sfu: Sfu) -> _Routed:
        self.sfu = sfu
        return _Routed(self, sfu)

    async def close(self) -> None:
        for link in list(self.links.values()):
            await link.ws.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _credential(self, purpose: str, to: str) -> str:
        return "Cluster " + mint(self.node.secret, purpose=purpose, from_node=self.node_id, to_node=to, now=time.time())

    def _verify(self, request: web.Request, purpose: str) -> str | None:
        given = request.headers.get("Authorization", "").removeprefix("Cluster ").strip()
        try:
            return verify(self.node.secret, given, purpose=purpose, to_node=self.node_id, now=time.time())
        except CredentialError as exc:
            log.warning("refused a node-to-node %s request from %s: %s", purpose, request.remote, exc)
            return None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S))
        return self._session

    # ------------------------------------------------------------------ placement (origin)

    def place(self, pid: str) -> str | None:
        """The edge to carry `pid`'s media, or None (here): a lecture's viewers beyond this node's
        share go to the edges this room already uses until each has its share, then to the least
        loaded other node, and when every node has its share, to the room's least filled edge."""
        room = self.hub.store.room_of(pid)
        if room is None or room.kind is not RoomKind.BROADCAST:
            return None
        p = room.participants.get(pid)
        if p is None or p.role not in RECEIVERS:
            return None
        counts = Counter(self.placement.get(q, self.node_id) for q, other in room.participants.items()
                         if q != pid and other.media_open and other.role in RECEIVERS)
        if counts[self.node_id] < self.share:
            return None
        now = time.monotonic()
        live = {n.node_id: n for n in self.node.live_nodes()
                if n.node_id != self.node_id and not n.draining and self.avoid.get(n.node_id, 0.0) < now}
        used = sorted(n for n in live if counts[n] > 0)
        for n in used:
            if counts[n] < self.share:
                return n
        fresh = choose_node([live[n] for n in live if counts[n] == 0])
        if fresh is not None:
            return fresh.node_id
        return min(used, key=lambda n: (counts[n], n)) if used else None

    async def link(self, node_id: str) -> _Link:
        """The media link to `node_id`, opened on first use."""
        link = self.links.get(node_id)
        if link is not None and not link.ws.closed:
            return link
        pending = self._linking.get(node_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = self._linking[node_id] = asyncio.get_running_loop().create_future()
        try:
            info = next((n for n in self.node.live_nodes() if n.node_id == node_id), None)
            if info is None:
                raise MediaRequestError(MediaErrorReason.INVALID_STATE, f"node {node_id} is not live")
            self.urls[node_id] = http_base(info.url)
            url = self.urls[node_id].replace("http", "ws", 1) + "/cluster/v1/media"
            ws = await self._http().ws_connect(url, headers={"Authorization": self._credential("media", node_id)},
                                               heartbeat=5.0)
            link = self.links[node_id] = _Link(ws, node_id)
            self._spawn(self._read_edge(link))
            log.info("media link to node %s open", node_id)
            fut.set_result(link)
            return link
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it re-raised
            raise
        finally:
            del self._linking[node_id]

    async def _read_edge(self, link: _Link) -> None:
        ws = link.ws
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "re" in data:
                    link.reply(data)
                elif "ev" in data:
                    self._edge_event(link.node_id, _event_from(data))
        except Exception:
            log.exception("media link to node %s failed", link.node_id)
        finally:
            if self.links.get(link.node_id) is link:
                del self.links[link.node_id]
            link.fail_all()
            self._edge_lost(link.node_id)

    def _edge_event(self, node_id: str, e: me.MediaEvent) -> None:
        if not isinstance(e, me.CandidateReady | me.QualityReport):
            log.debug("node %s: %s of %s", node_id, type(e).__name__, e.peer_id)
        match e:
            case me.TrackPublished(peer_id=pid, track_id=t, kind=kind):
                self.homes[t] = (node_id, kind, pid)
            case me.TrackEnded(track_id=t):
                self._track_gone(t)
            case me.PeerFailed(peer_id=pid):
                self.placement.pop(pid, None)
        self.app.media_bridge.on_media_event(e)

    def _edge_lost(self, node_id: str) -> None:
        """The link to an edge closed (the node died or restarted): its viewers' media is lost
        (they are told, and restart it: a fresh join places it on a live node), tracks published
        there end, and nothing more is placed there for a while."""
        if self.app.readiness.state is NodeState.STOPPED:
            return
        self.avoid[node_id] = time.monotonic() + 2 * self.node.config.ttl_s
        lost = [pid for pid, n in self.placement.items() if n == node_id]
        if lost:
            log.warning("node %s lost: media of %d viewer(s) to restart elsewhere", node_id, len(lost))
        for t, (home, _, pid) in list(self.homes.items()):
            if home == node_id:
                self.app.media_bridge.on_media_event(me.TrackEnded(pid, t))
                self._track_gone(t)
        for pid in lost:
            del self.placement[pid]
            self.app.media_bridge.on_media_event(me.PeerFailed(pid, f"node {node_id} lost"))
            self.app.driver.apply(self.hub.to_participant(pid, wire.Error(
                wire.Reason.MEDIA_LOST, f"the server carrying your media ({node_id}) went away: restart media")))
        for t, peers in self.served.items():
            for peer in [p for p in peers if p.startswith(f"cascade~{node_id}~")]:
                self._close_served(t, peer)

    def _track_gone(self, t: str) -> None:
        """A track ended at its home: every node drops its copy and stops serving it."""
        self.homes.pop(t, None)
        for link in self.links.values():
            link.notify("drop_track", track_id=t)
        self._spawn(self._drop(t))

    # ------------------------------------------------------------------ SFU events (any node)

    def on_sfu_event(self, e: me.MediaEvent) -> None:
        pid = e.peer_id
        if pid.startswith("up~"):  # an upstream: its track ended or failed here
            if isinstance(e, me.PeerFailed):  # emitted before the SFU closes it: its subscribers are still known
                t = pid.removeprefix("up~")
                source = self.sourced.get(t)
                if source is not None and self.sfu is not None:
                    self._spawn(self._repull(t, source, self.sfu.subscribers(t), e.reason))
            elif isinstance(e, me.TrackEnded):
                self.upstreams.pop(e.track_id, None)
            return
        if pid.startswith("cascade~"):
            if isinstance(e, me.PeerFailed):
                for peers in self.served.values():
                    peers.discard(pid)
            return
        link = self.driven.get(pid)
        if link is not None:  # a peer an origin drives: its events go back there
            if isinstance(e, me.PeerFailed):
                del self.driven[pid]
            link.send_event(e)
            return
        match e:
            case me.TrackPublished(track_id=t, kind=kind):
                self.homes[t] = (self.node_id, kind, pid)
            case me.TrackEnded(track_id=t):
                self._track_gone(t)
        self.app.media_bridge.on_media_event(e)

    # ------------------------------------------------------------------ pulling tracks (any node)

    def has_track(self, t: str) -> bool:
        assert self.sfu is not None
        try:
            self.sfu.producer(t)
        except MediaRequestError:
            return False
        return True

    def sources(self, track_ids: Sequence[str], target: str) -> dict[str, dict[str, str]]:
        """Where `target` gets those of `track_ids` that are not at home on it."""
        out = {}
        for t in track_ids:
            home = self.homes.get(t)
            if home is None or home[0] == target:
                continue
            info = next((n for n in self.node.live_nodes() if n.node_id == home[0]), None)
            if info is not None:
                self.urls[home[0]] = http_base(info.url)
            url = self.urls.get(home[0])  # a home whose heartbeat is late is still asked (its link decides)
            if url is not None:
                out[t] = {"node": home[0], "url": url, "kind": home[1]}
        return out

    async def ensure(self, sources: dict[str, dict[str, str]]) -> None:
        """Pull each track of `sources` not here yet from its home (once, however many ask)."""
        await asyncio.gather(*(self._pull(t, s) for t, s in sources.items() if not self.has_track(t)))

    async def _pull(self, t: str, source: dict[str, str]) -> None:
        pending = self._pulls.get(t)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = self._pulls[t] = asyncio.get_running_loop().create_future()
        try:
            for attempt in range(PULL_ATTEMPTS):
                try:
                    await self._pull_once(t, source)
                    break
                except MediaRequestError as exc:
                    if attempt + 1 == PULL_ATTEMPTS or self.app.readiness.state is NodeState.STOPPED:
                        raise
                    log.warning("%s: trying again", exc.message)
                    await asyncio.sleep(PULL_RETRY_S * 2 ** attempt)
            fut.set_result(None)
        except MediaRequestError as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            del self._pulls[t]

    async def _pull_once(self, t: str, source: dict[str, str]) -> None:
        assert self.sfu is not None
        if self.has_track(t):
            return
        peer = f"up~{t}"
        try:
            offer = await self.sfu.open_upstream(peer, t, source["kind"])
            async with self._http().post(source["url"] + "/cluster/v1/cascade", json={"track_id": t, "sdp": offer},
                                         headers={"Authorization": self._credential("cascade", source["node"])}) as r:
                body = await r.json()
                if r.status != 200:
                    raise MediaRequestError(MediaErrorReason.UNKNOWN_TRACK, body.get("error", f"HTTP {r.status}"))
            await self.sfu.accept_upstream(peer, body["sdp"])
        except Exception as exc:
            await self.sfu.close_peer(peer)
            raise MediaRequestError(MediaErrorReason.UNKNOWN_TRACK,
                                    f"track {t} could not be pulled from node {source['node']}: {exc!r}") from None
        self.upstreams[t] = (peer, source["node"])
        self.sourced[t] = source
        log.info("track %s pulled from node %s", t, source["node"])

    async def _repull(self, t: str, source: dict[str, str], peers: list[str], why: str) -> None:
        """The upstream of `t` failed (its ICE or DTLS gave up: a starved event loop, a lost path)
        while the track is still live at home: pull it again and forward it to the peers that had
        it (a new m-line each), unless it ended at home meanwhile."""
        assert self.sfu is not None
        log.warning("upstream of track %s from node %s failed (%s): pulling it again for %d peer(s)",
                    t, source["node"], why, len(peers))
        self.repulls += 1
        await self.sfu.close_peer(f"up~{t}")  # the failed one, wholly (its producer ends, subscribers renegotiate)
        if self.sourced.get(t) is not source:
            return  # ended at home meanwhile (or already pulled again)
        try:
            await self._pull(t, source)
        except MediaRequestError as exc:
            log.error("track %s lost here: %s", t, exc.message)
            return
        for pid in peers:
            with contextlib.suppress(MediaRequestError):  # a peer that left meanwhile
                await self.sfu.subscribe(pid, [t])

    async def _drop(self, t: str) -> None:
        """Stop receiving and serving `t` here (it ended at its home)."""
        assert self.sfu is not None
        self.sourced.pop(t, None)
        up = self.upstreams.pop(t, None)
        if up is not None:
            await self.sfu.close_peer(up[0])
        for peer in list(self.served.get(t, ())):
            self._close_served(t, peer)
        for peer in [p for p, lock in self._serving.items() if p.endswith(f"~{t}") and not lock.locked()]:
            del self._serving[peer]

    def _close_served(self, t: str, peer: str) -> None:
        assert self.sfu is not None
        self.served.get(t, set()).discard(peer)
        if not self.served.get(t):
            self.served.pop(t, None)
        self._spawn(self.sfu.close_peer(peer))

    # ------------------------------------------------------------------ HTTP (node to node)

    def install(self, route: Callable[..., None]) -> None:
        route("GET", "/cluster/v1/media", self._media_link, Operation(
            "node-to-node media link: an origin drives its viewers' peers on this node (websocket)", "cluster",
            None, description="Needs a node credential (`Authorization: Cluster ...`) minted with the cluster "
                              "secret; see docs/cluster.md.", responses={101: "websocket", 401: "not a node"}))
        route("POST", "/cluster/v1/cascade", self._serve_track, Operation(
            "node-to-node: answer another node's offer to receive one track (the cascade's upstream)", "cluster",
            None, description="Needs a node credential.",
            responses={200: "the SDP answer", 401: "not a node", 404: "no such track here"}))
        route("GET", "/cluster/v1/cascade", self._status, Operation(
            "this node's cascade: tracks it serves to other nodes, pulls, and the viewers' media it placed",
            "cluster", "apiKey"))

    async def _serve_track(self, request: web.Request) -> web.StreamResponse:
        edge = self._verify(request, "cascade")
        if edge is None:
            return web.json_response({"error": "node credential refused"}, status=401)
        if self.sfu is None:
            return web.json_response({"error": "media is off on this node"}, status=404)
        try:
            body = await request.json()
            t, offer = str(body["track_id"]), str(body["sdp"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected {track_id, sdp}"}, status=400)
        peer = f"cascade~{edge}~{t}"
        async with self._serving.setdefault(peer, asyncio.Lock()):
            await self.sfu.close_peer(peer)  # a re-pull (the edge restarted, its upstream failed) replaces it
            for peers in self.served.values():
                peers.discard(peer)
            try:
                await self.sfu.open_peer(peer)
                answer = await self.sfu.answer_subscribe(peer, offer, [t])
            except MediaRequestError as exc:
                await self.sfu.close_peer(peer)
                status = 404 if exc.reason is MediaErrorReason.UNKNOWN_TRACK else 400
                return web.json_response({"error": exc.message}, status=status)
            except Exception as exc:  # aiortc's own (its connection closed under it): the puller tries again
                await self.sfu.close_peer(peer)
                log.warning("serving track %s to node %s failed: %r", t, edge, exc)
                return web.json_response({"error": f"could not answer: {exc!r}"}, status=503)
            self.served.setdefault(t, set()).add(peer)
        log.info("serving track %s to node %s", t, edge)
        return web.json_response({"sdp": answer})

    async def _status(self, request: web.Request) -> web.StreamResponse:
        assert self.app.cluster is not None
        if not self.app.cluster.authorised(request):
            return web.json_response({"error": "the cluster API needs the admin API key"}, status=401)
        tracks = self.sfu.tracks() if self.sfu is not None else []
        return web.json_response({
            "node_id": self.node_id,
            "served": {t: sorted(p.split("~")[1] for p in peers) for t, peers in self.served.items()},
            "upstreams": {t: home for t, (_, home) in self.upstreams.items()},
            "repulls": self.repulls,
            "placement": dict(self.placement),
            "driven": sorted(self.driven),
            "subscribers": {t.track_id: t.subscribers for t in tracks},
        })

    async def _media_link(self, request: web.Request) -> web.StreamResponse:
        origin = self._verify(request, "media")
        if origin is None:
            return web.json_response({"error": "node credential refused"}, status=401)
        ws = web.WebSocketResponse(heartbeat=5.0)
        await ws.prepare(request)
        link = _Link(ws, origin)
        log.info("media link from node %s open", origin)
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    self._spawn(self._run(link, data))
        finally:
            link.fail_all()
            await self._origin_lost(link)
        return ws

    async def _run(self, link: _Link, msg: dict[str, Any]) -> None:
        if msg.get("op") != "on_candidate":  # --log-level DEBUG: what each origin asks of this node
            log.debug("from node %s: %s %s", link.node_id, msg.get("op"),
                      {k: v for k, v in msg.get("args", {}).items() if k != "sdp"})
        try:
            result = await self._op(link, msg["op"], msg.get("args", {}))
            reply: dict[str, Any] = {"ok": result}
        except MediaRequestError as exc:
            reply = {"err": [exc.reason.value, exc.message]}
        except Exception as exc:
            log.exception("media link op %s from %s failed", msg.get("op"), link.node_id)
            reply = {"err": [MediaErrorReason.INVALID_STATE.value, repr(exc)]}
        if "id" in msg:
            link.send({"re": msg["id"], **reply})

    async def _op(self, link: _Link, op: str, a: dict[str, Any]) -> Any:
        sfu = self.sfu
        if sfu is None:
            raise MediaRequestError(MediaErrorReason.INVALID_STATE, "media is off on this node")
        pid = str(a.get("peer", ""))
        if op == "open_peer":
            self.driven[pid] = link
            try:
                await sfu.open_peer(pid)
            except MediaRequestError:
                self.driven.pop(pid, None)
                raise
            return None
        if pid and self.driven.get(pid) is not link and op not in ("set_muted", "drop_track"):
            raise MediaRequestError(MediaErrorReason.UNKNOWN_PEER, f"peer {pid!r} is not driven by {link.node_id}")
        match op:
            case "close_peer":
                self.driven.pop(pid, None)
                await sfu.close_peer(pid)
            case "request_publish":
                await sfu.request_publish(pid, frozenset(a["kinds"]))
            case "unpublish":
                await sfu.unpublish(pid, a["kind"])
            case "subscribe":
                await self.ensure(a.get("sources", {}))
                await sfu.subscribe(pid, a["track_ids"])
            case "unsubscribe":
                await sfu.unsubscribe(pid, a["track_ids"])
            case "set_video_paused":
                await sfu.set_video_paused(pid, bool(a["paused"]))
            case "on_answer":
                await sfu.on_answer(pid, a["sdp"])
            case "on_candidate":
                await sfu.on_candidate(pid, a["candidate"], a.get("sdp_mid"), a.get("sdp_mline_index"))
            case "set_muted":
                sfu.set_muted(a["track_id"], bool(a["muted"]))
            case "drop_track":
                await self._drop(a["track_id"])
            case _:
                raise MediaRequestError(MediaErrorReason.INVALID_STATE, f"unknown op {op!r}")
        return None

    async def _origin_lost(self, link: _Link) -> None:
        """The origin's link closed: close the peers it drove and the upstreams nobody here uses."""
        assert self.sfu is not None
        mine = [pid for pid, lk in self.driven.items() if lk is link]
        if mine:
            log.warning("media link from node %s closed: closing its %d peer(s)", link.node_id, len(mine))
        for pid in mine:
            del self.driven[pid]
            await self.sfu.close_peer(pid)
        used = {t.track_id: t.subscribers for t in self.sfu.tracks()}
        for t in [t for t in self.upstreams if not used.get(t)]:
            await self._drop(t)


class _Routed:
    """The origin's `MediaBackend`: peers the cascade placed on an edge are driven over its link,
    the rest (and everything that is not about a peer) on this node's SFU."""

    def __init__(self, cascade: Cascade, sfu: Sfu) -> None:
        self.c = cascade
        self.sfu = sfu

    def _edge(self, pid: str) -> str | None:
        return self.c.placement.get(pid)

    async def _call(self, pid: str, op: str, **args: Any) -> bool:
        """Run `op` on the edge that carries `pid`; False if `pid`'s media is here."""
        edge = self._edge(pid)
        if edge is None:
            return False
        link = self.c.links.get(edge)
        if link is None:
            raise MediaRequestError(MediaErrorReason.UNKNOWN_PEER, f"the node carrying {pid}'s media is gone")
        await link.call(op, peer=pid, **args)
        return True

    async def open_peer(self, peer_id: str) -> None:
        edge = self.c.place(peer_id)
        if edge is not None:
            try:
                link = await self.c.link(edge)
            except Exception as exc:  # that node cannot be reached: this one carries it
                log.warning("no media link to node %s (%r): %s's media stays here", edge, exc, peer_id)
                self.c.avoid[edge] = time.monotonic() + 2 * self.c.node.config.ttl_s
            else:
                self.c.placement[peer_id] = edge
                try:
                    await link.call("open_peer", peer=peer_id)
                except MediaRequestError:
                    self.c.placement.pop(peer_id, None)
                    raise
                return
        await self.sfu.open_peer(peer_id)

    async def close_peer(self, peer_id: str) -> None:
        edge = self.c.placement.pop(peer_id, None)
        if edge is None:
            await self.sfu.close_peer(peer_id)
            return
        link = self.c.links.get(edge)
        if link is not None:
            with contextlib.suppress(MediaRequestError):
                await link.call("close_peer", peer=peer_id)

    async def request_publish(self, peer_id: str, kinds: frozenset[str]) -> None:
        if not await self._call(peer_id, "request_publish", kinds=sorted(kinds)):
            await self.sfu.request_publish(peer_id, kinds)

    async def unpublish(self, peer_id: str, kind: str) -> None:
        if not await self._call(peer_id, "unpublish", kind=kind):
            await self.sfu.unpublish(peer_id, kind)

    async def subscribe(self, peer_id: str, track_ids: Sequence[str]) -> None:
        edge = self._edge(peer_id)
        sources = self.c.sources(track_ids, edge or self.c.node_id)
        if not await self._call(peer_id, "subscribe", track_ids=list(track_ids), sources=sources):
            await self.c.ensure(sources)
            await self.sfu.subscribe(peer_id, track_ids)

    async def unsubscribe(self, peer_id: str, track_ids: Sequence[str]) -> None:
        if not await self._call(peer_id, "unsubscribe", track_ids=list(track_ids)):
            await self.sfu.unsubscribe(peer_id, track_ids)

    async def set_video_paused(self, peer_id: str, paused: bool) -> None:
        if not await self._call(peer_id, "set_video_paused", paused=paused):
            await self.sfu.set_video_paused(peer_id, paused)

    def set_muted(self, track_id: str, muted: bool) -> None:
        home = self.c.homes.get(track_id)
        link = self.c.links.get(home[0]) if home is not None else None
        if link is not None:
            link.notify("set_muted", track_id=track_id, muted=muted)
        else:
            self.sfu.set_muted(track_id, muted)

    async def on_answer(self, peer_id: str, sdp: str) -> None:
        if not await self._call(peer_id, "on_answer", sdp=sdp):
            await self.sfu.on_answer(peer_id, sdp)

    async def on_candidate(self, peer_id: str, candidate: str, sdp_mid: str | None,
                           sdp_mline_index: int | None) -> None:
        if not await self._call(peer_id, "on_candidate", candidate=candidate, sdp_mid=sdp_mid,
                                sdp_mline_index=sdp_mline_index):
            await self.sfu.on_candidate(peer_id, candidate, sdp_mid, sdp_mline_index)

    async def answer_publish(self, peer_id: str, offer_sdp: str) -> str:
        return await self.sfu.answer_publish(peer_id, offer_sdp)

    async def answer_subscribe(self, peer_id: str, offer_sdp: str, track_ids: Sequence[str]) -> str:
        await self.c.ensure(self.c.sources(track_ids, self.c.node_id))
        return await self.sfu.answer_subscribe(peer_id, offer_sdp, track_ids)

    def add_frame_sink(self, track_id: str, sink: FrameSink) -> None:
        self.sfu.add_frame_sink(track_id, sink)

    def remove_frame_sink(self, track_id: str, sink: FrameSink) -> None:
        self.sfu.remove_frame_sink(track_id, sink)

    def request_keyframe(self, track_id: str) -> None:
        self.sfu.request_keyframe(track_id)

    def quality(self, peer_id: str) -> me.PeerQuality | None:
        return self.sfu.quality(peer_id)

    def adaptation_counts(self) -> dict[str, int]:
        return self.sfu.adaptation_counts()  # this node's subscribers (each edge counts its own)

    def tracks(self) -> list[me.TrackInfo]:
        return self.sfu.tracks()

    def peer_ids(self) -> list[str]:
        return self.sfu.peer_ids()

    async def close(self) -> None:
        await self.c.close()
        await self.sfu.close()
