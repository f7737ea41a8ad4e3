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

from media_server import batching
from media_server.batching import SendBatcher
from media_server.forwarding import ForwardTrack, Producer
from media_server.rewrite import URI_ABS_SEND_TIME, URI_MID, HeaderWriter
from media_server.srtp import protector
from media_server.vp8 import PictureIdRewriter, TemporalLayerFilter

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
    picture_id = (ts // 3000) & 0x7FFF
    for i in range(packets):
        last = i == packets - 1
        # the descriptor aiortc's and browsers' VP8 packetisers write: X=1, S on the first
        # packet, a 15-bit PictureID (I=1, M=1), read by the subscribers' PictureID rewriter
        head = bytes([0x90 if i == 0 else 0x80, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF])
        body = (b"\x00" if key else b"\x01") + bytes(PACKET_BYTES - (600 if last else 0))
        p = RtpPacket(payload_type=96, sequence_number=(seq + i) & 0xFFFF, timestamp=ts,
                      marker=int(last), payload=head + body)
        p._data = body  # type: ignore[attr-defined]  # what aiortc's VP8 depayloader leaves
        out.append(p)
    return out


def _queued(batcher: SendBatcher) -> bool:
    """Whether `batcher` holds datagrams (main's batcher kept a list, this branch's a buffer)."""
    return bool(getattr(batcher, "_sizes", None) or getattr(batcher, "_queue", None))


def _bind(track: ForwardTrack, batcher: SendBatcher, session: Session, addr: Any) -> None:
    """What the server's `_bind` does with a subscriber's socket (main: the bytes path)."""
    if hasattr(track, "bind_batcher"):
        track.bind_batcher(batcher, session, addr)
    else:
        track._protect, track._addr, track._transport = protector(session), addr, batcher._transport
        track._sendto, track._batcher = batcher.send, batcher


def _like_the_sfu(track: ForwardTrack) -> None:
    """A VP8 subscriber as `Sfu.subscribe` sets it up: temporal layer gate, PictureID rewriter."""
    track.packet_filter = TemporalLayerFilter()
    track.picture_ids = PictureIdRewriter()


class _TimedBatcher(SendBatcher):
    __slots__ = ("done_at", "index")
    done_at: list[float]
    index: int

    def flush(self) -> None:
        had = _queued(self)
        super().flush()
        if had:  # flush_all finds it empty after the paced fan-out flushed it
            self.done_at[self.index] = time.thread_time()


def _sink() -> tuple[tuple[str, int], int]:
    """A UDP socket on 127.0.0.1 drained by a forked child on core 1 (the subscribers' side of
    the wire); returns its address and the child's pid (`os.waitpid` it at the end)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    try:
        rx.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): no drops
    except OSError:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    addr: tuple[str, int] = rx.getsockname()
    child = os.fork()
    if child == 0:
        os.sched_setaffinity(0, {1})
        _drain(rx)
    rx.close()
    return addr, child


async def run(mode: str, subscribers: int, frames: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    addr, child = _sink()
    producer = Producer("t", "pub", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
    passes: list[float] = []  # CPU s of each pass of the paced fan-out (the loop is held that long)
    drain = producer._drain

    def timed_drain(budget: int = 0) -> None:
        t = time.thread_time()
        drain(budget)
        passes.append(time.thread_time() - t)

    producer._drain = timed_drain  # type: ignore[method-assign]
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
        _like_the_sfu(track)

        if mode.startswith("batched"):
            batcher = _TimedBatcher(transport, addr)
            batcher.index, batcher.done_at = i, done_at
            track._sendto, track._batcher = batcher.send, batcher
            if mode == "batched":
                _bind(track, batcher, srtp, addr)
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
    key_passes: list[tuple[int, float]] = []  # loop passes of a keyframe's fan-out, longest (CPU s)
    key_split: list[tuple[float, float]] = []  # CPU s in on_rtp (rewrite, SRTP), after (sends)
    for f in range(frames):
        key = f % 10 == 0
        packets = _frame(seq, ts, KEYFRAME_PACKETS if key else DELTA_PACKETS, key)
        seq, ts = seq + len(packets), ts + 3000
        t0 = time.thread_time()
        for p in packets:
            producer.on_rtp(p)
        t_mid = time.thread_time()
        passes.clear()
        await asyncio.sleep(0)  # the loop runs the paced fan-out and the batched sends
        while producer._drain_handle is not None:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        t1 = time.thread_time()
        if f < 10:
            continue  # warm-up
        per_packet = (t1 - t0) / (len(packets) * subscribers)
        (key_cpu if key else delta_cpu).append(per_packet)
        if key:
            key_lat.append(sorted(d - t0 for d in done_at))
            key_split.append((t_mid - t0, t1 - t_mid))
            key_passes.append((len(passes), max(passes, default=0.0)))
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
        "keyframe_loop_passes": statistics.median(n for n, _ in key_passes),
        "keyframe_cpu_ms_longest_pass": round(1000 * statistics.median(m for _, m in key_passes), 2),
    }


class _MarkedBatcher(SendBatcher):
    """Records, at each flush that writes something, which marked packets (frame ends) left."""

    __slots__ = ("clock", "marks", "out")
    clock: Any
    marks: list[int]
    out: dict[int, list[float]]

    def flush(self) -> None:
        had = _queued(self)
        super().flush()
        if had and self.marks:
            t = self.clock()
            for m in self.marks:
                self.out[m].append(t)
            self.marks = []


async def run_stream(subscribers: int, seconds: float, fps: int = 30, gop: int = 60,
                     audio_interval_s: float = 0.02, publishers: int = 1,
                     isolated: bool = False) -> dict[str, Any]:
    """A stream as the clip of bench.sfu (30 fps, a 70-packet keyframe every 2 s, 4-packet
    deltas, Opus every 20 ms) to S subscribers (video + audio ForwardTracks sharing one batcher,
    as in the server), on a simulated idle core: the clock is this thread's CPU time, jumping
    forward only while the server has nothing to do until the next arrival. Each arrival is
    handed over at the first loop pass after its time (packets of one frame together, as the
    publisher's DTLS task hands over a burst). Latency of a copy: arrival -> the flush that
    wrote that subscriber's copy of the frame's last packet (audio: of the packet). What it
    leaves out: the kernel's receive side and the subscriber; other load on the machine does
    not count (CPU time). `isolated`: each arrival only once the previous one is fully sent
    (for instruction counts under callgrind, whose slowdown would otherwise pile arrivals up)."""
    loop = asyncio.get_running_loop()
    addr, child = _sink()
    offset = [0.0]

    def clock() -> float:
        return time.thread_time() + offset[0]

    videos = [Producer(f"v{k}", f"pub{k}", "video", "VP8", 90000, None, 1.0)  # type: ignore[arg-type]
              for k in range(publishers)]
    audios = [Producer(f"a{k}", f"pub{k}", "audio", "opus", 48000, None, 1.0)  # type: ignore[arg-type]
              for k in range(publishers)]
    done: dict[int, list[float]] = {}  # event id -> flush times of its copies
    passes: list[float] = []
    transports = []
    for i in range(subscribers):
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           local_addr=("127.0.0.1", 0))
        transports.append(transport)
        batcher = _MarkedBatcher(transport, addr)
        batcher.clock, batcher.marks, batcher.out = clock, [], done
        for kind, producer, ssrc in [("video", v, 1000 + i + 10000 * k) for k, v in enumerate(videos)] + [
                ("audio", a, 5000 + i + 10000 * k) for k, a in enumerate(audios)]:
            track = ForwardTrack(kind, f"{kind}{i}", lambda: None)  # type: ignore[arg-type]
            track._writer = HeaderWriter(ssrc, 96 if kind == "video" else 111, "0",
                                         {URI_MID: 1, URI_ABS_SEND_TIME: 2})
            srtp = Session(Policy(key=os.urandom(44), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                  srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_256_GCM))
            _bind(track, batcher, srtp, addr)
            if kind == "video":
                _like_the_sfu(track)
            original = track.forward

            def forward(p: RtpPacket, start: bool, abs3: bytes, level: Any, original: Any = original,
                        batcher: _MarkedBatcher = batcher) -> bool:
                r = original(p, start, abs3, level)
                tag = getattr(p, "bench_event", None)
                if tag is not None:
                    batcher.marks.append(tag)
                return r  # type: ignore[no-any-return]

            track.forward = forward  # type: ignore[method-assign]
            if hasattr(track, "forward_entries"):  # this branch: the fan-out's loop
                original_entries = track.forward_entries

                def forward_entries(entries: Any, abs3: bytes, now: float, any_packet: bool = False,
                                    original: Any = original_entries,
                                    batcher: _MarkedBatcher = batcher, **kw: Any) -> bool:
                    r = original(entries, abs3, now, any_packet, **kw)
                    sent_now = kw.get("scratch", False)  # the paced fan-out sent them before returning
                    for p, _, _ in entries:
                        tag = getattr(p, "bench_event", None)
                        if tag is not None:
                            if sent_now:
                                batcher.out[tag].append(batcher.clock())
                            else:
                                batcher.marks.append(tag)
                    return r  # type: ignore[no-any-return]

                track.forward_entries = forward_entries  # type: ignore[method-assign,assignment]
            producer.attach(track)
    for video in videos:
        if hasattr(video, "_drain"):  # the paced fan-out: how long each pass holds the loop
            def timed_drain(budget: int = 0, drain: Any = video._drain) -> None:
                t = time.thread_time()
                drain(budget)
                passes.append(time.thread_time() - t)

            video._drain = timed_drain  # type: ignore[method-assign]
    # the schedule: (arrival s, event id, kind, packets)
    events: list[tuple[float, int, str, list[RtpPacket]]] = []
    for k in range(publishers):  # publishers out of phase: frames and keyframes spread
        seq, ts = 1, 0
        phase = k / (publishers * fps)
        for f in range(int(seconds * fps)):
            key = f == 0 or (f + k * gop // publishers) % gop == 0
            packets = _frame(seq, ts, KEYFRAME_PACKETS if key else DELTA_PACKETS, key)
            for p in packets:
                p.bench_producer = k  # type: ignore[attr-defined]
            seq, ts = seq + len(packets), ts + 90000 // fps
            events.append((phase + f / fps, len(events), "key" if key else "delta", packets))
        for j in range(int(seconds / audio_interval_s)):
            p = RtpPacket(payload_type=111, sequence_number=j & 0xFFFF, timestamp=960 * j,
                          payload=bytes(120))
            p._data = p.payload  # type: ignore[attr-defined]
            p.bench_producer = k  # type: ignore[attr-defined]
            events.append((phase + j * audio_interval_s, len(events), "audio", [p]))
    events.sort()
    arrival: dict[int, tuple[float, str]] = {}
    for _, eid, kind, packets in events:
        marked = packets if kind == "audio" else packets[-1:]
        for p in marked:
            p.bench_event = eid  # type: ignore[attr-defined]
        done[eid] = []
    offset[0] = -time.thread_time()  # simulated time 0 now
    cpu0 = time.thread_time()
    i = 0
    def busy() -> bool:
        return bool(batching._pending) or any(getattr(v, "_drain_handle", None) is not None for v in videos)

    while i < len(events) or busy():
        if not busy() and i < len(events) and clock() < events[i][0]:
            offset[0] += events[i][0] - clock()  # idle until the next arrival
        if isolated and not busy() and i < len(events):
            offset[0] = max(offset[0], events[i][0] - time.thread_time())
        while i < len(events) and events[i][0] <= clock() and not (isolated and busy()):
            t, eid, kind, packets = events[i]
            arrival[eid] = (t, kind)
            for p in packets:
                (audios if kind == "audio" else videos)[p.bench_producer].on_rtp(p)
            i += 1
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    cpu_s = time.thread_time() - cpu0
    for t in transports:
        t.close()
    os.waitpid(child, 0)
    lat: dict[str, list[float]] = {"key": [], "delta": [], "audio": []}
    for eid, (t, kind) in arrival.items():
        if t < 1.0 or eid not in done:
            continue  # warm-up
        lat[kind].extend(x - t for x in done[eid])
    video_lat = sorted(lat["key"] + lat["delta"])

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return round(1000 * xs[min(len(xs) - 1, int(q / 100 * len(xs)))], 2) if xs else 0.0

    return {
        "mode": "stream", "publishers": publishers, "subscribers": subscribers,
        "video_streams": publishers * subscribers, "seconds": seconds, "fps": fps, "gop": gop,
        "video_copies": len(video_lat),
        "video_ms_p50": pct(video_lat, 50), "video_ms_p99": pct(video_lat, 99),
        "video_ms_max": pct(video_lat, 100),
        "keyframe_ms_p50": pct(lat["key"], 50), "keyframe_ms_p99": pct(lat["key"], 99),
        "delta_ms_p99": pct(lat["delta"], 99),
        "audio_ms_p50": pct(lat["audio"], 50), "audio_ms_p99": pct(lat["audio"], 99),
        "audio_ms_max": pct(lat["audio"], 100),
        "longest_pass_ms": round(1000 * max(passes), 2) if passes else None,
        "copies_missing": sum(1 for eid in arrival if len(done[eid]) < subscribers),
        "cpu_s": round(cpu_s, 3), "core_share": round(cpu_s / seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    p.add_argument("--subscribers", type=int, action="append")
    p.add_argument("--frames", type=int, default=110, help="frames per run (every 10th a keyframe)")
    p.add_argument("--modes", default="per-packet,batched-pylibsrtp,batched")
    p.add_argument("--stream", type=float, metavar="SECONDS",
                   help="instead: a 30 fps stream with audio on a simulated idle core (run_stream)")
    p.add_argument("--publishers", type=int, default=1, help="with --stream: publishers, each to every subscriber")
    p.add_argument("--isolated", action="store_true",
                   help="with --stream: each arrival after the previous is sent (callgrind)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {0})
    results = []
    if args.stream:
        for n in args.subscribers or [100]:
            r = asyncio.run(run_stream(n, args.stream, publishers=args.publishers,
                                       isolated=args.isolated))
            print(json.dumps(r), flush=True)
            results.append(r)
    for n in args.subscribers or [100]:
        for mode in ([] if args.stream else args.modes.split(",")):
            r = asyncio.run(run(mode, n, args.frames))
            print(json.dumps(r), flush=True)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "loadavg": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
