"""One bandwidth estimate per subscriber, from what its receiver reports (sans-I/O).

Inputs, as aiortc 1.16 and Chromium negotiate them with us (`goog-remb` with the abs-send-time
header extension; aiortc offers no transport-wide congestion control, so Chromium falls back to
receive-side estimation and sends REMB):

- REMB (draft-alvestrand-rmcat-remb): the receiver's delay-based estimate of what the path
  carries. It follows what the receiver gets (aiortc: 1.5x the incoming rate, +8 %/s): while
  video is reduced or paused it says little about the path, so the bound it sets climbs once
  no loss has been reported for `remb_stale_s` (a probe), or a link that recovered would never
  be found again (we send no padding to probe with).
- Receiver reports (RFC 3550 6.4.2): fraction lost and the round-trip time, pooled per stream
  over `loss_window_s`. Only loss that is *significant* counts: at least `confirm_loss` and above
  the `random_loss` a township line loses by itself (5 %) by `confidence_z` standard errors, in
  the latest report or the latest few. Such loss above `loss_high` cuts the estimate (1 -
  loss/2); loss that random loss explains lets it grow (the loss-based half of GCC,
  draft-ietf-rmcat-gcc-02 section 6, whose thresholds, > 10 % lowers, 2-10 % holds, judge one
  report: one report of 30 packets on a 5 % line says >= 10 % one time in five). Audio keeps
  reports coming when video is off.

The estimate is min(delay-based, loss-based), clamped to [min_bps, max_bps], with one rule of
our own: the delay-based bound (REMB) only applies while the subscriber has also reported
significant loss within `loss_memory_s`. Delay alone is what a busy CPU looks like to a receiver's
estimator (aiortc's reports 50-60 kbit/s for a loss-free loopback path on a loaded 2-core machine,
RTT 400 ms): cutting video on it would pause healthy viewers. A narrow link drops packets as soon
as its queue is full, well above the 5 % a lossy township line loses at random (measured: with
2 % as the threshold, 5 % random loss confirmed a CPU-starved REMB and paused the video for 2.5
s; with 10 % of one report, it confirmed aiortc's REMB ramping up from 106 kbit/s). Times are
monotonic seconds handed in by the driver; nothing here reads a clock.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class BweConfig:
    """Tuning of `BandwidthEstimator` (bit/s, seconds, fractions 0-1)."""

    start_bps: int = 1_500_000  # before the first REMB: no guess pauses anything (REMB comes in ~1 s)
    remb_wait_s: float = 3.0  # this long since the estimator was first used without any REMB: a
    # receiver that sends none (no delay-based bound at all, only loss), not one whose first REMB
    # is on its way
    min_bps: int = 20_000
    max_bps: int = 20_000_000
    remb_stale_s: float = 1.0  # no loss for this long: the bound starts to climb
    probe_growth_per_s: float = 0.6  # how fast the bound climbs when no loss is reported
    loss_high: float = 0.15  # random loss NACK repairs (5-14 %) is not congestion
    loss_growth: float = 1.5  # per receiver report without significant loss (about 1 per s)
    loss_probe_factor: float = 3.0  # ...up to this many times what we send (a step from 15 to 30
    # fps doubles what we send and needs 1.28x more for headroom and margin: 2x kept
    # test_congestion's subscriber at 15 fps for good)
    loss_probe_floor_bps: int = 250_000  # the growth may reach this even when we send less (a
    # subscriber given no audio and no video must still be able to get a base layer back)
    loss_memory_s: float = 10.0  # REMB binds for this long after loss was last reported
    confirm_loss: float = 0.10  # the loss that confirms a REMB: a queue overflowing, not noise
    random_loss: float = 0.05  # what a lossy line loses by itself: confirming loss must be above it...
    confidence_z: float = 3.0  # ...by this many standard errors (2.5: 18 false alarms in 6000 s at 5 %)
    loss_window_s: float = 8.0  # the receiver reports a loss figure is pooled over (a 12.5 % loss of
    # 30 packets a second is told from 5 % after about 8 s)


@dataclass(frozen=True)
class BandwidthEstimate:
    """What one subscriber's path carries, as exported to quality reports and /metrics.

    `source`: "start" (no feedback yet), "no_remb" (the receiver reports but sends no REMB:
    receiver-report loss alone can bound it), "remb" (a fresh REMB bounds it), "probe" (REMB is stale
    and the estimate climbs), "loss" (receiver-report loss bounds it), "unconfirmed" (REMB is low
    but nothing was lost lately: no bound).
    """

    bitrate_bps: int
    remb_bps: int | None
    loss_fraction: float
    rtt_ms: float | None
    source: str


class BandwidthEstimator:
    """Combines REMB and receiver reports of one subscriber into one estimate.

    The delay-based bound is anchored at the REMB seen when loss was last reported and, once
    `remb_stale_s` passes without loss, climbs by `probe_growth_per_s`: a receiver's REMB follows
    what it receives (about 1.5x), so while we forward little a fresh REMB is low without the
    path being narrow; only REMBs close to a loss report may lower the bound.
    """

    def __init__(self, config: BweConfig | None = None) -> None:
        self.config = config or BweConfig()
        self._remb_bps: int | None = None
        self._remb_before_resume = False  # the last REMB predates a stream's resume
        self._anchor_bps: float | None = None
        self._anchor_s = 0.0
        self._loss_bps: float = float(self.config.max_bps)
        self._loss_fraction = 0.0
        self._loss_seen_s: float | None = None
        self._rtt_s: float | None = None
        self._carried_bps = 0.0
        self._delivered_bps = 0.0  # what got through per the last report (sent x share not lost)
        self._loss_window: dict[int, collections.deque[tuple[float, float, int]]] = {}
        self._first_seen_s: float | None = None  # the first time handed in (sans-I/O: no clock)
        self.remb_count = 0
        self.report_count = 0

    def on_remb(self, bitrate_bps: int, now_s: float) -> None:
        """A REMB from the subscriber (bit/s at `now_s`)."""
        self._remb_bps = max(0, int(bitrate_bps))
        self._remb_before_resume = False
        self.remb_count += 1
        self._loss_bps = max(self._loss_bps, float(self._remb_bps))  # loss-based only ever cuts
        near_loss = self._loss_seen_s is not None and now_s - self._loss_seen_s <= self.config.remb_stale_s
        bound = max(float(self._remb_bps), self._carried_bps, self._delivered_bps)
        if near_loss and bound < self._delay_bps(now_s):
            self._anchor_bps, self._anchor_s = bound, now_s

    def on_receiver_report(self, losses: Mapping[int, tuple[float, int]], rtt_s: float | None, now_s: float,
                           audio_bps: float | None = None, sent_bps: float | None = None) -> None:
        """One receiver report: `losses` per stream (any key, e.g. the SSRC) its fraction lost
        0-1 and the packets expected in the interval, `rtt_s` if measured, `audio_bps` the
        audio we sent the subscriber lately, `sent_bps` everything we sent it lately.

        What got through an overflowing queue (loss above `loss_high`) is a floor under the
        bound a loss sets (`sent_bps` times the share not lost, at the highest loss of any
        stream), and the loss-based cut starts from what we
        sent (GCC: As(1 - p/2), As the sending rate): a queue that overflows delivers what the
        link carries. Before, the bound fell to the receiver's REMB, which aiortc makes from the
        incoming video alone: 120-128 kbit/s on the 200 kbit/s link, below audio and one base
        layer, so every overflow paused both experts' video (traced in test_weak_network) where
        one could stay at 7.5 fps, and after the link recovered both had to climb back.

        A loss figure counts only when it is *significant* (`_significant_loss`): one report of
        30 video packets on a line that loses 5 % at random says 10 % or more in one report in
        five (measured: it confirmed aiortc's REMB, still ramping up from 106 kbit/s, and the
        video paused for 2 s on a link that carried it; CI saw a 2.1 s freeze).

        The audio is a floor under a cut: aiortc's REMB counts the incoming video only, so
        with the video paused it says 11 kbit/s on a path that carries 110 of audio (measured:
        the bound fell to the minimum and the video took 7 s to come back after the link did).
        What got through of everything is no floor: a byte queue drops the large video packets
        first, so the packet loss understates what was lost (measured: no cut at all).
        """
        c = self.config
        self.report_count += 1
        self._seen(now_s)
        horizon = now_s - c.loss_window_s
        for stream, (fraction, packets) in losses.items():
            window = self._loss_window.setdefault(stream, collections.deque())
            fraction = min(1.0, max(0.0, fraction))
            window.append((now_s, fraction * max(0, packets), max(0, packets)))
        for window in self._loss_window.values():
            while window and window[0][0] < horizon:
                window.popleft()
        self._loss_fraction = max((min(1.0, max(0.0, f)) for f, _ in losses.values()), default=0.0)
        if rtt_s is not None and rtt_s >= 0:
            self._rtt_s = rtt_s
        if audio_bps is not None:
            self._carried_bps = max(0.0, audio_bps)
        # only a stream that lost much in this very report: loss pooled from before (already
        # acted on) neither re-confirms nor cuts again
        latest = {stream: min(1.0, max(0.0, f)) for stream, (f, _) in losses.items()}
        significant = self._significant_loss([s for s, f in latest.items() if f >= c.confirm_loss])
        worst = max(latest.values(), default=0.0)
        # what got through, when a queue overflowed: significant loss above `loss_high` (less is
        # the random loss of a line, which says nothing of its rate; and one report of a few
        # packets says little: 1 of 6 at a cut layer's rate is 17 %, measured on a 12.5 % line,
        # where the floor then kept test_congestion's weak subscriber from pausing)
        overflow = significant is not None and significant > c.loss_high
        delivered = max(0.0, sent_bps) * (1 - worst) if overflow and sent_bps is not None else 0.0
        self._delivered_bps = delivered
        if significant is not None:
            current = self._delay_bps(now_s) if self._confirmed(now_s) else float(c.max_bps)
            if self._remb_bps is not None and not self._remb_before_resume:
                current = min(current, max(float(self._remb_bps), self._carried_bps, delivered))
            self._loss_seen_s = now_s
            self._anchor_bps, self._anchor_s = current, now_s
        current = self._delay_bps(now_s)
        if significant is not None and worst > c.loss_high:
            # never below the audio we send (the policy keeps it whatever the estimate), cut
            # from what we sent when known
            start = current if sent_bps is None else sent_bps
            self._loss_bps = max(self._carried_bps, min(self._loss_bps, start) * (1 - significant / 2))
        elif significant is None and worst < c.confirm_loss:
            # what random loss explains (a line's 5 %, NACK repairs it) lets the bound grow; GCC
            # holds at 2-10 %, which on such a line would keep a cut for good
            grown = min(float(c.max_bps), self._loss_bps * c.loss_growth)
            if sent_bps is not None:
                # ...but not beyond 3x what we send: a report without loss says the link
                # carried that much, not 1.5x more per report for ever (traced: with no REMB
                # yet, 390 kbit/s grew to 15 Mbit/s in 4 s while we sent ~250, the policy
                # stepped both experts up and the 200 kbit/s queue dropped 31 % of the audio)
                grown = max(self._loss_bps, min(grown, max(c.loss_probe_factor * sent_bps,
                                                           float(c.loss_probe_floor_bps))))
            self._loss_bps = grown
        self._loss_bps = max(float(c.min_bps), self._loss_bps)

    def forget_stream(self, stream: int) -> None:
        """Drop what `stream` lost so far: from before a pause it says nothing of the path now
        (pooled with one lost packet of the resume keyframe it re-paused the video). The last
        REMB is from before the pause too: a receiver given no video sends none, and the 20
        kbit/s it said on the narrow link would re-anchor the climbing estimate at the first
        loss after the resume, before its next REMB."""
        self._loss_window.pop(stream, None)
        self._remb_before_resume = True

    def _significant_loss(self, streams: list[int]) -> float | None:
        """The highest loss of any of `streams` over its latest reports (the last one, the last two,
        ... the whole window) that is at least `confirm_loss` and above `random_loss` by
        `confidence_z` standard errors; None if none is.

        So a queue that overflows (30-60 % of a report's packets) counts at once, a steady 12.5
        % after about 175 packets (4 s of 400 kbit/s video), and the 5 % a line loses at random
        practically never: none in 6000 simulated seconds of reports of 30 and 50 packets (with
        2.5 standard errors: 18).
        """
        c = self.config
        best: float | None = None
        for window in (self._loss_window[s] for s in streams):
            lost = expected = 0.0
            for _, lost_n, n in reversed(window):
                lost, expected = lost + lost_n, expected + n
                if expected <= 0:
                    continue
                p = lost / expected
                if p >= c.confirm_loss and p - c.confidence_z * math.sqrt(p * (1 - p) / expected) > c.random_loss:
                    best = p if best is None else max(best, p)
        return best

    def _confirmed(self, now_s: float) -> bool:
        return self._loss_seen_s is not None and now_s - self._loss_seen_s <= self.config.loss_memory_s

    def _seen(self, now_s: float) -> None:
        if self._first_seen_s is None:
            self._first_seen_s = now_s

    def _no_remb(self, now_s: float) -> bool:
        """`remb_wait_s` since first used and never a REMB: a receiver without a delay-based
        estimator (seen: a light client; with the start value as its bound for good, one of two
        1 Mbit/s publishers stayed paused for it). Only loss it reports can bound it."""
        return (self._remb_bps is None and self._first_seen_s is not None
                and now_s - self._first_seen_s >= self.config.remb_wait_s)

    def _delay_bps(self, now_s: float) -> float:
        c = self.config
        if self._remb_bps is None:
            return float(c.max_bps if self._no_remb(now_s) else c.start_bps)
        if not self._confirmed(now_s) or self._anchor_bps is None:
            return float(c.max_bps)  # delay without loss: not a narrow link (see the module doc)
        climb = max(0.0, now_s - self._anchor_s - c.remb_stale_s)
        return min(float(c.max_bps), self._anchor_bps * (1 + c.probe_growth_per_s) ** climb)

    def estimate(self, now_s: float) -> BandwidthEstimate:
        """The current estimate at `now_s`."""
        c = self.config
        self._seen(now_s)
        delay = self._delay_bps(now_s)
        if self._loss_bps < delay:
            value, source = self._loss_bps, "loss"
        elif self._remb_bps is None:
            value, source = delay, "no_remb" if self._no_remb(now_s) else "start"
        elif not self._confirmed(now_s):
            value, source = delay, "unconfirmed"
        elif now_s - self._anchor_s > c.remb_stale_s:
            value, source = delay, "probe"
        else:
            value, source = delay, "remb"
        bps = int(min(c.max_bps, max(c.min_bps, value)))
        rtt_ms = None if self._rtt_s is None else 1000.0 * self._rtt_s
        return BandwidthEstimate(bps, self._remb_bps, self._loss_fraction, rtt_ms, source)


# Bytes a forwarded RTP packet costs on the wire beyond its payload: IPv4 20 + UDP 8 + RTP 12 +
# header extensions ~8 + SRTP auth tag 10.
PACKET_OVERHEAD_BYTES = 58
MAX_RTP_PAYLOAD_BYTES = 1200


@dataclass
class LayerRateMeter:
    """Bitrate per temporal layer of one published track, over a sliding window (sans-I/O).

    `add` once per frame (its payload bytes, its layer); `cumulative_bps` gives, for each
    layer L seen, what forwarding layers 0..L costs in bit/s, packet overhead included.
    """

    window_s: float = 2.0
    _frames: collections.deque[tuple[float, int, int, int, bool]] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._frames = collections.deque()
        self._ts: int | None = None
        self._bytes = 0
        self._layer = 0
        self._key = False

    def add(self, payload_bytes: int, layer: int, now_s: float, keyframe: bool = False) -> None:
        """One frame of `payload_bytes` in temporal layer `layer`, received at `now_s`.

        A keyframe counts as twice the mean delta frame of the window: the one a resume asks
        for must not make the base layer look too expensive to resume (measured: it did, and
        the track flapped between paused and reduced).
        """
        if keyframe:
            deltas = [f[3] for f in self._frames if not f[4]]
            if deltas:
                payload_bytes = min(payload_bytes, 2 * sum(deltas) // len(deltas))
        packets = max(1, -(-payload_bytes // MAX_RTP_PAYLOAD_BYTES))
        self._frames.append((now_s, layer, payload_bytes + packets * PACKET_OVERHEAD_BYTES, payload_bytes,
                             keyframe))
        horizon = now_s - self.window_s
        while self._frames and self._frames[0][0] < horizon:
            self._frames.popleft()

    def add_packet(self, payload_bytes: int, timestamp: int, layer: int, keyframe: bool, now_s: float) -> None:
        """One RTP packet of a frame (the RTP path): packets of one timestamp are summed into
        one frame, added when the next frame starts."""
        if timestamp != self._ts:
            if self._ts is not None:
                self.add(self._bytes, self._layer, now_s, self._key)
            self._ts, self._bytes, self._layer, self._key = timestamp, 0, layer, keyframe
        self._bytes += payload_bytes  # `add` counts the packets' overhead from the frame size

    def cumulative_bps(self, now_s: float) -> tuple[float, ...]:
        """(layers 0, 0-1, 0-2, ...) in bit/s; () before any frame in the window."""
        horizon = now_s - self.window_s
        while self._frames and self._frames[0][0] < horizon:
            self._frames.popleft()
        if not self._frames:
            return ()
        top = max(f[1] for f in self._frames)
        per_layer = [0] * (top + 1)
        for _, layer, size, _, _ in self._frames:
            per_layer[layer] += size
        span = max(self.window_s / 4, now_s - self._frames[0][0]) if len(self._frames) > 1 else self.window_s
        out: list[float] = []
        total = 0
        for size in per_layer:
            total += size
            out.append(8.0 * total / span)
        return tuple(out)


__all__ = ["BandwidthEstimate", "BandwidthEstimator", "BweConfig", "LayerRateMeter"]
