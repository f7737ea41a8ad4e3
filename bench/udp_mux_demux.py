"""Receive side of the shared UDP port: Python cost of routing one SRTP datagram to its connection.

    python -m bench.udp_mux_demux --datagrams 1000000
    valgrind --tool=callgrind python -m bench.udp_mux_demux --mode mux --datagrams 20000  # and 0

Modes: `aioice` (a socket per connection: aioice's StunProtocol with medstream's RFC 7983
demultiplexing, `media_server.ice`) and `mux` (`media_server.udp_mux.UdpMux.datagram_received`:
the connection found by source address). 100 real aioice connections; what they do with the
datagram (aiortc's DTLS task takes it from their queue) is left out: their queues are replaced
by a no-op. Prints CPU ns per datagram (this thread); for instruction counts run it under
callgrind with --datagrams 0 and N and subtract. Never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import aioice.ice

from media_server import ice, udp_mux

CONNECTIONS = 100


class _Drained:
    def put_nowait(self, item: Any) -> None:
        pass


async def run(mode: str, datagrams: int) -> float:
    ice.install()
    connections = [aioice.ice.Connection(ice_controlling=False) for _ in range(CONNECTIONS)]
    for c in connections:
        c._queue = _Drained()  # type: ignore[assignment]
    srtp = bytes([0x80, 96]) + os.urandom(1100)
    addrs = [("127.0.0.1", 20000 + i) for i in range(CONNECTIONS)]
    if mode == "mux":
        mux = udp_mux.UdpMux("127.0.0.1", 0)
        for c, a in zip(connections, addrs, strict=True):
            mux._bind(a, mux.attach(c, 1))
        receive = [mux.datagram_received] * CONNECTIONS
    else:
        receive = []
        for c in connections:
            p = aioice.ice.StunProtocol(c)
            p.local_candidate = aioice.Candidate(foundation="1", component=1, transport="udp", priority=1,
                                                 host="127.0.0.1", port=1, type="host")
            receive.append(p.datagram_received)
    t = time.thread_time()
    for k in range(datagrams):
        i = k % CONNECTIONS
        receive[i](srtp, addrs[i])
    return time.thread_time() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("aioice", "mux", "both"), default="both")
    p.add_argument("--datagrams", type=int, default=1_000_000)
    args = p.parse_args(argv)
    modes = ["aioice", "mux", "aioice", "mux"] if args.mode == "both" else [args.mode]
    for mode in modes:
        dt = asyncio.run(run(mode, args.datagrams))
        if args.datagrams:
            print(f"{mode:6s} {1e9 * dt / args.datagrams:.0f} ns CPU per datagram")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
