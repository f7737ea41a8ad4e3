"""The aiortc 1.16 seams the forwarder relies on, and per-subscriber RTP rewriting."""

from __future__ import annotations

import asyncio
import inspect
import queue
import sys
import time

import aiortc
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import RtpPacket

from media_server.forwarding import ForwardTrack, Producer, ReceiverTap, RetransmitBudget
from media_server.rewrite import (
    URI_ABS_SEND_TIME,
    URI_MID,
    HeaderWriter,
    SequenceRewriter,
    starts_keyframe,
)


def test_aiortc_version_is_the_pinned_one() -> None:
    assert aiortc.__version__ == "1.16.0"


def test_receiver_hands_frames_to_the_decoder_queue() -> None:
    # the module's text, not the class's: for a class inspect parses the file with `ast`, and on
    # CPython 3.11.7 that raised "AST constructor recursion depth mismatch" once in a CI run
    source = inspect.getsource(sys.modules[RTCRtpReceiver.__module__])
    assert "self.__decoder_queue.put((codec, encoded_frame))" in source
    assert "self.__decoder_queue.put(None)" in source
    assert "self.__decoder_queue," in source  # passed to the decoder thread in receive()


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


def test_sender_internals_the_forwarder_takes_over() -> None:
    source = inspect.getsource(RTCRtpSender.send)
    assert "self._run_rtp(" in source and "self._run_rtcp()" in source
    assert "self.__rtp_exited.wait()" in inspect.getsource(RTCRtpSender.stop)
    assert "self.__jitter_buffer.add(packet)" in inspect.getsource(RTCRtpReceiver._handle_rtp_packet)


def rtp(seq: int, ts: int = 3000, marker: int = 0, payload: bytes = b"\x10\x00abc") -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=marker, payload=payload)
    p._data = payload[1:]  # type: ignore[attr-defined]  # what aiortc's VP8 depayloader leaves
    return p


class _Wire:
    """The transport seam: what a ForwardTrack hands to its socket, SRTP left out."""

    def __init__(self, track: ForwardTrack, ext_ids: dict[str, int] | None = None) -> None:
        self.sent: list[RtpPacket] = []
        self.ids = ext_ids or {URI_MID: 1, URI_ABS_SEND_TIME: 2}
        track._writer = HeaderWriter(0x1234, 100, "3", self.ids)
        track._sendto = lambda data, addr: self.sent.append(self._parse(data))
        track._protect = lambda data: data

    def _parse(self, data: bytes) -> RtpPacket:
        from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
        from aiortc.rtp import HeaderExtensionsMap

        m = HeaderExtensionsMap()
        m.configure(RTCRtpParameters(headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in self.ids.items()]))
        return RtpPacket.parse(data, m)


def test_forwarded_packets_are_rewritten_with_payload_unchanged() -> None:
    requests: list[int] = []
    track = ForwardTrack("video", "t", lambda: requests.append(1))
    wire = _Wire(track)
    keyframe = rtp(500, payload=b"\x10\x00keyframe")
    assert track.forward(rtp(499, payload=b"\x10\x01delta"), False, b"\x01\x02\x03", None) is True
    assert wire.sent == []  # waiting for a keyframe: asks for one
    for p, start in ((keyframe, True), (rtp(501, marker=1), False), (rtp(502, ts=6000), False)):
        track.forward(p, start, b"\x01\x02\x03", None)
    first, second, third = wire.sent
    assert first.payload == b"\x10\x00keyframe" and first.ssrc == 0x1234 and first.payload_type == 100
    assert [second.sequence_number, third.sequence_number] == [
        (first.sequence_number + 1) & 0xFFFF, (first.sequence_number + 2) & 0xFFFF]
    assert third.timestamp - first.timestamp == 3000 and second.marker == 1
    assert first.extensions.mid == "3" and first.extensions.abs_send_time == 0x010203


@pytest.mark.parametrize("first_seq", [0, 1000, 32767, 32768, 40000, 65535])
def test_audio_is_forwarded_whatever_the_publishers_sequence_numbers_are_when_it_starts(first_seq: int) -> None:
    """A subscriber's audio begins with whatever packet comes first (audio has no keyframe).

    Before, a subscriber whose forwarding started when the publisher's numbers were >= 32768
    got none of its audio (all refused as "older than the start") until they wrapped."""
    track = ForwardTrack("audio", "t", lambda: None)
    wire = _Wire(track)
    for i in range(5):
        track.forward(rtp((first_seq + i) & 0xFFFF, ts=960 * i), True, b"\x00\x00\x00", None)
    assert track.packets_forwarded == 5, track.packets_forwarded
    numbers = [p.sequence_number for p in wire.sent]
    assert numbers == [(numbers[0] + i) & 0xFFFF for i in range(5)]


def test_packets_a_gate_drops_leave_no_gap_and_late_packets_keep_their_number() -> None:
    track = ForwardTrack("video", "t", lambda: None)
    wire = _Wire(track)
    track.packet_filter = lambda p: p.sequence_number != 11
    for seq in (10, 11, 13, 12, 14):  # 12 arrives late (a publisher retransmission)
        track.forward(rtp(seq), seq == 10, b"\x00\x00\x00", None)
    numbers = [p.sequence_number - wire.sent[0].sequence_number for p in wire.sent]
    assert numbers == [0, 2, 1, 3]  # 10, 13, 12, 14: 11 left out without a hole


def test_resume_after_pause_waits_for_a_keyframe_and_continues_the_sequence() -> None:
    requests: list[int] = []
    track = ForwardTrack("video", "t", lambda: requests.append(1))
    wire = _Wire(track)
    track.forward(rtp(1), True, b"\x00\x00\x00", None)
    track.set_paused(True, "muted")
    track.set_paused(True, "audio_only")
    track.set_paused(False, "muted")
    track.forward(rtp(2), True, b"\x00\x00\x00", None)
    assert track.paused and len(wire.sent) == 1
    track.set_paused(False, "audio_only")
    assert requests == [1]
    track.forward(rtp(900), False, b"\x00\x00\x00", None)
    track.forward(rtp(901), True, b"\x00\x00\x00", None)
    assert len(wire.sent) == 2
    assert wire.sent[1].sequence_number == (wire.sent[0].sequence_number + 1) & 0xFFFF


def test_nack_is_answered_from_the_producers_history_as_rtx() -> None:
    producer = Producer("t", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    track = ForwardTrack("video", "t", lambda: None)
    wire = _Wire(track)
    track._source = producer
    track._rtx_payload_type, track._rtx_ssrc = 101, 0x5678
    producer.attach(track)
    for seq in (7, 8):
        producer.on_rtp(rtp(seq, payload=b"\x10\x00" + bytes([seq])))
    lost = wire.sent[1].sequence_number
    track._retransmit(lost, time.monotonic() + 0.2)
    rtx = wire.sent[2]
    assert rtx.payload_type == 101 and rtx.ssrc == 0x5678
    assert rtx.payload == lost.to_bytes(2, "big") + b"\x10\x00\x08"


def test_a_packet_asked_for_again_and_again_is_resent_once_per_rtt_within_the_budget() -> None:
    """aiortc NACKs every still-missing packet at each new gap; on a 200 kbit/s link answering
    all of them made retransmissions 3-4x the forwarded packets (measured), filling the link."""
    producer = Producer("t", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    track = ForwardTrack("video", "t", lambda: None)
    wire = _Wire(track)
    track._source = producer
    producer.attach(track)
    for seq in range(7, 17):
        producer.on_rtp(rtp(seq, payload=b"\x10\x00" + bytes(500)))
    sent_at = time.monotonic()
    first = wire.sent[0].sequence_number
    track._retransmit(first, sent_at + 0.01)  # asked for at once: resent at once
    track._retransmit(first, sent_at + 0.05)  # again within the interval: refused
    assert len(wire.sent) == 11 and track.retransmissions_refused == 1
    track._retransmit(first, sent_at + 0.2)
    assert len(wire.sent) == 12
    track._retransmit(first + 1, sent_at + 1.5)  # older than a real-time receiver can use
    assert len(wire.sent) == 12
    track.retransmit_budget = RetransmitBudget(rate_bps=40_000, burst_s=0.25, min_depth_bytes=0)  # 1250 bytes deep
    for i in range(2, 6):
        track._retransmit(first + i, sent_at + 0.3)
    assert len(wire.sent) == 14  # two of ~560 bytes fit the bucket, the others wait
    track._retransmit(first + 4, sent_at + 0.45)  # 150 ms later: 750 bytes more
    assert len(wire.sent) == 15
    assert RetransmitBudget(rate_bps=16_000).take(1260, 0.0)  # never shallower than a few packets


def test_a_loss_the_receiver_sees_late_is_still_resent() -> None:
    """A receiver tells a packet is lost only when the next one arrives: at a cut layer's 3.75
    fps, or across a pause, that is long after the packet went out, and on a busy machine the
    NACK takes a while more. Counted from the packet's own send (1 s) such NACKs were refused
    for good and the hole held back every later frame, the resume keyframe too (test_congestion
    failed one run in six). Age counts from the next packet's send, up to 3 RTTs."""
    from types import SimpleNamespace

    from media_server.forwarding import _SENT_MASK

    producer = Producer("t", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    track = ForwardTrack("video", "t", lambda: None)
    wire = _Wire(track)
    track._source = producer
    producer.attach(track)
    for seq in (7, 8, 9):
        producer.on_rtp(rtp(seq, payload=b"\x10\x00" + bytes(100)))
    for p in wire.sent:  # sent 1.2 s before the next packet (a slow base layer)
        track._sent_at[p.sequence_number & _SENT_MASK] -= 1.2
    producer.on_rtp(rtp(10, ts=6000, payload=b"\x10\x00" + bytes(100)))
    now = time.monotonic()
    last_before = wire.sent[2].sequence_number
    track._retransmit(last_before, now + 0.4)  # seen lost when 10 came: 0.4 s ago
    assert len(wire.sent) == 5, "a loss the receiver could not see earlier was refused"
    track._retransmit(wire.sent[0].sequence_number, now + 0.4)  # its next one went 1.6 s ago
    assert len(wire.sent) == 5
    track._sender = SimpleNamespace(_RTCRtpSender__rtt=0.6)  # a slow round trip: 1.8 s
    track._retransmit(wire.sent[0].sequence_number, now + 0.4)
    assert len(wire.sent) == 6


def test_a_hole_no_retransmission_can_fill_asks_for_a_keyframe_once() -> None:
    """Measured on the 200 kbit/s link: a packet lost with all 5 of its retransmissions in the
    full queue was refused once older than the limit, and the clinic decoded nothing of that
    track after it (its receiver waits for a keyframe, which nobody asked for)."""
    requests: list[int] = []
    producer = Producer("t", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    track = ForwardTrack("video", "t", lambda: requests.append(1))
    wire = _Wire(track)
    track._source = producer
    producer.attach(track)
    producer.on_rtp(rtp(7, payload=b"\x10\x00key"))  # a keyframe starts the track
    for seq in (8, 9, 10):
        producer.on_rtp(rtp(seq, ts=3000 * (seq - 6), payload=b"\x10\x01delta"))
    first = wire.sent[0].sequence_number
    later = time.monotonic() + 5.0
    track._retransmit(first + 2, later)  # too old: refused, and a keyframe asked for
    assert requests == [1] and track.keyframes_for_holes == 1
    track._retransmit(first + 2, later + 0.2)  # asked again (a receiver re-NACKs): once is enough
    track._retransmit(first + 1, later + 0.2)  # an older hole: the same keyframe repairs it
    assert requests == [1]
    track._retransmit(first + 3, later + 0.2)  # a newer one
    assert requests == [1, 1]
    producer.on_rtp(rtp(11, ts=30000, payload=b"\x10\x00key"))  # a keyframe went out since
    track._retransmit(first + 3, later + 0.4)
    assert requests == [1, 1]


def test_sequence_rewriter_wraps_around() -> None:
    r = SequenceRewriter(0xFFFE)
    r.start(0xFFF0)
    assert [r.map(s) for s in (0xFFF0, 0xFFF1, 0xFFF2)] == [0xFFFE, 0xFFFF, 0]
    r.drop(0xFFF3)
    assert r.map(0xFFF4) == 1 and r.map(0xFFF3) is None and r.map(0xFFF4) is None


def test_keyframe_starts_are_found_per_packet() -> None:
    assert starts_keyframe("VP8", b"\x10\x00", b"\x00", True)
    assert not starts_keyframe("VP8", b"\x10\x00", b"\x01", True)  # P bit: an interframe
    assert not starts_keyframe("VP8", b"\x00\x00", b"\x00", True)  # not a partition start
    sps = b"\x00\x00\x00\x01\x67\x42"
    assert starts_keyframe("H264", b"", sps, True) and not starts_keyframe("H264", b"", sps, False)
    assert starts_keyframe("opus", b"x", b"x", False)


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


async def test_a_fan_out_that_falls_behind_sheds_video_to_the_next_keyframe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paced fan-out queues video in user space; on an overloaded core that queue (and the
    latency) would grow for as long as the overload lasts. Past FANOUT_MAX_DELAY_S the subscribers
    still owed packets skip to the next keyframe instead: video shed, nobody dropped, no gap."""
    from media_server import forwarding

    producer = Producer("t", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    requests: list[int] = []
    tracks, wires = [], []
    for _ in range(2):
        track = ForwardTrack("video", "t", lambda: requests.append(1))
        wires.append(_Wire(track))
        tracks.append(track)
        producer.attach(track)
    producer.on_rtp(rtp(10, ts=3000, marker=1))  # a keyframe
    await asyncio.sleep(0)  # the loop runs the fan-out
    assert [len(w.sent) for w in wires] == [1, 1]
    monkeypatch.setattr(forwarding, "FANOUT_MAX_DELAY_S", -1.0)  # "behind" as soon as two wait
    producer.on_rtp(rtp(11, ts=6000, payload=b"\x10\x01delta"))
    producer.on_rtp(rtp(12, ts=6000, marker=1, payload=b"\x10\x01delta"))  # the loop never got to 11
    assert producer.backlog_sheds == 1 and requests == [1, 1]
    assert all(t.waiting_for_keyframe and t.frames_dropped == 1 for t in tracks)
    await asyncio.sleep(0)
    assert [len(w.sent) for w in wires] == [1, 1]  # the delta frame is not sent on its own
    producer.on_rtp(rtp(13, ts=9000, marker=1))  # the next keyframe
    await asyncio.sleep(0)
    for w in wires:
        assert [p.payload for p in w.sent] == [b"\x10\x00abc", b"\x10\x00abc"]
        assert w.sent[1].sequence_number == (w.sent[0].sequence_number + 1) & 0xFFFF  # no gap to NACK


async def test_a_keyframe_to_a_subscriber_whose_link_is_the_limit_goes_out_paced() -> None:
    """A resume keyframe probes a weak link; sent as one burst, a 320x240 one (10-15 kB) overflowed
    a township router's 5 kB queue at every probe and took the audio queued with it. To a
    subscriber with `pace_bps` set it goes out at that rate (one MTU at once), in order, with the
    delta frames behind it; to the others at once."""
    producer = Producer("t", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    weak, good = ForwardTrack("video", "t", lambda: None), ForwardTrack("video", "t", lambda: None)
    weak_wire, good_wire = _Wire(weak), _Wire(good)
    sent_at: list[float] = []
    send = weak._sendto
    assert send is not None

    def timed(data: bytes, addr: object) -> None:
        sent_at.append(time.monotonic())
        send(data, addr)

    weak._sendto = timed
    weak.pace_bps = 800_000.0  # 10 x 1100 bytes: ~0.12 s
    for track in (weak, good):
        producer.attach(track)
    key = [rtp(100, ts=3000, payload=b"\x10\x00" + bytes(1100))]
    key += [rtp(100 + i, ts=3000, payload=b"\x00\x00" + bytes(1100), marker=int(i == 9)) for i in range(1, 10)]
    for p in key:
        producer.on_rtp(p)
    producer.on_rtp(rtp(110, ts=6000, payload=b"\x10\x01delta", marker=1))
    await asyncio.sleep(0)
    assert len(good_wire.sent) == 11  # at once
    assert 1 <= len(weak_wire.sent) <= 2  # one MTU's worth, the rest paced
    deadline = time.monotonic() + 5
    while len(weak_wire.sent) < 11 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [p.payload for p in weak_wire.sent] == [p.payload for p in good_wire.sent]
    seqs = [p.sequence_number for p in weak_wire.sent]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(11)]  # in order, no gap to NACK
    assert sent_at[-1] - sent_at[0] >= 0.8 * 9 * 1158 * 8 / 800_000  # at the rate, not a burst
    assert weak.keyframes_paced == 1 and not weak._paced
    producer.on_rtp(rtp(111, ts=9000, payload=b"\x10\x01delta", marker=1))  # deltas as they come
    await asyncio.sleep(0)
    assert len(weak_wire.sent) == 12
