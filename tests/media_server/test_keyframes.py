"""Keyframe detection on real encoder output, and the per-publisher request limit (fake clock)."""

from __future__ import annotations

import pytest

from media_server.keyframes import KeyframeRequestLimiter, is_keyframe
from tests.support.rtc_peer import CounterVideoSource


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_is_keyframe_matches_encoder_keyframes(codec: str) -> None:
    source = CounterVideoSource(codec, fps=10)  # type: ignore[arg-type]
    for i in range(12):
        if i == 6:
            source.request_keyframe()
        source.next_packet()
    flags = [is_keyframe(codec, f.data) for f in source.sent]
    assert flags[0] is True
    assert flags[6] is True
    assert flags.count(True) == 2, flags


def test_is_keyframe_edge_cases() -> None:
    assert is_keyframe("VP8", b"") is False
    assert is_keyframe("H264", b"\x00\x00\x01") is False
    assert is_keyframe("H264", b"\x00\x00\x00\x01\x41\x9a") is False  # non-IDR slice
    assert is_keyframe("H264", b"\x00\x00\x00\x01\x67\x42") is True  # SPS
    assert is_keyframe("opus", b"\x01") is True


def test_limiter_allows_one_request_per_interval_and_coalesces() -> None:
    limiter = KeyframeRequestLimiter(min_interval_s=1.0)
    assert limiter.request(10.0) is True
    # 200 viewers joining within the interval: none sent now, one pending
    assert not any(limiter.request(10.0 + i * 0.004) for i in range(200))
    assert limiter.due_s() == pytest.approx(11.0)
    assert limiter.flush(10.9) is False
    assert limiter.flush(11.0) is True
    assert limiter.due_s() is None
    assert limiter.flush(12.5) is False  # nothing pending
    assert limiter.request(12.5) is True


def test_limiter_zero_interval_never_defers() -> None:
    limiter = KeyframeRequestLimiter(min_interval_s=0.0)
    assert all(limiter.request(5.0) for _ in range(3))
