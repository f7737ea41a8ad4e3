"""The server's counters and gauges as samples for `GET /metrics` (rendered by prometheus_client in
`medstream.ops.NodeMetrics`, which adds process metrics and histograms)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from media_server.events import PeerQuality
from protocol.signaling import RoomKind
from signaling.hub import Hub


@dataclass(frozen=True)
class Sample:
    """One metric sample: name, labels, value; `kind` is its Prometheus type."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "gauge"
    help: str = ""


def signaling_samples(hub: Hub, connections: int, uptime_s: float) -> list[Sample]:
    """Rooms, participants and message counters of the signaling hub."""
    m = hub.metrics
    rooms = list(hub.store.rooms())
    samples = [
        Sample("medstream_rooms", len(rooms), help="open rooms"),
        Sample("medstream_participants", sum(len(r.participants) for r in rooms), help="participants in rooms"),
        Sample("medstream_connections", connections, help="open websocket connections"),
        Sample("medstream_joins_total", m.joins, kind="counter", help="successful joins"),
        Sample("medstream_resumes_total", m.resumes, kind="counter", help="resumed participants"),
        Sample("medstream_uptime_seconds", uptime_s),
    ]
    for kind in RoomKind:
        samples.append(Sample("medstream_rooms_by_kind", sum(r.kind is kind for r in rooms), (("kind", kind.value),)))
    for msg_type, n in sorted(m.messages_in.items()):
        samples.append(Sample("medstream_messages_total", n, (("type", msg_type),), "counter", "messages received"))
    for reason, n in sorted(m.errors.items()):
        samples.append(Sample("medstream_errors_total", n, (("reason", reason),), "counter", "error replies sent"))
    return samples


def media_samples(peers: int, tracks: int, qualities: list[tuple[str, PeerQuality]],
                  adaptation: dict[str, int] | None = None) -> list[Sample]:
    """Peer connections, tracks and the quality of the SFU's peers, aggregated: /metrics names
    no participant (a scrape target is not a place for who is in which consultation).
    `adaptation`: forwarded video tracks by state ("full", "reduced", "paused") and how many
    REMB messages to publishers were capped ("remb_capped")."""
    out = [
        Sample("medstream_media_peers", peers, help="open peer connections"),
        Sample("medstream_media_tracks", tracks, help="published tracks"),
    ]
    for state, n in sorted((adaptation or {}).items()):
        if state == "remb_capped":
            out.append(Sample("medstream_media_upstream_remb_capped_total", n, kind="counter",
                              help="REMB to publishers lowered to what their best-placed subscriber can use"))
        else:
            out.append(Sample("medstream_media_video_adapted", n, (("state", state),),
                              help="forwarded video tracks by what the subscriber's link allows"))
    if not qualities:
        return out
    fields = (("bitrate_kbps", "media bitrate sent+received"), ("loss_pct", "packet loss, both directions"),
              ("jitter_ms", "worst inter-arrival jitter"), ("rtt_ms", "round-trip time"),
              ("estimate_kbps", "downlink bandwidth estimate (REMB, receiver reports)"))
    for name, help_text in fields:
        values = [v for _, q in qualities if (v := getattr(q, name)) is not None]
        if values:
            out += [
                Sample(f"medstream_peer_{name}", sum(values) / len(values), (("stat", "mean"),), help=help_text),
                Sample(f"medstream_peer_{name}", max(values), (("stat", "max"),), help=help_text),
            ]
    return out


WAVEFORM_GAUGES = frozenset({"groups", "streams", "viewers", "analysis_last_step_ms"})


def waveform_samples(stats: object, sink_failures_seen: int) -> list[Sample]:
    """The relay's counters (a dataclass of numbers) as gauges and `_total` counters."""
    out: list[Sample] = []
    for f in dataclasses.fields(stats):  # type: ignore[arg-type]
        value = getattr(stats, f.name)
        kind = "gauge" if f.name in WAVEFORM_GAUGES else "counter"
        metric = f"medstream_waveform_{f.name}" + ("" if kind == "gauge" else "_total")
        out.append(Sample(metric, float(value), kind=kind))
    out.append(Sample("medstream_waveform_sink_failures_seen_total", sink_failures_seen, kind="counter"))
    return out
