"""Test helpers shared across packages: a real server on 127.0.0.1 and a websocket client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import websockets

from medstream.app import MedstreamApp
from medstream.config import ServerConfig
from protocol import signaling as wire
from signaling.hub import SignalingConfig
from signaling.tokens import issue_token
from tests.conftest import timeout_s

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def token(room: str, identity: str, role: str, *, kind: str | None = None, **kw: Any) -> str:
    """A token signed with the test secret."""
    return issue_token(SECRET, room=room, identity=identity, role=role, room_kind=kind, **kw)


@contextlib.asynccontextmanager
async def running_app(**overrides: Any) -> AsyncIterator[MedstreamApp]:
    """A real medstream node on an ephemeral 127.0.0.1 port (media/waveforms/recorder off unless asked)."""
    signaling_over = {k: overrides.pop(k) for k in list(overrides) if k in SignalingConfig.__dataclass_fields__}
    config = ServerConfig(
        signaling=replace(SignalingConfig(secret=SECRET), **signaling_over),
        host=overrides.pop("host", "127.0.0.1"),
        port=0,
        audit_log=overrides.pop("audit_log", None),
        media=overrides.pop("media", False),
        waveforms=overrides.pop("waveforms", False),
        recorder=overrides.pop("recorder", False),
        **overrides,
    )
    app = MedstreamApp(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


class WsClient:
    """A signaling client over a real websocket; keeps every message it receives."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.binary: list[bytes] = []
        self._cond = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())
        self._next_id = 0
        self.joined: dict[str, Any] | None = None
        self.on_message: Any = None  # optional callback for every JSON message, before queueing
        self._keepalive: asyncio.Future[None] | None = None

    @classmethod
    async def connect(cls, url: str, **kw: Any) -> WsClient:
        return cls(await websockets.connect(url, **kw))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                async with self._cond:
                    if isinstance(frame, bytes):
                        self.binary.append(frame)
                    else:
                        msg = json.loads(frame)
                        if msg.get("id") == "keepalive":
                            continue
                        if self.on_message is None or not self.on_message(msg):
                            self.inbox.append(msg)
                    self._cond.notify_all()
        except websockets.ConnectionClosed:
            pass
        async with self._cond:
            self._cond.notify_all()

    async def send(self, msg: wire.ClientMessage | dict[str, Any] | str) -> None:
        """A message through the codec; a dict or raw text only where a test sends bad input."""
        if isinstance(msg, str):
            await self.ws.send(msg)
        elif isinstance(msg, dict):
            await self.ws.send(json.dumps(msg))
        else:
            await self.ws.send(wire.encode(msg))

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send a request with a fresh id and wait for the reply (or error) carrying that id."""
        self._next_id += 1
        rid = f"r{self._next_id}"
        await self.send({"type": type_, "id": rid, **fields})
        return await self.wait(lambda m: m.get("id") == rid)

    async def join(self, tok: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request("join", v=1, token=tok, **fields)
        if reply["type"] == "joined":
            self.joined = reply
            if self._keepalive is None:
                self._keepalive = asyncio.ensure_future(self._ping_every(reply["heartbeat_s"]))
        return reply

    async def _ping_every(self, interval_s: float) -> None:
        """Heartbeat like a real client, so long tests are not closed as idle."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(interval_s)
                await self.ws.send('{"type":"ping","id":"keepalive"}')

    async def wait(self, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the first message (already received or not) matching `pred`; consume it."""
        async def find() -> dict[str, Any]:
            async with self._cond:
                while True:
                    for i, m in enumerate(self.inbox):
                        if pred(m):
                            return self.inbox.pop(i)
                    if self._reader.done():
                        raise ConnectionError(f"connection closed; inbox: {self.inbox[-5:]}")
                    await self._cond.wait()
        return await asyncio.wait_for(find(), timeout_s(timeout))

    async def wait_type(self, type_: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        return await self.wait(
            lambda m: m["type"] == type_ and all(_get(m, k) == v for k, v in match.items()), timeout
        )

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout_s(timeout))
        return self.ws.close_code, self.ws.close_reason

    @property
    def participant_id(self) -> str:
        assert self.joined is not None
        return self.joined["participant"]["participant_id"]

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


def _get(m: dict[str, Any], dotted: str) -> Any:
    cur: Any = m
    for part in dotted.split("__"):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


class MediaParticipant:
    """A signaling client with a real aiortc peer (tests.support.rtc_peer.ClientPeer) behind it.

    It answers the server's `sdp` offers as they come, exactly as a browser would.
    """

    def __init__(self, ws: WsClient, peer: Any) -> None:
        self.ws = ws
        self.peer = peer
        self.offers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        ws.on_message = self._on_message

    @classmethod
    async def join(cls, app: MedstreamApp, tok: str, *, media: bool = True, **peer_kw: Any) -> MediaParticipant:
        from tests.support.rtc_peer import ClientPeer

        ws = await WsClient.connect(app.ws_url)
        me = cls(ws, ClientPeer(peer_kw.pop("name", "client"), **peer_kw))
        reply = await ws.join(tok, media=media)
        if reply["type"] != "joined":
            raise AssertionError(f"join failed: {reply}")
        return me

    def _on_message(self, msg: dict[str, Any]) -> bool:
        if msg["type"] == "sdp" and msg["sdp_type"] == "offer":
            task = asyncio.ensure_future(self._answer(msg["sdp"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        return False

    async def _answer(self, offer: str) -> None:
        async with self._lock:  # offers are answered in the order they came
            answer = await self.peer.answer(offer)
            self.offers += 1
            await self.ws.send(wire.Sdp("answer", answer))

    @property
    def participant_id(self) -> str:
        return self.ws.participant_id

    async def publish(self, audio: bool = False, video: bool = False) -> list[dict[str, Any]]:
        """Publish and wait for the server to announce our tracks."""
        reply = await self.ws.request("publish", audio=audio, video=video)
        if reply["type"] != "ok":
            raise AssertionError(f"publish refused: {reply}")
        tracks = []
        for _ in range(int(audio) + int(video)):
            tracks.append(await self.ws.wait_type("track_published", timeout=timeout_s(10),
                                                  track__participant_id=self.participant_id))
        return [t["track"] for t in tracks]

    async def close(self) -> None:
        """Leave the room properly, then close the peer connection."""
        with contextlib.suppress(Exception):
            await self.ws.send(wire.Leave())
            await self.ws.closed(timeout=5)
        await self.ws.close()
        await self.peer.close()
