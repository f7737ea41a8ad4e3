"""A room's booked window: the one-hour slot the booking system gave a consultation."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Booking:
    """Booked window in epoch seconds: joins are admitted from `opens_at - early_join_s` until
    `closes_at`, when the room ends for everyone (reason `booking_over`)."""

    opens_at: float
    closes_at: float
    early_join_s: float = 600.0

    def admits(self, now: float) -> bool:
        return self.opens_at - self.early_join_s <= now < self.closes_at

    def over(self, now: float) -> bool:
        return now >= self.closes_at

    def refusal(self, now: float) -> str:
        """Why a join at `now` is refused, for people."""
        if now < self.opens_at - self.early_join_s:
            return (f"the room is booked from {_iso(self.opens_at)} and opens {self.early_join_s / 60:g} min "
                    f"before; it is now {_iso(now)}")
        return f"the room's booking ended at {_iso(self.closes_at)}; it is now {_iso(now)}"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
