"""Bedside-monitor heart rate from detected beats: averaged, outlier-robust, updated each second.

Two rates, for two purposes:
* ``heart_rate_bpm`` (display): mean of the last 8 RR intervals after dropping those more than
  30 % away from their median (an ectopic beat or a missed detection does not move the number),
  refreshed once per second of signal time.
* ``alarm_rate_bpm``: from the median of the last 4 RR intervals, so a sustained change in rate
  reaches the brady/tachy alarms after about 3 beats (the display average needs 5+).
Irregularity is the RMSSD of the last 8 RR divided by their mean (dimensionless; ~0.02-0.05 in
sinus rhythm, >0.1 typical of atrial fibrillation).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class HeartRateMeter:
    """Heart rate, RR intervals and irregularity of one stream.

    Feed R-peak sample indices in order with ``on_beat``; call ``update(now_sample)`` after each
    block; read the properties. Times are in samples at ``sampling_rate_hz`` unless named _ms/_s.
    """

    sampling_rate_hz: float
    average_beats: int = 8
    alarm_beats: int = 4
    outlier_fraction: float = 0.3
    update_interval_s: float = 1.0
    #: no rate is shown once no beat came for this long (or 2 mean RR, whichever is longer)
    stale_after_s: float = 3.0
    heart_rate_bpm: float | None = None
    alarm_rate_bpm: float | None = None
    irregularity: float | None = None
    last_beat_sample: int | None = None
    _rr: deque[float] = field(default_factory=deque)
    _next_update: int | None = None

    def on_beat(self, sample_index: int) -> float | None:
        """Register a beat (R-peak sample index); return the RR interval it closes, in ms."""
        rr_ms = None
        if self.last_beat_sample is not None:
            rr_ms = (sample_index - self.last_beat_sample) * 1000.0 / self.sampling_rate_hz
            self._rr.append(rr_ms)
            if len(self._rr) > self.average_beats:
                self._rr.popleft()
        self.last_beat_sample = sample_index
        return rr_ms

    def update(self, now_sample: int) -> bool:
        """Refresh the rates if a whole update interval has passed; return True if refreshed."""
        step = max(1, int(round(self.update_interval_s * self.sampling_rate_hz)))
        if self._next_update is None:
            self._next_update = (now_sample // step + 1) * step
            return False
        if now_sample < self._next_update:
            return False
        self._next_update = (now_sample // step + 1) * step
        self._recompute(now_sample)
        return True

    def _recompute(self, now_sample: int) -> None:
        rr = np.asarray(self._rr, dtype=np.float64)
        if rr.size < 2 or self.last_beat_sample is None:
            self.heart_rate_bpm = self.alarm_rate_bpm = self.irregularity = None
            return
        since_s = (now_sample - self.last_beat_sample) / self.sampling_rate_hz
        if since_s > max(self.stale_after_s, 2.0 * rr.mean() / 1000.0):
            self.heart_rate_bpm = self.alarm_rate_bpm = None
            return
        median = float(np.median(rr))
        kept = rr[np.abs(rr - median) <= self.outlier_fraction * median]
        self.heart_rate_bpm = 60000.0 / float(kept.mean() if kept.size else median)
        self.alarm_rate_bpm = 60000.0 / float(np.median(rr[-self.alarm_beats :]))
        self.irregularity = float(np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean())
