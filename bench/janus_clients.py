"""The benchmark's aiortc clients speaking Janus's VideoRoom API (websockets transport).

Same media and the same measuring code as `bench.sfu_clients` (its `Records`, `frame_key` and
RTP counting), only the signaling differs: create a session, attach `janus.plugin.videoroom`;
publishers `joinandconfigure` with their offer, subscribers `join` as `subscriber` with the
feeds as `streams`, answer Janus's offer and `start`. Run by `bench.sfu_clients` when its spec
says `"server": "janus"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from pathlib import Path
from typing import Any

import websockets
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from bench.sfu_clients import LightSubscriber, Records, _Stream, frame_key, stop_on_request

ROOM_ID = 1234
_transactions = itertools.count(1)


class JanusSession:
    """One websocket, one Janus session; `request()` returns the reply that settles it."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.session_id = 0
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> JanusSession:
        ws = await websockets.connect(url, subprotocols=["janus-protocol"],  # type: ignore[list-item]
                                      max_size=None, open_timeout=120)
        session = cls(ws)
        reply = await session.send({"janus": "create"})
        session.session_id = reply["data"]["id"]
        session._keepalive = asyncio.ensure_future(session._keep_alive())
        return session

    async def send(self, body: dict[str, Any], wait_event: bool = False) -> dict[str, Any]:
        """Send `body` with a new transaction; the "success"/"event" reply (not the "ack")."""
        tid = str(next(_transactions))
        body = {**body, "transaction": tid}
        if self.session_id:
            body["session_id"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[tid] = future
        await self.ws.send(json.dumps(body))
        reply = await asyncio.wait_for(future, 120)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus error: {reply}")
        return reply

    async def attach(self) -> int:
        reply = await self.send({"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return int(reply["data"]["id"])

    async def message(self, handle: int, body: dict[str, Any],
                      jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"janus": "message", "handle_id": handle, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        return await self.send(msg)

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            tid = msg.get("transaction")
            if msg.get("janus") == "ack":
                continue
            future = self._pending.pop(tid, None) if tid else None
            if future is not None and not future.done():
                future.set_result(msg)
            else:
                self.events.put_nowait(msg)

    async def _keep_alive(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(15)
                await self.ws.send(json.dumps({"janus": "keepalive", "session_id": self.session_id,
                                               "transaction": str(next(_transactions))}))

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._reader.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()


async def create_room(url: str, publishers: int) -> None:
    """Create the benchmark's room: VP8 + Opus, no bitrate cap, no periodic keyframe requests."""
    session = await JanusSession.open(url)
    try:
        handle = await session.attach()
        reply = await session.message(handle, {
            "request": "create", "room": ROOM_ID, "publishers": max(publishers, 1), "bitrate": 0,
            "fir_freq": 0, "videocodec": "vp8", "audiocodec": "opus", "notify_joining": False,
            "permanent": False})
        data = reply["plugindata"]["data"]
        if data.get("videoroom") not in ("created", "event") or data.get("error"):
            raise RuntimeError(f"janus: room not created: {data}")
    finally:
        await session.close()


class JanusPublisher:
    """Publishes the clip's tracks (bench `PacketTrack`s) into the room as `display`."""

    def __init__(self, url: str, display: str, tracks: dict[str, Any]) -> None:
        self.url, self.display, self.tracks = url, display, tracks
        self.feed_id = 0
        self.published = asyncio.Event()

    async def run(self, stop: asyncio.Future[None]) -> None:
        from media_server import ice

        session = await JanusSession.open(self.url)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        try:
            for kind in ("audio", "video"):
                if kind in self.tracks:
                    pc.addTransceiver(self.tracks[kind], direction="sendonly")
            offer = await pc.createOffer()
            with ice.host_addresses(("127.0.0.1",)):
                await pc.setLocalDescription(offer)
            handle = await session.attach()
            reply = await session.message(
                handle, {"request": "joinandconfigure", "room": ROOM_ID, "ptype": "publisher",
                         "display": self.display, "audio": True, "video": True},
                {"type": "offer", "sdp": pc.localDescription.sdp})
            if "jsep" not in reply:
                raise RuntimeError(f"janus publisher: no answer in {reply}")
            self.feed_id = int(reply["plugindata"]["data"]["id"])
            await pc.setRemoteDescription(RTCSessionDescription(reply["jsep"]["sdp"], "answer"))
            self.published.set()
            await stop
        finally:
            await pc.close()
            await session.close()


class JanusSubscriber(LightSubscriber):
    """Subscribes to every feed in one connection and counts RTP like `LightSubscriber`."""

    def __init__(self, url: str, feeds: dict[int, str], records: Records) -> None:
        super().__init__(url, "", records)
        self.feeds = feeds  # feed id -> publisher display name

    async def run(self, stop: asyncio.Event) -> None:  # type: ignore[override]
        from media_server import ice

        session = await JanusSession.open(self.url)
        try:
            handle = await session.attach()
            reply = await session.message(handle, {
                "request": "join", "room": ROOM_ID, "ptype": "subscriber",
                "streams": [{"feed": f} for f in self.feeds]})
            if "jsep" not in reply:
                raise RuntimeError(f"janus subscriber: no offer in {reply}")
            offer_sdp = reply["jsep"]["sdp"]
            by_mid = {str(s["mid"]): self.feeds.get(int(s.get("feed_id", 0)), "?")
                      for s in reply["plugindata"]["data"].get("streams", [])}
            for media in aiortc_sdp.SessionDescription.parse(offer_sdp).media:
                if media.kind not in ("audio", "video") or not media.ssrc:
                    continue
                groups = [g.items[0] for g in media.ssrc_group if g.semantic == "FID"]
                ssrc = int(groups[0]) if groups else media.ssrc[0].ssrc
                self.streams[ssrc] = _Stream(by_mid.get(media.rtp.muxId or "", "?"), media.kind)
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            answer = await self.pc.createAnswer()
            with ice.host_addresses(("127.0.0.1",)):
                await self.pc.setLocalDescription(answer)
            self._install()
            await session.message(handle, {"request": "start", "room": ROOM_ID},
                                  {"type": "answer", "sdp": self.pc.localDescription.sdp})
            await stop.wait()
        finally:
            await self.pc.close()
            await session.close()


async def run_worker(spec: dict[str, Any]) -> None:
    """The Janus form of `bench.sfu_clients._run` (same READY/STOP/DONE protocol on stdio)."""
    from bench.sfu_clients import zero_timestamp_origin
    from bench.sfu_experiments import large_receive_buffers
    from clients.publish import PacketTrack, PlaybackClock, iter_packets, plan_streams

    zero_timestamp_origin()
    large_receive_buffers()
    records = Records()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_future: asyncio.Future[None] = loop.create_future()
    clip = Path(spec["clip"])
    plans = plan_streams(clip)
    url = spec["url"]
    tasks: list[asyncio.Task[Any]] = []
    publishers: list[JanusPublisher] = []
    if spec["publisher_names"]:
        await create_room(url, spec["publishers_total"])
    for name in spec["publisher_names"]:
        clock = PlaybackClock()

        def on_sent(kind: str, packet: Any, t: float, name: str = name) -> None:
            records.sent.append((name, kind, frame_key(packet.data), packet.pts & 0xFFFFFFFF, t))

        tracks = {kind: PacketTrack(kind, iter_packets(clip, plan, loop=True), plan.clock_rate_hz,
                                    clock, on_sent)  # type: ignore[arg-type]
                  for kind, plan in plans.items()}
        publisher = JanusPublisher(url, name, tracks)
        publishers.append(publisher)
        tasks.append(asyncio.ensure_future(publisher.run(stop_future)))
    for publisher in publishers:
        await asyncio.wait_for(publisher.published.wait(), 60)
    if publishers:
        feeds_path = Path(spec["out"]).with_suffix(".feeds.json")
        feeds_path.write_text(json.dumps({str(p.feed_id): p.display for p in publishers}))
        print("READY", flush=True)
    subscribers: list[JanusSubscriber] = []
    if spec["subscribers"]:
        feeds_file = Path(spec["feeds_file"])
        while not feeds_file.exists():
            await asyncio.sleep(0.1)
        feeds = {int(k): v for k, v in json.loads(feeds_file.read_text()).items()}
        for i in range(spec["subscribers"]):
            sub = JanusSubscriber(url, feeds, records)
            subscribers.append(sub)
            tasks.append(asyncio.ensure_future(sub.run(stop)))
            if i % 5 == 4:
                await asyncio.sleep(0.2)
        expected = spec["publishers_total"]
        deadline = time.monotonic() + 60 + spec["subscribers"]
        while any(len(s.publishers_seen) < expected for s in subscribers):
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        print("READY", flush=True)
    await stop_on_request(records, stop, stop_future, tasks, Path(spec["out"]))
