"""What a test clinic's VP8 receivers get, packet by packet, for finding why video did not come
back (`MEDSTREAM_CLINIC_TRACE=FILE` makes tests.media_server.township_client write it).

Per received video m-line: every packet handed to the jitter buffer (monotonic time, sequence
number, RTP timestamp, marker, first packet of a frame, PictureID, TL0PICIDX, TID, layer sync,
keyframe), every frame it passed on (time, timestamp, the packet that completed it, keyframe),
every NACK (the sequence numbers asked for) and PLI (`jb`: the jitter buffer asked for one,
`sent`: it went out). Set against the relay's counters and the link's log it tells a hole the
relay did not repair from one the clinic did not ask about.
"""

from __future__ import annotations

import json
import time
from typing import Any

from media_server.vp8 import Vp8DescriptorError, parse_descriptor
from tests.support import rtc_peer

LOG: dict[str, dict[str, list[Any]]] = {}


def enable() -> None:
    """Trace every ClientPeer's VP8 receivers from now on (this process)."""
    original = rtc_peer.ClientPeer._tap

    def tap(self: rtc_peer.ClientPeer, transceiver: Any, media: Any) -> None:
        original(self, transceiver, media)
        if transceiver.kind == "video":
            _trace(transceiver.receiver, LOG.setdefault(str(media.rtp.muxId), {"p": [], "f": [], "nack": [], "pli": []}))

    rtc_peer.ClientPeer._tap = tap  # type: ignore[method-assign]


def _trace(receiver: Any, log: dict[str, list[Any]]) -> None:
    buffer = receiver._RTCRtpReceiver__jitter_buffer

    def on_packet(p: Any) -> None:
        fields: tuple[Any, ...] = (None,) * 6
        try:
            d = parse_descriptor(p.payload)
            fields = (d.begins_frame, d.picture_id, d.tl0_pic_idx, d.tid, d.layer_sync, d.keyframe)
        except Vp8DescriptorError:
            pass
        log["p"].append((time.monotonic(), p.sequence_number, p.timestamp, p.marker, *fields))

    buffer.on_packet = on_packet
    add = buffer.add

    def traced_add(packet: Any) -> tuple[bool, Any]:
        pli, frame = add(packet)
        if frame is not None:
            log["f"].append((time.monotonic(), frame.timestamp, packet.sequence_number, not frame.data[0] & 1))
        if pli:
            log["pli"].append((time.monotonic(), "jb"))
        return pli, frame

    buffer.add = traced_add
    nack, pli = receiver._send_rtcp_nack, receiver._send_rtcp_pli

    async def traced_nack(ssrc: int, lost: list[int]) -> None:
        log["nack"].append((time.monotonic(), list(lost)))
        await nack(ssrc, lost)

    async def traced_pli(ssrc: int) -> None:
        log["pli"].append((time.monotonic(), "sent"))
        await pli(ssrc)

    receiver._send_rtcp_nack = traced_nack
    receiver._send_rtcp_pli = traced_pli


def dump(path: str) -> None:
    """Write what was traced (JSON)."""
    with open(path, "w") as f:
        json.dump(LOG, f)
