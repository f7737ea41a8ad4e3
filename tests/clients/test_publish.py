"""`medstream publish`: a file's own packets reach a subscriber through the real server, unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest

from clients.publish import (
    PacketTrack,
    PlaybackClock,
    Publisher,
    PublishError,
    iter_packets,
    main,
    plan_streams,
    publish_file,
)
from protocol import signaling as wire
from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token
from tests.support.rtc_peer import ClientPeer

FPS = 15
SECONDS = 2


def _tone(samples: int, start: int) -> np.ndarray:
    t = (np.arange(samples) + start) / 48000
    mono = (6000 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
    return np.repeat(mono, 2).reshape(1, -1)


def write_clip(path: Path, video_codec: str, audio_codec: str | None, *, gop: int = 10) -> None:
    """A small clip whose every frame differs (noise), keyframe every `gop` frames."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        v = out.add_stream(video_codec, rate=FPS)
        v.width, v.height, v.pix_fmt = 160, 96, "yuv420p"
        v.bit_rate = 200_000
        v.codec_context.gop_size = gop
        a = None
        if audio_codec is not None:
            a = out.add_stream(audio_codec, rate=48000)
            a.layout = "stereo"
        for i in range(FPS * SECONDS):
            img = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, FPS)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        if a is not None:
            n = 960 if audio_codec == "libopus" else 1024
            fmt = "s16"
            for j in range(SECONDS * 48000 // n):
                frame = av.AudioFrame.from_ndarray(_tone(n, j * n), format=fmt, layout="stereo")
                frame.sample_rate = 48000
                frame.pts = j * n
                frame.time_base = fractions.Fraction(1, 48000)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))


@pytest.fixture(scope="module")
def vp8_opus_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("publish") / "clip.webm"
    write_clip(path, "libvpx", "libopus")
    return path


def test_plan_passes_vp8_and_opus_through(vp8_opus_clip: Path) -> None:
    plans = plan_streams(vp8_opus_clip)
    assert {k: (p.codec, p.transcode) for k, p in plans.items()} == {
        "video": ("VP8", False), "audio": ("opus", False)}
    with av.open(str(vp8_opus_clip)) as c:
        raw = [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]
    assert [p.data for p in iter_packets(vp8_opus_clip, plans["video"])] == raw


def test_loop_continues_timestamps(vp8_opus_clip: Path) -> None:
    plan = plan_streams(vp8_opus_clip)["video"]
    once = list(iter_packets(vp8_opus_clip, plan))
    it = iter_packets(vp8_opus_clip, plan, loop=True)
    looped = [next(it) for _ in range(2 * len(once) + 3)]
    file_steps = {b.pts - a.pts for a, b in itertools.pairwise(once)}  # WebM keeps ms: 66/67 ms
    steps = {b.pts - a.pts for a, b in itertools.pairwise(looped)}
    assert steps == file_steps and all(abs(s - 90000 // FPS) <= 90 for s in steps), steps
    assert [p.data for p in looped[len(once):2 * len(once)]] == [p.data for p in once]


def test_other_codecs_are_reencoded_to_vp8_and_opus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clip.mp4"
    write_clip(path, "mpeg4", "aac", gop=12)
    plans = plan_streams(path)
    assert {k: (p.codec, p.transcode) for k, p in plans.items()} == {
        "video": ("VP8", True), "audio": ("opus", True)}
    video = list(iter_packets(path, plans["video"]))
    assert video[0].keyframe and len(video) == FPS * SECONDS
    decoder = av.CodecContext.create("libvpx", "r")
    decoded = [f for p in video for f in decoder.decode(av.Packet(p.data))]
    assert len(decoded) == len(video) and decoded[0].width == 160
    audio = list(iter_packets(path, plans["audio"]))
    assert len(audio) >= SECONDS * 50 - 5  # 20 ms Opus packets
    opus = av.CodecContext.create("libopus", "r")
    assert sum(f.samples for p in audio for f in opus.decode(av.Packet(p.data))) >= 0.9 * SECONDS * 48000


def test_unreadable_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"not a media file")
    with pytest.raises(PublishError, match="cannot open"):
        plan_streams(bad)
    assert main([str(bad), "--token", "x"]) == 1
    assert "cannot open" in capsys.readouterr().err


async def _subscribe(ws: WsClient, peer: ClientPeer) -> None:
    """Answer every offer the server sends the subscriber."""
    while True:
        offer = await ws.wait(lambda m: m["type"] == "sdp", timeout=3600)
        answer = await peer.answer(offer["sdp"])
        await ws.send(wire.Sdp("answer", answer))


def _assert_contiguous(received: list[bytes], file_packets: list[bytes]) -> int:
    """Every received frame equals the file's packets from some start on, wrapping at the end."""
    start = file_packets.index(received[0])
    n = len(file_packets)
    for i, data in enumerate(received):
        assert data == file_packets[(start + i) % n], f"frame {i} differs from file packet {(start + i) % n}"
    return start


@pytest.mark.webrtc
async def test_publish_file_reaches_subscriber_byte_identical(vp8_opus_clip: Path) -> None:
    plans = plan_streams(vp8_opus_clip)
    video_pts = list(iter_packets(vp8_opus_clip, plans["video"]))
    video_file = [p.data for p in video_pts]
    audio_file = [p.data for p in iter_packets(vp8_opus_clip, plans["audio"])]
    async with running_app(media=True, ice_host_addresses=("127.0.0.1",),
                           rooms=(("hall", "broadcast"),)) as app:
        viewer = await WsClient.connect(app.ws_url)
        peer = ClientPeer("viewer")
        answering = asyncio.ensure_future(_subscribe(viewer, peer))
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        publishing = None
        try:
            joined = await viewer.join(token("hall", "viewer-1", "viewer"), media=True)
            assert joined["type"] == "joined", joined
            publishing = asyncio.ensure_future(publish_file(
                vp8_opus_clip, app.ws_url, token("hall", "presenter", "host"), loop=True, stop=stop))
            published = await viewer.wait(
                lambda m: m["type"] == "track_published" and m["track"]["kind"] == "video", timeout=10)
            video_id = published["track"]["track_id"]
            video = await peer.wait_track(video_id, timeout_s(10))
            # more than one pass through the file: the loop must continue seamlessly
            await video.wait_frames(len(video_file) + FPS, timeout_s(15))
            audio = next(t for t in peer.received.values() if t.kind == "audio")
            await audio.wait_frames(50, timeout_s(5))
        finally:
            stop.set_result(None)
            if publishing is not None:
                publisher = await asyncio.wait_for(publishing, timeout_s(10))
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            await viewer.close()
            await peer.close()
    frames = video.frames
    assert frames[0].keyframe
    _assert_contiguous([f.data for f in frames], video_file)
    steps = {b.timestamp - a.timestamp for a, b in itertools.pairwise(frames)}
    file_steps = {b.pts - a.pts for a, b in itertools.pairwise(video_pts)}
    assert steps <= file_steps, f"RTP timestamps must advance one frame each, got steps {steps}"
    _assert_contiguous([f.data for f in audio.frames], audio_file)
    assert publisher.stats.participant_id is not None
    assert set(publisher.stats.track_ids) == {"audio", "video"}
    json.dumps(publisher.stats.track_ids)


@pytest.mark.webrtc
async def test_two_presenters_do_not_receive_each_other(vp8_opus_clip: Path) -> None:
    """The room subscribes presenters to each other; a file publisher declines (no decoding)."""
    plans = plan_streams(vp8_opus_clip)
    async with running_app(media=True, ice_host_addresses=("127.0.0.1",),
                           rooms=(("hall", "broadcast"),)) as app:
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        publishers = []
        for identity, role in (("a", "host"), ("b", "expert")):
            clock = PlaybackClock()
            tracks = {k: PacketTrack(k, iter_packets(vp8_opus_clip, p, loop=True), p.clock_rate_hz, clock)
                      for k, p in plans.items()}
            publishers.append(Publisher(app.ws_url, token("hall", identity, role), dict(tracks),
                                        {k: p.codec for k, p in plans.items()}, ("127.0.0.1",)))
        runs = [asyncio.ensure_future(p.run(stop)) for p in publishers]
        try:
            for p in publishers:
                await asyncio.wait_for(p.published.wait(), timeout_s(10))

            def forwarded_to_publishers() -> list[str]:
                return [t for a in publishers for b in publishers if a is not b
                        for t in b.stats.track_ids.values()
                        if app.media.forward_track(a.stats.participant_id, t) is not None]

            deadline = asyncio.get_running_loop().time() + timeout_s(10)
            while forwarded_to_publishers() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert forwarded_to_publishers() == []
            for p in publishers:
                assert p.pc is not None
                receiving = [t.mid for t in p.pc.getTransceivers()
                             if t.currentDirection in ("recvonly", "sendrecv")]
                assert receiving == [], receiving
                assert len([t for t in p.pc.getTransceivers() if t.currentDirection == "sendonly"]) == 2
        finally:
            stop.set_result(None)
            await asyncio.wait_for(asyncio.gather(*runs), timeout_s(10))
