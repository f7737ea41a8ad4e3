"""bench.sfu: its receivers recognise frames, its figures add up, and one tiny run works end to end."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from bench.sfu import _figures, encode_clip, run_point
from bench.sfu_clients import LightSubscriber, Records, _Stream, frame_key
from tests.conftest import timeout_s


def _rtp(ssrc: int, seq: int, ts: int, payload: bytes, marker: bool) -> bytes:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, ssrc=ssrc)
    packet.payload = payload
    packet.marker = int(marker)
    return packet.serialize()


async def test_light_subscriber_recognises_vp8_frames_from_aiortc_packets() -> None:
    records = Records()
    sub = LightSubscriber("ws://unused", "token", records)
    sub.streams[1234] = _Stream("pub-1", "video")
    sub.streams[99] = _Stream("pub-1", "audio")
    frames = [bytes(range(256)) * 12, b"\x9d\x01\x2a" + bytes(300)]  # multi-packet, one-packet
    seq = 0
    for i, frame in enumerate(frames):
        payloads = Vp8Encoder._packetize(frame, picture_id=200 + i)  # aiortc's own packetiser
        assert len(payloads) >= (2 if i == 0 else 1)
        for j, payload in enumerate(payloads):
            await sub._on_rtp(_rtp(1234, seq, 3000 * i, payload, j == len(payloads) - 1), 0)
            seq += 1
    await sub._on_rtp(_rtp(99, 0, 960, b"opus-packet", True), 0)
    await sub._on_rtp(_rtp(4321, 0, 0, b"unknown ssrc", True), 0)
    video = [f for f in records.frames if f[1] == "video"]
    assert [(f[0], f[2], f[3]) for f in video] == [
        ("pub-1", frame_key(frames[0]), 0), ("pub-1", frame_key(frames[1]), 3000)]
    assert [f[2] for f in records.frames if f[1] == "audio"] == [frame_key(b"opus-packet")]
    assert sum(records.video_packets.values()) == seq
    await sub.pc.close()


def _records(sent: list[tuple[str, str, str, int, float]],
             frames: list[tuple[str, str, str | None, int, float]]) -> dict[str, object]:
    return {"sent": sent, "frames": frames, "video_packets": {}, "audio_packets": {}, "errors": []}


def test_figures_match_frames_by_bytes_or_timestamp() -> None:
    t0 = 1000.0
    sent = [("p", "video", f"k{i}", 3000 * i, t0 + i / 30) for i in range(30)]
    # subscriber A gets every frame 5 ms later; B misses frame 7 and gets the rest 15 ms later
    frames_a = [("p", "video", f"k{i}", 777 + 3000 * i, t0 + i / 30 + 0.005) for i in range(30)]
    frames_b = [("p", "video", f"k{i}", 555 + 3000 * i, t0 + i / 30 + 0.015)
                for i in range(30) if i != 7]
    by_bytes = _figures("medstream", 1, 2, t0, t0 + 1.0, 0.5, 0.1, 80.0,
                        [_records(sent, []), _records([], frames_a + frames_b)], 1.0, (0.0, 0.0, 0.0))
    assert by_bytes["video_frames_sent"] == 30 and by_bytes["video_frames_expected"] == 60
    assert by_bytes["video_frames_received"] == 59
    assert by_bytes["loss_pct"] == pytest.approx(100 / 60, abs=0.01)
    assert by_bytes["latency_ms_p50"] == pytest.approx(5.0, abs=0.5)
    assert by_bytes["latency_ms_max"] == pytest.approx(15.0, abs=0.5)
    assert by_bytes["server_cpu_s_per_stream_s"] == pytest.approx(0.5 / 2)
    # a transcoding relay changes the bytes but keeps the timestamps (both senders start at 0)
    transcoded = [("p", "video", None, 3000 * i, t0 + i / 30 + 0.040) for i in range(30)]
    by_ts = _figures("transcoding", 1, 1, t0, t0 + 1.0, 0.5, 0.1, 80.0,
                     [_records(sent, transcoded)], 1.0, (0.0, 0.0, 0.0))
    assert by_ts["loss_pct"] == 0.0 and by_ts["latency_ms_p50"] == pytest.approx(40.0, abs=0.5)


@pytest.mark.webrtc
def test_one_publisher_one_subscriber_end_to_end(tmp_path: Path) -> None:
    clip = tmp_path / "clip.webm"
    info = encode_clip(clip, seconds=1.0, size=(320, 180), bitrate_bps=300_000)
    assert info["frames"] == 30
    started = time.monotonic()
    r = run_point("medstream", 1, 1, 2.0, clip, 1, tmp_path)
    assert time.monotonic() - started < timeout_s(60)
    assert r["video_frames_sent"] >= 55, r
    assert r["loss_pct"] == 0.0 and r["video_frames_unmatched"] == 0, r
    assert r["latency_ms_p50"] is not None and r["audio_latency_ms_p50"] is not None, r
    assert r["server_cpu_s"] > 0 and r["server_rss_mb"] > 0, r
