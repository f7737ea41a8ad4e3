"""The forwarding path: tap a publisher's receiver for encoded frames, fan them out to subscribers.

Pinned to aiortc 1.16 internals (see `tests/media_server/test_forwarding.py`, which checks them):

- `RTCRtpReceiver` hands every frame its jitter buffer completes to a decoder thread through the
  private queue `_RTCRtpReceiver__decoder_queue` (put on the event loop, get on the thread). A
  `ReceiverTap` takes that queue's place before `receive()` starts: frames go to our callback on
  the loop and are never decoded; the thread, which waits on the tap, only sees the stop
  sentinel and exits with the receiver.
- `RTCRtpSender._next_encoded_frame` packs an `av.Packet` coming out of its track with
  `encoder.pack()` instead of encoding it. `ForwardTrack` yields such packets, so each
  subscriber's sender packetises (and keeps its NACK retransmission history) without encoding.
- `RTCRtpSender._send_keyframe` is what a subscriber's PLI/FIR triggers; we replace it per
  sender so that the request goes upstream to the publisher, rate limited.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal

import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.utils import uint16_add

from .bwe import LayerRateMeter
from .frames import EncodedFrame, FrameSink
from .keyframes import KeyframeRequestLimiter, is_keyframe
from .vp8 import Vp8DescriptorError, parse_descriptor

logger = logging.getLogger(__name__)

_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_RTX_SSRC_ATTR = "_RTCRtpReceiver__rtx_ssrc"

FrameCallback = Callable[[Any, Any], None]  # (aiortc codec parameters, JitterFrame)


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

    read_vp8_layers = False  # set once the slot's codec is known to be VP8
    _layers: dict[int, tuple[int, bool]] | None = None

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        """aiortc's `add`, frames passed on early; a VP8 frame carries `temporal_layer`
        ((layer, layer sync) from its first packet's descriptor), read before aiortc rebases
        the frame's timestamp."""
        if not self.read_vp8_layers:
            return self._add(packet)
        self._note_layer(packet)
        pli, frame = self._add(packet)
        if frame is not None and self._layers:
            frame.temporal_layer = self._layers.pop(frame.timestamp, (0, False))  # type: ignore[attr-defined]
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

    def _note_layer(self, packet: Any) -> None:
        try:
            d = parse_descriptor(packet.payload)
        except Vp8DescriptorError:
            return
        if d.begins_frame and d.tid is not None:
            if self._layers is None:
                self._layers = {}
            elif len(self._layers) > 64:  # frames never completed: forget the oldest
                self._layers.pop(next(iter(self._layers)))
            self._layers[packet.timestamp] = (d.tid, d.layer_sync)

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
    """What one subscriber's sender reads: already-encoded frames of one producer, as `av.Packet`.

    Bounded: a full video queue is emptied and the track waits for the next keyframe (asking
    for one through `on_keyframe_needed`); a full audio queue drops its oldest frame. A video
    track also starts out waiting for a keyframe, and asks for one when its sender first reads.
    `paused` (audio-only mode, server mute, a weak link) drops frames; resuming waits for a
    keyframe again. `set_max_temporal_layer` drops upper temporal layers (VP8 L1T3: 30 -> 15 ->
    7.5 fps): going down takes effect at once, going up at the next frame of the layer above that
    only depends on the base layer (layer sync) or at a keyframe.
    """

    def __init__(
        self,
        kind: Literal["audio", "video"],
        track_id: str,
        capacity_frames: int,
        on_keyframe_needed: Callable[[], None],
    ) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id
        self._capacity = capacity_frames
        self._queue: collections.deque[av.Packet] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_keyframe_needed = on_keyframe_needed
        self._started = False
        self.waiting_for_keyframe = kind == "video"
        self._pause_reasons: set[str] = set()
        self.frames_forwarded = 0
        self.frames_dropped = 0
        self.frames_skipped = 0  # upper temporal layers left out
        self._layer_limit = 1 << 8  # all layers
        self._layer_wanted = self._layer_limit

    def set_max_temporal_layer(self, layer: int | None) -> None:
        """Forward temporal layers 0..`layer` only (None: all)."""
        wanted = (1 << 8) if layer is None else max(0, layer)
        self._layer_wanted = wanted
        if wanted < self._layer_limit:
            self._layer_limit = wanted

    @property
    def max_temporal_layer(self) -> int | None:
        """The highest temporal layer forwarded now (None: all)."""
        return None if self._layer_limit >= 1 << 8 else self._layer_limit

    def push(self, packet: av.Packet, keyframe: bool, layer: int = 0, layer_sync: bool = False) -> bool:
        """Queue one encoded frame (never blocks, never grows past the bound).

        Returns True if the frame was dropped because this track waits for a keyframe (the
        producer then asks the publisher for one, rate limited).
        """
        if self.readyState != "live" or self.paused:
            return False
        if layer > self._layer_limit:
            if keyframe or (layer_sync and layer == self._layer_limit + 1 and layer <= self._layer_wanted):
                self._layer_limit = self._layer_wanted if keyframe else layer
            else:
                self.frames_skipped += 1
                return False
        elif keyframe and self._layer_wanted > self._layer_limit:
            self._layer_limit = self._layer_wanted
        if self.waiting_for_keyframe:
            if not keyframe:
                self.frames_dropped += 1
                return True
            self.waiting_for_keyframe = False
        if len(self._queue) >= self._capacity:
            if self.kind == "video":
                self.frames_dropped += len(self._queue)
                self._queue.clear()
                if not keyframe:
                    self.frames_dropped += 1
                    self.waiting_for_keyframe = True
                    self._on_keyframe_needed()
                    return False
            else:
                self._queue.popleft()
                self.frames_dropped += 1
        self._queue.append(packet)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return False

    @property
    def pause_reasons(self) -> frozenset[str]:
        """Why the track is paused now (empty: it forwards)."""
        return frozenset(self._pause_reasons)

    @property
    def paused(self) -> bool:
        """True while any reason to stop forwarding holds (server mute, audio-only mode)."""
        return bool(self._pause_reasons)

    def set_paused(self, paused: bool, reason: str) -> None:
        """Stop (True) or resume (False) forwarding for `reason` ("muted", "audio_only", "weak_link").

        Forwarding resumes when no reason is left; video then resumes at a keyframe.
        """
        was_paused = self.paused
        if paused:
            self._pause_reasons.add(reason)
        else:
            self._pause_reasons.discard(reason)
        if was_paused == self.paused:
            return
        if self.paused:
            self._queue.clear()
        elif self.kind == "video":
            self.waiting_for_keyframe = True
            if self._started:
                self._on_keyframe_needed()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        """Next encoded frame; raises MediaStreamError once the track is stopped."""
        if not self._started:
            self._started = True
            if self.waiting_for_keyframe and not self.paused:
                self._on_keyframe_needed()
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.frames_forwarded += 1
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._queue.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Producer:
    """One published track: receives encoded frames (via a `ReceiverTap`), fans them out.

    Fan-out calls `ForwardTrack.push` (bounded, non-blocking) for each consumer and
    `FrameSink.on_frame` for each sink, so a slow subscriber never delays the others.
    Keyframe requests from consumers go to the publisher as RTCP PLI, at most one per
    `keyframe_request_min_interval_s` (later ones coalesce into one at the interval's end).
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
        self.sinks: list[FrameSink] = []
        self.frames_received = 0
        self.keyframe_requests_sent = 0
        self.codec_parameters: dict[str, Any] = {}
        # adaptation: what each temporal layer costs (frames carry their layer, see
        # EarlyJitterBuffer.add) and who goes first when a link is short
        self.layer_rates = LayerRateMeter()
        self.priority = 1
        self._time_base = Fraction(1, clock_rate)
        self._limiter = KeyframeRequestLimiter(keyframe_request_min_interval_s)
        self._deferred: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def on_encoded(self, codec: Any, frame: Any) -> None:
        """Take one complete encoded frame (aiortc JitterFrame) from the publisher's receiver."""
        data: bytes = frame.data
        keyframe = self.kind == "audio" or is_keyframe(self.codec, data)
        self.frames_received += 1
        layer, sync = (0, True) if keyframe else getattr(frame, "temporal_layer", (0, False))
        self.layer_rates.add(len(data), layer, time.monotonic(), keyframe and self.kind == "video")
        if self.sinks:
            encoded = EncodedFrame(
                track_id=self.track_id,
                kind=self.kind,
                codec=self.codec,
                data=data,
                timestamp=frame.timestamp,
                clock_rate=self.clock_rate,
                keyframe=keyframe,
                received_at=time.time(),
            )
            for sink in list(self.sinks):
                sink.on_frame(encoded)
        if self.muted or not self.consumers:
            return
        packet = av.Packet(data)
        packet.pts = frame.timestamp
        packet.time_base = self._time_base
        starving = False
        for consumer in self.consumers:
            starving |= consumer.push(packet, keyframe, layer, sync)
        if starving:
            # someone still waits for a keyframe (its request may predate our first packet or
            # have been lost): ask again; the limiter keeps this to one per interval
            self.request_keyframe()

    def set_muted(self, muted: bool) -> None:
        """Stop (True) or resume (False) forwarding to every consumer; video resumes at a keyframe."""
        if muted == self.muted:
            return
        self.muted = muted
        for consumer in self.consumers:
            consumer.set_paused(muted, "muted")  # clears queues; resume waits for a keyframe
        if not muted and self.kind == "video":
            self.request_keyframe()

    def attach(self, consumer: ForwardTrack) -> None:
        """Start fanning out to `consumer` (muted producers attach it paused)."""
        if self.muted:
            consumer.set_paused(True, "muted")
        self.consumers.add(consumer)

    def detach(self, consumer: ForwardTrack) -> None:
        """Stop fanning out to `consumer` (idempotent)."""
        self.consumers.discard(consumer)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, subject to the per-publisher rate limit."""
        if self._closed or self.kind != "video":
            return
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
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        for task in self._tasks:
            task.cancel()
        for consumer in list(self.consumers):
            consumer.stop()
        self.consumers.clear()
        for sink in list(self.sinks):
            sink.on_track_ended(self.track_id)
        self.sinks.clear()


def route_keyframe_requests(sender: RTCRtpSender, request: Callable[[], None]) -> None:
    """Make `sender`'s incoming PLI/FIR call `request` instead of flagging an encoder it lacks."""
    if not callable(getattr(RTCRtpSender, "_send_keyframe", None)):
        raise RuntimeError(
            "aiortc RTCRtpSender internals changed: expected a _send_keyframe method (aiortc 1.16)"
        )
    sender._send_keyframe = request  # type: ignore[method-assign]
