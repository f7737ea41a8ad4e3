"""A township clinic's participant, run in its own network namespace behind a narrow link.

`ip netns exec NS python -m tests.media_server.township_client URL TOKEN ADDRESS PHASE_S`
joins with media (receiving everyone), measures what arrives for PHASE_S seconds, switches to
audio-only mode, measures again, and prints one JSON line with both windows.
"""

from __future__ import annotations

import asyncio
import json
import sys

from tests.helpers import MediaParticipant, WsClient
from tests.support.rtc_peer import ClientPeer


def counts(peer: ClientPeer) -> dict[str, int]:
    return {tid: len(t.frames) for tid, t in peer.received.items()}


async def video_packets(peer: ClientPeer) -> int:
    """RTP packets of video received so far (assembled into frames or not)."""
    stats = await peer.pc.getStats()
    return sum(getattr(s, "packetsReceived", 0) for s in stats.values()
               if s.type == "inbound-rtp" and getattr(s, "kind", "") == "video")


def window(before: dict[str, int], after: dict[str, int], peer: ClientPeer, kind: str) -> int:
    return sum(after[t] - before.get(t, 0) for t in after if peer.received[t].kind == kind)


async def main(url: str, token: str, address: str, phase_s: float) -> dict:
    ws = await WsClient.connect(url)
    me = MediaParticipant(ws, ClientPeer("township", host_addresses=(address,)))
    joined = await ws.join(token, media=True)
    assert joined["type"] == "joined", joined
    while sum(1 for t in me.peer.received.values() if t.frames and t.kind == "audio") < 2:
        await asyncio.sleep(0.1)  # both experts heard (video may not even make it through)
    while await video_packets(me.peer) < 60:
        await asyncio.sleep(0.1)  # and their video is squeezing through the link too
    start = counts(me.peer)
    await asyncio.sleep(phase_s)
    full = counts(me.peer)
    reply = await ws.request("set_video_paused", paused=True)
    assert reply["type"] == "ok", reply
    await asyncio.sleep(2.0)  # let the queues before the narrow link drain
    paused = counts(me.peer)
    await asyncio.sleep(phase_s)
    end = counts(me.peer)
    result = {
        "video_packets_total": await video_packets(me.peer),
        "full_audio_frames": window(start, full, me.peer, "audio"),
        "full_video_frames": window(start, full, me.peer, "video"),
        "paused_audio_frames": window(paused, end, me.peer, "audio"),
        "paused_video_frames": window(paused, end, me.peer, "video"),
    }
    await me.close()
    return result


if __name__ == "__main__":
    url, token, address, phase_s = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(url, token, address, float(phase_s)))), flush=True)
