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
        host="127.0.0.1",
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
                        self.inbox.append(json.loads(frame))
                    self._cond.notify_all()
        except websockets.ConnectionClosed:
            pass
        async with self._cond:
            self._cond.notify_all()

    async def send(self, msg: dict[str, Any] | str) -> None:
        await self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

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
        return reply

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
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


def _get(m: dict[str, Any], dotted: str) -> Any:
    cur: Any = m
    for part in dotted.split("__"):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur
