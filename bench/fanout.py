"""Keyframe fan-out inside the server, by CPU time (issue 17: p99 latency at 1 x 100).

    python -m bench.fanout --subscribers 100 --json bench/results/fanout.json

What it isolates: the server's own part of a frame's relay latency. One `Producer` and S
`ForwardTrack`s with real SRTP sessions (pylibsrtp, the profile aiortc peers negotiate) and
real UDP sockets (one per subscriber, as aioice has; a child process on the other core drains
the receiving socket). A frame's packets are handed to `Producer.on_rtp` as the publisher's
DTLS task hands over packets that arrived together, then the loop runs the batched sends.
Per frame: CPU time (this process, `time.thread_time`, so other load on the machine does
not count) from the frame's first packet to each subscriber's last datagram written, i.e.
when the subscriber's copy of the frame has left the server on an otherwise idle core.

Modes: `batched` (what the server does: media_server.batching, one subscriber after the
other, UDP GSO, and media_server.srtp's protect), `batched-pylibsrtp` (the same with
pylibsrtp's own `Session.protect`) and `per-packet` (the path before: each packet to every
subscriber with one sendto each, `Session.protect`).
Prints and writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from media_server.batching import SendBatcher
from media_server.forwarding import ForwardTrack, Producer
from media_server.rewrite import URI_ABS_SEND_TIME, URI_MID, HeaderWriter
from media_server.srtp import protector

KEYFRAME_PACKETS = 70  # ~80 KB keyframe of the 1 Mbit/s 640x360 clip (bench.sfu)
DELTA_PACKETS = 4
PACKET_BYTES = 1150


def _drain(sock: socket.socket) -> None:
    sock.settimeout(2.0)
    n = 0
    try:
        while True:
            sock.recv(4096)
            n += 1
    except OSError:
        pass
    os._exit(0)


def _frame(seq: int, ts: int, packets: int, key: bool) -> list[RtpPacket]:
    out = []
    for i in range(packets):
        last = i == packets - 1
        head = b"\x10" if i == 0 else b"\x00"
        body = (b"\x00" if key else b"\x01") + bytes(PACKET_BYTES - (600 if last else 0))
        p = RtpPacket(payload_type=96, sequence_number=(seq + i) & 0xFFFF, timestamp=ts,
                      marker=int(last), payload=head + body)
        p._data = body  # type: ignore[attr-defined]  # what aiortc's VP8 depayloader leaves
        out.append(p)
    return out


class _TimedBatcher(SendBatcher):
    __slots__ = ("done_at", "index")
    done_at: list[float]
    index: int

    def flush(self) -> None:
        super().flush()
        self.done_at[self.index] = time.thread_time()


async def run(mode: str, subscribers: int, frames: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    try:
        rx.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): no drops
    except OSError:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    addr = rx.getsockname()
    child = os.fork()
    if child == 0:
        os.sched_setaffinity(0, {1})
        _drain(rx)
    rx.close()
    producer = Producer("t", "pub", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    done_at: list[float] = [0.0] * subscribers
    transports = []
    for i in range(subscribers):
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           local_addr=("127.0.0.1", 0))
        transports.append(transport)
        track = ForwardTrack("video", f"t{i}", lambda: None)
        track._writer = HeaderWriter(1000 + i, 96, "0", {URI_MID: 1, URI_ABS_SEND_TIME: 2})
        srtp = Session(Policy(key=os.urandom(44), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_256_GCM))
        protect = protector(srtp) if mode == "batched" else srtp.protect
        track._protect, track._addr, track._transport = protect, addr, transport

        if mode.startswith("batched"):
            batcher = _TimedBatcher(transport, addr)
            batcher.index, batcher.done_at = i, done_at
            track._sendto = batcher.send
        else:
            sendto = transport.sendto

            def timed_send(data: bytes, a: Any, i: int = i, sendto: Any = sendto) -> None:
                sendto(data, a)
                done_at[i] = time.thread_time()

            track._sendto = timed_send
        producer.attach(track)
    seq, ts = 1, 0
    key_lat: list[list[float]] = []
    key_cpu: list[float] = []
    delta_cpu: list[float] = []
    key_split: list[tuple[float, float]] = []  # CPU s in on_rtp (rewrite, SRTP), after (sends)
    for f in range(frames):
        key = f % 10 == 0
        packets = _frame(seq, ts, KEYFRAME_PACKETS if key else DELTA_PACKETS, key)
        seq, ts = seq + len(packets), ts + 3000
        t0 = time.thread_time()
        for p in packets:
            producer.on_rtp(p)
        t_mid = time.thread_time()
        await asyncio.sleep(0)  # the loop runs the batched sends (if any)
        await asyncio.sleep(0)
        t1 = time.thread_time()
        if f < 10:
            continue  # warm-up
        per_packet = (t1 - t0) / (len(packets) * subscribers)
        (key_cpu if key else delta_cpu).append(per_packet)
        if key:
            key_lat.append(sorted(d - t0 for d in done_at))
            key_split.append((t_mid - t0, t1 - t_mid))
        await asyncio.sleep(0.002)  # let the drain keep up
    for t in transports:
        t.close()
    os.waitpid(child, 0)

    def ms(xs: list[float]) -> float:
        return round(1000 * xs[len(xs) // 2] if xs else 0.0, 2)

    lat = sorted(x for frame in key_lat for x in frame)
    return {
        "mode": mode, "subscribers": subscribers, "keyframes": len(key_lat),
        "keyframe_packets": KEYFRAME_PACKETS,
        "cpu_us_per_packet_keyframe": round(1e6 * statistics.median(key_cpu), 2),
        "cpu_us_per_packet_delta": round(1e6 * statistics.median(delta_cpu), 2),
        "keyframe_cpu_ms_in_forward": round(1000 * statistics.median(a for a, _ in key_split), 2),
        "keyframe_cpu_ms_in_flush": round(1000 * statistics.median(b for _, b in key_split), 2),
        "keyframe_cpu_ms_first_subscriber": ms([f[0] for f in key_lat]),
        "keyframe_cpu_ms_p50_subscriber": round(1000 * lat[len(lat) // 2], 2),
        "keyframe_cpu_ms_p99_subscriber": round(1000 * lat[int(0.99 * (len(lat) - 1))], 2),
        "keyframe_cpu_ms_last_subscriber": ms([f[-1] for f in key_lat]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    p.add_argument("--subscribers", type=int, action="append")
    p.add_argument("--frames", type=int, default=110, help="frames per run (every 10th a keyframe)")
    p.add_argument("--modes", default="per-packet,batched-pylibsrtp,batched")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {0})
    results = []
    for n in args.subscribers or [100]:
        for mode in args.modes.split(","):
            r = asyncio.run(run(mode, n, args.frames))
            print(json.dumps(r), flush=True)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "loadavg": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
