"""Wires the parts into one server: hub, websockets/HTTP driver, SFU, waveform relay, recorder.

Cleanup runs only for what was set up (aiohttp's runner idea): `start()` records each part it
started and `stop()` closes those, in reverse.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from medstream.config import ServerConfig
from signaling.audit import AuditLog
from signaling.hub import Hub
from signaling.metrics import Sample
from signaling.server import ServerParts, SignalingServer

log = logging.getLogger("medstream.app")

STATIC_ROOT = Path(__file__).resolve().parents[1] / "clients" / "web"


class MedstreamApp:
    """One medstream node."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.hub = Hub(config.signaling)
        self.parts = ServerParts(static_root=STATIC_ROOT if STATIC_ROOT.is_dir() else None)
        self.server: SignalingServer | None = None
        self.media: Any = None
        self.waveforms: Any = None
        self.recorder: Any = None
        self.sink_failures = 0
        self.parts.extra_metrics = self.metric_samples

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/ws"

    async def start(self) -> None:
        now = time.time()
        for room_id, kind in self.config.rooms:
            self.hub.create_room(room_id, kind, now, persistent=True)
        self.server = SignalingServer(self.hub, audit=AuditLog(self.config.audit_log), parts=self.parts)
        if self.config.media:
            self._start_media()
        if self.config.waveforms:
            self._start_waveforms()
        if self.config.recorder:
            self._start_recorder()
        await self.server.start(self.config.host, self.config.port)
        self.server.apply(self.hub.start_policy_recordings())
        log.info("medstream listening on %s (websocket %s)", self.url, self.ws_url)

    def _start_media(self) -> None:
        from media_server.config import MediaConfig
        from media_server.sfu import Sfu

        assert self.server is not None
        ice_servers = tuple(self.config.signaling.ice_servers)
        self.media = Sfu(
            MediaConfig(ice_host_addresses=self.config.ice_host_addresses, ice_servers=_ice_servers(ice_servers)),
            self.server.on_media_event,
        )
        self.parts.media = self.media

    def _start_waveforms(self) -> None:
        from waveforms import WaveformConfig, WaveformRelay

        self.waveforms = WaveformRelay(WaveformConfig(), on_sink_failure=self._sink_failed)
        self.parts.waveforms = self.waveforms

    def _sink_failed(self, group: str, sink: Any, exc: BaseException) -> None:
        # The relay has already detached the sink and logged; a lossless path failing is loud.
        self.sink_failures += 1
        log.error("waveform store sink %r of room %s failed: %r", sink, group, exc)

    def metric_samples(self) -> list[Sample]:
        """Media and waveform figures for /metrics."""
        out: list[Sample] = []
        if self.media is not None:
            tracks = self.media.tracks()
            out.append(Sample("medstream_media_peers", len(self.media.peer_ids()), help="open peer connections"))
            out.append(Sample("medstream_media_tracks", len(tracks), help="published tracks"))
            for pid in self.media.peer_ids():
                q = self.media.quality(pid)
                if q is None:
                    continue
                labels = (("participant", pid),)
                out += [
                    Sample("medstream_peer_bitrate_kbps", q.bitrate_kbps, labels, help="media bitrate sent+received"),
                    Sample("medstream_peer_loss_pct", q.loss_pct, labels, help="packet loss, both directions"),
                    Sample("medstream_peer_jitter_ms", q.jitter_ms, labels, help="worst inter-arrival jitter"),
                ]
                if q.rtt_ms is not None:
                    out.append(Sample("medstream_peer_rtt_ms", q.rtt_ms, labels, help="round-trip time"))
        if self.waveforms is not None:
            st = self.waveforms.stats()
            gauges = ("groups", "streams", "viewers", "analysis_last_step_ms")
            for name, value in _fields(st):
                kind = "gauge" if name in gauges else "counter"
                metric = f"medstream_waveform_{name}" + ("" if kind == "gauge" else "_total")
                out.append(Sample(metric, float(value), kind=kind))
        out.append(Sample("medstream_waveform_sink_failures_seen_total", self.sink_failures, kind="counter"))
        return out

    def _start_recorder(self) -> None:
        try:
            from recorder.service import RecordingService
        except ImportError:
            log.info("recorder not available in this build")
            return
        assert self.server is not None
        self.recorder = RecordingService(self.config.recordings_dir, self.hub, self.server, self.media, self.waveforms, self.config.recordings_retention_days)
        self.parts.recorder = self.recorder
        self.parts.extra_http = self.recorder.http

    async def stop(self) -> None:
        """Finish recordings first (their manifests and hashes), then close sockets and media."""
        if self.recorder is not None:
            await self.recorder.close()
            self.recorder = None
        if self.server is not None:
            await self.server.stop()
            self.server = None


def _fields(obj: Any) -> list[tuple[str, Any]]:
    import dataclasses

    return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]


def _ice_servers(servers: tuple[Any, ...]) -> tuple[Any, ...]:
    from media_server.config import IceServer

    return tuple(IceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers)
