"""One medstream node: the only place where the parts are wired together.

hub (signaling core) <- driver (signaling.server) <- HTTP edge (aiohttp, medstream.http)
driver effects -> media bridge -> SFU;  -> waveform bridge -> relay;  -> room events -> recorder

Each collaborator is annotated with the `Protocol` of its seam where it is wired, so mypy checks
the fit. Cleanup runs only for what was set up (aiohttp's runner idea): `start()` records each
part it started and `stop()` closes those, in reverse.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from medstream import __version__
from medstream.api import AdminApi
from medstream.config import ServerConfig
from medstream.http import HttpServer
from medstream.media_bridge import MediaBackend, MediaBridge
from medstream.memory import release_free_heap
from medstream.metrics import Sample, media_samples, signaling_samples, waveform_samples
from medstream.openapi import DocumentedRoutes, Operation
from medstream.ops import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from medstream.ops import DiskNeed, NodeMetrics, NodeState, Readiness
from medstream.playback_http import PlaybackHttp
from medstream.recordings_http import RecordingsHttp
from medstream.webhooks import WebhookConfig, Webhooks
from medstream.whip import WhipEndpoint
from signaling import effects as fx
from signaling import events as ev
from signaling.audit import AuditLog
from signaling.hub import Hub
from signaling.server import SignalingServer
from signaling.sessions import HttpSessions

if TYPE_CHECKING:
    from medstream.cluster_bridge import ClusterBridge
    from medstream.waveform_bridge import Relay, WaveformBridge  # numpy: imported when used

log = logging.getLogger("medstream.app")

STATIC_ROOT = Path(__file__).resolve().parents[1] / "clients" / "web"

RoomObserver = Callable[[ev.RoomEvent], None]


class MedstreamApp:
    """One medstream node. `hub` / `relay`: parts made by the caller (tests, benchmarks that
    probe them); by default the node makes its own from `config`."""

    def __init__(self, config: ServerConfig, *, hub: Hub | None = None, relay: Relay | None = None) -> None:
        self.config = config
        self.hub = hub if hub is not None else Hub(config.signaling)
        self.driver = SignalingServer(self.hub, audit=AuditLog(config.audit_log, hash_alg=config.audit_hash))
        self.http = HttpServer(self.driver, max_frame_bytes=config.signaling.max_frame_bytes,
                               static_root=STATIC_ROOT if STATIC_ROOT.is_dir() else None,
                               allowed_origins=config.allowed_origins)
        self.media_bridge = MediaBridge(self.driver, self.hub)
        self.media: MediaBackend | None = None
        self.waveforms: Relay | None = relay
        self.waveform_bridge: WaveformBridge | None = None
        self.recorder: Any = None  # recorder.service.RecordingService (imported only when on)
        self.webhooks: Webhooks | None = None
        self.whip: WhipEndpoint | None = None
        self.readings: Any = None  # medstream.readings_http.ReadingsHttp (imported only when on)
        self.sink_failures = 0
        self.observers: list[RoomObserver] = []
        self._room_started_later: list[list[fx.Effect]] = []
        self._alarm_sinks: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        for event_type in ev.ROOM_EVENTS:
            self.driver.handle(event_type, self._room_event)
        self.driver.handle(fx.StartRecorder, self._start_recorder)
        self.driver.handle(fx.StopRecorder, self._stop_recorder)
        self.route = DocumentedRoutes(self.http.route)  # every route, and what it is (openapi.json)
        self.route("GET", "/healthz", self._healthz, Operation("liveness: the process answers", "ops", None))
        self.route("GET", "/metrics", self._metrics, Operation("Prometheus metrics", "ops", None,
                                                                response_type="text/plain"))
        self.route("GET", "/readyz", self._readyz, Operation(
            "readiness: 503 while starting or draining, or when the recordings disk or webhook spool is unusable",
            "ops", None, responses={200: "ready", 503: "not ready, with the reasons"}))
        self.prometheus = NodeMetrics(self.metric_samples)
        self.readiness = Readiness(self._disk_needs())
        self.observers.append(self._timing_observer)
        self._drained = asyncio.Event()
        self._cut_drain = asyncio.Event()
        AdminApi(self.hub, config.api_key, self.driver.apply, audit=self._audit,
                 recordings_dir=config.recordings_dir if config.recorder else None,
                 recordings_key=config.recordings_key,
                 document=lambda: self.route.document(self.http_routes(), version=__version__)).install(self.route)
        self.cluster: ClusterBridge | None = None
        if config.cluster is not None:  # --redis: joins routed through the cluster (docs/cluster.md)
            from medstream.cluster_bridge import ClusterBridge

            self.cluster = ClusterBridge(self, config.cluster)
            self.cluster.install(self.route)

    @property
    def server(self) -> SignalingServer:
        """The signaling driver (tests look at its sockets and tune its tick)."""
        return self.driver

    @property
    def port(self) -> int:
        assert self.http.port is not None
        return self.http.port

    @property
    def tls(self) -> bool:
        return self.config.tls_cert is not None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.config.host}:{self.port}/ws"

    @property
    def node_ws_url(self) -> str:
        """The websocket address of this process alone (a worker's own port)."""
        return f"{'wss' if self.tls else 'ws'}://{self.config.host}:{self.http.own_port or self.port}/ws"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        now = time.time()
        if self.config.webhook_urls:
            await self._start_webhooks()
        for room_id, kind in self.config.rooms:
            room = self.hub.create_room(room_id, kind, now, persistent=True)
            self._room_started_later.append(room.started_events())
        if self.config.media:
            self._start_media()
        if self.config.waveforms:
            self._start_waveforms()
        if self.config.recorder:
            self._start_recorder_service()
        if self.config.readings_dir is not None:
            self._start_readings(self.config.readings_dir)
        self.driver.start()
        if self.waveform_bridge is not None:
            self.waveform_bridge.start()
        await self.http.start(self.config.host, self.config.port, self._ssl_context(),
                              reuse_port=self.config.reuse_port, own_port=self.config.own_port)
        if self.cluster is not None:
            await self.cluster.start(self.node_ws_url)
        for started in self._room_started_later:  # (a cluster leaves a room another node hosts to it)
            self.driver.apply([e for e in started if not isinstance(e, ev.RoomStarted)
                               or self.hub.store.get(e.room_id) is not None])
        self.driver.apply(self.hub.start_policy_recordings())
        self.readiness.state = NodeState.READY
        release_free_heap()  # what start-up freed, back to the OS (medstream/memory.py)
        log.info("medstream listening on %s (websocket %s)", self.url, self.ws_url)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking new participants and tell everyone (reason server_draining), then wait up
        to `timeout_s` for the rooms to empty (or `cut_drain`). `stop()` does the rest."""
        self.readiness.state = NodeState.DRAINING
        if self.cluster is not None:
            self.cluster.draining()
        log.info("draining: %d participant(s) have %.0f s to finish", self.connected_count(), timeout_s)
        self.driver.apply(self.hub.start_draining(timeout_s))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.connected_count() > 0 and not self._cut_drain.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("drain timeout: closing %d participant(s)", self.connected_count())
                break
            self._drained.clear()
            waits = [asyncio.ensure_future(self._drained.wait()), asyncio.ensure_future(self._cut_drain.wait())]
            # leaves wake us; a dropped socket is no room event, hence the half-second re-check
            await asyncio.wait(waits, timeout=min(remaining, 0.5), return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()

    def connected_count(self) -> int:
        """Participants still connected (websocket or WHIP/WHEP); those in their resume grace
        period are not waited for by a drain."""
        return sum(len(room.connected_ids()) for room in self.hub.store.rooms())

    def cut_drain(self) -> None:
        """End a drain now (a second SIGTERM)."""
        self._cut_drain.set()

    async def stop(self) -> None:
        """Finish recordings first (their manifests and hashes), then close sockets and media."""
        self.readiness.state = NodeState.STOPPED
        if self.recorder is not None:
            await self.recorder.close()
            self.recorder = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.readings is not None:  # its live event streams end first, or the HTTP runner waits for them
            await self.readings.close()
        await self.http.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.waveform_bridge is not None:
            await self.waveform_bridge.close()
        await self.media_bridge.close()
        await self.driver.stop()
        if self.webhooks is not None:  # last: the room_ended and recording_ready of the shutdown are queued
            await self.webhooks.close()

    def _ssl_context(self) -> ssl.SSLContext | None:
        """TLS for HTTPS and WSS on the signaling port (raises OSError/SSLError on a bad pair)."""
        if self.config.tls_cert is None or self.config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    def _start_media(self) -> None:
        from media_server.config import IceServer, MediaConfig
        from media_server.sfu import Sfu

        ice_servers = tuple(IceServer(urls=s.urls, username=s.username, credential=s.credential)
                            for s in self.config.signaling.ice_servers)
        cascade = self.cluster.cascade if self.cluster is not None else None  # lectures over nodes
        sfu = Sfu(
            MediaConfig(ice_host_addresses=self.config.ice_host_addresses, ice_servers=ice_servers,
                        ice_udp_port=self.config.udp_port),
            cascade.on_sfu_event if cascade is not None else self.media_bridge.on_media_event,
        )
        self.media = sfu
        self.media_bridge.attach(cascade.backend(sfu) if cascade is not None else sfu)
        whip = WhipEndpoint(HttpSessions(self.hub), self.media_bridge, self.driver.apply)
        whip.install(self.route)
        self.observers.append(whip.observe)
        self.media_bridge.on_peer_failed.append(whip.peer_failed)
        self.whip = whip

    def _start_waveforms(self) -> None:
        from medstream.waveform_bridge import WaveformBridge

        if self.waveforms is None:
            from waveforms import WaveformConfig, WaveformRelay

            self.waveforms = WaveformRelay(WaveformConfig(stream_retention_s=self.config.waveform_retention_s),
                                           on_sink_failure=self._sink_failed)
        self.waveform_bridge = WaveformBridge(self.driver, self.waveforms)
        self.waveform_bridge.on_relay_latency = self.prometheus.relay_latency.observe
        self.waveforms.observe_analysis_steps(self.prometheus.analysis_step.observe)

    def _sink_failed(self, group: str, sink: object, exc: BaseException) -> None:
        # The relay has already detached the sink and logged; a lossless path failing is loud.
        self.sink_failures += 1
        log.error("waveform store sink %r of room %s failed: %r", sink, group, exc)

    def _start_recorder_service(self) -> None:
        from recorder.service import RecorderConfig, RecordingService, RecordingServiceConfig

        c = self.config
        self.recorder = RecordingService(
            c.recordings_dir, media=self.media, waveforms=self.waveforms,
            on_failed=lambda room_id, reason: self.driver.apply(self.hub.recording_failed(room_id, reason)),
            on_stopped=self._recording_ready,
            config=RecordingServiceConfig(
                retention_days=c.recordings_retention_days, finalize=c.recordings_remux,
                recorder=RecorderConfig(c.recordings_dir, fsync=c.recordings_fsync,  # type: ignore[arg-type]
                                        master_key=c.recordings_key,
                                        encryption_algorithm=c.recordings_encryption)),
        )
        self.observers.append(self._recorder_observer)
        recordings = RecordingsHttp(c.recordings_dir, c.signaling.secret, audit=self._audit,
                                    master_key=c.recordings_key)
        recordings.install(self.route)
        PlaybackHttp(recordings).install(self.route)

    def _start_readings(self, root: Path) -> None:
        """The 12-lead reading desk (docs/ecg12.md): HTTP routes, live events, device snapshots."""
        from medstream.readings_http import ReadingsHttp
        from readings.service import ReadingService
        from readings.store import ReadingStore

        def open_room(room_id: str, kind: str, closes_at: float) -> None:
            from signaling.admin import Admin, RoomSpec
            from signaling.booking import Booking

            existing = self.hub.store.get(room_id)
            if existing is not None and not existing.ended:
                return
            now = time.time()
            _, effects = Admin(self.hub).create_room(
                RoomSpec(room_id=room_id, kind=kind, booking=Booking(now, closes_at, 0.0)), now)
            self.driver.apply(effects)

        def send_to_device(participant_id: str, frame: bytes) -> None:
            socket = self.driver.socket_of(participant_id)
            if socket is not None:
                socket.send_bytes(frame)

        hooks = self.webhooks
        self.readings = ReadingsHttp(
            ReadingService(self.config.readings_centre, ReadingStore(root)), self.hub.keys, audit=self._audit,
            webhook=hooks.publish if hooks is not None else None, open_room=open_room, send_to_device=send_to_device)
        self.readings.install(self.route)
        if self.waveforms is not None:
            self.waveforms.on_snapshot = self.readings.take_snapshot

    async def _start_webhooks(self) -> None:
        c = self.config
        self.webhooks = Webhooks(WebhookConfig(  # raises ValueError without a secret
            c.webhook_urls, c.webhook_secret or "", c.webhook_queue_dir,
            backoff_initial_s=min(1.0, c.webhook_retry_max_s), backoff_max_s=c.webhook_retry_max_s))
        await self.webhooks.start()
        self.observers.append(self.webhooks.observe)
        self.observers.append(self._alarm_observer)

    def _alarm_observer(self, event: ev.RoomEvent) -> None:
        """Each room's alarms go to the webhooks: a store sink per room, from its start."""
        if self.webhooks is None or self.waveforms is None:
            return
        match event:
            case ev.RoomStarted(room_id=room):
                self._alarm_sinks[room] = sink = self.webhooks.alarm_sink(room)
                self.waveforms.add_store_sink(room, sink)
            case ev.RoomEnded(room_id=room):
                if (sink := self._alarm_sinks.pop(room, None)) is not None:
                    self.waveforms.remove_store_sink(room, sink)
            case _:
                pass

    def _recording_ready(self, room_id: str, manifest: Any) -> None:
        if self.webhooks is not None:
            self.webhooks.recording_ready(room_id, dataclasses.asdict(manifest))

    # ------------------------------------------------------------------ room events

    def _room_event(self, event: ev.RoomEvent) -> None:
        for observe in self.observers:
            try:
                observe(event)
            except Exception:  # one observer's bug must not keep the event from the others
                log.exception("room event observer %r failed on %r", observe, event)

    def _start_recorder(self, e: fx.StartRecorder) -> None:
        if self.recorder is None:
            self.driver.apply(self.hub.recording_failed(e.room_id, "recording is not enabled on this server"))
            return
        from recorder.service import ParticipantNote, TrackNote

        self.recorder.start(
            e.room_id, e.by, e.kind,
            tuple(ParticipantNote(p.participant_id, p.role, p.identity, p.name) for p in e.participants),
            tuple(TrackNote(t.track_id, t.participant_id, t.kind, t.codec) for t in e.tracks),
        )

    def _stop_recorder(self, e: fx.StopRecorder) -> None:
        if self.recorder is not None:
            task = asyncio.get_running_loop().create_task(self.recorder.stop(e.room_id, e.by))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _recorder_observer(self, event: ev.RoomEvent) -> None:
        from recorder.service import ParticipantNote, TrackNote

        match event:
            case ev.ParticipantJoined(room_id=room, participant_id=pid, identity=who, name=name, role=role) | \
                    ev.RoleChanged(room_id=room, participant_id=pid, identity=who, name=name, role=role):
                self.recorder.participant(room, ParticipantNote(pid, role, who, name))
            case ev.TrackPublished(room_id=room, track_id=tid, participant_id=pid, kind=kind, codec=codec):
                self.recorder.track_published(room, TrackNote(tid, pid, kind, codec))
            case ev.ParticipantLeft(room_id=room, participant_id=pid):
                self.recorder.participant_left(room, pid)
            case ev.ChatSent(room_id=room, message_id=mid, participant_id=pid, name=name, text=text, time=t,
                             to_moderators=question):
                self.recorder.chat(room, mid, pid, name, text, t, question)
            case _:
                pass

    # ------------------------------------------------------------------ HTTP

    def http_routes(self) -> list[tuple[str, str]]:
        """(method, path) of every route the HTTP server has now (HEAD included)."""
        out = []
        for r in self.http.app.router.routes():
            info = r.resource.get_info() if r.resource is not None else {}
            out.append((r.method, str(info.get("formatter") or info.get("path") or "")))
        return out

    def _audit(self, record: fx.Audit) -> None:
        self.driver.apply([record])

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        expected = self.config.metrics_token
        if expected is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return web.Response(status=401, text="metrics need a bearer token\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return web.Response(body=self.prometheus.render(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        ready, reasons = await self.readiness.check()
        body = {"status": "ready"} if ready else {"status": "not_ready", "reasons": reasons}
        return web.json_response(body, status=200 if ready else 503, headers={"Cache-Control": "no-store"})

    def _disk_needs(self) -> list[DiskNeed]:
        floor = self.config.min_free_disk_mb * 2**20
        needs = []
        if self.config.recorder:
            needs.append(DiskNeed("the recordings disk", self.config.recordings_dir, floor))
        if self.config.webhook_urls:
            needs.append(DiskNeed("the webhook spool", self.config.webhook_queue_dir, min(floor, 64 * 2**20)))
        return needs

    def _timing_observer(self, event: ev.RoomEvent) -> None:
        """Join latency (socket opened -> joined) for /metrics; wakes a drain when someone leaves."""
        match event:
            case ev.ParticipantJoined(participant_id=pid):
                conn = self.hub.connections.get(self.hub.conn_of.get(pid, ""))
                if conn is not None:
                    self.prometheus.join_latency.observe(max(0.0, self.driver.clock() - conn.opened_at))
            case ev.ParticipantLeft() | ev.RoomEnded():
                self._drained.set()
            case _:
                pass

    def metric_samples(self) -> list[Sample]:
        """Every figure of this node for /metrics."""
        d = self.driver
        out = signaling_samples(self.hub, len(d.sockets), d.clock() - d.started_at)
        if self.media is not None:
            peers = self.media.peer_ids()
            qualities = [(pid, q) for pid in peers if (q := self.media.quality(pid)) is not None]
            out += media_samples(len(peers), len(self.media.tracks()), qualities, self.media.adaptation_counts())
        if self.waveforms is not None:
            out += waveform_samples(self.waveforms.stats(), self.sink_failures)
        return out
