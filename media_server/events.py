"""What the SFU tells signaling, and what it raises at it: one union of frozen events, one error type.

Events report things that happen later (an offer is ready, a track appeared, a peer failed);
`MediaRequestError` is raised synchronously when a call itself is wrong (unknown peer or track,
invalid SDP). Signaling turns both into wire messages with the same reason names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Union


class MediaErrorReason(enum.Enum):
    """Why a media request failed; values match protocol error reasons where one exists."""

    INVALID_SDP = "invalid_sdp"
    UNSUPPORTED_CODEC = "unsupported_codec"
    UNKNOWN_TRACK = "unknown_track"
    UNKNOWN_PEER = "unknown_participant"
    INVALID_STATE = "internal"


class MediaRequestError(Exception):
    """A call into the Sfu that cannot be done; `reason` says which, the message says why."""

    def __init__(self, reason: MediaErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class PeerQuality:
    """Connection quality of one peer over the last report interval, from RTCP.

    `bitrate_kbps` is media sent plus received on the peer's transport (kbit/s); `loss_pct`
    is packets lost over packets expected in both directions (0-100); `rtt_ms` is the mean
    round-trip time our senders measured (None before the first receiver report); `jitter_ms`
    the worst inter-arrival jitter reported in either direction; `estimate_kbps` what the
    peer's downlink carries by our estimate (REMB and receiver reports, `bwe.py`).
    """

    bitrate_kbps: float
    sent_kbps: float
    received_kbps: float
    loss_pct: float
    rtt_ms: float | None
    jitter_ms: float
    estimate_kbps: float | None = None  # the downlink bandwidth estimate (subscribers only)


@dataclass(frozen=True)
class TrackInfo:
    """One published track: who publishes it, its kind, codec (aiortc mime subtype) and mute state."""

    track_id: str
    peer_id: str
    kind: Literal["audio", "video"]
    codec: str
    muted: bool
    subscribers: int


@dataclass(frozen=True)
class OfferReady:
    """Send this SDP offer to `peer_id` (`sdp` message, `sdp_type` offer). Candidates are inline."""

    peer_id: str
    sdp: str


@dataclass(frozen=True)
class CandidateReady:
    """A trickled server candidate. aiortc gathers before offering, so the Sfu does not emit it today."""

    peer_id: str
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True)
class TrackPublished:
    """`peer_id` now publishes `track_id` (its first frames may still be on their way)."""

    peer_id: str
    track_id: str
    kind: Literal["audio", "video"]
    codec: str
    source: str = "camera"  # microphone, camera, or screen (a second video source)


@dataclass(frozen=True)
class TrackEnded:
    """`track_id` of `peer_id` is gone (unpublished, publisher left or failed)."""

    peer_id: str
    track_id: str


@dataclass(frozen=True)
class PeerFailed:
    """The peer's connection failed (ICE/DTLS); the Sfu has already closed it and released its state."""

    peer_id: str
    reason: str


@dataclass(frozen=True)
class MediaError:
    """A request failed after the call returned (e.g. the answer rejected a codec).

    `track_id` names the track concerned when there is one.
    """

    peer_id: str
    reason: MediaErrorReason
    message: str
    track_id: str | None = None


@dataclass(frozen=True)
class QualityReport:
    """Periodic connection quality of `peer_id` (every `MediaConfig.quality_interval_s`)."""

    peer_id: str
    quality: PeerQuality


@dataclass(frozen=True)
class TrackAdapted:
    """What `peer_id` receives of video `track_id` changed because of its link, not by choice.

    `state`: "full", "reduced" (fewer frames per second: `fps_fraction` of the publisher's) or
    "paused" (video stopped for this subscriber alone; audio continues).
    """

    peer_id: str
    track_id: str
    state: str
    fps_fraction: float


MediaEvent = Union[
    OfferReady,
    CandidateReady,
    TrackPublished,
    TrackEnded,
    PeerFailed,
    MediaError,
    QualityReport,
    TrackAdapted,
]
