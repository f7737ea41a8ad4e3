"""Connection quality of one peer from aiortc's RTCP-fed stats (sans-I/O: stats in, numbers out)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .events import PeerQuality

_CLOCK_RATE_HZ = {"audio": 48000, "video": 90000}


@dataclass(frozen=True)
class QualityTotals:
    """Cumulative counters of one stats sample; the next summary is computed against it."""

    at_s: float
    bytes_sent: int
    bytes_received: int
    packets_expected: int
    packets_lost: int


def summarize(
    stats: Iterable[Any], now_s: float, previous: QualityTotals | None
) -> tuple[PeerQuality, QualityTotals]:
    """Turn one `RTCPeerConnection.getStats()` sample into a `PeerQuality` over [previous, now].

    `stats` are aiortc stats objects (transport, inbound-rtp, remote-inbound-rtp); `now_s` is a
    monotonic time in seconds. Without `previous`, rates are 0 and loss is cumulative.
    Jitter in RTP timestamp units is converted to ms with the kind's clock rate.
    """
    bytes_sent = bytes_received = 0
    expected = lost = 0
    rtts: list[float] = []
    jitter_ms = 0.0
    for s in stats:
        kind_type = getattr(s, "type", None)
        if kind_type == "transport":
            bytes_sent += s.bytesSent
            bytes_received += s.bytesReceived
        elif kind_type in ("inbound-rtp", "remote-inbound-rtp"):
            received = max(0, s.packetsReceived)
            lost_here = max(0, s.packetsLost)
            expected += received + lost_here
            lost += lost_here
            rate = _CLOCK_RATE_HZ.get(s.kind, 90000)
            jitter_ms = max(jitter_ms, 1000.0 * s.jitter / rate)
            rtt = getattr(s, "roundTripTime", None)
            if rtt is not None:
                rtts.append(rtt)
    totals = QualityTotals(now_s, bytes_sent, bytes_received, expected, lost)
    if previous is not None and now_s > previous.at_s:
        span_s = now_s - previous.at_s
        sent_kbps = 8 * max(0, bytes_sent - previous.bytes_sent) / span_s / 1000
        received_kbps = 8 * max(0, bytes_received - previous.bytes_received) / span_s / 1000
        d_expected = expected - previous.packets_expected
        d_lost = lost - previous.packets_lost
    else:
        sent_kbps = received_kbps = 0.0
        d_expected, d_lost = expected, lost
    loss_pct = 100.0 * d_lost / d_expected if d_expected > 0 and d_lost > 0 else 0.0
    quality = PeerQuality(
        bitrate_kbps=sent_kbps + received_kbps,
        sent_kbps=sent_kbps,
        received_kbps=received_kbps,
        loss_pct=min(100.0, loss_pct),
        rtt_ms=1000.0 * sum(rtts) / len(rtts) if rtts else None,
        jitter_ms=jitter_ms,
    )
    return quality, totals
