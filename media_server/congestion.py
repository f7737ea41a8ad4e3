"""The aiortc seam of bandwidth adaptation: RTCP in, estimates out, REMB to publishers capped.

Pinned to aiortc 1.16 (checked by tests/media_server/test_congestion.py):

- Every RTCP packet a subscriber sends about one of our streams reaches that stream's
  `ForwardTrack.rtcp_listeners` (receiver reports by SSRC, REMB by the SSRCs in its FCI), after
  the forwarder handled it (NACK, PLI, RTT). `SubscriberLink` listens on each of the
  subscriber's tracks and feeds one `BandwidthEstimator` per subscriber.
- The RTT aiortc measures from receiver reports is kept in `_RTCRtpSender__rtt` (seconds).
- A publisher's `RTCRtpReceiver` sends REMB from its own delay-based estimate through
  `_send_rtcp`; `cap_upstream_remb` wraps that method so the value can be lowered to what the
  best-placed subscriber can use (never raised above what the uplink carries).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

from .bwe import BandwidthEstimate, BandwidthEstimator, BweConfig

logger = logging.getLogger(__name__)

_SENDER_RTT_ATTR = "_RTCRtpSender__rtt"
_WIRE_OVERHEAD_BYTES = 38  # per packet beyond `bytes_sent` (RTP header and payload): IPv4 20, UDP 8, SRTP tag 10


class SubscriberLink:
    """One subscriber's path as its RTCP describes it: REMB and receiver reports -> estimate."""

    def __init__(self, clock: Callable[[], float], config: BweConfig | None = None) -> None:
        self.bwe = BandwidthEstimator(config)
        self._clock = clock
        self._last: Any = None
        self._ssrcs: set[int] = set()
        self._tracks: list[Any] = []  # its ForwardTracks (bytes_sent), ended ones too: a few per call
        self._sent: collections.deque[tuple[float, int, int]] = collections.deque()  # (t, audio, all bytes)
        self._track_of: dict[int, Any] = {}  # our SSRC -> its ForwardTrack
        self._resumes: dict[int, int] = {}  # its `resumes` at its last report
        self._highest: dict[int, int] = {}  # our SSRC -> the highest sequence its last report saw

    def watch(self, track: Any, sender: RTCRtpSender) -> None:
        """Feed this link from the RTCP the subscriber sends about `track` (a ForwardTrack whose
        `sender` negotiated the m-line)."""
        self._ssrcs.add(sender._ssrc)
        self._tracks.append(track)
        self._track_of[sender._ssrc] = track
        track.rtcp_listeners.append(lambda packet: self._on_rtcp(packet, sender))

    def _sent_bps(self, now: float) -> tuple[float | None, float | None]:
        """(audio, everything) we sent the subscriber over about the last second, bit/s on the
        wire (IP and UDP headers and the SRTP tag included; resends too); None until known."""
        audio = everything = 0
        for t in self._tracks:
            wire = t.bytes_sent + _WIRE_OVERHEAD_BYTES * (t.packets_forwarded + t.retransmissions)
            everything += wire
            if t.kind == "audio":
                audio += wire
        self._sent.append((now, audio, everything))
        while len(self._sent) > 2 and self._sent[1][0] <= now - 1.0:
            self._sent.popleft()
        (t0, a0, e0) = self._sent[0]
        if now - t0 < 0.25:
            return None, None
        return 8.0 * (audio - a0) / (now - t0), 8.0 * (everything - e0) / (now - t0)

    def _on_rtcp(self, packet: Any, sender: RTCRtpSender) -> None:
        if packet is self._last:  # one packet is delivered to each sender it names
            return
        self._last = packet
        now = self._clock()
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, _ = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            self.bwe.on_remb(bitrate, now)
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            ours = [r for r in packet.reports if r.ssrc in self._ssrcs]
            if not ours:
                return
            rtt = getattr(sender, _SENDER_RTT_ATTR, None)
            fresh: dict[int, tuple[float, int]] = {}
            for r in ours:
                resumes = getattr(self._track_of.get(r.ssrc), "resumes", 0)
                # packets expected in the interval: how much the loss figure weighs
                last = self._highest.get(r.ssrc)
                self._highest[r.ssrc] = r.highest_sequence
                if self._resumes.get(r.ssrc, 0) != resumes:
                    # the first report after a pause mixes losses from before it (never
                    # repaired: nothing is resent for a paused track) with the few packets
                    # since (measured: 60 % "loss" on a recovered link re-paused the video)
                    self._resumes[r.ssrc] = resumes
                    self.bwe.forget_stream(r.ssrc)
                else:  # none expected (a paused track, the first report): no weight, but the
                    # report still counts (an estimate cut while the video was paused must grow)
                    expected = r.highest_sequence - last if last is not None else 0
                    fresh[r.ssrc] = (r.fraction_lost / 256.0, expected if 0 <= expected < 1 << 15 else 0)
            if fresh:
                audio_bps, sent_bps = self._sent_bps(now)
                self.bwe.on_receiver_report(fresh, rtt, now, audio_bps, sent_bps)

    def estimate(self) -> BandwidthEstimate:
        """The subscriber's estimate now."""
        return self.bwe.estimate(self._clock())


class UpstreamRemb:
    """Caps the REMB a publisher's receiver sends: `cap_bps` None sends aiortc's own estimate."""

    def __init__(self, floor_bps: int = 100_000) -> None:
        self.cap_bps: float | None = None
        self.floor_bps = floor_bps
        self.last_sent_bps: int | None = None
        self.capped = 0

    def install(self, receiver: RTCRtpReceiver) -> None:
        """Wrap `receiver`'s RTCP output (aiortc 1.16 `_send_rtcp`)."""
        if not callable(getattr(RTCRtpReceiver, "_send_rtcp", None)):
            raise RuntimeError("aiortc RTCRtpReceiver internals changed: expected _send_rtcp (aiortc 1.16)")
        original = receiver._send_rtcp

        async def send(packet: Any) -> None:
            await original(self.rewrite(packet))

        receiver._send_rtcp = send  # type: ignore[method-assign]

    def rewrite(self, packet: Any) -> Any:
        """The packet to send instead of `packet` (a REMB above the cap is lowered)."""
        if not (isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP):
            return packet
        try:
            bitrate, ssrcs = unpack_remb_fci(packet.fci)
        except ValueError:
            return packet
        cap = self.cap_bps
        if cap is not None:
            limit = int(max(self.floor_bps, cap))
            if bitrate > limit:
                bitrate = limit
                self.capped += 1
                packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=packet.ssrc, media_ssrc=0,
                                        fci=pack_remb_fci(bitrate, ssrcs))
        self.last_sent_bps = bitrate
        return packet


__all__ = ["SubscriberLink", "UpstreamRemb"]
