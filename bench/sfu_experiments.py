"""Candidate changes to the server, tried in the benchmark's server process only.

`bench.sfu --relays medstream,medstream+rcvbuf` measures them next to the unchanged server.
Adopted since (and removed from here): frames passed on as soon as complete
(`media_server.forwarding.EarlyJitterBuffer`) and quality reports to moderators only in
broadcasts (`signaling.hub.Hub.quality`).
"""

from __future__ import annotations


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


PATCHES = {"rcvbuf": large_receive_buffers}
