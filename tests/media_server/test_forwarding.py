"""The aiortc 1.16 seams the forwarder relies on, and the per-subscriber queue policy."""

from __future__ import annotations

import asyncio
import inspect
import queue

import aiortc
import av
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError

from media_server.forwarding import ForwardTrack, ReceiverTap, route_keyframe_requests


def test_aiortc_version_is_the_pinned_one() -> None:
    assert aiortc.__version__ == "1.16.0"


def test_receiver_hands_frames_to_the_decoder_queue() -> None:
    source = inspect.getsource(RTCRtpReceiver)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in source
    assert "self.__decoder_queue.put(None)" in source
    assert "self.__decoder_queue," in source  # passed to the decoder thread in receive()


def test_sender_packs_packets_and_flags_keyframes() -> None:
    source = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "self.__encoder.pack(data)" in source
    assert "self._send_keyframe()" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert "_retransmit" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)


class _Receiver:
    """Only the attribute the tap replaces (a real receiver needs a DTLS transport)."""

    def __init__(self) -> None:
        self._RTCRtpReceiver__decoder_queue: object = queue.Queue()


class _Frame:
    def __init__(self, data: bytes, timestamp: int) -> None:
        self.data = data
        self.timestamp = timestamp


def test_tap_takes_frames_and_passes_the_stop_sentinel() -> None:
    seen: list[tuple[object, bytes]] = []
    receiver = _Receiver()
    tap = ReceiverTap.install(receiver, lambda codec, frame: seen.append((codec, frame.data)))  # type: ignore[arg-type]
    assert receiver._RTCRtpReceiver__decoder_queue is tap
    tap.put(("VP8", _Frame(b"abc", 0)))
    assert seen == [("VP8", b"abc")]
    tap.put(None)
    assert tap.get(timeout=1) is None


def test_tap_refuses_unknown_receiver_internals() -> None:
    receiver = _Receiver()
    receiver._RTCRtpReceiver__decoder_queue = []
    with pytest.raises(RuntimeError, match="expected _RTCRtpReceiver__decoder_queue"):
        ReceiverTap.install(receiver, lambda c, f: None)  # type: ignore[arg-type]


def test_keyframe_requests_are_rerouted_per_sender() -> None:
    class Sender:
        pass

    calls: list[int] = []
    sender = Sender()
    route_keyframe_requests(sender, lambda: calls.append(1))  # type: ignore[arg-type]
    sender._send_keyframe()  # type: ignore[attr-defined]
    assert calls == [1]


def packet(n: int) -> av.Packet:
    p = av.Packet(bytes([n]))
    p.pts = n
    return p


async def test_video_waits_for_keyframe_then_forwards_in_order() -> None:
    requests: list[int] = []
    track = ForwardTrack("video", "t", 4, lambda: requests.append(1))
    track.push(packet(1), keyframe=False)
    track.push(packet(2), keyframe=True)
    track.push(packet(3), keyframe=False)
    assert track.frames_dropped == 1
    first = await track.recv()  # first read asks for a keyframe? no: one is already queued
    assert bytes(first) == b"\x02" and bytes(await track.recv()) == b"\x03"
    assert requests == []


async def test_first_read_without_keyframe_asks_for_one() -> None:
    requests: list[int] = []
    track = ForwardTrack("video", "t", 4, lambda: requests.append(1))
    reader = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    assert requests == [1]
    track.push(packet(7), keyframe=True)
    assert bytes(await reader) == b"\x07"


async def test_full_video_queue_skips_to_next_keyframe() -> None:
    requests: list[int] = []
    track = ForwardTrack("video", "t", 3, lambda: requests.append(1))
    track.push(packet(0), keyframe=True)
    for n in range(1, 3):
        track.push(packet(n), keyframe=False)
    track.push(packet(3), keyframe=False)  # overflow: queue emptied, wait for keyframe
    assert requests == [1] and track.waiting_for_keyframe
    track.push(packet(4), keyframe=False)
    track.push(packet(5), keyframe=True)
    assert bytes(await track.recv()) == b"\x05"
    assert track.frames_dropped == 5


async def test_full_audio_queue_drops_oldest() -> None:
    track = ForwardTrack("audio", "t", 2, lambda: None)
    for n in range(4):
        track.push(packet(n), keyframe=True)
    assert [bytes(await track.recv()) for _ in range(2)] == [b"\x02", b"\x03"]


async def test_pause_reasons_are_independent_and_resume_waits_for_keyframe() -> None:
    requests: list[int] = []
    track = ForwardTrack("video", "t", 4, lambda: requests.append(1))
    track.push(packet(0), keyframe=True)
    await track.recv()
    track.set_paused(True, "muted")
    track.set_paused(True, "audio_only")
    track.set_paused(False, "muted")
    assert track.paused
    track.push(packet(1), keyframe=True)
    track.set_paused(False, "audio_only")
    assert not track.paused and requests == [1]
    track.push(packet(2), keyframe=False)
    track.push(packet(3), keyframe=True)
    assert bytes(await track.recv()) == b"\x03"


async def test_stop_ends_a_waiting_reader() -> None:
    track = ForwardTrack("audio", "t", 2, lambda: None)
    reader = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await reader


def test_early_jitter_buffer_passes_frames_on_when_complete():
    """Video at the marker packet when the frame is whole; audio at once; gaps wait as in aiortc."""
    from aiortc.rtp import RtpPacket

    from media_server.forwarding import EarlyJitterBuffer

    def pkt(seq, ts, marker=False, payload=b""):
        p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=marker)
        p._data = payload or bytes([seq % 256])
        return p

    video = EarlyJitterBuffer(capacity=128, is_video=True)
    assert video.add(pkt(100, 9000))[1] is None
    _, frame = video.add(pkt(101, 9000, marker=True))
    assert frame is not None and frame.data == bytes([100, 101]) and frame.timestamp == 9000
    # a gap inside the next frame: the marker alone does not release it
    assert video.add(pkt(102, 12000))[1] is None
    assert video.add(pkt(104, 12000, marker=True))[1] is None
    # the retransmitted packet completes it: released with all three parts
    _, frame = video.add(pkt(103, 12000))
    assert frame is None or frame.data == bytes([102, 103, 104])
    if frame is None:  # aiortc's own rule releases it when the next frame starts
        _, frame = video.add(pkt(105, 15000, marker=True))
        assert frame is not None and frame.data == bytes([102, 103, 104])

    audio = EarlyJitterBuffer(capacity=16)
    for seq in range(200, 205):
        _, frame = audio.add(pkt(seq, seq * 960))
        assert frame is not None and frame.timestamp == seq * 960
    assert audio.add(pkt(199, 199 * 960))[1] is None  # late: already past it
