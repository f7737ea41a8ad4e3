"""RtpTimeline: session-relative pts from RTP timestamps, with wraparound, duplicates and resyncs."""

from __future__ import annotations

from recorder.timeline import RtpTimeline, rtp_delta


def test_rtp_delta_wraps() -> None:
    assert rtp_delta(5, (1 << 32) - 5) == 10
    assert rtp_delta((1 << 32) - 5, 5) == -10
    assert rtp_delta(3000, 0) == 3000


def test_first_frame_anchored_on_arrival_then_rtp_deltas() -> None:
    t = RtpTimeline(session_start=100.0, clock_rate_hz=90000)
    assert t.place((1 << 32) - 3000, received_at=102.0) == 180000
    assert t.place(0, received_at=102.05) == 183000  # wrapped, jitter ignored
    assert t.place(0, received_at=102.06) is None  # duplicate
    assert t.place((1 << 32) - 3000, received_at=102.07) is None  # reordered late frame
    assert t.place(6000, received_at=102.06) == 189000


def test_rtp_clock_restart_resyncs_on_arrival_time() -> None:
    t = RtpTimeline(session_start=0.0, clock_rate_hz=48000)
    assert t.place(1_000_000, received_at=1.0) == 48000
    assert t.place(7, received_at=1.02) == 48960  # publisher restarted its clock: re-anchor
    assert t.resyncs == 1
    assert t.place(967, received_at=1.04) == 48960 + 960
    assert t.place(967 + 48000 * 60, received_at=10.0) == 10 * 48000  # 60 s RTP vs 9 s wall
    assert t.resyncs == 2
