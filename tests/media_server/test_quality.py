"""Quality summary from aiortc's own stats objects."""

from __future__ import annotations

import datetime

import pytest
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCTransportStats,
)

from media_server.quality import summarize

NOW = datetime.datetime(2024, 1, 1)


def transport(sent: int, received: int) -> RTCTransportStats:
    return RTCTransportStats(
        timestamp=NOW, type="transport", id="t", packetsSent=0, packetsReceived=0,
        bytesSent=sent, bytesReceived=received, iceRole="controlling", dtlsState="connected",
    )


def inbound(received: int, lost: int, jitter: int) -> RTCInboundRtpStreamStats:
    return RTCInboundRtpStreamStats(
        timestamp=NOW, type="inbound-rtp", id="i", ssrc=1, kind="video", transportId="t",
        packetsReceived=received, packetsLost=lost, jitter=jitter,
    )


def remote_inbound(received: int, lost: int, rtt_s: float | None) -> RTCRemoteInboundRtpStreamStats:
    return RTCRemoteInboundRtpStreamStats(
        timestamp=NOW, type="remote-inbound-rtp", id="r", ssrc=2, kind="audio", transportId="t",
        packetsReceived=received, packetsLost=lost, jitter=480, roundTripTime=rtt_s,
        fractionLost=0,
    )


def test_rates_loss_rtt_and_jitter_over_the_interval() -> None:
    first, totals = summarize(
        [transport(1000, 2000), inbound(90, 10, 900), remote_inbound(100, 0, None)], 10.0, None
    )
    assert first.bitrate_kbps == 0.0
    assert first.loss_pct == pytest.approx(5.0)  # 10 lost of 200 expected, cumulative
    assert first.rtt_ms is None
    second, _ = summarize(
        [transport(3000, 12000), inbound(180, 20, 900), remote_inbound(200, 0, 0.02)], 12.0, totals
    )
    assert second.sent_kbps == pytest.approx(8 * 2000 / 2 / 1000)
    assert second.received_kbps == pytest.approx(8 * 10000 / 2 / 1000)
    assert second.bitrate_kbps == pytest.approx(second.sent_kbps + second.received_kbps)
    assert second.loss_pct == pytest.approx(100 * 10 / 200)
    assert second.rtt_ms == pytest.approx(20.0)
    assert second.jitter_ms == pytest.approx(10.0)  # 900 / 90 kHz = 10 ms (> 480 / 48 kHz)
