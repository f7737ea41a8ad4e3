"""Inbound datagram cost in aioice, with and without RFC 7983 demultiplexing (issue 17).

    python -m bench.demux                      CPU time per datagram, both modes
    valgrind --tool=callgrind python -m bench.demux --mode demux --count 20000   (and 40000:
    the difference / 20000 is instructions per datagram, independent of machine load)

Feeds SRTP-sized datagrams (first byte 0x80, 1,200 bytes) to a real aioice `StunProtocol`
whose `Connection` queues them for DTLS, as a server's socket would: `original` is aioice's
path (a STUN parse attempt and a caught ValueError per datagram), `demux` the path of
`media_server.ice.install()`. Prints; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aioice.ice
from aioice.candidate import Candidate


async def run(mode: str, count: int) -> float:
    if mode == "demux":
        from media_server import ice

        ice.install()
    connection = aioice.ice.Connection(ice_controlling=True)
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = Candidate(foundation="1", component=1, transport="udp", priority=1,
                                         host="127.0.0.1", port=9, type="host")
    datagrams = [bytes([0x80, 0x60]) + i.to_bytes(2, "big") + bytes(1196) for i in range(256)]
    addr = ("127.0.0.1", 5000)
    queue = connection._queue
    t0 = time.process_time()
    for i in range(count):
        protocol.datagram_received(datagrams[i & 255], addr)
        if queue.qsize() >= 256:
            while not queue.empty():
                queue.get_nowait()
    return (time.process_time() - t0) / count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.demux", description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("original", "demux", "both"), default="both")
    p.add_argument("--count", type=int, default=200_000)
    args = p.parse_args(argv)
    modes = ("original", "demux") if args.mode == "both" else (args.mode,)
    for mode in modes:  # "demux" patches the process: it runs last
        per = asyncio.run(run(mode, args.count))
        print(f"{mode}: {per * 1e6:.2f} us CPU per datagram ({args.count} datagrams)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
