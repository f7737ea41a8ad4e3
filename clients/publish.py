"""`medstream publish FILE`: play a media file into a room as a presenter, without re-encoding.

    medstream publish lecture.webm --url ws://127.0.0.1:8765/ws --token TOKEN [--loop]

VP8/H.264 video and Opus audio (WebM, MKV, MP4) are demuxed with PyAV and handed to aiortc as
`av.Packet`s, which its senders packetise as they are (`RTCRtpSender` packs, never encodes): the
room receives the file's own bytes. Other codecs are decoded and encoded to VP8/Opus (said on
stderr). Packets are paced by their timestamps on one clock shared by audio and video; `--loop`
starts over with timestamps continuing, so receivers see one unbroken stream.

The signaling side follows docs/protocol.md: join, `publish`, then answer each server offer,
attaching our tracks to the offered `recvonly` m-lines. A presenter playing a file watches
nobody: the room subscribes it to the other presenters' tracks, so it answers those m-lines
`inactive` (nothing is sent to it, nothing decoded) and unsubscribes from them. A file cannot make a keyframe on demand:
keyframe requests (PLI/FIR) are counted and otherwise wait for the file's next keyframe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import av
import websockets
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from protocol import signaling as wire

log = logging.getLogger("medstream.publish")

Kind = Literal["audio", "video"]
VIDEO_CLOCK_HZ = 90000
AUDIO_CLOCK_HZ = 48000
# codec name in the container (PyAV) -> RTP codec name we can send without re-encoding
PASSTHROUGH: dict[str, str] = {"vp8": "VP8", "h264": "H264", "opus": "opus"}


class PublishError(Exception):
    """The file cannot be published, or the server refused us (message says which and why)."""


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded frame ready to send: `pts` in ticks of the stream's RTP clock (90 kHz / 48 kHz)."""

    data: bytes
    pts: int
    keyframe: bool


@dataclass(frozen=True)
class StreamPlan:
    """How one kind of the file will be sent: `codec` on the wire, `transcode` if re-encoded."""

    kind: Kind
    source_codec: str
    codec: str  # "VP8", "H264" or "opus"
    transcode: bool
    clock_rate_hz: int


def plan_streams(path: Path) -> dict[Kind, StreamPlan]:
    """Which of `path`'s first video and audio streams we send, and whether they are re-encoded.

    Raises PublishError if the file cannot be opened or has neither video nor audio.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise PublishError(f"cannot open {path}: {exc}") from exc
    plans: dict[Kind, StreamPlan] = {}
    with container:
        for kind, streams in (("video", container.streams.video), ("audio", container.streams.audio)):
            if not streams:
                continue
            name = streams[0].codec_context.name
            wire = PASSTHROUGH.get(name)
            if getattr(streams[0].codec_context, "has_b_frames", 0):
                wire = None  # WebRTC receivers expect frames in presentation order
            if wire is not None and (kind == "video") == (wire != "opus"):
                plans[kind] = StreamPlan(kind, name, wire, False, _clock(kind))  # type: ignore[index,arg-type]
            else:
                fallback = "VP8" if kind == "video" else "opus"
                plans[kind] = StreamPlan(kind, name, fallback, True, _clock(kind))  # type: ignore[index,arg-type]
    if not plans:
        raise PublishError(f"{path} has no video or audio stream")
    return plans


def _clock(kind: str) -> int:
    return VIDEO_CLOCK_HZ if kind == "video" else AUDIO_CLOCK_HZ


def iter_packets(path: Path, plan: StreamPlan, loop: bool = False) -> Iterator[EncodedPacket]:
    """The encoded frames of `path`'s first `plan.kind` stream, pts in RTP clock ticks from 0.

    Pass-through streams yield the container's packets as they are (H.264 converted to
    Annex-B, which RTP packetisation needs); others are decoded and encoded to VP8/Opus.
    With `loop` the file starts over forever, pts continuing one frame after the last one.
    """
    offset = 0
    while True:
        last_pts = None
        step = 0
        first: int | None = None
        for packet in _read_once(path, plan):
            if first is None:
                first = packet.pts
            pts = packet.pts - first + offset
            if last_pts is not None and pts > last_pts:
                step = pts - last_pts
            last_pts = pts
            yield EncodedPacket(packet.data, pts, packet.keyframe)
        if not loop or last_pts is None:
            return
        offset = last_pts + max(step, 1)


def _read_once(path: Path, plan: StreamPlan) -> Iterator[EncodedPacket]:
    clock = plan.clock_rate_hz
    with av.open(str(path)) as container:
        stream = (container.streams.video if plan.kind == "video" else container.streams.audio)[0]
        if plan.transcode:
            yield from _transcode(container, stream, plan)
            return
        bsf = None
        if plan.codec == "H264" and stream.codec_context.extradata and stream.codec_context.extradata[:1] == b"\x01":
            bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
        for packet in container.demux(stream):
            packets = [packet] if bsf is None else bsf.filter(packet)
            for p in packets:
                if p.size == 0 or p.pts is None or p.time_base is None:
                    continue
                pts = round(p.pts * p.time_base * clock)
                yield EncodedPacket(bytes(p), pts, bool(p.is_keyframe) or plan.kind == "audio")


def _transcode(container: Any, stream: Any, plan: StreamPlan) -> Iterator[EncodedPacket]:
    clock = plan.clock_rate_hz
    enc: Any
    resampler: Any = None
    samples = 0
    if plan.kind == "video":
        enc = av.CodecContext.create("libvpx", "w")
        enc.width = stream.codec_context.width
        enc.height = stream.codec_context.height
        enc.pix_fmt = "yuv420p"
        enc.bit_rate = 1_000_000
        enc.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        enc.gop_size = 60
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        enc = av.CodecContext.create("libopus", "w")
        enc.sample_rate = AUDIO_CLOCK_HZ
        enc.layout = "stereo"
        enc.format = "s16"
        enc.bit_rate = 64000
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_CLOCK_HZ)

    def out(packets: Any) -> Iterator[EncodedPacket]:
        for p in packets:
            if p.size and p.pts is not None:
                pts = round(p.pts * p.time_base * clock) if p.time_base else int(p.pts)
                yield EncodedPacket(bytes(p), pts, bool(p.is_keyframe) or plan.kind == "audio")

    for frame in container.decode(stream):
        if plan.kind == "video":
            if frame.pts is None:
                continue
            f = frame.reformat(format="yuv420p")
            f.pts = round(frame.pts * frame.time_base * VIDEO_CLOCK_HZ)
            f.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
            yield from out(enc.encode(f))
        else:
            for f in resampler.resample(frame):
                f.pts = samples
                f.time_base = fractions.Fraction(1, AUDIO_CLOCK_HZ)
                samples += f.samples
                yield from out(enc.encode(f))
    yield from out(enc.encode(None))


class PlaybackClock:
    """One start time for every track of a file, so audio and video stay in step (event-loop time)."""

    def __init__(self) -> None:
        self.start_s: float | None = None

    def due_s(self, pts: int, clock_rate_hz: int) -> float:
        """Loop time at which a packet with `pts` (clock ticks from 0) is due; starts the clock."""
        now = asyncio.get_running_loop().time()
        if self.start_s is None:
            self.start_s = now
        return self.start_s + pts / clock_rate_hz


SentCallback = Callable[[Kind, EncodedPacket, float], None]  # kind, packet, time.time() when handed over


class PacketTrack(MediaStreamTrack):
    """An aiortc track yielding pre-encoded `av.Packet`s paced by their timestamps.

    aiortc's sender packs these into RTP without encoding. `on_sent(kind, packet, wall_s)` is
    called as each packet is handed to the sender (benchmarks use it for latency).
    """

    def __init__(
        self,
        kind: Kind,
        packets: Iterator[EncodedPacket],
        clock_rate_hz: int,
        clock: PlaybackClock,
        on_sent: SentCallback | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind  # type: ignore[assignment]
        self._kind: Kind = kind
        self._packets = packets
        self._clock_rate_hz = clock_rate_hz
        self._time_base = fractions.Fraction(1, clock_rate_hz)
        self._clock = clock
        self._on_sent = on_sent
        self.packets_sent = 0
        self.ended = asyncio.Event()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        item = next(self._packets, None)
        if item is None:
            self.ended.set()
            self.stop()
            raise MediaStreamError
        delay = self._clock.due_s(item.pts, self._clock_rate_hz) - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(item.data)
        packet.pts = item.pts
        packet.time_base = self._time_base
        self.packets_sent += 1
        if self._on_sent is not None:
            self._on_sent(self._kind, item, time.time())
        return packet


@dataclass
class PublisherStats:
    """What a publisher did: offers answered, keyframe requests it could not honour."""

    offers: int = 0
    keyframe_requests: int = 0
    participant_id: str | None = None
    track_ids: dict[str, str] = field(default_factory=dict)


class Publisher:
    """Joins a room over the signaling websocket and publishes `tracks` (kind -> track).

    `codecs` names the codec each kind is sent with (the answer keeps only that one).
    `ice_host_addresses`: the host candidates we offer ("127.0.0.1" on loopback; aioice
    leaves loopback out otherwise). Raises PublishError when the server refuses.
    """

    def __init__(
        self,
        url: str,
        token: str,
        tracks: dict[Kind, MediaStreamTrack],
        codecs: dict[Kind, str],
        ice_host_addresses: tuple[str, ...] = (),
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.token = token
        self.tracks = tracks
        self.codecs = codecs
        self.ice_host_addresses = ice_host_addresses
        self.connect_timeout_s = connect_timeout_s
        self.stats = PublisherStats()
        self.pc: RTCPeerConnection | None = None
        self.published = asyncio.Event()
        self._attached: set[str] = set()

    async def run(self, until: asyncio.Future[Any] | None = None) -> None:
        """Join, publish, answer offers and ping until `until` completes or the server says bye."""
        async with websockets.connect(self.url, max_size=None, close_timeout=2.0) as ws:  # as monitor-sim
            await ws.send(wire.encode(wire.Join(wire.PROTOCOL_VERSION, self.token, id="join")))
            joined = await self._expect(ws, "joined")
            assert isinstance(joined, wire.Joined)
            self.stats.participant_id = joined.participant.participant_id
            servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                       for s in joined.ice_servers]
            self.pc = RTCPeerConnection(
                RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
            )
            await ws.send(wire.encode(wire.Publish(audio="audio" in self.tracks, video="video" in self.tracks,
                                                   id="publish")))
            pinger = asyncio.ensure_future(self._ping(ws, joined.heartbeat_s))
            reader = asyncio.ensure_future(self._read(ws))
            watchdog = asyncio.ensure_future(self._media_connects(self.connect_timeout_s))
            waiters: list[asyncio.Future[Any]] = [reader, watchdog]
            if until is not None:
                waiters.append(until)
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    reader.result()  # re-raise PublishError
                if watchdog.done():
                    watchdog.result()  # media never connected: PublishError
            finally:
                pinger.cancel()
                reader.cancel()
                watchdog.cancel()
                with contextlib.suppress(Exception):
                    await ws.send(wire.encode(wire.Leave()))
                await self.pc.close()

    async def _media_connects(self, timeout_s: float) -> None:
        """Raise PublishError when media has not connected within `timeout_s`; else wait forever."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.pc is None or self.pc.connectionState != "connected":
            failed = self.pc is not None and self.pc.connectionState == "failed"
            if failed or asyncio.get_running_loop().time() > deadline:
                raise PublishError(
                    f"media did not connect within {timeout_s:g} s: the server's ICE addresses are not "
                    "reachable from here (its --ice-host, a firewall, or TURN)")
            await asyncio.sleep(0.1)
        await asyncio.Event().wait()

    async def _expect(self, ws: Any, type_: str) -> wire.ServerMessage:
        while True:
            msg = wire.decode_server_message(await ws.recv())
            if isinstance(msg, wire.Error):
                raise PublishError(f"server refused: {msg.reason.value}: {msg.message}")
            if type_ == msg.TYPE:
                return msg

    async def _ping(self, ws: Any, heartbeat_s: float) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(heartbeat_s)
                await ws.send(wire.encode(wire.Ping()))

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                if not isinstance(raw, str):
                    continue
                match wire.decode_server_message(raw):
                    case wire.ServerSdp(sdp_type="offer", sdp=offer):
                        answer = await self.answer(offer)
                        await ws.send(wire.encode(wire.Sdp("answer", answer)))
                    case wire.TrackPublished(track=track):
                        if track.participant_id != self.stats.participant_id:
                            await ws.send(wire.encode(wire.Unsubscribe((track.track_id,))))
                        else:
                            self.stats.track_ids[track.kind] = track.track_id
                            if set(self.stats.track_ids) >= set(self.tracks):
                                self.published.set()
                    case wire.Error(reason=reason, message=message):
                        raise PublishError(f"server refused: {reason.value}: {message}")
                    case wire.Bye() | wire.RoomEnded():
                        return
                    case _:
                        pass
        except websockets.ConnectionClosed:
            return

    async def answer(self, offer_sdp: str) -> str:
        """Answer a server offer: our tracks go on its `recvonly` m-lines, our codec only."""
        assert self.pc is not None
        offer = aiortc_sdp.SessionDescription.parse(offer_sdp)
        for media in offer.media:
            if media.direction != "recvonly" or media.kind not in self.codecs:
                continue
            wanted = self.codecs[media.kind].lower()  # type: ignore[index]
            kept = [c for c in media.rtp.codecs if c.name.lower() == wanted]
            if not kept:
                raise PublishError(
                    f"server does not accept {self.codecs[media.kind]} {media.kind}; "  # type: ignore[index]
                    f"offered {[c.name for c in media.rtp.codecs]}"
                )
            pts = {c.payloadType for c in kept}
            kept += [c for c in media.rtp.codecs
                     if c.name.lower() == "rtx" and c.parameters.get("apt") in pts]
            media.rtp.codecs = kept
            media.fmt = [c.payloadType for c in kept]
        await self.pc.setRemoteDescription(RTCSessionDescription(str(offer), "offer"))
        by_mid = {m.rtp.muxId: m for m in offer.media}
        for transceiver in self.pc.getTransceivers():
            found = by_mid.get(transceiver.mid or "")
            mid = transceiver.mid or ""
            if found is not None and found.direction == "sendonly":
                transceiver.direction = "inactive"  # others' media: not received, not decoded
                continue
            if found is None or found.direction != "recvonly" or mid in self._attached:
                continue
            track = self.tracks.get(transceiver.kind)  # type: ignore[call-overload]
            if track is None:
                continue
            self._attached.add(mid)
            transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendonly"
            # the pack path has no encoder to force a keyframe: count requests instead
            transceiver.sender._send_keyframe = self._on_keyframe_request  # type: ignore[method-assign]
        answer = await self.pc.createAnswer()
        from media_server import ice  # the loopback candidate seam; aiortc gathers here

        with ice.host_addresses(self.ice_host_addresses):
            await self.pc.setLocalDescription(answer)
        self.stats.offers += 1
        return str(self.pc.localDescription.sdp)

    def _on_keyframe_request(self) -> None:
        self.stats.keyframe_requests += 1


def default_ice_hosts(url: str) -> tuple[str, ...]:
    """Offer 127.0.0.1 when the server is on loopback (aioice would offer no loopback candidate)."""
    host = urlparse(url).hostname or ""
    return ("127.0.0.1",) if host in ("127.0.0.1", "localhost") else ()


async def publish_file(
    path: Path,
    url: str,
    token: str,
    *,
    loop: bool = False,
    ice_host_addresses: tuple[str, ...] | None = None,
    on_sent: SentCallback | None = None,
    stop: asyncio.Future[Any] | None = None,
) -> Publisher:
    """Publish `path` until it ends (or forever with `loop`, or until `stop` completes).

    Raises PublishError if the file cannot be read or the server refuses.
    """
    plans = plan_streams(path)
    for plan in plans.values():
        if plan.transcode:
            print(f"medstream publish: {plan.kind} is {plan.source_codec}: re-encoding to "
                  f"{plan.codec} (only VP8/H.264/Opus pass through unchanged)", file=sys.stderr)
    clock = PlaybackClock()
    tracks: dict[Kind, PacketTrack] = {
        kind: PacketTrack(kind, iter_packets(path, plan, loop), plan.clock_rate_hz, clock, on_sent)
        for kind, plan in plans.items()
    }
    hosts = default_ice_hosts(url) if ice_host_addresses is None else ice_host_addresses
    publisher = Publisher(url, token, dict(tracks), {k: p.codec for k, p in plans.items()}, hosts)
    ended = asyncio.ensure_future(
        asyncio.wait([asyncio.ensure_future(t.ended.wait()) for t in tracks.values()],
                     return_when=asyncio.ALL_COMPLETED)
    )
    waiters = [ended] if stop is None else [ended, stop]
    until = asyncio.ensure_future(asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED))
    try:
        await publisher.run(until)
    finally:
        until.cancel()
        ended.cancel()
    return publisher


def main(argv: list[str]) -> int:
    """`medstream publish FILE --url URL --token TOKEN [--loop]`; 0 when the file played out."""
    parser = argparse.ArgumentParser(prog="medstream publish", description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="WebM/MKV/MP4 (VP8/H.264 + Opus pass through)")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/ws", help="signaling websocket URL")
    parser.add_argument("--token", required=True, help="host or expert token for a broadcast room")
    parser.add_argument("--loop", action="store_true", help="start over at the end, forever")
    parser.add_argument("--ice-host", action="append", default=[], metavar="ADDR",
                        help="host address offered in ICE (default: 127.0.0.1 for a loopback URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(publish_file(args.file, args.url, args.token, loop=args.loop,
                                 ice_host_addresses=tuple(args.ice_host) or None))
    except PublishError as exc:
        print(f"medstream publish: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"medstream publish: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
