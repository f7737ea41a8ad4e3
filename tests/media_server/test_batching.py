"""A burst fanned out to several subscribers: one subscriber after the other, UDP GSO runs."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

from media_server import batching
from media_server.batching import MAX_SEGMENTS, SendBatcher, runs
from media_server.forwarding import ForwardTrack, Producer
from media_server.rewrite import URI_MID, HeaderWriter


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
