"""A real aiortc client for tests and benchmarks: answers the server's offers, publishes, receives.

Not a fake: it is a complete aiortc peer over real UDP sockets. What it adds for checking:

- `CounterVideoSource` encodes synthetic frames (VP8 or H.264, PyAV) whose pixels carry the
  frame counter as 16 black/white columns, and keeps what its encoder produced (`sent`), so a
  test can compare the publisher's encoder output with what a subscriber received, byte for
  byte. A PLI from the server makes its next frame a keyframe.
- `temporal_layers=True` makes the VP8 source an L1T3 publisher, as a browser with
  `scalabilityMode: "L1T3"` is: libvpx through PyAV with per-frame reference flags (FFmpeg's
  `vp8-flags` frame metadata, error-resilient mode), and a packetiser (`LayeredVp8Packer`) that
  writes each frame's TID, layer sync bit and TL0PICIDX in the payload descriptor. aiortc's own
  VP8 encoder cannot do either.
- `ToneAudioSource` encodes a sine tone with Opus, 20 ms per packet.
- `ClientPeer` answers each offer: `recvonly` m-lines (publish slots) get its sources, every
  received track is tapped *before* decoding (`ReceivedTrack.frames`: the depayloaded encoded
  frames) and, if asked, decoded to read the counters back.
- A narrow link as its receiver reports it: while `remb_bps` is set, every REMB the client's
  receivers send says that (aiortc's own estimate otherwise), as a browser behind such a link
  would; the transport stays real.
- Loss: `drop_every_nth_rtp` drops every Nth media RTP packet (not retransmissions) arriving at
  the client, after SRTP, so NACK/RTX and PLI paths are exercised deterministically.
- Codec rejection: `receive_codecs` makes the client reject (port 0, like a browser) m-lines
  whose codecs it does not list.

Pacing uses the event loop clock; tests wait on frame counts, not on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import av
import numpy as np
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.utils import uint16_add

from media_server import ice
from media_server.config import MediaConfig
from media_server.events import MediaEvent, OfferReady, TrackPublished
from media_server.forwarding import EarlyJitterBuffer, ReceiverTap
from media_server.keyframes import is_keyframe

VIDEO_CLOCK_HZ = 90000
AUDIO_CLOCK_HZ = 48000
COUNTER_BITS = 16


def draw_counter(counter: int, width: int, height: int) -> np.ndarray:
    """A gray YUV420p frame whose luma carries `counter` as COUNTER_BITS black/white columns."""
    y = np.full((height, width), 128, dtype=np.uint8)
    column_w = width // COUNTER_BITS
    for bit in range(COUNTER_BITS):
        if (counter >> bit) & 1:
            y[:, bit * column_w : (bit + 1) * column_w] = 235
        else:
            y[:, bit * column_w : (bit + 1) * column_w] = 16
    # a block of noise seeded by the counter makes every encoded frame unique (without it,
    # equal column flips encode to equal bytes); it sits below the band read_counter reads
    noise_rows = max(2, height // 8)
    noise = np.random.default_rng(counter).integers(16, 236, (noise_rows, width // 4))
    y[height - noise_rows :, : width // 4] = noise.astype(np.uint8)
    uv = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    return np.concatenate([y.reshape(-1), uv.reshape(-1), uv.reshape(-1)]).reshape(
        height * 3 // 2, width
    )


def read_counter(frame: av.VideoFrame) -> int:
    """Read back the counter drawn by `draw_counter` from a decoded frame."""
    y = frame.to_ndarray(format="gray")
    height, width = y.shape
    column_w = width // COUNTER_BITS
    band = y[height // 4 : 3 * height // 4]
    value = 0
    for bit in range(COUNTER_BITS):
        cell = band[:, bit * column_w + 2 : (bit + 1) * column_w - 2]
        if float(cell.mean()) > 128:
            value |= 1 << bit
    return value


@dataclass
class SentFrame:
    """One frame as the publisher's encoder produced it (`layer`: its temporal layer)."""

    counter: int
    data: bytes
    keyframe: bool
    layer: int = 0


# VP8 encoder flags (libvpx vp8cx.h) for the L1T3 pattern browsers use: layer 0 every 4th frame
# refers to and updates LAST; layer 1 (2nd of 4) refers to LAST, updates GOLDEN; layer 2 (odd
# frames) refers to LAST (and GOLDEN on the 4th), updates nothing. Frames above layer 0 do not
# update the entropy context either, so any upper layer may be left out.
_NO_REF_LAST, _NO_REF_GF, _NO_REF_ARF = 1 << 16, 1 << 17, 1 << 21
_NO_UPD_LAST, _NO_UPD_GF, _NO_UPD_ARF, _NO_UPD_ENTROPY = 1 << 18, 1 << 22, 1 << 23, 1 << 20
L1T3_PATTERN: tuple[tuple[int, bool, int], ...] = (  # (layer, layer sync, flags)
    (0, True, _NO_REF_GF | _NO_REF_ARF | _NO_UPD_GF | _NO_UPD_ARF),
    (2, True, _NO_REF_GF | _NO_REF_ARF | _NO_UPD_LAST | _NO_UPD_GF | _NO_UPD_ARF | _NO_UPD_ENTROPY),
    (1, True, _NO_REF_GF | _NO_REF_ARF | _NO_UPD_LAST | _NO_UPD_ARF | _NO_UPD_ENTROPY),
    (2, False, _NO_REF_ARF | _NO_UPD_LAST | _NO_UPD_GF | _NO_UPD_ARF | _NO_UPD_ENTROPY),
)


class CounterVideoSource:
    """Encodes counter frames with VP8 (libvpx) or H.264 (libx264); keeps every output frame."""

    def __init__(self, codec: Literal["VP8", "H264"], width: int = 160, height: int = 96,
                 fps: int = 10, bitrate_bps: int = 150_000, temporal_layers: bool = False) -> None:
        self.codec_name = codec
        self.width, self.height, self.fps = width, height, fps
        self.temporal_layers = temporal_layers and codec == "VP8"
        self.layer_of_pts: dict[int, tuple[int, bool]] = {}
        self._position = 0  # in the L1T3 pattern; a keyframe restarts it
        self.sent: list[SentFrame] = []
        self.sent_at: list[float] = []  # time.time() as each of `sent` was made
        self.keyframes_forced = 0
        self._counter = 0
        self._force_keyframe = True
        if codec == "VP8":
            ctx = av.CodecContext.create("libvpx", "w")
            # one thread: with FFmpeg's automatic thread count libvpx spent 14-52 ms of CPU per
            # 192x144 frame on this 2-core machine (0.7 ms with one), starving the event loop
            # that also sends the audio and runs the relay in a test
            ctx.thread_count = 1
            ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "static-thresh": "1"}
            if self.temporal_layers:
                ctx.options = {**ctx.options, "error-resilient": "default", "auto-alt-ref": "0",
                               "ts-parameters": "ts_number_layers=3:ts_target_bitrate="
                               f"{bitrate_bps // 4000},{bitrate_bps // 2000},{bitrate_bps // 1000}:"
                               "ts_rate_decimator=4,2,1:ts_periodicity=4:ts_layer_id=0,2,1,2"}
        else:
            ctx = av.CodecContext.create("libx264", "w")
            ctx.options = {"tune": "zerolatency", "preset": "ultrafast", "level": "31"}
            ctx.profile = "Baseline"
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = bitrate_bps
        ctx.framerate = fractions.Fraction(fps, 1)
        ctx.time_base = fractions.Fraction(1, fps)
        ctx.gop_size = 100000
        self._ctx = ctx

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (what a PLI/FIR asks for)."""
        self._force_keyframe = True

    def next_packet(self) -> av.Packet | None:
        """Encode the next counter frame; None if the encoder held it back."""
        counter = self._counter
        self._counter += 1
        frame = av.VideoFrame.from_ndarray(
            draw_counter(counter, self.width, self.height), format="yuv420p"
        )
        frame.pts = counter
        frame.time_base = fractions.Fraction(1, self.fps)
        if self._force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
            self._force_keyframe = False
            self.keyframes_forced += 1
            self._position = 0
        layer, sync = 0, False
        if self.temporal_layers:
            layer, sync, flags = L1T3_PATTERN[self._position % 4]
            self._position += 1
            frame.metadata["vp8-flags"] = str(flags)
        data = b"".join(bytes(p) for p in self._ctx.encode(frame))
        if not data:
            return None
        self.sent.append(SentFrame(counter, data, is_keyframe(self.codec_name, data), layer))
        self.sent_at.append(time.time())
        packet = av.Packet(data)
        packet.pts = counter * VIDEO_CLOCK_HZ // self.fps
        if self.temporal_layers:
            self.layer_of_pts[packet.pts] = (layer, sync)
            if len(self.layer_of_pts) > 256:
                self.layer_of_pts.pop(next(iter(self.layer_of_pts)))
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        return packet


class LayeredVp8Packer:
    """What aiortc's Vp8Encoder.pack does, plus the temporal layer in every payload descriptor
    (TID, Y, TL0PICIDX: RFC 7741), read from the source's `layer_of_pts`."""

    def __init__(self, source: CounterVideoSource) -> None:
        from aiortc.codecs.vpx import VpxPayloadDescriptor

        self._descriptor = VpxPayloadDescriptor
        self._source = source
        self.picture_id = 0
        self.tl0_pic_idx = 0

    def pack(self, packet: av.Packet) -> tuple[list[bytes], int]:
        layer, sync = self._source.layer_of_pts.pop(int(packet.pts or 0), (0, False))
        if layer == 0:
            self.tl0_pic_idx = (self.tl0_pic_idx + 1) % 256
        buffer = bytes(packet)
        descr = self._descriptor(partition_start=1, partition_id=0, picture_id=self.picture_id,
                                 tl0picidx=self.tl0_pic_idx, tid=(layer, int(sync)))
        payloads = []
        pos = 0
        while pos < len(buffer):
            head = bytes(descr)
            size = min(len(buffer) - pos, 1300 - len(head))
            payloads.append(head + buffer[pos:pos + size])
            descr.partition_start = 0
            pos += size
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads, int(packet.pts or 0)


class ToneAudioSource:
    """Encodes a sine tone with Opus (48 kHz stereo, 20 ms packets); keeps every packet."""

    def __init__(self, frequency_hz: float = 440.0) -> None:
        self.sent: list[bytes] = []
        self.sent_at: list[float] = []  # time.time() as each of `sent` was made
        self._ctx = av.CodecContext.create("libopus", "w")
        self._ctx.sample_rate = AUDIO_CLOCK_HZ
        self._ctx.layout = "stereo"
        self._ctx.format = "s16"
        self._ctx.bit_rate = 32000
        self._frequency_hz = frequency_hz
        self._samples = 0
        self.fps = 50

    def request_keyframe(self) -> None:
        """Audio has no keyframes."""

    def next_packet(self) -> av.Packet | None:
        n = AUDIO_CLOCK_HZ // self.fps
        t = (np.arange(n) + self._samples) / AUDIO_CLOCK_HZ
        tone = (8000 * np.sin(2 * math.pi * self._frequency_hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate = AUDIO_CLOCK_HZ
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK_HZ)
        self._samples += n
        packets = list(self._ctx.encode(frame))
        if not packets:
            return None
        data = b"".join(bytes(p) for p in packets)
        self.sent.append(data)
        self.sent_at.append(time.time())
        packet = av.Packet(data)
        packet.pts = packets[0].pts if packets[0].pts is not None else self._samples
        packet.time_base = fractions.Fraction(1, AUDIO_CLOCK_HZ)
        return packet


class EncodedSourceTrack(MediaStreamTrack):
    """A track that yields a source's encoded packets at its frame rate (aiortc packs, not encodes)."""

    def __init__(self, kind: str, source: CounterVideoSource | ToneAudioSource) -> None:
        super().__init__()
        self.kind = kind
        self.source = source
        self._next_s: float | None = None

    async def recv(self) -> av.Packet:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            now = loop.time()
            if self._next_s is None:
                self._next_s = now
            if self._next_s > now:
                await asyncio.sleep(self._next_s - now)
            else:
                if now - self._next_s > 0.25:  # a loaded machine: skip frames as a camera would,
                    self._next_s = now  # never encode a backlog back to back
                await asyncio.sleep(0)  # and never starve the loop
            self._next_s += 1.0 / self.source.fps
            packet = self.source.next_packet()
            if packet is not None:
                return packet


@dataclass
class ReceivedFrame:
    """One encoded frame as the client's jitter buffer assembled it (before any decoding)."""

    data: bytes
    timestamp: int
    keyframe: bool


@dataclass
class ReceivedTrack:
    """What arrived on one subscribed track; `counters` filled when the client decodes video."""

    track_id: str
    kind: str
    codec: str | None = None
    frames: list[ReceivedFrame] = field(default_factory=list)
    counters: list[int] = field(default_factory=list)
    decode_errors: int = 0
    rtp: list[tuple[int, int, float]] = field(default_factory=list)  # (ssrc, seq, arrival): audio_every_packet
    _decoder: Any = None
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_frames(self, count: int, timeout_s: float) -> None:
        """Wait until at least `count` frames arrived; raises TimeoutError naming both counts."""
        async def wait() -> None:
            while len(self.frames) < count:
                self._event.clear()
                await self._event.wait()
        try:
            await asyncio.wait_for(wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"track {self.track_id}: expected {count} frames within {timeout_s} s, "
                f"got {len(self.frames)}"
            ) from None

    async def wait_counter(self, predicate: Any, timeout_s: float) -> None:
        """Wait until `predicate(counters)` holds (decoding clients only)."""
        async def wait() -> None:
            while not predicate(self.counters):
                self._event.clear()
                await self._event.wait()
        await asyncio.wait_for(wait(), timeout_s)


class KeyframeJumpJitterBuffer(EarlyJitterBuffer):
    """A receiver's VP8 jitter buffer that behaves like a browser's after loss: a keyframe is
    passed on as soon as it is complete and everything older is given up, and a keyframe is
    asked for when nothing could be passed on for a while.

    aiortc's buffer releases frames only in sequence order, so one packet that is never
    repaired (lost with its retransmission, or gone from the sender's history while a weak
    link had the video paused) holds back every later frame, the keyframe that would repair it
    too, until 128 more packets arrived: tens of seconds at a paused track's rate. Chromium
    decodes the keyframe as soon as it is complete, whichever packet completes it (its packet
    buffer looks for complete frames at every insertion: a retransmission, too), and asks for a
    keyframe when no frame was decodable for `stall_s` (VideoReceiveStream2's 3 s). A clinic
    standing in for a browser must too, or it measures aiortc, not the relay. (Before, the
    keyframe was looked for only at its marker packet: one whose hole a retransmission filled
    later stayed behind the older hole.)
    """

    stall_s = 3.0

    def add(self, packet: Any) -> tuple[bool, Any]:
        pli, frame = super().add(packet)
        now = time.monotonic()
        if frame is None and self._origin is not None:
            frame = self._complete_keyframe(packet)
        last = getattr(self, "_last_frame_s", None)
        if frame is not None or last is None:
            self._last_frame_s = now
        elif now - last > self.stall_s:
            self._last_frame_s = now  # ask again after another `stall_s`
            pli = True
        return pli, frame

    def _complete_keyframe(self, packet: Any) -> JitterFrame | None:
        """The keyframe `packet` belongs to, if that is now complete (then removed with
        everything older); else None."""
        cap, packets = self._capacity, self._packets
        origin: int = self._origin if self._origin is not None else packet.sequence_number
        seq, ts = packet.sequence_number, packet.timestamp

        def at(s: int) -> Any:
            p = packets[s % cap]
            return p if p is not None and p.sequence_number == s and p.timestamp == ts else None

        if uint16_add(seq, -origin) >= cap:
            return None
        first = seq
        while True:  # back to the frame's first packet (VP8 descriptor: S=1, partition 0)
            p = at(first)
            if p is None:
                return None
            if (p.payload[0] & 0x17) == 0x10:
                break
            if first == origin:
                return None
            first = uint16_add(first, -1)
        if not p._data or p._data[0] & 0x01:  # frame tag P=1: not a keyframe
            return None
        last = seq
        while not at(last).marker:  # on to its last packet
            last = uint16_add(last, 1)
            if uint16_add(last, -origin) >= cap or at(last) is None:
                return None
        parts = [at(uint16_add(first, i))._data for i in range(uint16_add(last, -first) + 1)]
        self.remove(uint16_add(last, -origin) + 1)
        return JitterFrame(data=b"".join(parts), timestamp=ts)


class ClientPeer:
    """An aiortc participant that only answers: publishes its sources, records what it receives.

    `video_codec`: publish counter video with this codec (None: no video); `audio`: publish a
    tone. `decode`: decode received video and read the counters. `host_addresses`: the ICE host
    candidates it offers (loopback by default). `browser_video`: receive VP8 as a browser does
    after loss (`KeyframeJumpJitterBuffer`, NACKs repeated); aiortc's own receiver holds every
    frame behind a packet never repaired.
    """

    def __init__(
        self,
        name: str,
        *,
        video_codec: Literal["VP8", "H264"] | None = None,
        audio: bool = False,
        video_size: tuple[int, int] = (160, 96),
        fps: int = 10,
        video_bitrate_bps: int = 150_000,
        temporal_layers: bool = False,
        decode: bool = False,
        receive_codecs: frozenset[str] | None = None,
        drop_every_nth_rtp: int | None = None,
        host_addresses: tuple[str, ...] = ("127.0.0.1",),
        ice_servers: list[dict[str, Any]] | None = None,
        audio_every_packet: bool = False,
        browser_video: bool = False,
    ) -> None:
        from aiortc import RTCIceServer

        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[RTCIceServer(urls=list(s["urls"]), username=s.get("username"), credential=s.get("credential"))
                        for s in ice_servers or []],  # `joined.ice_servers`; none: no server is contacted
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        ))
        self.video_source = (
            CounterVideoSource(video_codec, *video_size, fps=fps, bitrate_bps=video_bitrate_bps,
                               temporal_layers=temporal_layers) if video_codec else None
        )
        self.audio_source = ToneAudioSource() if audio else None
        self.decode = decode
        self.receive_codecs = (
            None if receive_codecs is None else frozenset(c.lower() for c in receive_codecs)
        )
        self.drop_every_nth_rtp = drop_every_nth_rtp
        self.rtp_dropped = 0
        self.rtx_received = 0
        self.host_addresses = host_addresses
        # receive like a browser: count every Opus packet that arrives, as NetEq plays each one
        # (aiortc's audio jitter buffer gives up whole runs of packets after a single loss), and
        # pass a complete VP8 keyframe on at once (KeyframeJumpJitterBuffer)
        self.audio_every_packet = audio_every_packet
        # receive VP8 like a browser (KeyframeJumpJitterBuffer, NACKs repeated): implied by
        # audio_every_packet, which stands in for a browser
        self.browser_video = browser_video or audio_every_packet
        self.received: dict[str, ReceivedTrack] = {}
        self.rejected_mids: set[str] = set()
        self.answers = 0
        self.remb_received: list[int] = []
        self.remb_bps: int | None = None
        self.remb_sent: list[int] = []
        self._tapped: set[int] = set()
        self._published: set[str] = set()
        self._loss_installed = False
        self._media_packets: dict[int, int] = {}
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def answer(self, offer_sdp: str) -> str:
        """Apply the server's offer and return our answer SDP."""
        offer = aiortc_sdp.SessionDescription.parse(offer_sdp)
        rejected: set[str] = set()
        for media in offer.media:
            names = {c.name.lower() for c in media.rtp.codecs} - {"rtx"}
            if (self.receive_codecs is not None and media.direction == "sendonly"
                    and not (names & self.receive_codecs)):
                rejected.add(media.rtp.muxId)
                media.direction = "inactive"
            if media.direction == "recvonly" and media.kind == "video" and self.video_source:
                # answer with our codec only (aiortc fixes codecs in setRemoteDescription)
                wanted = self.video_source.codec_name.lower()
                kept = [c for c in media.rtp.codecs if c.name.lower() == wanted]
                pts = {c.payloadType for c in kept}
                kept += [
                    c for c in media.rtp.codecs
                    if c.name.lower() == "rtx" and c.parameters.get("apt") in pts
                ]
                media.rtp.codecs = kept
                media.fmt = [c.payloadType for c in kept]
        offer_sdp = str(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        by_mid = {m.rtp.muxId: m for m in offer.media}
        for transceiver in self.pc.getTransceivers():
            found = by_mid.get(transceiver.mid or "")
            if found is None:
                continue
            media = found
            if media.direction == "recvonly" and transceiver.mid not in self._published:
                self._attach_source(transceiver)
            elif media.direction == "inactive" and transceiver.mid in self._published:
                # the server closed this slot: stop feeding it (the source is shared)
                self._published.discard(transceiver.mid)
                if transceiver.sender.track is not None:
                    transceiver.sender.track.stop()
            elif media.direction == "sendonly" and id(transceiver) not in self._tapped:
                self._tap(transceiver, media)
        answer = await self.pc.createAnswer()
        with ice.host_addresses(self.host_addresses):
            await self.pc.setLocalDescription(answer)
        self._install_loss()
        self.answers += 1
        sdp = self.pc.localDescription.sdp
        self.rejected_mids |= rejected
        if rejected:
            parsed = aiortc_sdp.SessionDescription.parse(sdp)
            for media in parsed.media:
                if media.rtp.muxId in rejected:
                    media.port = 0
                    media.direction = "inactive"
            sdp = str(parsed)
        return sdp

    async def offer(self, receive: frozenset[str] = frozenset()) -> str:
        """Offer first, as a WHIP encoder (our sources, sendonly) or a WHEP player (`receive`:
        recvonly m-lines of these kinds) does; returns the offer with all our candidates."""
        from aiortc import RTCRtpSender

        for kind, source in (("audio", self.audio_source), ("video", self.video_source)):
            if source is None:
                continue
            transceiver = self.pc.addTransceiver(EncodedSourceTrack(kind, source), direction="sendonly")
            if kind == "video" and self.video_source is not None:
                wanted = f"video/{self.video_source.codec_name}".lower()
                caps = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in (wanted, "video/rtx")])
            transceiver.sender._send_keyframe = source.request_keyframe
            self._published.add(kind)
        for kind in sorted(receive):
            self.pc.addTransceiver(kind, direction="recvonly")
        offer = await self.pc.createOffer()
        with ice.host_addresses(self.host_addresses):
            await self.pc.setLocalDescription(offer)
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        """Apply the server's answer to our offer; tap every track it sends us."""
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        by_mid = {m.rtp.muxId: m for m in aiortc_sdp.SessionDescription.parse(answer_sdp).media}
        for transceiver in self.pc.getTransceivers():
            media = by_mid.get(transceiver.mid or "")
            if media is not None and media.direction == "sendonly" and id(transceiver) not in self._tapped:
                self._tap(transceiver, media)
        self._install_loss()

    def _attach_source(self, transceiver: Any) -> None:
        kind = transceiver.kind
        source = self.video_source if kind == "video" else self.audio_source
        if source is None:
            return
        self._published.add(transceiver.mid)
        track = EncodedSourceTrack(kind, source)
        transceiver.sender.replaceTrack(track)
        transceiver.direction = "sendonly"
        # the pack path ignores aiortc's keyframe flag: route PLI/FIR to our encoder
        transceiver.sender._send_keyframe = source.request_keyframe
        if isinstance(source, CounterVideoSource) and source.temporal_layers:
            transceiver.sender._RTCRtpSender__encoder = LayeredVp8Packer(source)
        self._watch_remb(transceiver.sender)

    def _shape_remb(self, receiver: Any) -> None:
        from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci, unpack_remb_fci

        original = receiver._send_rtcp

        async def send(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if self.remb_bps is not None:
                    bitrate = self.remb_bps
                    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=packet.ssrc, media_ssrc=0,
                                            fci=pack_remb_fci(bitrate, ssrcs))
                self.remb_sent.append(bitrate)
            await original(packet)

        receiver._send_rtcp = send

    def _watch_remb(self, sender: Any) -> None:
        """Keep every REMB the server sends us (what it asks this publisher for, bit/s)."""
        from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

        original = sender._handle_rtcp_packet

        async def handle(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                with contextlib.suppress(ValueError):
                    self.remb_received.append(unpack_remb_fci(packet.fci)[0])
            await original(packet)

        sender._handle_rtcp_packet = handle

    def _tap(self, transceiver: Any, media: Any) -> None:
        self._tapped.add(id(transceiver))
        self._shape_remb(transceiver.receiver)
        track_id = transceiver.receiver.track.id if transceiver.receiver.track else media.rtp.muxId
        codec = next((c.name for c in media.rtp.codecs if c.name.lower() != "rtx"), None)
        received = ReceivedTrack(track_id=track_id, kind=transceiver.kind, codec=codec)
        self.received[track_id] = received

        def on_frame(codec_params: Any, frame: Any) -> None:
            name = codec_params.name
            keyframe = transceiver.kind == "audio" or is_keyframe(name, frame.data)
            received.frames.append(ReceivedFrame(frame.data, frame.timestamp, keyframe))
            if self.decode and transceiver.kind == "video":
                self._decode(received, name, frame.data)
            received._event.set()
            self._changed.set()

        ReceiverTap.install(transceiver.receiver, on_frame)
        if self.audio_every_packet and transceiver.kind == "audio":
            buffer = EarlyJitterBuffer.install(transceiver.receiver)
            # every packet the receiver got from the network, before its jitter buffer (what an
            # impaired link delivered is compared with this, packet by packet)
            buffer.on_packet = lambda p: received.rtp.append((p.ssrc, p.sequence_number, time.monotonic()))
        elif self.browser_video and codec == "VP8":  # like a browser (see KeyframeJumpJitterBuffer)
            KeyframeJumpJitterBuffer.install(transceiver.receiver)
            task = asyncio.ensure_future(self._renack(transceiver.receiver))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _renack(self, receiver: Any, interval_s: float = 0.15, retries: int = 10) -> None:
        """Ask again for what is still missing, as a browser does (Chromium's NackRequester:
        every RTT, up to 10 times); aiortc asks only when a new gap appears, so a lost
        retransmission left a hole, and the frames behind it, until the next loss."""
        from media_server.forwarding import media_ssrc

        asked: dict[int, int] = {}
        while True:
            await asyncio.sleep(interval_s)
            generator = getattr(receiver, "_RTCRtpReceiver__nack_generator", None)
            ssrc = media_ssrc(receiver)
            if generator is None or ssrc is None:
                continue
            asked = {seq: asked.get(seq, 0) + 1 for seq in generator.missing if asked.get(seq, 0) < retries}
            if asked:
                with contextlib.suppress(Exception):  # the connection is closing
                    await receiver._send_rtcp_nack(ssrc, sorted(asked))

    def _decode(self, received: ReceivedTrack, codec: str, data: bytes) -> None:
        if received._decoder is None:
            received._decoder = av.CodecContext.create("libvpx" if codec == "VP8" else "h264", "r")
        try:
            for frame in received._decoder.decode(av.Packet(data)):
                received.counters.append(read_counter(frame))
        except av.FFmpegError:
            received.decode_errors += 1

    def _install_loss(self) -> None:
        if self.drop_every_nth_rtp is None or self._loss_installed:
            return
        transceivers = self.pc.getTransceivers()
        if not transceivers:
            return
        dtls = transceivers[0].receiver.transport
        original = dtls._handle_rtp_data
        rtx_types: set[int] = set()

        async def lossy(data: bytes, arrival_time_ms: int) -> None:
            if not rtx_types:
                for t in self.pc.getTransceivers():
                    rtx_types.update(
                        c.payloadType
                        for c in t._codecs
                        if c.name.lower() == "rtx" and c.payloadType is not None
                    )
            payload_type = data[1] & 0x7F
            if payload_type in rtx_types:
                self.rtx_received += 1
            else:
                ssrc = int.from_bytes(data[8:12], "big")
                count = self._media_packets.get(ssrc, 0) + 1
                self._media_packets[ssrc] = count
                nth = self.drop_every_nth_rtp  # may be changed (None: the loss stops)
                if nth and count % nth == 0:
                    self.rtp_dropped += 1
                    return
            await original(data, arrival_time_ms)

        dtls._handle_rtp_data = lossy  # type: ignore[method-assign]
        self._loss_installed = True

    def selected_candidate_types(self) -> tuple[str, str] | None:
        """(local, remote) candidate types of the pair ICE nominated ("host", "relay", ...)."""
        for transceiver in self.pc.getTransceivers():
            connection = transceiver.receiver.transport.transport._connection
            for pair in getattr(connection, "_nominated", {}).values():
                return pair.local_candidate.type, pair.remote_candidate.type
        return None

    def track(self, track_id: str) -> ReceivedTrack:
        """What arrived on `track_id`; raises KeyError naming the tracks we do have."""
        if track_id not in self.received:
            raise KeyError(f"{self.name} has no track {track_id!r}; has {sorted(self.received)}")
        return self.received[track_id]

    async def wait_track(self, track_id: str, timeout_s: float) -> ReceivedTrack:
        """Wait until the server has negotiated `track_id` to us."""
        async def wait() -> None:
            while track_id not in self.received:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(wait(), timeout_s)
        return self.received[track_id]

    async def close(self) -> None:
        """Close the peer connection (idempotent)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.shield(self.pc.close())  # see Sfu.close_peer


class SfuHarness:
    """Plays signaling in-process: routes each `OfferReady` to the right `ClientPeer`, feeds its
    answer back to the Sfu, and records every event. For tests and benchmarks.
    """

    def __init__(self, config: MediaConfig) -> None:
        from media_server.sfu import Sfu

        self.events: list[MediaEvent] = []
        self.clients: dict[str, ClientPeer] = {}
        self.errors: list[BaseException] = []
        self.sfu = Sfu(config, self._on_event)
        self._tasks: set[asyncio.Task[None]] = set()
        self._event = asyncio.Event()

    def _on_event(self, event: MediaEvent) -> None:
        self.events.append(event)
        self._event.set()
        if isinstance(event, OfferReady):
            task = asyncio.ensure_future(self._answer(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, event: OfferReady) -> None:
        client = self.clients.get(event.peer_id)
        if client is None:
            return
        try:
            sdp = await client.answer(event.sdp)
            await self.sfu.on_answer(event.peer_id, sdp)
        except Exception as exc:  # surfaced by settle()
            self.errors.append(exc)

    async def join(self, client: ClientPeer) -> ClientPeer:
        """Open a server peer for `client` (keyed by its name)."""
        self.clients[client.name] = client
        await self.sfu.open_peer(client.name)
        return client

    async def publish(self, name: str, kinds: frozenset[str], timeout_s: float) -> dict[str, str]:
        """Publish `kinds` from client `name`; returns {kind: track_id} once all are published."""
        start = len(self.events)
        await self.sfu.request_publish(name, kinds)
        found: dict[str, str] = {}

        async def wait() -> None:
            seen = start
            while len(found) < len(kinds):
                for event in self.events[seen:]:
                    if isinstance(event, TrackPublished) and event.peer_id == name:
                        found[event.kind] = event.track_id
                seen = len(self.events)
                if len(found) < len(kinds):
                    self._event.clear()
                    await self._event.wait()
                    self.raise_errors()
        await asyncio.wait_for(wait(), timeout_s)
        return found

    async def wait_event(self, predicate: Any, timeout_s: float) -> MediaEvent:
        """Wait for (and return) the first recorded event matching `predicate`."""
        async def wait() -> MediaEvent:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._event.clear()
                await self._event.wait()
        return await asyncio.wait_for(wait(), timeout_s)

    async def settle(self, timeout_s: float) -> None:
        """Wait until no offer is being answered; re-raise the first answer error."""
        async def wait() -> None:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await asyncio.wait_for(wait(), timeout_s)
        self.raise_errors()

    def raise_errors(self) -> None:
        """Re-raise the first error seen while answering offers."""
        if self.errors:
            raise self.errors[0]

    async def leave(self, name: str) -> None:
        """Close the client and its server peer."""
        client = self.clients.pop(name, None)
        await self.sfu.close_peer(name)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        """Close every client and the Sfu."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        # the clients first, all at once: closed one by one after the Sfu, the others kept
        # publishing and receiving 200+ streams the whole time (16 parties: 105-173 s of teardown)
        await asyncio.gather(*(client.close() for client in self.clients.values()), return_exceptions=True)
        self.clients.clear()
        await self.sfu.close()


def nal_units(data: bytes) -> tuple[bytes, ...]:
    """The NAL units of an H.264 Annex-B access unit, start codes (3 or 4 bytes) removed.

    RTP carries NAL units, not start codes: a relay may turn 3-byte start codes into 4-byte
    ones, so H.264 frames are compared unit by unit.
    """
    units = []
    for chunk in data.split(b"\x00\x00\x01"):
        if chunk:
            units.append(chunk[:-1] if chunk.endswith(b"\x00") else chunk)
    return tuple(u for u in units if u)


def frame_digest(data: bytes) -> str:
    """Short content hash to compare frames across the relay."""
    return hashlib.sha1(data).hexdigest()[:16]


__all__ = [
    "ClientPeer",
    "CounterVideoSource",
    "ReceivedFrame",
    "ReceivedTrack",
    "SentFrame",
    "SfuHarness",
    "ToneAudioSource",
    "draw_counter",
    "frame_digest",
    "nal_units",
    "read_counter",
]
