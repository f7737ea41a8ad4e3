"""A real aiortc participant driven through the websocket signaling of a running server.

`RtcParticipant` = `tests.helpers.WsClient` (join, requests) + `tests.support.rtc_peer.ClientPeer`
(answers offers, publishes counter video / tone audio). A background task answers every `sdp`
offer the server sends; candidates are not needed (both sides put theirs in the SDP).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

from protocol import signaling as wire
from tests.conftest import timeout_s
from tests.helpers import WsClient
from tests.support.rtc_peer import ClientPeer


class RtcParticipant:
    """A joined participant with a peer connection (`join(media=True)`)."""

    def __init__(self, ws: WsClient, peer: ClientPeer) -> None:
        self.ws = ws
        self.peer = peer
        self.errors: list[BaseException] = []
        self._answerer = asyncio.ensure_future(self._answer_offers())

    @classmethod
    async def join(cls, ws_url: str, token: str, name: str, *,
                   video_codec: Literal["VP8", "H264"] | None = None, audio: bool = False,
                   fps: int = 15) -> RtcParticipant:
        """Connect, join with media and start answering offers. Raises AssertionError if refused."""
        ws = await WsClient.connect(ws_url)
        reply = await ws.join(token, media=True)
        assert reply["type"] == "joined", reply
        return cls(ws, ClientPeer(name, video_codec=video_codec, audio=audio, fps=fps))

    async def _answer_offers(self) -> None:
        while True:
            offer = await self.ws.wait(lambda m: m["type"] == "sdp" and m.get("sdp_type") == "offer",
                                       timeout=3600)
            try:
                answer = await self.peer.answer(offer["sdp"])
                await self.ws.send(wire.Sdp("answer", answer))
            except Exception as exc:
                self.errors.append(exc)

    async def publish(self, *, audio: bool = False, video: bool = False,
                      timeout: float = 10.0) -> dict[str, str]:
        """Publish; returns {kind: track_id} once the room announced every published track."""
        reply = await self.ws.request("publish", audio=audio, video=video)
        assert reply["type"] != "error", reply
        found: dict[str, str] = {}
        me = self.ws.participant_id
        kinds = {k for k, on in (("audio", audio), ("video", video)) if on}
        while set(found) != kinds:
            if self.errors:
                raise self.errors[0]
            msg = await self.ws.wait(
                lambda m: m["type"] == "track_published" and m["track"]["participant_id"] == me,
                timeout)
            found[msg["track"]["kind"]] = msg["track"]["track_id"]
        return found

    @property
    def participant_id(self) -> str:
        return self.ws.participant_id

    async def close(self) -> None:
        self._answerer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._answerer
        await self.ws.close()
        await self.peer.close()


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate()` every 20 ms until true; TimeoutError naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout_s(timeout)
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s(timeout)} s waiting for {what}")
        await asyncio.sleep(0.02)
