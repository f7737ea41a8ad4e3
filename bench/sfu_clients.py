"""Client worker of `bench.sfu`: publishers of a pre-encoded clip and lightweight subscribers.

    python -m bench.sfu_clients --spec SPEC.json     (started by bench.sfu, one per worker)

Publishers are `clients.publish` (the clip's packets, looped, packed by aiortc, never encoded).
Subscribers are real aiortc peer connections (ICE, DTLS, SRTP) that answer the server's offers
but take each decrypted RTP packet straight off the DTLS transport: no jitter buffer, no
depacketising, no decoding. They count packets and note, per video frame, the first bytes of
the frame (to recognise it) and the wall time its last packet (marker bit) arrived.

Talks to bench.sfu over stdio: prints READY once its publishers' tracks are published (the
publisher worker) or every subscriber has a video frame from every publisher (subscriber
workers), then on a STOP line writes its records to `out` and prints DONE.

Frames are recognised end to end by `frame_key`: the first 64 bytes of the VP8 frame, which
a forwarding relay passes unchanged. A transcoding relay changes the bytes but keeps the
publisher's RTP timestamp; that is matched too once both sides' senders start at timestamp 0
(`zero_timestamp_origin`, applied in our own processes only).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from protocol import signaling as wire

KEY_BYTES = 64


def frame_key(data: bytes) -> str:
    """Short id of a frame from its first KEY_BYTES bytes (what a forwarding relay keeps)."""
    return hashlib.sha1(data[:KEY_BYTES]).hexdigest()[:16]


def zero_timestamp_origin() -> None:
    """Make this process's aiortc senders start RTP timestamps at 0 (not at random).

    aiortc draws the origin with `random32()` inside `RTCRtpSender._run_rtp`; SSRCs use the
    same function and keep their randomness. Benchmark processes only: it lets a receiver
    match a transcoded frame to the publisher's frame by timestamp.
    """
    import aiortc.rtcrtpsender as sender_module

    original = sender_module.random32
    if getattr(original, "_bench_zero", False):
        return

    def random32() -> int:
        if sys._getframe(1).f_code.co_name == "_run_rtp":
            return 0
        return original()

    random32._bench_zero = True  # type: ignore[attr-defined]
    sender_module.random32 = random32


@dataclass
class Records:
    """Everything one worker measured; wall times are time.time() seconds."""

    # (publisher, kind, key, pts or RTP timestamp, wall time)
    sent: list[tuple[str, str, str | None, int, float]] = field(default_factory=list)
    frames: list[tuple[str, str, str | None, int, float]] = field(default_factory=list)
    video_packets: collections.Counter[int] = field(default_factory=collections.Counter)
    audio_packets: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    # the server's `quality` reports: (participant, loss_pct, wall time); for a publisher this
    # is the loss on its link into the server
    quality: list[tuple[str, float, float]] = field(default_factory=list)
    # peer connection states when the driver said STOP (anything but "connected" was lost)
    connection_states: collections.Counter[str] = field(default_factory=collections.Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "frames": self.frames,
            "video_packets": dict(self.video_packets),
            "audio_packets": dict(self.audio_packets),
            "errors": self.errors[:20],
            "quality": self.quality,
            "connection_states": dict(self.connection_states),
        }


@dataclass
class _Stream:
    publisher: str
    kind: str
    key: str | None = None


class LightSubscriber:
    """Joins with `media: true`, answers offers, counts decrypted RTP without decoding."""

    def __init__(self, url: str, token: str, records: Records) -> None:
        self.url = url
        self.token = token
        self.records = records
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.streams: dict[int, _Stream] = {}
        self.publishers_seen: set[str] = set()
        self.quality_reporter = False  # one subscriber per worker keeps the quality reports
        self._installed = False

    async def run(self, stop: asyncio.Event) -> None:
        async with websockets.connect(self.url, max_size=None, open_timeout=120) as ws:
            await ws.send(wire.encode(wire.Join(wire.PROTOCOL_VERSION, self.token, media=True, id=1)))
            pinger = asyncio.ensure_future(_ping(ws))
            reader = asyncio.ensure_future(self._read(ws))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([reader, stopper], return_when=asyncio.FIRST_COMPLETED)
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
            finally:
                for task in (pinger, reader, stopper):
                    task.cancel()
                await self.pc.close()

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            if not isinstance(raw, str):
                continue
            if not self.quality_reporter and raw.startswith('{"type":"quality"'):
                continue  # every participant's report reaches everyone: skip the JSON cost
            msg = json.loads(raw)
            if msg["type"] == "sdp" and msg.get("sdp_type") == "offer":
                answer = await self._answer(msg["sdp"])
                await ws.send(wire.encode(wire.Sdp("answer", answer)))
            elif msg["type"] == "quality" and self.quality_reporter:
                # docs/protocol.md nests the figures in "stats"; the wire sends them flat
                loss = msg.get("loss_pct", (msg.get("stats") or {}).get("loss_pct"))
                if loss is not None:
                    self.records.quality.append((msg["participant_id"], float(loss), time.time()))
            elif msg["type"] == "error":
                self.records.errors.append(f"subscriber: {msg.get('reason')}: {msg.get('message')}")

    async def _answer(self, offer_sdp: str) -> str:
        from media_server import ice

        offer = aiortc_sdp.SessionDescription.parse(offer_sdp)
        for media in offer.media:
            if media.direction != "sendonly" or not media.msid:
                continue
            track_id = media.msid.split()[-1]
            ssrcs = [g.items[0] for g in media.ssrc_group if g.semantic == "FID"]
            ssrc = int(ssrcs[0]) if ssrcs else (media.ssrc[0].ssrc if media.ssrc else None)
            if ssrc is not None and ssrc not in self.streams:
                self.streams[ssrc] = _Stream(track_id.split("/")[0], media.kind)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        answer = await self.pc.createAnswer()
        with ice.host_addresses(("127.0.0.1",)):
            await self.pc.setLocalDescription(answer)
        self._install()
        return str(self.pc.localDescription.sdp)

    def _install(self) -> None:
        if self._installed or not self.pc.getTransceivers():
            return
        transport = self.pc.getTransceivers()[0].receiver.transport
        transport._handle_rtp_data = self._on_rtp  # type: ignore[method-assign]
        self._installed = True

    async def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        now = time.time()
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self.streams.get(ssrc)
        if stream is None:
            return  # RTX or unknown
        second = int(now)
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10:
            offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        payload = data[offset:]
        if stream.kind == "audio":  # one Opus packet = one frame
            self.records.audio_packets[second] += 1
            timestamp = int.from_bytes(data[4:8], "big")
            self.records.frames.append((stream.publisher, "audio", frame_key(payload), timestamp, now))
            return
        self.records.video_packets[second] += 1
        if not payload:
            return
        b = payload[0]
        i = 1
        if b & 0x80:  # VP8 payload descriptor extensions (RFC 7741)
            ext = payload[1]
            i = 2
            if ext & 0x80:
                i += 2 if payload[i] & 0x80 else 1
            if ext & 0x40:
                i += 1
            if ext & 0x30:
                i += 1
        if b & 0x10 and (b & 0x07) == 0:  # start of a frame
            stream.key = frame_key(payload[i:])
        if data[1] & 0x80:  # marker: last packet of the frame
            timestamp = int.from_bytes(data[4:8], "big")
            self.records.frames.append((stream.publisher, "video", stream.key, timestamp, now))
            self.publishers_seen.add(stream.publisher)
            stream.key = None


async def _ping(ws: Any) -> None:
    with contextlib.suppress(Exception):
        while True:
            await asyncio.sleep(10)
            await ws.send(wire.encode(wire.Ping()))


async def _run(spec: dict[str, Any]) -> None:
    from bench.sfu_experiments import large_receive_buffers
    from clients.publish import PacketTrack, PlaybackClock, Publisher, iter_packets, plan_streams

    zero_timestamp_origin()
    # the clients are the measuring instrument: their sockets must not be where packets drop
    large_receive_buffers()
    records = Records()
    stop = asyncio.Event()
    clip = Path(spec["clip"])
    plans = plan_streams(clip)
    publishers: list[Publisher] = []
    tasks: list[asyncio.Task[Any]] = []
    stop_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for tok in spec["publisher_tokens"]:
        clock = PlaybackClock()
        holder: list[Publisher] = []

        def on_sent(kind: str, packet: Any, t: float, holder: list[Publisher] = holder) -> None:
            pub = holder[0].stats.participant_id or "?"
            records.sent.append((pub, kind, frame_key(packet.data), packet.pts & 0xFFFFFFFF, t))

        tracks = {kind: PacketTrack(kind, iter_packets(clip, plan, loop=True), plan.clock_rate_hz,
                                    clock, on_sent)
                  for kind, plan in plans.items()}
        publisher = Publisher(spec["url"], tok, dict(tracks),  # type: ignore[arg-type]
                              {k: p.codec for k, p in plans.items()}, ("127.0.0.1",))
        holder.append(publisher)
        publishers.append(publisher)
        tasks.append(asyncio.ensure_future(publisher.run(stop_future)))
    for publisher in publishers:
        await asyncio.wait_for(publisher.published.wait(), 60)
    if not spec["subscriber_tokens"]:
        print("READY", flush=True)
    subscribers = [LightSubscriber(spec["url"], tok, records) for tok in spec["subscriber_tokens"]]
    if subscribers:
        subscribers[0].quality_reporter = True
    for i, sub in enumerate(subscribers):
        tasks.append(asyncio.ensure_future(sub.run(stop)))
        if i % 5 == 4:
            await asyncio.sleep(0.2)  # do not stampede the server's ICE/DTLS setup
    expected = spec["publishers_total"]
    while subscribers and any(len(s.publishers_seen) < expected for s in subscribers):
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        await asyncio.sleep(0.1)
    if subscribers:
        print("READY", flush=True)
    await stop_on_request(records, stop, stop_future, tasks, Path(spec["out"]),
                          peers=lambda: [s.pc for s in subscribers] + [p.pc for p in publishers])


async def stop_on_request(records: Records, stop: asyncio.Event, stop_future: asyncio.Future[None],
                          tasks: list[asyncio.Future[Any]], out: Path,
                          peers: Any = None) -> None:
    """Wait for the driver's STOP line on stdin, end every client, write the records, say DONE.

    `peers()`: this worker's peer connections, whose states at STOP are recorded.
    """
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.startswith("STOP"):
        records.errors.append(f"unexpected control line {line!r}")
    for pc in peers() if peers is not None else []:
        records.connection_states[pc.connectionState if pc is not None else "none"] += 1
    stop.set()
    stop_future.set_result(None)
    done = await asyncio.gather(*tasks, return_exceptions=True)
    records.errors += [repr(e) for e in done if isinstance(e, BaseException)]
    out.write_text(json.dumps(records.to_json()))
    print("DONE", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one client worker from a spec file (written by bench.sfu)."""
    p = argparse.ArgumentParser(prog="python -m bench.sfu_clients")
    p.add_argument("--spec", type=Path, required=True)
    args = p.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    if spec.get("server") == "janus":
        from bench.janus_clients import run_worker

        runner = run_worker(spec)
    else:
        runner = _run(spec)
    try:
        import uvloop

        uvloop.run(runner)
    except ImportError:
        asyncio.run(runner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
