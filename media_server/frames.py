"""The unit the relay forwards and the recorder stores: one complete encoded media frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded frame as the publisher sent it, reassembled from RTP but never decoded.

    `data` is a whole VP8 frame, an H.264 access unit (Annex-B start codes) or one Opus packet.
    `timestamp` is the RTP timestamp in units of `clock_rate` Hz (90000 video, 48000 Opus), so
    frames of one track can be placed on a timeline and tracks of one session aligned through
    `sender_time` (the publisher's clock, when it has sent a report) or `received_at`
    (time.time() at the server when the frame completed, seconds).
    """

    track_id: str
    kind: Literal["audio", "video"]
    codec: str  # mime subtype as aiortc names it: "VP8", "H264", "opus"
    data: bytes
    timestamp: int
    clock_rate: int
    keyframe: bool
    received_at: float
    # the publisher's wall time of this frame (s), from its last RTCP Sender Report's NTP/RTP pair;
    # None before the first report. Unlike `received_at` it carries no network or server delay.
    sender_time: float | None = None


class FrameSink(Protocol):
    """Something that takes a copy of every frame of a track (the recorder, analysis).

    `on_frame` is called on the event loop and must not block: queue and return.
    """

    def on_frame(self, frame: EncodedFrame) -> None: ...

    def on_track_ended(self, track_id: str) -> None: ...
