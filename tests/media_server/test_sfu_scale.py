"""Room shapes (16-party consultation, 1 x 20 broadcast with presenter switch) and leaks."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import pytest
from aiortc import RTCPeerConnection

from media_server.forwarding import ForwardTrack, Producer
from tests.conftest import timeout_s
from tests.support.rtc_peer import ClientPeer, SfuHarness

pytestmark = pytest.mark.webrtc

VIDEO = frozenset({"video"})


async def test_sixteen_party_consultation_everyone_sees_everyone(harness: SfuHarness) -> None:
    names = [f"p{i:02d}" for i in range(16)]
    clients = [
        await harness.join(ClientPeer(n, video_codec="VP8", fps=4, video_size=(128, 64)))
        for n in names
    ]
    track_of: dict[str, str] = {}
    for n in names:
        track_of[n] = (await harness.publish(n, VIDEO, timeout_s(10)))["video"]
    await asyncio.gather(
        *(
            harness.sfu.subscribe(n, [track_of[o] for o in names if o != n])
            for n in names
        )
    )

    # 240 forwarded tracks: wait for all of them at once against one deadline (one after the
    # other, each with its own, a loaded 2-core machine ran out of time: 46-61 s seen)
    async def arrives(client: ClientPeer, other: str) -> None:
        track = await client.wait_track(track_of[other], timeout_s(60))
        await track.wait_frames(2, timeout_s(60))
        assert track.frames[0].keyframe

    await asyncio.wait_for(asyncio.gather(*(arrives(c, o) for c in clients for o in names if o != c.name)),
                           timeout_s(90))
    assert all(info.subscribers == 15 for info in harness.sfu.tracks())
    await harness.settle(timeout_s(10))


async def test_broadcast_to_twenty_viewers_and_switch_presenter(harness: SfuHarness) -> None:
    presenter = await harness.join(ClientPeer("presenter", video_codec="VP8", fps=10))
    viewers = [await harness.join(ClientPeer(f"v{i:02d}")) for i in range(20)]
    first = (await harness.publish("presenter", VIDEO, timeout_s(5)))["video"]
    assert presenter.video_source is not None
    forced_before = presenter.video_source.keyframes_forced
    await asyncio.gather(*(harness.sfu.subscribe(v.name, [first]) for v in viewers))
    for v in viewers:
        track = await v.wait_track(first, timeout_s(10))
        await track.wait_frames(5, timeout_s(10))
        assert track.frames[0].keyframe
    # 20 viewers: the limiter lets about one keyframe per second through, not 20
    assert presenter.video_source.keyframes_forced - forced_before <= 4

    # switch presenter: new tracks on the existing connections, by renegotiation
    expert = await harness.join(ClientPeer("expert", video_codec="VP8", fps=10))
    second = (await harness.publish("expert", VIDEO, timeout_s(5)))["video"]
    answers = [v.answers for v in viewers]
    await asyncio.gather(*(harness.sfu.unsubscribe(v.name, [first]) for v in viewers))
    await asyncio.gather(*(harness.sfu.subscribe(v.name, [second]) for v in viewers))
    assert expert.video_source is not None
    for v, before in zip(viewers, answers, strict=True):
        track = await v.wait_track(second, timeout_s(10))
        await track.wait_frames(3, timeout_s(10))
        assert track.frames[0].keyframe
        assert v.answers > before
        sent = {f.data for f in expert.video_source.sent}
        assert all(f.data in sent for f in track.frames), "viewer got frames not from the expert"
    assert harness.sfu.producer(first).consumers == set()


def _counts() -> dict[str, int]:
    gc.collect()
    objects = gc.get_objects()
    return {
        "peer_connections": sum(isinstance(o, RTCPeerConnection) for o in objects),
        "producers": sum(isinstance(o, Producer) for o in objects),
        "forward_tracks": sum(isinstance(o, ForwardTrack) for o in objects),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
    }


async def _steady_counts() -> dict[str, int]:
    """The counts once two reads 0.1 s apart agree (the warm-up's closing tasks have ended)."""
    last = _counts()
    for _ in range(100):
        await asyncio.sleep(0.1)
        now = _counts()
        if now == last:
            return now
        last = now
    return last


async def _counts_back_to(before: dict[str, int], timeout: float) -> dict[str, int]:
    """The counts as soon as they equal `before`, or as they are at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (now := _counts()) != before and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return now


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_open_close_cycles_leak_nothing(harness: SfuHarness) -> None:
    """120 offer-only cycles plus 10 fully connected publish/subscribe cycles leave no trace."""
    sfu = harness.sfu
    # a resident publisher, so subscriptions in the connected cycles have something to carry
    await harness.join(ClientPeer("host", video_codec="VP8", audio=True, fps=10))
    ids = await harness.publish("host", frozenset({"audio", "video"}), timeout_s(5))

    async def connected_cycle(i: int) -> None:
        client = await harness.join(ClientPeer(f"c{i}", video_codec="VP8", audio=True, fps=10))
        await harness.publish(client.name, frozenset({"audio", "video"}), timeout_s(5))
        await sfu.subscribe(client.name, list(ids.values()))
        track = await client.wait_track(ids["video"], timeout_s(5))
        await track.wait_frames(1, timeout_s(5))
        await harness.settle(timeout_s(5))
        await harness.leave(client.name)

    async def offer_cycle(i: int) -> None:
        # a peer that never answers (crashed client): gathered sockets and tasks must go
        await sfu.open_peer(f"o{i}")
        await sfu.request_publish(f"o{i}", frozenset({"audio", "video"}))
        await sfu.subscribe(f"o{i}", list(ids.values()))
        await sfu.close_peer(f"o{i}")

    for i in range(3):  # warm up caches, codec contexts and the like
        await connected_cycle(-i - 1)
        await offer_cycle(-i - 1)
    await harness.settle(timeout_s(5))
    before = await _steady_counts()
    rss_before = _rss_kib()
    for i in range(120):
        await offer_cycle(i)
    for i in range(10):
        await connected_cycle(i)
    await harness.settle(timeout_s(5))
    after = await _counts_back_to(before, timeout_s(10))  # closing tasks end at their own pace
    rss_after = _rss_kib()
    assert after == before, (before, after)
    assert rss_after - rss_before < 40_000, (rss_before, rss_after)
    assert sorted(sfu.peer_ids()) == ["host"]
    assert {t.track_id for t in sfu.tracks()} == set(ids.values())
    assert all(t.subscribers == 0 for t in sfu.tracks())
