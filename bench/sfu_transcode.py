"""The comparison relay of `bench.sfu`: aiortc's MediaRelay (decode once, encode per subscriber).

    python -m bench.sfu_transcode --expect-tracks N     (started by bench.sfu; prints PORT p)

Speaks just enough of medstream's signaling (docs/protocol.md) for the benchmark clients, over
a real websocket: `join` (token claims read, not verified: benchmark only), `publish` (server
offers recvonly slots), `sdp` answers, `ping`; `track_published` to everyone. A subscriber that
joins with `media: true` gets one offer carrying every track once `--expect-tracks` tracks are
published (no renegotiation: enough for the benchmark's fixed topology).

Each published track is received by aiortc's normal receiver (decoded), fanned out by one
`MediaRelay`, and each subscriber's sender encodes its own copy (VP8, Opus), which is what
"relay with aiortc" costs. RTP timestamps start at 0 (`zero_timestamp_origin`) so that the
clients can match frames by timestamp after re-encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from typing import Any

import jwt
import websockets
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from bench.sfu_clients import zero_timestamp_origin


class TranscodingRelay:
    """Room state of the comparison relay: publishers' decoded tracks and the subscribers."""

    def __init__(self, expect_tracks: int) -> None:
        self.expect_tracks = expect_tracks
        self.relay = MediaRelay()
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.track_owner: dict[str, str] = {}
        self.connections: set[Any] = set()
        self.pcs: set[RTCPeerConnection] = set()
        self.tracks_ready = asyncio.Event()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, ws: Any) -> None:
        self.connections.add(ws)
        pid = f"p{next(self._ids)}"
        pc: RTCPeerConnection | None = None
        try:
            async for raw in ws:
                msg = json.loads(raw)
                kind = msg["type"]
                if kind == "join":
                    claims = jwt.decode(msg["token"], options={"verify_signature": False})
                    await ws.send(json.dumps({
                        "type": "joined", "id": msg.get("id"),
                        "participant": {"participant_id": pid, "role": claims.get("role")},
                        "tracks": [], "ice_servers": [], "heartbeat_s": 10,
                    }))
                    if msg.get("media"):
                        pc = self._new_pc()
                        task = asyncio.ensure_future(self._offer_subscriber(ws, pc))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                elif kind == "publish":
                    pc = self._new_pc()
                    self._accept_publisher(ws, pc, pid)
                    for k in ("audio", "video"):
                        if msg.get(k):
                            pc.addTransceiver(k, direction="recvonly")
                    await ws.send(json.dumps({"type": "ok", "id": msg.get("id")}))
                    await self._send_offer(ws, pc)
                elif kind == "sdp" and pc is not None:
                    await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                elif kind == "ping":
                    await ws.send(json.dumps({"type": "pong", "time": 0}))
                elif kind == "leave":
                    break
        except websockets.ConnectionClosed:
            pass
        finally:
            self.connections.discard(ws)
            if pc is not None:
                await pc.close()

    def _new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pcs.add(pc)
        return pc

    def _accept_publisher(self, ws: Any, pc: RTCPeerConnection, pid: str) -> None:
        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            track_id = f"{pid}/{track.kind}/{len(self.tracks) + 1}"
            self.tracks[track_id] = track
            self.track_owner[track_id] = pid
            info = {"type": "track_published", "track": {
                "track_id": track_id, "participant_id": pid, "kind": track.kind,
                "codec": "VP8" if track.kind == "video" else "opus", "muted": False}}
            websockets.broadcast(self.connections, json.dumps(info))
            if len(self.tracks) >= self.expect_tracks:
                self.tracks_ready.set()

    async def _offer_subscriber(self, ws: Any, pc: RTCPeerConnection) -> None:
        await self.tracks_ready.wait()
        for track_id, track in self.tracks.items():
            pc.addTransceiver(self.relay.subscribe(track, buffered=False), direction="sendonly")
            # the offer's msid names the track the way medstream does: "participant/kind/n"
            pc.getTransceivers()[-1].sender._track_id = track_id
        await self._send_offer(ws, pc)

    async def _send_offer(self, ws: Any, pc: RTCPeerConnection) -> None:
        from media_server import ice

        offer = await pc.createOffer()
        with ice.host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(offer)
        sdp = pc.localDescription.sdp
        # msid carries our track ids (aiortc would use the relay proxies' random ids)
        lines = []
        transceivers = iter(pc.getTransceivers())
        current = None
        for line in sdp.splitlines():
            if line.startswith("m="):
                current = next(transceivers, None)
            if line.startswith("a=msid:") and current is not None:
                track_id = getattr(current.sender, "_track_id", None)
                if track_id is not None:
                    line = f"a=msid:{line.split()[0][7:]} {track_id}"
            lines.append(line)
        await ws.send(json.dumps({"type": "sdp", "sdp_type": "offer", "sdp": "\r\n".join(lines) + "\r\n"}))


async def _serve(expect_tracks: int) -> None:
    zero_timestamp_origin()
    state = TranscodingRelay(expect_tracks)
    async with websockets.serve(state.handle, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """Run the transcoding relay until killed."""
    p = argparse.ArgumentParser(prog="python -m bench.sfu_transcode")
    p.add_argument("--expect-tracks", type=int, required=True)
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.run(_serve(args.expect_tracks))
    except ImportError:
        asyncio.run(_serve(args.expect_tracks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
