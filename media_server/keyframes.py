"""Keyframe detection in encoded frames and the per-publisher keyframe request limit (sans-I/O)."""

from __future__ import annotations

from dataclasses import dataclass

_H264_IDR = 5
_H264_SPS = 7


def is_keyframe(codec: str, data: bytes) -> bool:
    """True if `data` (one whole encoded frame of `codec`) can be decoded without earlier frames.

    VP8: the frame tag's P bit is 0 (RFC 6386 section 9.1). H.264: the access unit (Annex-B)
    holds an IDR slice or an SPS. Audio codecs: every frame.
    """
    if codec == "VP8":
        return bool(data) and (data[0] & 0x01) == 0
    if codec == "H264":
        i = 0
        n = len(data)
        while True:
            i = data.find(b"\x00\x00\x01", i)
            if i < 0 or i + 3 >= n:
                return False
            nal_type = data[i + 3] & 0x1F
            if nal_type in (_H264_IDR, _H264_SPS):
                return True
            i += 3
    return True


@dataclass
class KeyframeRequestLimiter:
    """At most one keyframe request per `min_interval_s` reaches a publisher (mediasoup-style).

    `request(now_s)` returns True if a request may go out now; otherwise the request is
    remembered and `due_s()` says when the single coalesced request may be sent, which the
    driver does by calling `flush(now_s)`. 200 viewers joining within a second cost the
    publisher two keyframes, not 200.
    """

    min_interval_s: float
    _last_sent_s: float | None = None
    _pending: bool = False

    def request(self, now_s: float) -> bool:
        """Ask for a keyframe at `now_s` (seconds, monotonic). True: send a PLI now."""
        if self._last_sent_s is None or now_s - self._last_sent_s >= self.min_interval_s:
            self._last_sent_s = now_s
            self._pending = False
            return True
        self._pending = True
        return False

    def due_s(self) -> float | None:
        """When the coalesced pending request may go out (seconds, monotonic), or None."""
        if not self._pending or self._last_sent_s is None:
            return None
        return self._last_sent_s + self.min_interval_s

    def flush(self, now_s: float) -> bool:
        """True if a pending request is due at `now_s` and should be sent now (it is cleared)."""
        due = self.due_s()
        if due is None or now_s < due:
            return False
        self._pending = False
        self._last_sent_s = now_s
        return True
