"""Placing a track's frames on the session timeline (pure arithmetic, no I/O).

A track's first frame is anchored by its arrival time (`received_at - session_start`); later frames
follow by RTP timestamp deltas, which are exact, unlike arrival times that carry network jitter.
32-bit RTP timestamps wrap (every 13 h at 90 kHz, 25 h at 48 kHz), so deltas are taken modulo 2**32.
If the RTP clock and the wall clock disagree by more than `resync_threshold_s` (the publisher
restarted its RTP clock, or a long pause), the track is re-anchored on the arrival time.
"""

from __future__ import annotations

from dataclasses import dataclass

RTP_TIMESTAMP_MODULO = 1 << 32


def rtp_delta(timestamp: int, previous: int) -> int:
    """Signed distance from `previous` to `timestamp` on the 32-bit RTP clock, in ticks.

    Values in [-2**31, 2**31): a small step backwards is negative, a wrap forward is small positive.
    """
    delta = (timestamp - previous) % RTP_TIMESTAMP_MODULO
    return delta - RTP_TIMESTAMP_MODULO if delta >= RTP_TIMESTAMP_MODULO // 2 else delta


@dataclass(slots=True)
class RtpTimeline:
    """Maps (RTP timestamp, arrival time) of one track to pts in ticks since the session start.

    `clock_rate_hz` is the RTP clock (90000 video, 48000 Opus). `place()` returns None for a frame
    that would not move the timeline forward (duplicate or reordered late frame): containers need
    strictly increasing timestamps per track.
    """

    session_start: float
    clock_rate_hz: int
    resync_threshold_s: float = 5.0
    _last_rtp: int | None = None
    _last_pts: int = 0
    _last_received_at: float = 0.0
    resyncs: int = 0

    def place(self, rtp_timestamp: int, received_at: float) -> int | None:
        """Return the frame's pts (ticks of 1/clock_rate_hz since session start) or None to drop."""
        if self._last_rtp is None:
            pts = max(0, round((received_at - self.session_start) * self.clock_rate_hz))
        else:
            delta = rtp_delta(rtp_timestamp, self._last_rtp)
            wall_delta_s = received_at - self._last_received_at
            if abs(delta / self.clock_rate_hz - wall_delta_s) > self.resync_threshold_s:
                self.resyncs += 1
                pts = max(
                    self._last_pts + 1,
                    round((received_at - self.session_start) * self.clock_rate_hz),
                )
            elif delta <= 0:
                return None
            else:
                pts = self._last_pts + delta
        self._last_rtp = rtp_timestamp
        self._last_pts = pts
        self._last_received_at = received_at
        return pts
