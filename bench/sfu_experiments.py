"""Candidate changes to the forwarding path, tried in the benchmark's server process only.

`early_frames()` is what `bench.sfu --relays medstream-early` measures: aiortc's
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
