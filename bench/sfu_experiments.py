"""Candidate changes to the server, tried in the benchmark's server process only.

`bench.sfu --relays medstream+early,medstream+early+quality` measures them next to the
unchanged server (`medstream`).

`early_frames()` (`+early`): aiortc's
`JitterBuffer` hands a frame on only when the first packet of the *next* frame arrives (one frame
interval late: 33 ms at 30 fps), and audio only once 4 more packets are buffered (prefetch=4,
80-100 ms). A forwarding relay can pass a frame on as soon as it is complete:

- video: when the packet with the marker bit arrives and every packet from the buffer's origin
  up to it is present with the same RTP timestamp (VP8/H.264 mark the last packet of a frame);
- audio: every packet is a whole Opus frame: pass it on at once (a gap is not waited for:
  audio has no retransmission here).

Anything else (a gap, an older incomplete frame) falls back to aiortc's own rule, so NACK,
retransmission and PLI behave as before. In medstream this would live in
`media_server/forwarding.py` next to `ReceiverTap` (a JitterBuffer subclass installed on the
receiver as `_RTCRtpReceiver__jitter_buffer`); here it patches the class for the whole process.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.utils import uint16_add


def _complete_at(buffer: Any, packet: Any) -> JitterFrame | None:
    """The frame ending at `packet` if all its packets since the origin are present."""
    count = uint16_add(packet.sequence_number, -buffer._origin) + 1
    if count > buffer._capacity:
        return None
    parts = []
    for i in range(count):
        p = buffer._packets[(buffer._origin + i) % buffer._capacity]
        if p is None or p.timestamp != packet.timestamp:
            return None
        parts.append(p._data)
    buffer.remove(count)
    return JitterFrame(data=b"".join(parts), timestamp=packet.timestamp)


def early_frames() -> None:
    """Patch aiortc's JitterBuffer in this process to emit frames as soon as they are complete."""
    original = JitterBuffer.add
    if getattr(original, "_bench_early", False):
        return

    def add(self: Any, packet: Any) -> tuple[bool, JitterFrame | None]:
        pli, frame = original(self, packet)
        if frame is not None or self._origin is None:
            return pli, frame
        if not self._is_video:
            count = uint16_add(packet.sequence_number, -self._origin) + 1
            if count > self._capacity:
                return pli, None
            self.remove(count)
            return pli, JitterFrame(data=packet._data, timestamp=packet.timestamp)
        if not packet.marker:
            return pli, frame
        return pli, _complete_at(self, packet)

    add._bench_early = True  # type: ignore[attr-defined]
    JitterBuffer.add = add  # type: ignore[method-assign]


def quality_to_moderators() -> None:
    """Patch the hub in this process: a participant's `quality` goes to itself and moderators.

    Today `Hub.quality` sends every participant's report (every 2 s) to everyone in the room:
    N participants cost N*N/2 websocket messages per second (200 viewers: 20,000/s), which
    both the server and every client pay for.
    """
    from signaling.effects import Send
    from signaling.hub import Hub
    from signaling.roles import Action

    def quality(self: Any, participant_id: str, message: Any) -> list[Any]:
        room = self.store.room_of(participant_id)
        if room is None:
            return []
        to = tuple(pid for pid, p in room.participants.items()
                   if p.connected and (pid == participant_id or p.may(Action.MODERATE)))
        return [Send(to, message)]

    Hub.quality = quality  # type: ignore[method-assign]


def large_receive_buffers(size_bytes: int = 4 << 20) -> None:
    """Give every ICE (UDP) socket in this process a `size_bytes` receive buffer.

    Linux's default (net.core.rmem_default, 208 KiB) holds about a hundred 1.2 kB packets as
    the kernel counts them: one 640x360 keyframe from each of a few publishers, arriving while
    the event loop is busy fanning out the previous frame, overflows it and the kernel drops
    the rest (counted in /proc/net/snmp Udp RcvbufErrors). The size is capped by
    net.core.rmem_max (4 MiB here).
    """
    import socket

    from aioice.ice import StunProtocol

    original = StunProtocol.connection_made
    if getattr(original, "_bench_rcvbuf", False):
        return

    def connection_made(self: Any, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size_bytes)
        original(self, transport)

    connection_made._bench_rcvbuf = True  # type: ignore[attr-defined]
    StunProtocol.connection_made = connection_made  # type: ignore[method-assign]


PATCHES = {"early": early_frames, "quality": quality_to_moderators, "rcvbuf": large_receive_buffers}
