"""Candidate changes to the server, tried in the benchmark's server process only.

`bench.sfu --relays medstream,medstream+rcvbuf` measures them next to the unchanged server.
Adopted since (and removed from here): frames passed on as soon as complete
(`media_server.forwarding.EarlyJitterBuffer`) and quality reports to moderators only in
broadcasts (`signaling.hub.Hub.quality`).
"""

from __future__ import annotations

from collections.abc import Callable


def large_receive_buffers(size_bytes: int = 4 << 20) -> None:
    """Give every ICE (UDP) socket in this process a `size_bytes` receive buffer.

    Linux's default (net.core.rmem_default, 208 KiB) holds about a hundred 1.2 kB packets as
    the kernel counts them: one 640x360 keyframe from each of a few publishers, arriving while
    the event loop is busy fanning out the previous frame, overflows it and the kernel drops
    the rest (counted in /proc/net/snmp Udp RcvbufErrors). The size is capped by
    net.core.rmem_max (4 MiB here).
    aioice sets SO_RCVBUF itself right after creating each host socket, to
    `aioice.turn.UDP_SOCKET_BUFFER_SIZE` (256 KiB), so that constant is what has to change
    (setting the option earlier, in `connection_made`, is overwritten).
    """
    import aioice.turn

    aioice.turn.UDP_SOCKET_BUFFER_SIZE = size_bytes  # type: ignore[attr-defined]


PATCHES: dict[str, Callable[[], None]] = {"rcvbuf": large_receive_buffers}


def latency_probe() -> None:
    """Time each video frame inside the server (where does relay latency accrue?).

    Wraps `Producer.on_rtp`: for every video packet, the publisher's send time (its
    abs-send-time extension, same wall clock on one machine), when the server starts handling
    the packet and when its fan-out to every subscriber returns. Per frame (RTP timestamp):
    packets, in-delay of its last packet (publisher send -> server handles it: the server's
    receive queue and loop) and out-delay (publisher send of the frame's first packet -> the
    fan-out of its last packet returns). Written as JSON lines to $MEDSTREAM_PROBE_OUT.
    """
    import json
    import os
    import time

    from media_server import forwarding
    from media_server.rewrite import NTP_EPOCH_OFFSET_S

    out_path = os.environ["MEDSTREAM_PROBE_OUT"]
    original = forwarding.Producer.on_rtp
    frames: dict[int, list[float]] = {}

    def sent_at(v: int, now: float) -> float:
        now_abs = int((now + NTP_EPOCH_OFFSET_S) * 262144) & 0xFFFFFF
        return now - ((now_abs - v) & 0xFFFFFF) / 262144

    def on_rtp(self: forwarding.Producer, p: object) -> None:
        t_in = time.time()
        original(self, p)  # type: ignore[arg-type]
        if self.kind != "video":
            return
        t_out = time.time()
        ext = p.extensions.abs_send_time  # type: ignore[attr-defined]
        sent = sent_at(ext, t_in) if ext is not None else t_in
        rec = frames.get(p.timestamp)  # type: ignore[attr-defined]
        if rec is None:
            rec = frames[p.timestamp] = [sent, 0, 0.0, 0.0, len(self._fanout)]  # type: ignore[attr-defined]
        rec[1] += 1
        rec[2], rec[3] = t_in - sent, t_out - rec[0]
        if p.marker:  # type: ignore[attr-defined]
            del frames[p.timestamp]  # type: ignore[attr-defined]
            with open(out_path, "a") as f:
                f.write(json.dumps({"t": t_out, "packets": rec[1], "in_s": rec[2],
                                    "out_s": rec[3], "fanout": rec[4]}) + "\n")

    forwarding.Producer.on_rtp = on_rtp  # type: ignore[method-assign]


PATCHES["probe"] = latency_probe
