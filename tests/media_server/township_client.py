"""A township clinic's participant, run in its own network namespace behind an impaired link.

`ip netns exec NS python -m tests.media_server.township_client URL TOKEN ADDRESS EXPECT`
joins with media (receiving everyone, never touching audio-only), prints `media` once it hears
EXPECT publishers' audio, then records until a line `stop` on stdin and prints one JSON line
(`video_after T N DEADLINE_S` on stdin meanwhile answers `video ok` once every video track has N
frames that arrived after monotonic time T, or `video timeout`):
per track its kind, the RTP timestamps, arrival times and (video) CRC-32 of its frames (CLOCK_MONOTONIC, the same clock in every
namespace, so the test can set them against the moments it changed the link), which of them were
keyframes, and every `video_adapted` message with the time it came.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import zlib
from typing import Any

from tests.helpers import MediaParticipant, WsClient
from tests.support import clinic_trace
from tests.support.rtc_peer import ClientPeer


async def main(url: str, token: str, address: str, expect: int) -> dict[str, Any]:
    trace = os.environ.get("MEDSTREAM_CLINIC_TRACE")  # tests/support/clinic_trace.py
    if trace:
        clinic_trace.enable()
    ws = await WsClient.connect(url)
    peer = ClientPeer("township", host_addresses=(address,), audio_every_packet=True)
    me = MediaParticipant(ws, peer)
    adapted: list[dict[str, Any]] = []
    answer_offers = ws.on_message

    def on_message(msg: dict[str, Any]) -> bool:
        if msg["type"] == "video_adapted":
            adapted.append({**msg, "at": time.monotonic()})
        return bool(answer_offers and answer_offers(msg))

    ws.on_message = on_message
    joined = await ws.join(token, media=True)
    assert joined["type"] == "joined", joined
    arrivals: dict[str, list[float]] = {}
    keyframes: dict[str, list[int]] = {}

    def watch() -> None:
        for tid, track in peer.received.items():
            times = arrivals.setdefault(tid, [])
            keys = keyframes.setdefault(tid, [])
            now = time.monotonic()
            for i in range(len(times), len(track.frames)):
                times.append(now)
                if track.frames[i].keyframe:
                    keys.append(i)

    async def sample() -> None:
        while True:
            watch()
            await asyncio.sleep(0.01)

    sampler = asyncio.ensure_future(sample())
    print(f"joined at {time.monotonic():.2f}", file=sys.stderr, flush=True)
    said = time.monotonic()
    while sum(1 for t in peer.received.values() if t.kind == "audio" and t.frames) < expect:
        await asyncio.sleep(0.05)
        if time.monotonic() - said >= 5:  # where it stands, for the test's failure message
            said = time.monotonic()
            print(f"at {said:.2f}: offers answered {me.offers}, connection {peer.pc.connectionState}, "
                  f"ice {peer.pc.iceConnectionState}, received "
                  f"{[(t.kind, len(t.frames)) for t in peer.received.values()]}", file=sys.stderr, flush=True)
    print("media", flush=True)
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while (line := (await stdin.readline()).decode()) and line.strip() != "stop":
        words = line.split()
        if words and words[0] == "video_after":  # video_after T N DEADLINE_S: every video track
            # has N frames that arrived after monotonic time T (the test's wait, with a deadline)
            after, n, deadline = float(words[1]), int(words[2]), time.monotonic() + float(words[3])

            def got(after: float = after, n: int = n) -> bool:
                watch()
                videos = [tid for tid, t in peer.received.items() if t.kind == "video"]
                return bool(videos) and all(sum(a > after for a in arrivals.get(tid, [])) >= n for tid in videos)

            while not got() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            print("video ok" if got() else "video timeout", flush=True)
    sampler.cancel()
    watch()
    result = {
        "tracks": {tid: {"kind": t.kind, "arrivals": arrivals.get(tid, []), "keyframes": keyframes.get(tid, []),
                         "timestamps": [f.timestamp for f in t.frames[:len(arrivals.get(tid, []))]],
                         # which frame of the publisher's each is (its bytes are relayed as sent)
                         "crc": [zlib.crc32(f.data) for f in t.frames[:len(arrivals.get(tid, []))]]
                         if t.kind == "video" else [],
                         "rtp": t.rtp}
                   for tid, t in peer.received.items()},
        "adapted": adapted,
        "remb_sent": peer.remb_sent[-20:],
    }
    await me.close()
    if trace:
        clinic_trace.dump(trace)
    return result


if __name__ == "__main__":
    url, token, address, expect = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(url, token, address, int(expect)))), flush=True)
