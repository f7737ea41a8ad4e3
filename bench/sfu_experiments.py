"""Candidate changes to the server, tried in the benchmark's server process only.

`bench.sfu --relays medstream,medstream+rcvbuf` measures them next to the unchanged server.
Adopted since (and removed from here): frames passed on as soon as complete
(`media_server.forwarding.EarlyJitterBuffer`) and quality reports to moderators only in
broadcasts (`signaling.hub.Hub.quality`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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


PATCHES: dict[str, Callable[[], None]] = {"rcvbuf": large_receive_buffers,
                                          "mux": lambda: None}  # bench.sfu sets udp_port=0


def latency_probe() -> None:
    """Time each video frame inside the server, per subscriber (where does relay latency accrue?).

    Wraps `Producer.on_rtp` (a packet is handled: the server's receive queue and loop are behind
    it) and `Producer._serve` (one subscriber's pending packets rewritten, protected and written
    to its socket: the paced fan-out). Times are against the publisher's send time of the packet
    (its abs-send-time extension, same wall clock on one machine). Per frame (RTP timestamp), a
    JSON line to $MEDSTREAM_PROBE_OUT: packets, `in_s` (publisher sent the frame's last packet ->
    the server handles it) and `out_s`, one per subscriber (publisher sent the frame's last
    packet -> that subscriber's copy has left the server). What is left after `out_s` is the
    kernel and the subscriber's own receive queue. `summarise_probe()` reads it back.
    """
    import json
    import os
    import time

    from media_server import forwarding
    from media_server.rewrite import NTP_EPOCH_OFFSET_S

    out = open(os.environ["MEDSTREAM_PROBE_OUT"], "a", buffering=1)  # noqa: SIM115 (process lifetime; lines: the server is killed)
    on_rtp, serve = forwarding.Producer.on_rtp, forwarding.Producer._serve
    frames: dict[tuple[int, int], list[Any]] = {}  # (id(producer), RTP ts) -> [sent, in_s, out_s[], subscribers]

    def sent_at(p: Any, now: float) -> float:
        v = p.extensions.abs_send_time
        if v is None:
            return now
        now_abs = int((now + NTP_EPOCH_OFFSET_S) * 262144) & 0xFFFFFF
        return now - ((now_abs - v) & 0xFFFFFF) / 262144

    def probed_on_rtp(self: forwarding.Producer, p: Any) -> None:
        if self.kind == "video" and p.marker and self._fanout:
            t_in = time.time()
            sent = sent_at(p, t_in)
            frames[(id(self), p.timestamp)] = [sent, t_in - sent, [], len(self._fanout)]
        on_rtp(self, p)

    def probed_serve(self: forwarding.Producer, consumer: Any, entries: list[Any], abs3: bytes) -> bool:
        r = serve(self, consumer, entries, abs3)
        t = time.time()
        for p, _, _ in entries:
            if p.marker:
                rec = frames.get((id(self), p.timestamp))
                if rec is not None:
                    rec[2].append(t - rec[0])
                    if len(rec[2]) >= rec[3]:
                        del frames[(id(self), p.timestamp)]
                        out.write(json.dumps({"t": t, "in_s": round(rec[1], 6),
                                              "out_s": [round(x, 6) for x in rec[2]]}) + "\n")
        return r

    forwarding.Producer.on_rtp = probed_on_rtp  # type: ignore[method-assign]
    forwarding.Producer._serve = probed_serve  # type: ignore[method-assign]


def summarise_probe(path: str, t0: float, t1: float) -> dict[str, Any]:
    """p50/p99/max of the probe's in- and out-delays (ms) for frames completed in [t0, t1]."""
    import json

    ins: list[float] = []
    outs: list[float] = []
    try:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if t0 <= rec["t"] <= t1:
                    ins.append(rec["in_s"])
                    outs.extend(rec["out_s"])
    except FileNotFoundError:
        return {"frames": 0}

    def pct(xs: list[float], q: float) -> float | None:
        if not xs:
            return None
        xs = sorted(xs)
        return round(1000 * xs[min(len(xs) - 1, int(q / 100 * len(xs)))], 2)

    return {"frames": len(ins), "frame_copies": len(outs),
            "in_ms_p50": pct(ins, 50), "in_ms_p99": pct(ins, 99), "in_ms_max": pct(ins, 100),
            "out_ms_p50": pct(outs, 50), "out_ms_p99": pct(outs, 99), "out_ms_max": pct(outs, 100)}


PATCHES["probe"] = latency_probe
