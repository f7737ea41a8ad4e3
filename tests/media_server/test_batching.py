"""A burst fanned out to several subscribers: one subscriber after the other, UDP GSO runs."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

from media_server import batching, forwarding
from media_server.batching import MAX_SEGMENTS, SendBatcher, runs
from media_server.forwarding import ForwardTrack, Producer
from media_server.rewrite import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID, HeaderWriter


def test_runs_keep_equal_sizes_with_one_shorter_datagram_last() -> None:
    assert runs([1200, 1200, 1200, 700, 1200, 90, 1300]) == [(0, 4), (4, 6), (6, 7)]
    assert runs([100, 200]) == [(0, 1), (1, 2)]  # a longer datagram starts a new run
    assert runs([1000] * (MAX_SEGMENTS + 1)) == [(0, MAX_SEGMENTS), (MAX_SEGMENTS, MAX_SEGMENTS + 1)]
    assert runs([1200] * 60) == [(0, 54), (54, 60)]  # at most 65,000 bytes per send
    assert runs([]) == []


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append(data)


async def _endpoint(loop: asyncio.AbstractEventLoop, protocol: asyncio.DatagramProtocol
                    ) -> asyncio.DatagramTransport:
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=("127.0.0.1", 0))
    return transport


async def _receiving(loop: asyncio.AbstractEventLoop, rcvbuf: int
                     ) -> tuple[_Sink, asyncio.DatagramTransport, Any, asyncio.DatagramTransport, SendBatcher]:
    """A receiving socket (`rcvbuf` bytes of buffer) and a sender's batcher aimed at it:
    (sink, receiver, its address, sender, batcher)."""
    sink = _Sink()
    receiver = await _endpoint(loop, sink)
    receiver.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    addr = receiver.get_extra_info("sockname")
    sender = await _endpoint(loop, asyncio.DatagramProtocol())
    return sink, receiver, addr, sender, SendBatcher(sender, addr)


def _packet(seq: int, size: int, marker: int = 0) -> RtpPacket:
    payload = b"\x10\x00" + bytes([seq & 0xFF]) * (size - 2)
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=9000, marker=marker, payload=payload)
    p._data = payload[1:]  # type: ignore[attr-defined]  # what aiortc's VP8 depayloader leaves
    return p


def _run(coro: Any, loop_kind: str) -> None:
    if loop_kind == "uvloop":  # what `medstream serve` runs on
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


@pytest.mark.skipif(not batching.GSO_SUPPORTED, reason="UDP GSO is Linux only")
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_keyframe_burst_reaches_each_subscriber_whole_with_few_sends(loop_kind: str) -> None:
    """Before: each packet went to every subscriber in turn (a1 b1 a2 b2 ...), one sendto each."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = _Sink()
        receiver = await _endpoint(loop, sink)
        addr = receiver.get_extra_info("sockname")
        producer = Producer("t", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
        tracks, batchers, senders = [], [], []
        for ssrc in (0xA, 0xB):
            track = ForwardTrack("video", f"t{ssrc}", lambda: None)
            sender = await _endpoint(loop, asyncio.DatagramProtocol())
            batcher = SendBatcher(sender, addr)
            track._writer = HeaderWriter(ssrc, 100, "0", {URI_MID: 1})
            track._sendto, track._protect, track._addr = batcher.send, bytes, addr
            track._transport = sender
            producer.attach(track)
            tracks.append(track)
            batchers.append(batcher)
            senders.append(sender)
        burst = [_packet(100 + i, 1100) for i in range(29)] + [_packet(129, 300, marker=1)]
        for p in burst:  # what the publisher's DTLS task does with packets that came together
            producer.on_rtp(p)
        deadline = loop.time() + 10
        while len(sink.received) < 60 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        ssrcs = [int.from_bytes(d[8:12], "big") for d in sink.received]
        assert ssrcs == [0xA] * 30 + [0xB] * 30 or ssrcs == [0xB] * 30 + [0xA] * 30
        first = [d for d in sink.received if d[8:12] == b"\x00\x00\x00\x0a"]
        assert [d[-(len(p.payload)):] for d, p in zip(first, burst, strict=True)] == [
            p.payload for p in burst]  # the kernel cut the buffer back into the datagrams
        assert [b.datagrams for b in batchers] == [30, 30]
        assert [b.syscalls for b in batchers] == [1, 1]
        for b in batchers:
            b.close()
        for t in (receiver, *senders):
            t.close()

    _run(main(), loop_kind)


def test_a_closed_transport_drops_what_is_queued() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = _Sink()
        receiver = await _endpoint(loop, sink)
        sender = await _endpoint(loop, asyncio.DatagramProtocol())
        batcher = SendBatcher(sender, receiver.get_extra_info("sockname"))
        batcher.send(b"x" * 10)
        sender.close()
        await asyncio.sleep(0.05)
        assert batcher.closed and batcher.datagrams == 0 and sink.received == []
        batcher.send(b"y")  # after close: dropped, never raises
        await asyncio.sleep(0)
        receiver.close()

    asyncio.run(main())


def test_batcher_without_a_socket_falls_back_to_the_transport() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = _Sink()
        receiver = await _endpoint(loop, sink)
        sender = await _endpoint(loop, asyncio.DatagramProtocol())
        batcher = SendBatcher(sender, receiver.get_extra_info("sockname"))
        batcher.close()
        batcher._transport, batcher._gso = sender, False  # what a platform without GSO sees
        for i in range(3):
            batcher.send(bytes([i]) * 50)
        deadline = loop.time() + 10
        while len(sink.received) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert sink.received == [bytes([i]) * 50 for i in range(3)] and batcher.syscalls == 3
        sender.close()
        receiver.close()

    asyncio.run(main())


def test_socket_module_still_lacks_udp_segment() -> None:
    """We hard-code linux/udp.h's value; if Python exports it one day, it must agree."""
    assert getattr(socket, "UDP_SEGMENT", batching.UDP_SEGMENT) == batching.UDP_SEGMENT


@pytest.mark.skipif(not batching.GSO_SUPPORTED, reason="UDP GSO is Linux only")
def test_a_keyframe_fans_out_paced_so_the_loop_and_audio_go_on_meanwhile() -> None:
    """Before: a 70-packet keyframe was rewritten and protected for every subscriber inside the
    publisher's receive path, then sent: the loop was held for the whole burst (7,000 packet-
    sends at 1x100) and an Opus packet arriving behind it reached everyone after the keyframe."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        video = Producer("v", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
        audio = Producer("a", "alice", "audio", "opus", 48000, None, 1.0)  # type: ignore[arg-type]
        n = 10  # x 70 packets: more than one slice (FANOUT_SLICE_PACKETS)
        assert n * 70 > forwarding.FANOUT_SLICE_PACKETS
        batchers, sinks, transports = [], [], []
        for i in range(n):
            sink, receiver, addr, sender, batcher = await _receiving(loop, 1 << 20)
            for kind, producer, ssrc in (("video", video, 0x100 + i), ("audio", audio, 0x200 + i)):
                track = ForwardTrack(kind, f"{kind}{i}", lambda: None)  # type: ignore[arg-type]
                track._writer = HeaderWriter(ssrc, 100, "0", {URI_MID: 1})
                track._sendto, track._batcher, track._protect = batcher.send, batcher, bytes
                track._addr, track._transport = addr, sender
                producer.attach(track)
            batchers.append(batcher)
            sinks.append(sink)
            transports += [receiver, sender]
        keyframe = [_packet(100 + i, 1100) for i in range(69)] + [_packet(169, 300, marker=1)]
        for p in keyframe:  # one burst, as the publisher's DTLS task hands it over
            video.on_rtp(p)
        opus = RtpPacket(payload_type=111, sequence_number=5, timestamp=960, payload=b"\xfc" * 80)
        opus._data = opus.payload  # type: ignore[attr-defined]
        audio.on_rtp(opus)  # arrived right behind the keyframe
        written: list[list[int]] = []  # datagrams written per subscriber, after each loop pass

        def tick() -> None:
            written.append([b.datagrams for b in batchers])
            if min(written[-1]) < len(keyframe) + 1:
                loop.call_soon(tick)

        loop.call_soon(tick)
        deadline = loop.time() + 10
        while sum(len(s.received) for s in sinks) < n * (len(keyframe) + 1) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        # the loop ran other work while the keyframe was still on its way to most subscribers
        assert 0 < sum(w > len(keyframe) for w in written[0]) < n, written
        audio_everywhere = next(i for i, w in enumerate(written) if min(w) >= 1)
        keyframe_everywhere = next(i for i, w in enumerate(written) if min(w) > len(keyframe))
        assert audio_everywhere < keyframe_everywhere, written
        for i, sink in enumerate(sinks):  # each subscriber's keyframe whole and in order, and the Opus packet
            mine = [d for d in sink.received if d[8:12] == (0x100 + i).to_bytes(4, "big")]
            assert [d[-len(p.payload):] for d, p in zip(mine, keyframe, strict=True)] == [
                p.payload for p in keyframe]
            assert sum(d[8:12] == (0x200 + i).to_bytes(4, "big") for d in sink.received) == 1
        for b in batchers:
            b.close()
        for t in transports:
            t.close()

    asyncio.run(main())


@pytest.mark.skipif(not batching.GSO_SUPPORTED, reason="UDP GSO is Linux only")
@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_packets_written_and_protected_in_the_send_buffer_are_what_the_peer_expects(loop_kind: str) -> None:
    """The in-place path (`ForwardTrack.bind_batcher`: header, payload and SRTP written straight
    into the subscriber's send buffer) against the bytes path it replaced: the subscriber's SRTP
    session decrypts every datagram to exactly `HeaderWriter.header(...) + payload`, in order,
    across more than one buffer's worth (a keyframe of 100 packets: sent as the buffer fills),
    audio levels included."""
    from pylibsrtp import Policy, Session

    key = bytes(range(44))
    profile = Policy.SRTP_PROFILE_AEAD_AES_256_GCM

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink, receiver, addr, sender, batcher = await _receiving(loop, 1 << 21)
        video = Producer("v", "alice", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
        audio = Producer("a", "alice", "audio", "opus", 48000, None, 1.0)  # type: ignore[arg-type]
        ext = {URI_MID: 1, URI_ABS_SEND_TIME: 2, URI_AUDIO_LEVEL: 3}
        tracks = {}
        for kind, producer, ssrc in (("video", video, 0xA1), ("audio", audio, 0xA2)):
            track = ForwardTrack(kind, kind, lambda: None)  # type: ignore[arg-type]
            track._writer = HeaderWriter(ssrc, 100, "v1", ext)
            track.bind_batcher(batcher, Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                                       srtp_profile=profile)), addr)
            assert track._direct is not None  # pylibsrtp 1.0: the in-place path is in use
            producer.attach(track)
            tracks[kind] = track
        keyframe = [_packet(100 + i, 1100) for i in range(99)] + [_packet(199, 300, marker=1)]
        for p in keyframe:
            video.on_rtp(p)
        opus = []
        for i in range(3):
            p = RtpPacket(payload_type=111, sequence_number=7 + i, timestamp=960 * i, payload=bytes([i]) * 70)
            p._data = p.payload  # type: ignore[attr-defined]
            p.extensions.audio_level = (i == 1, 40 + i)
            audio.on_rtp(p)
            opus.append(p)
        deadline = loop.time() + 10
        while len(sink.received) < 103 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        peer = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
        clear = [peer.unprotect(d) for d in sink.received]
        by_ssrc: dict[int, list[bytes]] = {}
        for d in clear:
            by_ssrc.setdefault(int.from_bytes(d[8:12], "big"), []).append(d)
        assert len(by_ssrc[0xA1]) == 100 and len(by_ssrc[0xA2]) == 3
        for kind, ssrc, sent in (("video", 0xA1, keyframe), ("audio", 0xA2, opus)):
            track, got = tracks[kind], by_ssrc[ssrc]
            writer = track._writer
            assert writer is not None
            first = int.from_bytes(got[0][2:4], "big")
            for k, (d, p) in enumerate(zip(got, sent, strict=True)):
                seq = (first + k) & 0xFFFF
                ts = (p.timestamp + track._ts_offset) & 0xFFFFFFFF
                # abs-send-time is the time of sending: read back; everything else is recomputed
                assert d == writer.header(seq, ts, p.marker, _abs3_of(d), p.extensions.audio_level) + p.payload
        assert batcher.syscalls < 103  # GSO runs, not a send per datagram
        batcher.close()
        receiver.close()
        sender.close()

    _run(main(), loop_kind)


def _abs3_of(packet: bytes) -> bytes:
    """The abs-send-time value (id 2) of an RTP packet with one-byte header extensions."""
    n = int.from_bytes(packet[14:16], "big") * 4
    ext, i = packet[16 : 16 + n], 0
    while i < len(ext):
        if ext[i] == 0:
            i += 1
            continue
        ident, size = ext[i] >> 4, (ext[i] & 0x0F) + 1
        if ident == 2:
            return ext[i + 1 : i + 1 + size]
        i += 1 + size
    raise AssertionError("no abs-send-time")
