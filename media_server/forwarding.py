"""The forwarding path: RTP packets of a publisher rewritten and sent to each subscriber.

Pinned to aiortc 1.16 internals (see `tests/media_server/test_forwarding.py`, which checks them):

- The publisher's `RTCRtpReceiver` passes every media packet (after SRTP, RTX unwrapping and
  NACK generation) to its jitter buffer; `EarlyJitterBuffer` takes that buffer's place and
  hands each packet to `Producer.on_rtp` before assembling frames.
- `Producer.on_rtp` calls `ForwardTrack.forward` for each subscriber: the header is rewritten
  (SSRC, payload type, sequence number, timestamp, extensions: `rewrite.py`), the packet
  SRTP-protected with the subscriber's session and written to its UDP socket, synchronously.
  Payloads are never depacketised or re-packetised for subscribers.
- Each subscriber's `RTCRtpSender` still negotiates its m-line, but `ForwardTrack.install`
  replaces its encoder loop with an idle task and takes over its RTCP: NACKs are answered from
  the producer's packet history, PLI/FIR are routed to the publisher (rate limited), sender
  reports carry the forwarder's counters.
- Frames completed by the jitter buffer still go to the decoder queue, which `ReceiverTap`
  replaces: they reach the frame sinks (the recorder) and are never decoded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import random
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from aioice.ice import StunProtocol
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
)
from aiortc.utils import random16, random32, uint16_add

from .batching import BUFFER_BYTES, SendBatcher
from .bwe import PACKET_OVERHEAD_BYTES, LayerRateMeter
from .frames import EncodedFrame, FrameSink
from .keyframes import KeyframeRequestLimiter, is_keyframe
from .rewrite import NTP_EPOCH_OFFSET_S, HeaderWriter, SequenceRewriter, abs_send_time, starts_keyframe
from .srtp import TRAILER as _SRTP_TRAILER
from .srtp import buffer_pointer, in_place_parts, protector, srtp_error
from .vp8 import PictureIdRewriter, Vp8DescriptorError, parse_descriptor, picture_fields

logger = logging.getLogger(__name__)

_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_RTX_SSRC_ATTR = "_RTCRtpReceiver__rtx_ssrc"

FrameCallback = Callable[[Any, Any], None]  # (aiortc codec parameters, JitterFrame)
PacketCallback = Callable[[RtpPacket], None]


class EarlyJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, but a frame is passed on as soon as it is complete.

    aiortc releases a video frame only when the first packet of the *next* frame arrives (one
    frame interval late: 33 ms at 30 fps) and audio only with 4 packets prefetched (80 ms): right
    for a decoder that wants smooth input, wasted latency for a relay. Here:

    - video: at the packet with the marker bit (VP8/H.264 mark a frame's last packet), if every
      packet from the buffer's origin up to it is present with the same RTP timestamp;
    - audio: every packet is a whole Opus frame and is passed on at once.

    Anything else (a gap, an older incomplete frame) falls back to aiortc's own rule, so NACK,
    retransmission and PLI behave as before. Measured in bench/sfu.py (medstream vs
    medstream+early): video relay latency p50 35 -> 1.2 ms at 2x4, 55 -> 13 ms at 1x100.
    """

    on_packet: PacketCallback | None = None

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        on_packet = self.on_packet
        if on_packet is not None:
            try:
                on_packet(packet)
            except Exception:  # a forwarding bug must not kill the publisher's receive path
                logger.exception("packet callback failed")
        pli, frame = self._add(packet)
        if frame is not None:
            # the receiver rebases `timestamp` to start at 0 after this; Sender Reports speak the
            # publisher's own RTP clock, so the frame keeps that too
            frame.rtp_timestamp = frame.timestamp  # type: ignore[attr-defined]
        return pli, frame

    def _add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is not None or self._origin is None:
            return pli, frame
        count = uint16_add(packet.sequence_number, -self._origin) + 1
        if count > self._capacity:
            return pli, None  # a late packet from before the origin: nothing to pass on
        if not self._is_video:
            self.remove(count)
            return pli, JitterFrame(data=packet._data, timestamp=packet.timestamp)
        if not packet.marker:
            return pli, None
        parts = []
        for i in range(count):
            p = self._packets[(self._origin + i) % self._capacity]
            if p is None or p.timestamp != packet.timestamp:
                return pli, None
            parts.append(p._data)  # type: ignore[attr-defined]  # set by aiortc's depayloader
        self.remove(count)
        return pli, JitterFrame(data=b"".join(parts), timestamp=packet.timestamp)

    @classmethod
    def install(cls, receiver: RTCRtpReceiver) -> EarlyJitterBuffer:
        """Replace `receiver`'s jitter buffer (same capacity) before media arrives; returns it."""
        current = getattr(receiver, _JITTER_BUFFER_ATTR, None)
        if not isinstance(current, JitterBuffer):
            raise RuntimeError(
                f"aiortc RTCRtpReceiver internals changed: expected {_JITTER_BUFFER_ATTR} to be a "
                f"JitterBuffer (aiortc 1.16), got {type(current).__name__}"
            )
        if isinstance(current, cls):
            return current
        replacement = cls(capacity=current.capacity, is_video=current._is_video)
        setattr(receiver, _JITTER_BUFFER_ATTR, replacement)
        return replacement


class ReceiverTap:
    """Stands in for an aiortc receiver's decoder queue: frames go to `on_frame`, not a decoder.

    `put()` is called by the receiver on the event loop with `(codec, JitterFrame)` or the stop
    sentinel `None`; `get()` is called by the receiver's (now idle) decoder thread and returns
    only the sentinel, so the thread exits when the receiver stops.
    """

    def __init__(self, on_frame: FrameCallback) -> None:
        self._on_frame = on_frame
        self._control: queue.Queue[None] = queue.Queue()

    @classmethod
    def install(cls, receiver: RTCRtpReceiver, on_frame: FrameCallback) -> ReceiverTap:
        """Put a tap in `receiver` before it starts. Raises RuntimeError if aiortc changed."""
        current = getattr(receiver, _DECODER_QUEUE_ATTR, None)
        if not isinstance(current, (queue.Queue, ReceiverTap)):
            raise RuntimeError(
                f"aiortc RTCRtpReceiver internals changed: expected {_DECODER_QUEUE_ATTR} to be a "
                f"queue.Queue (aiortc 1.16), got {type(current).__name__}"
            )
        tap = cls(on_frame)
        setattr(receiver, _DECODER_QUEUE_ATTR, tap)
        return tap

    def put(self, item: Any) -> None:
        if item is None:
            self._control.put(None)
            return
        codec, frame = item
        try:
            self._on_frame(codec, frame)
        except Exception:  # a broken consumer must not kill the publisher's receive path
            logger.exception("frame callback failed")

    def get(self, block: bool = True, timeout: float | None = None) -> None:
        return self._control.get(block, timeout)


def media_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The publisher's media SSRC seen by `receiver` (RTX SSRCs left out), or None before media."""
    rtx: dict[int, int] = getattr(receiver, _RTX_SSRC_ATTR, {})
    for source in receiver.getSynchronizationSources():
        if source.source not in rtx:
            return source.source
    return None


class ForwardTrack(MediaStreamTrack):
    """One subscriber's forwarding of one producer: each RTP packet rewritten and sent at once.

    The producer calls `forward()` for every packet it receives (on the event loop, inside the
    publisher's receive path): the header is rewritten for this subscriber (`rewrite.py`), the
    packet is SRTP-protected with the subscriber's keys and handed to its UDP socket. No queue,
    no task, no re-packetising: payloads stay byte-identical (VP8: but for PictureID and
    TL0PICIDX once frames were left out for this subscriber, `picture_ids`). The aiortc sender of the
    subscriber's m-line stays for negotiation and RTCP (its encoder loop is replaced by an idle
    task); `install()` takes over its RTCP: NACKs are answered from the producer's packet
    history (RTX when negotiated), PLI/FIR go upstream, sender reports carry our counters.

    Seams for adaptation (per subscriber): `set_paused(paused, reason)`; `packet_filter`, a
    predicate evaluated per packet (False: the packet is left out and the sequence closes over
    it, so the subscriber does not NACK it); `rtcp_listeners`, called with every RTCP packet the
    subscriber sends about this stream (receiver reports, REMB, NACK, PLI).

    Video starts at a keyframe and waits for one again after a pause or when the subscriber's
    socket backs up (`send_buffer_limit_bytes` queued in user space: video is shed, audio kept).
    """

    def __init__(
        self,
        kind: Literal["audio", "video"],
        track_id: str,
        on_keyframe_needed: Callable[[], None],
        send_buffer_limit_bytes: int = 256 * 1024,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id
        self._on_keyframe_needed = on_keyframe_needed
        self._send_buffer_limit = send_buffer_limit_bytes
        self.waiting_for_keyframe = kind == "video"
        self._pause_reasons: set[str] = set()
        self.packet_filter: Callable[[RtpPacket], bool] | None = None
        # VP8: PictureID/TL0PICIDX kept continuous over the frames left out for this subscriber
        self.picture_ids: PictureIdRewriter | None = None
        self.rtcp_listeners: list[Callable[[Any], None]] = []
        self.packets_forwarded = 0
        self.packets_dropped = 0
        self.frames_forwarded = 0
        self.frames_dropped = 0
        self.retransmissions = 0
        self.keyframe_requests = 0
        self.bytes_sent = 0
        self.last_timestamp = 0
        self._rewriter = SequenceRewriter(random16() % 32768)
        self._ts_offset = random32()
        self._sent: list[int] = [-1] * _SENT_SIZE  # out seq & mask -> (out seq << 16) | in seq
        self._sent_at: list[float] = [0.0] * _SENT_SIZE  # when it was first sent
        self._resent_at: list[float] = [-1e9] * _SENT_SIZE  # when it was last resent
        self.retransmit_budget: RetransmitBudget | None = None  # the subscriber's, shared by its tracks
        self.retransmissions_refused = 0
        self._keyframe_out: int | None = None  # our sequence number of the last keyframe's start
        self._hole_asked: int | None = None  # the newest unrepairable packet a keyframe was asked for
        self.keyframes_for_holes = 0
        self.resumes = 0  # times forwarding resumed after a pause (congestion.SubscriberLink)
        # keyframe pacing (`_take_for_pacing`): set by the adaptation for a subscriber whose link
        # is the limit; None sends keyframes as they come
        self.pace_bps: float | None = None
        self.keyframes_paced = 0
        self._paced: collections.deque[_Entry] = collections.deque()
        self._pace_handle: asyncio.TimerHandle | None = None
        self._pace_tokens = 0.0
        self._pace_at = 0.0
        self._pace_ts: int | None = None  # RTP timestamp of the keyframe going out paced
        self._source: Producer | None = None
        self._sender: RTCRtpSender | None = None
        self._writer: HeaderWriter | None = None
        self._dtls: Any = None
        self._rtx_payload_type: int | None = None
        self._rtx_ssrc = 0
        self._rtx_seq = random16() % 32768
        self._cname: str | None = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._batcher: SendBatcher | None = None  # flushed by the producer's paced fan-out
        self._fanout_pos = 0  # index of the producer's next backlog entry for this subscriber
        self._in_todo = False  # queued in the producer's current round
        self._protect: Callable[[bytes], bytes] = _unbound
        # SRTP in the batcher's buffer (forward_entries): (srtp_t, int *, srtp_protect)
        self._direct: tuple[Any, Any, Any] | None = None
        self._srtp_session: Any = None  # keeps the srtp_t of `_direct` alive
        self._addr: Any = None
        self._transport: Any = None
        self._ended: asyncio.Future[None] | None = None
        self._synced = (0, 0)

    # ---- the per-packet path -------------------------------------------------------------

    def forward(self, p: RtpPacket, start: bool, abs3: bytes, level: tuple[bool, int] | None) -> bool:
        """Send producer packet `p` to this subscriber (never blocks).

        `start`: `p` begins a keyframe; `abs3`: abs-send-time bytes for now; `level`: the
        publisher's audio level extension. Returns True if this subscriber waits for a keyframe
        (the producer then asks the publisher for one, rate limited).
        """
        return self.forward_entries(((p, start, level),), abs3, time.monotonic(), True)

    def forward_entries(self, entries: Sequence[_Entry], abs3: bytes, now: float,
                        any_packet: bool = False, scratch: bool = False) -> bool:
        """Send the producer's `entries` (packet, starts a keyframe (None: padding), audio level)
        in order; True if this subscriber waits for a keyframe at a frame's last packet (at any
        packet with `any_packet`). The loop of the fan-out: once per packet and subscriber.

        With a socket of our own (`_bind`) each packet is written straight into the
        subscriber's send buffer: header (`HeaderWriter.write_into`), payload, SRTP in place
        (`srtp.in_place_parts`); nothing is allocated per packet but the bookkeeping.
        `scratch` (the paced video fan-out): into the process's one scratch buffer instead,
        sent before returning; the next subscriber's copy is written over it while it is still
        in cache (a keyframe to 100 subscribers through their own buffers would stream through
        ~8 MB of memory)."""
        send = self._sendto
        if send is None:
            if not self._bind():
                return False
            send = self._sendto
            assert send is not None
        ids = self.picture_ids
        rewriter = self._rewriter
        starving = False
        if self._pause_reasons:
            if ids is not None:
                for p, start, _ in entries:
                    if start is not None:
                        ids.dropped(p.payload, getattr(p, "vp8_picture", None))
                    else:
                        rewriter.drop(p.sequence_number)
            else:
                for p, start, _ in entries:
                    if start is None:
                        rewriter.drop(p.sequence_number)
            return False
        writer = self._writer
        assert writer is not None
        gate = self.packet_filter
        sent, sent_at = self._sent, self._sent_at
        ts_offset = self._ts_offset
        direct = self._direct
        batcher = self._batcher
        if direct is not None and batcher is not None:
            # the subscriber's send buffer, written here without a call per step: the offset
            # and the sizes list stay local and are handed back before anything else flushes
            ctx, length, srtp_protect = direct
            if scratch:
                buf, pointer = _scratch()
                sizes, fill = [], 0
            else:
                buf, pointer = batcher.buffer, batcher.pointer
                batcher.reserve(0)  # schedules the flush of this loop pass
                sizes, fill = batcher._sizes, batcher._fill
        forwarded = nbytes = 0
        video = self.kind == "video"
        try:
            for p, start, level in entries:
                seq = p.sequence_number
                if start is None:  # padding: no number of its own
                    rewriter.drop(seq)
                    continue
                if self.waiting_for_keyframe:
                    if not start:
                        self.packets_dropped += 1
                        if ids is not None:
                            ids.dropped(p.payload, getattr(p, "vp8_picture", None))
                        if any_packet or p.marker:
                            starving = True
                        continue
                    self.waiting_for_keyframe = False
                    rewriter.start(seq)
                if gate is not None and not gate(p):
                    rewriter.drop(seq)
                    self.packets_dropped += 1
                    if ids is not None:
                        ids.dropped(p.payload, getattr(p, "vp8_picture", None))
                    continue
                out = rewriter.map(seq)
                if out is None:
                    continue
                if start and video:
                    self._keyframe_out = out
                    self._hole_asked = None  # the keyframe repairs every hole before it
                ts = (p.timestamp + ts_offset) & 0xFFFFFFFF
                payload = p.payload
                if ids is not None:
                    fields = getattr(p, "vp8_picture", None)
                    if fields is None or fields[0] != ids.passthrough_pid:
                        payload = ids.rewrite(payload, False, fields)
                try:
                    if direct is not None:
                        n = (writer.length if level is None else writer.length_level) + len(payload)
                        if fill + n + _SRTP_TRAILER > BUFFER_BYTES:  # full: out it goes
                            if scratch:
                                batcher.send_from(memoryview(buf), sizes)  # type: ignore[union-attr]
                                sizes, fill = [], 0
                            else:
                                batcher._fill = fill  # type: ignore[union-attr]
                                batcher.flush()  # type: ignore[union-attr]
                                batcher.reserve(0)  # type: ignore[union-attr]
                                sizes, fill = batcher._sizes, 0  # type: ignore[union-attr]
                        h = fill + writer.write_into(buf, fill, out, ts, p.marker, abs3, level)
                        buf[h : fill + n] = payload
                        length[0] = n
                        rc = srtp_protect(ctx, pointer + fill, length)
                        if rc:
                            raise srtp_error(rc)
                        m = length[0]
                        sizes.append(m)
                        fill += m
                    else:
                        data = writer.header(out, ts, p.marker, abs3, level) + payload
                        n = len(data)
                        send(self._protect(data), self._addr)
                except Exception:  # the subscriber's transport closed under us: stop sending to it
                    logger.debug("forwarding to %s stopped", self._id, exc_info=True)
                    self._unbind()
                    break
                i = out & _SENT_MASK
                sent[i] = (out << 16) | seq
                sent_at[i] = now
                forwarded += 1
                nbytes += n
                self.last_timestamp = ts
                if p.marker:
                    self.frames_forwarded += 1
                    transport = self._transport
                    if (video and transport is not None
                            and transport.get_write_buffer_size() > self._send_buffer_limit):
                        # the subscriber's socket backs up: shed video (not audio) until a keyframe
                        self.waiting_for_keyframe = True
                        self.frames_dropped += 1
                        self._on_keyframe_needed()
        finally:
            if direct is not None and batcher is not None:
                if scratch:
                    batcher.send_from(memoryview(buf), sizes)  # before the next subscriber's copy
                elif batcher._sizes is sizes:
                    batcher._fill = fill  # (not if it was closed meanwhile: it holds nothing)
        self.packets_forwarded += forwarded
        self.bytes_sent += nbytes
        return starving

    # ---- keyframe pacing ----------------------------------------------------------------

    def _take_for_pacing(self, entries: Sequence[_Entry]) -> bool:
        """Queue `entries` to go out at `pace_bps` if they start a keyframe (or one is still
        going out): True if taken, the caller then sends nothing now.

        Why: a resume keyframe is what probes a weak link, and it came as one burst. A 320x240
        keyframe is 10-15 kB, two to three times a township router's 5 kB queue, so every probe
        overflowed it and took the audio queued with it (bench.weak_link: 92.8 % of the audio
        through while narrow). Sent at what the subscriber's budget leaves for the track, the
        same bytes fill the queue by little more than the budget's error. Only keyframes: the
        delta frames of a layer the budget carries fit as they come, and holding them back
        delayed the loss that tells the relay to back off (a video pacer was tried: worse)."""
        if not self._paced:
            if self.pace_bps is None or not any(start for _, start, _ in entries):
                return False
            self.keyframes_paced += 1
            self._pace_tokens, self._pace_at = PACE_BURST_BYTES, time.monotonic()
        self._paced.extend(entries)
        if self._pace_handle is None:
            self._release_paced()
        return True

    def _release_paced(self) -> None:
        """Send what the pacing budget allows now; come back when the next packet is earned."""
        self._pace_handle = None
        queue_, rate = self._paced, self.pace_bps
        now = time.monotonic()
        chunk: list[_Entry] = []
        if rate is None or rate <= 0:  # pacing switched off meanwhile: out it all goes
            chunk.extend(queue_)
            queue_.clear()
        else:
            self._pace_tokens = min(PACE_BURST_BYTES, self._pace_tokens + (now - self._pace_at) * rate / 8)
            self._pace_at = now
            # only a keyframe's own packets cost: what queued behind it follows it at once (its
            # delay is bounded by the keyframe's time on the wire), and while the track is
            # paused nothing is sent, so nothing is held
            while queue_:
                p, start, _ = queue_[0]
                if start:
                    self._pace_ts = p.timestamp
                if p.timestamp == self._pace_ts and not self._pause_reasons:
                    if self._pace_tokens < 0:
                        break
                    self._pace_tokens -= len(p.payload) + PACKET_OVERHEAD_BYTES
                chunk.append(queue_.popleft())
        if chunk:
            try:
                if self._write_now(chunk, abs_send_time(time.time()), now):
                    self._on_keyframe_needed()
            except Exception:  # one subscriber's failure must not stop anything else
                logger.exception("paced forwarding to a subscriber failed")
        if queue_ and rate:
            wait = max(0.001, -self._pace_tokens * 8 / rate)
            self._pace_handle = asyncio.get_running_loop().call_later(wait, self._release_paced)

    def _write_now(self, entries: Sequence[_Entry], abs3: bytes, now: float) -> bool:
        """Forward `entries` through the scratch buffer and flush: True if it waits for a keyframe."""
        starving = self.forward_entries(entries, abs3, now, scratch=True)
        if self._batcher is not None:
            self._batcher.flush()
        return starving

    def _stop_pacing(self) -> None:
        if self._pace_handle is not None:
            self._pace_handle.cancel()
            self._pace_handle = None
        self._paced.clear()

    def _bind(self) -> bool:
        """Take the subscriber's SRTP session and socket once its DTLS transport is connected."""
        dtls = self._dtls
        if dtls is None or self._writer is None or self.readyState != "live":
            return False
        if dtls._state != DtlsState.CONNECTED or dtls._tx_srtp is None:
            return False
        connection = dtls.transport._connection
        pair = connection._nominated.get(1)
        if pair is None:
            return False
        protocol = pair.protocol
        transport = getattr(protocol, "transport", None)
        if type(protocol) is StunProtocol and transport is not None:
            # one batcher per subscriber socket, shared by its audio and video (batching.py)
            batcher = getattr(protocol, "_medstream_batcher", None)
            if batcher is None or batcher.closed:
                batcher = SendBatcher(transport, pair.remote_addr)
                protocol._medstream_batcher = batcher  # type: ignore[attr-defined]
            self._sendto = batcher.send
            self._batcher = batcher
            self._transport = transport
            self._direct, self._srtp_session = _in_place(batcher, dtls._tx_srtp), dtls._tx_srtp
        else:  # relayed through TURN: aioice's own (async) send path
            self._sendto = lambda data, addr: _spawn(protocol.send_data(data, addr))
            self._transport = None
        self._addr = pair.remote_addr
        self._protect = protector(dtls._tx_srtp)
        return True

    def bind_batcher(self, batcher: SendBatcher, session: Any, addr: Any) -> None:
        """Send through `batcher` with SRTP `session` (what `_bind` does with the subscriber's
        socket; benchmarks and tests without an aiortc peer)."""
        self._sendto, self._batcher, self._addr = batcher.send, batcher, addr
        self._transport = batcher._transport
        self._protect = protector(session)
        self._direct, self._srtp_session = _in_place(batcher, session), session

    def _unbind(self, *_: Any) -> None:
        dtls = self._dtls
        if dtls is not None and dtls._state in (DtlsState.CLOSED, DtlsState.FAILED):
            pair = dtls.transport._connection._nominated.get(1)
            batcher = getattr(pair.protocol, "_medstream_batcher", None) if pair else None
            if batcher is not None:
                batcher.close()
        self._sendto = None
        self._batcher = None
        self._direct = self._srtp_session = None
        self._transport = None
        self._protect = _unbound

    def _retransmit(self, out_seq: int, now: float) -> None:
        """Resend `out_seq` if it is still worth it (see `_handle_rtcp`)."""
        entry = self._sent[out_seq & _SENT_MASK]
        source, writer, send = self._source, self._writer, self._sendto
        if entry < 0 or (entry >> 16) != out_seq or source is None or writer is None or send is None:
            return
        p = source.history[(entry & 0xFFFF) & _HISTORY_MASK]
        if p is None or p.sequence_number != (entry & 0xFFFF):
            self._unrepairable(out_seq)
            return
        i = out_seq & _SENT_MASK
        rtt = getattr(self._sender, "_RTCRtpSender__rtt", None) or RETRANSMIT_MIN_INTERVAL_S
        # (a resend time older than the slot's send time belongs to an earlier packet)
        resent_lately = (self._resent_at[i] >= self._sent_at[i]
                         and now - self._resent_at[i] < max(RETRANSMIT_MIN_INTERVAL_S, rtt))
        # the receiver can tell a packet is lost only once the next one arrives, and its NACK
        # takes a round trip: age counts from the next packet's send, and may reach 3 RTTs (as
        # libwebrtc keeps its history). Counted from the packet's own send with 1 s, a loss at
        # a cut layer's 3.75 fps or just before a pause was refused for good on a busy machine,
        # and the hole held back the receiver's frames, the resume keyframe too (test_congestion)
        j = (out_seq + 1) & _SENT_MASK
        following = self._sent[j]
        seen_at = self._sent_at[j] if following >= 0 and (following >> 16) == (out_seq + 1) & 0xFFFF else 0.0
        too_old = now - max(self._sent_at[i], seen_at) > max(RETRANSMIT_MAX_AGE_S, 3 * rtt)
        if resent_lately or too_old or self._pause_reasons:
            self.retransmissions_refused += 1
            if too_old and not resent_lately:
                self._unrepairable(out_seq)
            return
        budget = self.retransmit_budget
        if budget is not None and not budget.take(len(p.payload) + 60, now):
            self.retransmissions_refused += 1
            return
        self._resent_at[i] = now
        ts = (p.timestamp + self._ts_offset) & 0xFFFFFFFF
        abs3 = abs_send_time(time.time())
        payload = p.payload if self.picture_ids is None else self.picture_ids.rewrite(p.payload, resend=True)
        if self._rtx_payload_type is not None:
            data = writer.header(self._rtx_seq, ts, p.marker, abs3, None,
                                 payload_type=self._rtx_payload_type, ssrc=self._rtx_ssrc)
            data += out_seq.to_bytes(2, "big") + payload
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        else:
            data = writer.header(out_seq, ts, p.marker, abs3, p.extensions.audio_level) + payload
        send(self._protect(data), self._addr)
        self.retransmissions += 1
        self.bytes_sent += len(data)

    def _unrepairable(self, out_seq: int) -> None:
        """A NACK for `out_seq` that can no longer be answered: the receiver decodes nothing
        past the hole until a keyframe, so one is asked for now (once per hole, and not for a
        hole a keyframe sent since covers; the producer rate-limits), not after the receiver's
        own timeout (Chromium: 3 s without a decodable frame; aiortc: 128 packets later, half
        a minute at a cut layer's rate). Measured on the 200 kbit/s link: a packet lost with
        its 5 retransmissions in the full queue held one track's video back for good."""
        if self.kind != "video" or self._pause_reasons:
            return
        key, asked = self._keyframe_out, self._hole_asked
        if key is not None and 0 < ((key - out_seq) & 0xFFFF) < 0x8000:
            return  # a keyframe was sent since: it repaired the hole
        if asked is not None and ((asked - out_seq) & 0xFFFF) < 0x8000:
            return  # asked already, for this hole or a newer one
        self._hole_asked = out_seq
        self.keyframes_for_holes += 1
        self._on_keyframe_needed()

    # ---- pausing -----------------------------------------------------------------------

    @property
    def pause_reasons(self) -> frozenset[str]:
        """Why the track is paused now (empty: it forwards)."""
        return frozenset(self._pause_reasons)

    @property
    def paused(self) -> bool:
        """True while any reason to stop forwarding holds (server mute, audio-only mode)."""
        return bool(self._pause_reasons)

    def set_paused(self, paused: bool, reason: str) -> None:
        """Stop (True) or resume (False) forwarding for `reason` ("muted", "audio_only", ...).

        Forwarding resumes when no reason is left; video then resumes at a keyframe (asked for
        at once), audio at the next packet; the subscriber's sequence continues without a gap.
        """
        was_paused = self.paused
        if paused:
            self._pause_reasons.add(reason)
        else:
            self._pause_reasons.discard(reason)
        if was_paused == self.paused or self.paused:
            return
        self.resumes += 1  # its receiver's next report mixes losses from before the pause in
        self.waiting_for_keyframe = True  # audio: its next packet is a start
        if self.kind == "video" and self._sendto is not None:
            self._on_keyframe_needed()

    # ---- the aiortc sender it replaces -------------------------------------------------

    def install(self, sender: RTCRtpSender, source: Producer) -> None:
        """Take over `sender` (this subscriber's m-line) before negotiation starts it.

        Raises RuntimeError if aiortc's sender no longer has the expected internals.
        """
        for name in _SENDER_INTERNALS:
            if not hasattr(sender, name):
                raise RuntimeError(
                    f"aiortc RTCRtpSender internals changed: expected {name} (aiortc 1.16)")
        self._sender = sender
        self._source = source
        original_send = sender.send
        self._aiortc_rtcp = sender._handle_rtcp_packet

        async def send(parameters: Any) -> None:
            self._configure(sender, parameters)
            await original_send(parameters)

        sender.send = send  # type: ignore[method-assign]
        sender._run_rtp = self._run_rtp  # type: ignore[method-assign]
        sender._run_rtcp = self._run_rtcp  # type: ignore[method-assign]
        sender._handle_rtcp_packet = self._handle_rtcp  # type: ignore[method-assign]
        sender._send_keyframe = self._on_keyframe_needed  # type: ignore[method-assign]

    def _configure(self, sender: RTCRtpSender, parameters: Any) -> None:
        if self._writer is not None:  # aiortc calls send() again on every renegotiation
            return
        codec = parameters.codecs[0]
        for c in parameters.codecs:
            if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == codec.payloadType:
                self._rtx_payload_type = c.payloadType
                break
        ext_ids = {e.uri: e.id for e in parameters.headerExtensions}
        self._writer = HeaderWriter(sender._ssrc, codec.payloadType, parameters.muxId, ext_ids)
        self._rtx_ssrc = sender._rtx_ssrc
        self._cname = parameters.rtcp.cname
        self._dtls = sender.transport
        self._dtls.on("statechange", self._unbind)

    async def _run_rtp(self, codec: Any) -> None:
        sender = self._sender
        assert sender is not None
        sender._RTCRtpSender__rtp_started.set()  # type: ignore[attr-defined]
        self._ended = asyncio.get_running_loop().create_future()
        try:
            if self.readyState == "live":
                await self._ended
        except asyncio.CancelledError:
            pass
        finally:
            self._unbind()
            sender._RTCRtpSender__rtp_exited.set()  # type: ignore[attr-defined]

    async def _run_rtcp(self) -> None:
        sender = self._sender
        assert sender is not None
        sender._RTCRtpSender__rtcp_started.set()  # type: ignore[attr-defined]
        ssrc = sender._ssrc
        sdes = b"" if self._cname is None else bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(
            ssrc=ssrc, items=[(1, self._cname.encode("utf8"))])]))
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())
                ntp, rtp_ts = self.sync_stats()
                report = _SR.pack(0x80, 200, 6, ssrc, ntp, rtp_ts, self.packets_forwarded & 0xFFFFFFFF,
                                  self.bytes_sent & 0xFFFFFFFF) + sdes
                sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF  # type: ignore[attr-defined]
                sender._RTCRtpSender__lsr_time = time.time()  # type: ignore[attr-defined]
                if not self._send_rtcp_now(report):
                    await sender._send_rtcp([report])  # type: ignore[list-item]  # bytes() of it: itself
        except asyncio.CancelledError:
            pass
        try:
            await sender._send_rtcp([RtcpByePacket(sources=[ssrc])])
        finally:
            sender._RTCRtpSender__rtcp_exited.set()  # type: ignore[attr-defined]

    def _send_rtcp_now(self, report: bytes) -> bool:
        """Protect `report` (a compound RTCP packet) and queue it on the subscriber's socket with
        its media; False if that socket is not ours (TURN, not bound): aiortc's path then.

        Why (issue 17): aiortc serialises each report packet, protects it through pylibsrtp's
        generic wrapper and sends it through two coroutines of aiortc and aioice; twice a second
        for each track of each subscriber (~5 % of the node's CPU at 1x30)."""
        batcher, dtls = self._batcher, self._dtls
        if batcher is None or batcher.closed or dtls is None or dtls._tx_srtp is None:
            return False
        data = dtls._tx_srtp.protect_rtcp(report)
        batcher.send(data)
        dtls._RTCDtlsTransport__tx_bytes += len(data)
        dtls._RTCDtlsTransport__tx_packets += 1
        return True

    def sync_stats(self) -> tuple[int, int]:
        """Our counters into aiortc's sender and DTLS stats (getStats, quality); SR times.

        Called at each Sender Report and before each quality sample: between reports aiortc's
        counters would otherwise stand still, and a sample there read 0 kbit/s sent."""
        sender, dtls = self._sender, self._dtls
        now = time.time()
        ntp = int((now + NTP_EPOCH_OFFSET_S) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF
        source = self._source
        rtp_ts = self.last_timestamp
        if source is not None and source.last_arrival_s and not self._pause_reasons:
            rtp_ts = (source.last_timestamp + self._ts_offset
                      + int((now - source.last_arrival_s) * source.clock_rate)) & 0xFFFFFFFF
        if sender is not None:
            sender._RTCRtpSender__packet_count = self.packets_forwarded  # type: ignore[attr-defined]
            sender._RTCRtpSender__octet_count = self.bytes_sent  # type: ignore[attr-defined]
            sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
            sender._RTCRtpSender__rtp_timestamp = rtp_ts  # type: ignore[attr-defined]
        if dtls is not None:
            sent = self.packets_forwarded + self.retransmissions
            d_bytes, d_packets = self.bytes_sent - self._synced[0], sent - self._synced[1]
            self._synced = (self.bytes_sent, sent)
            dtls._RTCDtlsTransport__tx_bytes += d_bytes
            dtls._RTCDtlsTransport__tx_packets += d_packets
        return ntp, rtp_ts

    async def _handle_rtcp(self, packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            # A receiver NACKs everything still missing at each new gap (aiortc does), so one
            # packet is asked for again and again: resent at most once per RTT, never when older
            # than RETRANSMIT_MAX_AGE_S (the receiver has moved on) or while the track is
            # paused, and within the subscriber's retransmission budget. Measured on a 200
            # kbit/s link: unbounded, retransmissions were 3-4x the forwarded packets and filled
            # the link's queue, audio included.
            now = time.monotonic()
            for seq in packet.lost:
                self._retransmit(seq, now)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_FIR, RTCP_PSFB_PLI):
            self.keyframe_requests += 1
            self._on_keyframe_needed()
        else:  # receiver reports (RTT, loss into getStats), REMB: aiortc's own handling
            await self._aiortc_rtcp(packet)
        for listener in self.rtcp_listeners:
            try:
                listener(packet)
            except Exception:
                logger.exception("RTCP listener failed")

    async def recv(self) -> Any:  # never called: the sender's encoder loop is replaced
        """Wait until stopped, then raise MediaStreamError (packets go out through `forward`)."""
        while self.readyState == "live":
            await asyncio.sleep(3600)
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stop_pacing()
        self._unbind()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)


_SENDER_INTERNALS = ("_run_rtp", "_run_rtcp", "_handle_rtcp_packet", "_send_rtcp", "_ssrc",
                     "_rtx_ssrc", "_RTCRtpSender__rtp_started", "_RTCRtpSender__rtp_exited",
                     "_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited",
                     "_RTCRtpSender__packet_count", "_send_keyframe")
RETRANSMIT_MIN_INTERVAL_S = 0.1  # one packet resent at most once per this (or the RTT, if longer)
RETRANSMIT_MAX_AGE_S = 1.0  # older than this: not worth resending to a real-time receiver


class RetransmitBudget:
    """A token bucket for one subscriber's retransmissions (bytes at `rate_bps`, `burst_s` deep).

    `rate_bps` None: unlimited. The adaptation sets it from the subscriber's bandwidth estimate,
    so repairs of loss cannot become the congestion that causes more of it.
    """

    def __init__(self, rate_bps: float | None = None, burst_s: float = 0.25, min_depth_bytes: int = 4000) -> None:
        self.rate_bps = rate_bps
        self.burst_s = burst_s
        # a bucket shallower than one packet refuses every retransmission (measured: at a
        # paused subscriber's 20 kbit/s estimate, 500 bytes deep, the resume keyframe's lost
        # packets were never resent and the video never came back)
        self.min_depth_bytes = min_depth_bytes
        self._tokens = 0.0
        self._at: float | None = None

    def take(self, nbytes: int, now: float) -> bool:
        """True (and spend it) if `nbytes` may be resent at `now`."""
        rate = self.rate_bps
        if rate is None:
            return True
        depth = max(rate / 8 * self.burst_s, self.min_depth_bytes)  # never less than a few packets
        if self._at is None:
            self._tokens = depth
        else:
            self._tokens = min(depth, self._tokens + (now - self._at) * rate / 8)
        self._at = now
        if self._tokens < nbytes:
            return False
        self._tokens -= nbytes
        return True


_SENT_SIZE = 1024
_SR = struct.Struct("!BBHIQIII")  # RTCP Sender Report without report blocks (RFC 3550 6.4.1)
# paced video fan-out (Producer._drain): packet-sends (packets x subscribers) per loop pass before
# it yields; ~2-4 ms of CPU here (bench.fanout), a few audio frames' worth of delay for others
FANOUT_SLICE_PACKETS = 500
# the fan-out this far behind (an overloaded core): subscribers skip to the next keyframe. As
# RETRANSMIT_MAX_AGE_S: older video is of no use to a real-time receiver; shorter shed video on
# a machine whose other load stalled the node for a moment (0.5 s: 25 % loss at 1:40, load 8)
FANOUT_MAX_DELAY_S = 1.0
# keyframe pacing: bytes that may go out at once before the rate applies (one MTU: a small
# keyframe of a single packet is not delayed at all)
PACE_BURST_BYTES = 1500.0
_Entry = tuple[RtpPacket, bool | None, tuple[bool, int] | None]  # packet, starts keyframe (None: padding), audio level
_SENT_MASK = _SENT_SIZE - 1
_HISTORY_SIZE = 1024  # producer packets kept for subscribers' NACKs (~3-7 s of 1 Mbit/s video)
_HISTORY_MASK = _HISTORY_SIZE - 1


_SCRATCH: list[Any] = []  # [bytearray, its C pointer]: the paced fan-out's one send buffer


def _scratch() -> tuple[bytearray, Any]:
    if not _SCRATCH:
        buf = bytearray(BUFFER_BYTES)
        _SCRATCH[:] = [buf, buffer_pointer(buf)]
    return _SCRATCH[0], _SCRATCH[1]


def _in_place(batcher: SendBatcher, session: Any) -> tuple[Any, Any, Any] | None:
    """What writing into `batcher`'s buffer needs (its C pointer made once), or None."""
    if batcher.pointer is None:
        batcher.pointer = buffer_pointer(batcher.buffer)
    if batcher.pointer is None:
        return None
    return in_place_parts(session)


def _unbound(data: bytes) -> bytes:
    raise ConnectionError("not connected")


_tasks: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_SENDER_REPORT_WINDOW = 8  # Sender Reports a producer weighs for its clock (~1 s apart)


def _rtp_ticks(timestamp: int, reference: int) -> int:
    """Signed distance from `reference` to `timestamp` on the 32-bit RTP clock."""
    delta = (timestamp - reference) % 2**32
    return delta - 2**32 if delta >= 2**31 else delta


class Producer:
    """One published track: forwards each RTP packet to its consumers, frames to its sinks.

    Packets arrive from the publisher's receiver (via `EarlyJitterBuffer.on_packet`, after
    SRTP, RTX unwrapping and NACK generation) and go to every `ForwardTrack.forward` at once;
    the work done once per packet (keyframe detection, abs-send-time, history) is done here.
    Whole frames, still assembled by the jitter buffer, go to `FrameSink.on_frame` (the
    recorder). Keyframe requests from consumers go to the publisher as RTCP PLI, at most one
    per `keyframe_request_min_interval_s` (later ones coalesce into one at the interval's end).
    """

    def __init__(
        self,
        track_id: str,
        peer_id: str,
        kind: Literal["audio", "video"],
        codec: str,
        clock_rate: int,
        receiver: RTCRtpReceiver,
        keyframe_request_min_interval_s: float,
    ) -> None:
        self.track_id = track_id
        self.peer_id = peer_id
        self.kind = kind
        self.codec = codec
        self.clock_rate = clock_rate
        self.receiver = receiver
        self.muted = False
        self.consumers: set[ForwardTrack] = set()
        self._fanout: tuple[ForwardTrack, ...] = ()
        # paced video fan-out (`_drain`): packets not yet sent to every consumer
        self._backlog: list[_Entry] = []
        self._backlog_base = 0  # absolute index of _backlog[0]
        self._todo: collections.deque[ForwardTrack] = collections.deque()
        self._drain_handle: asyncio.Handle | None = None
        self._rotation = 0
        self._starving = False
        self._backlog_t0 = 0.0  # arrival of the oldest packet in the backlog
        self._round_end = 0  # backlog end when the drain last looked
        self.backlog_sheds = 0  # times the fan-out fell FANOUT_MAX_DELAY_S behind and shed video
        self.sinks: list[FrameSink] = []
        self.frames_received = 0
        self.packets_received = 0
        self.keyframe_requests_sent = 0
        self.codec_parameters: dict[str, Any] = {}
        self.history: list[RtpPacket | None] = [None] * _HISTORY_SIZE
        self.last_timestamp = 0
        self.last_arrival_s = 0.0
        # adaptation (media_server/adaptation.py): what each temporal layer costs, read from
        # the VP8 payload descriptors, and who goes first when a subscriber's link is short
        self.layer_rates = LayerRateMeter()
        self.read_vp8_layers = False
        self.priority = 1
        self._limiter = KeyframeRequestLimiter(keyframe_request_min_interval_s)
        self._deferred: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._layer = 0
        self._key = False
        # (publisher's unix time, RTP timestamp) from its Sender Reports: lip sync for the recorder
        self.sender_clock: tuple[float, int] | None = None
        self._reports: list[tuple[float, int]] = []
        self._tap_sender_reports(receiver)

    def _tap_sender_reports(self, receiver: RTCRtpReceiver) -> None:
        handle = getattr(receiver, "_handle_rtcp_packet", None)
        if handle is None:
            return

        async def on_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket) and packet.ssrc == media_ssrc(receiver):
                info = packet.sender_info
                unix = (info.ntp_timestamp >> 32) - NTP_EPOCH_OFFSET_S + (info.ntp_timestamp & 0xFFFFFFFF) / 2**32
                self._on_sender_report(unix, info.rtp_timestamp)
            await handle(packet)
        receiver._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign]

    def on_rtp(self, p: RtpPacket) -> None:
        """Forward one RTP packet of the publisher to every consumer (event loop, never blocks)."""
        self.packets_received += 1
        self.history[p.sequence_number & _HISTORY_MASK] = p
        new_timestamp = p.timestamp != self.last_timestamp
        now = time.time()
        self.last_timestamp = p.timestamp
        self.last_arrival_s = now
        if self.codec == "VP8":  # once here, not once per subscriber (PictureIdRewriter)
            p.vp8_picture = picture_fields(p.payload)  # type: ignore[attr-defined]
        if new_timestamp and self.read_vp8_layers:
            try:
                d = parse_descriptor(p.payload)
                self._layer, self._key = d.temporal_layer, d.keyframe
            except Vp8DescriptorError:
                self._layer, self._key = 0, False
        self.layer_rates.add_packet(len(p.payload), p.timestamp, self._layer, self._key, time.monotonic())
        if self.muted or not self._fanout:
            return
        payload = p.payload
        if not payload:
            if self.kind == "video" and self._backlog:
                self._backlog.append((p, None, None))  # in order with the packets queued before it
                return
            for consumer in self._fanout:  # padding: no number of its own for anyone
                consumer._rewriter.drop(p.sequence_number)
            return
        start = self.kind == "audio" or starts_keyframe(self.codec, payload, p._data, new_timestamp)  # type: ignore[attr-defined]
        level = p.extensions.audio_level
        if self.kind == "video":
            backlog = self._backlog
            if not backlog:
                self._backlog_t0 = now
            elif now - self._backlog_t0 > FANOUT_MAX_DELAY_S:
                self._shed_backlog(now)
            backlog.append((p, start, level))
            if self._drain_handle is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop (a synchronous caller): fan out at once
                    self._drain(budget=1 << 62)
                    return
                self._drain_handle = loop.call_soon(self._drain)
            return
        abs3 = abs_send_time(now)
        starving = False
        entries = ((p, start, level),)  # one entry shared by every consumer
        mono = time.monotonic()
        for consumer in self._fanout:
            try:
                if consumer.forward_entries(entries, abs3, mono, True):
                    starving = True
            except Exception:  # one subscriber's failure must not stop the others' media
                logger.exception("forwarding to a subscriber failed")
        if starving and p.marker:
            self.request_keyframe()

    def _drain(self, budget: int = 0) -> None:
        """Paced video fan-out: the backlog to one subscriber after the other, in slices.

        Why (issue 17): a keyframe is ~70 packets, and it arrives in a burst (uvloop reads up to
        32 datagrams per wake-up; the publisher's DTLS task hands them over without yielding).
        Forwarding each packet to every subscriber in turn made *every* subscriber wait for the
        whole burst (7,000 rewrites and SRTP protects at 1x100, ~50-150 ms of CPU) and held the
        loop meanwhile: audio, RTCP, ICE consent and signaling all waited. Here each subscriber
        gets all of its pending packets rewritten, protected and written (its batcher flushed at
        once: one GSO send), then the next; after FANOUT_SLICE_PACKETS packet-sends the drain
        yields to the loop (`call_soon`) and continues where it stopped, so other work and other
        publishers' packets run in between. Subscriber k of n has the frame after k/n of the
        burst's CPU instead of all of it; the start of each drain rotates so no subscriber is
        always last. abs-send-time is stamped when the slice runs (what the subscriber's
        bandwidth estimate needs: the actual send time).
        """
        budget = budget or FANOUT_SLICE_PACKETS
        self._drain_handle = None
        backlog, todo, consumers = self._backlog, self._todo, self.consumers
        base = self._backlog_base
        end = base + len(backlog)
        abs3 = abs_send_time(time.time())
        if todo and end != self._round_end:
            # packets arrived while a round was under way (a keyframe still going out): the
            # subscribers it already served are owed only those, a short job: they go first, so
            # a delta frame does not wait behind the rest of the keyframe's copies
            served = [c for c in self._fanout if c._fanout_pos < end and not c._in_todo]
            for c in served:
                c._in_todo = True
            todo.extendleft(reversed(served))
        self._round_end = end
        while True:
            if not todo:  # a new round: everyone who has not had the whole backlog yet
                fanout = [c for c in self._fanout if c._fanout_pos < end]
                if not fanout:
                    break
                k = self._rotation % len(fanout)
                self._rotation += 1
                for c in fanout:
                    c._in_todo = True
                todo.extend(fanout[k:])
                todo.extend(fanout[:k])
            while todo:
                consumer = todo.popleft()
                consumer._in_todo = False
                if consumer not in consumers:
                    continue  # detached meanwhile
                pos = consumer._fanout_pos
                if pos < base:
                    pos = base
                consumer._fanout_pos = end
                try:
                    if self._serve(consumer, backlog[pos - base:], abs3):
                        self._starving = True
                except Exception:  # one subscriber's failure must not stop the others' media
                    logger.exception("forwarding to a subscriber failed")
                budget -= end - pos
                if budget <= 0:
                    # yield to the loop; packets arriving meanwhile join the backlog, and the
                    # subscribers served before them get them in the next round
                    self._drain_handle = asyncio.get_running_loop().call_soon(self._drain)
                    return
        self._backlog_base = end
        backlog.clear()
        if self._starving:
            # someone still waits for a keyframe (its request may predate our first packet or
            # have been lost): ask again; the limiter keeps this to one per interval
            self._starving = False
            self.request_keyframe()

    def _shed_backlog(self, now: float) -> None:
        """The fan-out is more than FANOUT_MAX_DELAY_S behind (the core is overloaded): every
        subscriber still owed packets skips them and waits for the next keyframe (video is shed,
        nobody is dropped; their sequence numbers close over the gap, so nothing is NACKed), and
        the publisher is asked for one. Without this the backlog, and the latency, would grow
        for as long as the overload lasts (before the paced fan-out the kernel's receive buffer
        overflowed instead)."""
        base = self._backlog_base
        end = base + len(self._backlog)
        shed = 0
        for consumer in self._fanout:
            if consumer._fanout_pos < end:
                consumer._fanout_pos = end
                if consumer.kind == "video" and not consumer.waiting_for_keyframe:
                    consumer.waiting_for_keyframe = True
                    consumer.frames_dropped += 1
                    consumer._on_keyframe_needed()
                shed += 1
        self.backlog_sheds += 1
        logger.info("video fan-out of %s %.0f ms behind: %d subscriber(s) skip to the next keyframe",
                    self.track_id, 1000 * (now - self._backlog_t0), shed)
        for consumer in self._todo:
            consumer._in_todo = False
        self._todo.clear()
        self._backlog.clear()
        self._backlog_base = end
        self._backlog_t0 = now

    def _serve(self, consumer: ForwardTrack, entries: list[_Entry], abs3: bytes) -> bool:
        """Forward `entries` to `consumer` and write them out now (a keyframe to a subscriber
        whose link is the limit: paced, `ForwardTrack._take_for_pacing`); True if it waits for
        a keyframe."""
        if (consumer.pace_bps is not None or consumer._paced) and consumer._take_for_pacing(entries):
            return False
        return consumer._write_now(entries, abs3, time.monotonic())

    def on_encoded(self, codec: Any, frame: Any) -> None:
        """Take one complete encoded frame (aiortc JitterFrame) for the frame sinks (recorder)."""
        self.frames_received += 1
        if not self.sinks:
            return
        data: bytes = frame.data
        keyframe = self.kind == "audio" or is_keyframe(self.codec, data)
        encoded = EncodedFrame(
            track_id=self.track_id,
            kind=self.kind,
            codec=self.codec,
            data=data,
            timestamp=frame.timestamp,
            clock_rate=self.clock_rate,
            keyframe=keyframe,
            received_at=time.time(),
            sender_time=self._sender_time(getattr(frame, "rtp_timestamp", None)),
        )
        for sink in list(self.sinks):
            sink.on_frame(encoded)

    def _on_sender_report(self, unix: float, rtp: int) -> None:
        """A report says the frame of RTP time `rtp` was sent at `unix`, never before it was
        captured: a sender that is late at that moment (a software encoder on a busy machine)
        reports late. The earliest of the last few reports, carried to the newest one's RTP time,
        is the closest to capture (a short window, so RTP clock drift does not build up)."""
        self._reports = [*self._reports[-(_SENDER_REPORT_WINDOW - 1):], (unix, rtp)]
        best = min(u + _rtp_ticks(rtp, r) / self.clock_rate for u, r in self._reports)
        self.sender_clock = (best, rtp)

    def _sender_time(self, timestamp: int | None) -> float | None:
        if self.sender_clock is None or timestamp is None:
            return None
        unix, rtp = self.sender_clock
        return unix + _rtp_ticks(timestamp, rtp) / self.clock_rate

    def set_muted(self, muted: bool) -> None:
        """Stop (True) or resume (False) forwarding to every consumer; video resumes at a keyframe."""
        if muted == self.muted:
            return
        self.muted = muted
        for consumer in self.consumers:
            consumer.set_paused(muted, "muted")
        if not muted and self.kind == "video":
            self.request_keyframe()

    def attach(self, consumer: ForwardTrack) -> None:
        """Start fanning out to `consumer` (muted producers attach it paused)."""
        consumer._fanout_pos = self._backlog_base + len(self._backlog)  # from the next packet on
        if self.muted:
            consumer.set_paused(True, "muted")
        self.consumers.add(consumer)
        self._fanout = tuple(self.consumers)

    def detach(self, consumer: ForwardTrack) -> None:
        """Stop fanning out to `consumer` (idempotent)."""
        self.consumers.discard(consumer)
        self._fanout = tuple(self.consumers)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, subject to the per-publisher rate limit."""
        if self._closed or self.kind != "video" or self.receiver is None:
            return  # (no receiver: a producer fed by a tool or bench has nobody to ask)
        if media_ssrc(self.receiver) is None:
            return  # no media yet; the first delta frame a waiting consumer drops asks again
        loop = asyncio.get_running_loop()
        if self._limiter.request(loop.time()):
            self._send_pli()
            return
        due = self._limiter.due_s()
        if due is not None and self._deferred is None:
            self._deferred = loop.call_at(due, self._flush_deferred)

    def _flush_deferred(self) -> None:
        self._deferred = None
        if not self._closed and self._limiter.flush(asyncio.get_running_loop().time()):
            self._send_pli()

    def _send_pli(self) -> None:
        ssrc = media_ssrc(self.receiver)
        if ssrc is None:
            return
        self.keyframe_requests_sent += 1
        task = asyncio.ensure_future(self.receiver._send_rtcp_pli(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop forwarding: end every consumer, tell sinks the track ended (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        self._backlog.clear()
        for consumer in self._todo:
            consumer._in_todo = False
        self._todo.clear()
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        for task in self._tasks:
            task.cancel()
        for consumer in list(self.consumers):
            consumer.stop()
        self.consumers.clear()
        self._fanout = ()
        self.history = [None] * _HISTORY_SIZE
        for sink in list(self.sinks):
            sink.on_track_ended(self.track_id)
        self.sinks.clear()
