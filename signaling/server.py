"""The I/O edge: websockets and HTTP on one port, driving the sans-I/O `Hub`.

Each socket gets a connection id from the hub; its frames go in, the hub's effects come out and
are carried out here: sends (encoded once, written without waiting for slow readers), closes,
media commands (serialised per participant onto the SFU), waveform routing, recording and audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import websockets
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from protocol import signaling as wire
from protocol.signaling import CLOSE_GOING_AWAY, CLOSE_POLICY, RoomKind
from signaling import effects as fx
from signaling.audit import AuditLog
from signaling.http import HttpResponse, not_found, split_path, static_file, text
from signaling.hub import Hub
from signaling.metrics import Sample, render

log = logging.getLogger("medstream.server")

SLOW_CLIENT_BUFFER_BYTES = 4 * 1024 * 1024  # a reader this far behind is cut off, not waited for
VIEWER_BURST_BUFFER_BYTES = 256 * 1024  # waveform frames written per wake-up while under this


class MediaBackend(Protocol):
    """What the server needs of media_server.Sfu (see docs/architecture.md)."""

    async def open_peer(self, peer_id: str) -> None: ...
    async def close_peer(self, peer_id: str) -> None: ...
    async def request_publish(self, peer_id: str, kinds: frozenset[str]) -> None: ...
    async def unpublish(self, peer_id: str, kind: str) -> None: ...
    async def subscribe(self, peer_id: str, track_ids: Any) -> None: ...
    async def unsubscribe(self, peer_id: str, track_ids: Any) -> None: ...
    async def set_video_paused(self, peer_id: str, paused: bool) -> None: ...
    def set_muted(self, track_id: str, muted: bool) -> None: ...
    async def on_answer(self, peer_id: str, sdp: str) -> None: ...
    async def on_candidate(self, peer_id: str, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None) -> None: ...
    async def close(self) -> None: ...


@dataclass
class ServerParts:
    """Optional collaborators; each may be None (signaling-only server in tests)."""

    media: Any = None  # media_server.sfu.Sfu
    waveforms: Any = None  # media_server.waveform_relay.WaveformRelay
    recorder: Any = None  # recorder integration: start(room, by) / stop(room, by)
    static_root: Path | None = None
    extra_http: Callable[[str, str, Headers], HttpResponse | None] | None = None
    extra_metrics: Callable[[], list[Sample]] | None = None


class SerialRunner:
    """Runs coroutines for one key strictly in order (media commands of one participant)."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Task[None]] = {}

    def submit(self, key: str, make: Callable[[], Awaitable[None]], on_error: Callable[[BaseException], None]) -> None:
        previous = self._tails.get(key)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await make()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reported to the participant, never kills the server
                on_error(exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tails[key] = task
        task.add_done_callback(lambda t, k=key: self._tails.pop(k, None) if self._tails.get(k) is t else None)

    async def drain(self) -> None:
        while self._tails:
            await asyncio.wait(list(self._tails.values()))


class SignalingServer:
    """Serves `/ws` (signaling + waveforms) and HTTP GET on one host:port."""

    def __init__(
        self,
        hub: Hub,
        *,
        audit: AuditLog | None = None,
        parts: ServerParts | None = None,
        clock: Callable[[], float] = time.time,
        tick_interval_s: float = 1.0,
    ) -> None:
        self.hub = hub
        self.audit = audit or AuditLog(None)
        self.parts = parts or ServerParts()
        self.clock = clock
        self.tick_interval_s = tick_interval_s
        self.sockets: dict[str, ServerConnection] = {}
        self.started_at = clock()
        self._media_runner = SerialRunner()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._viewer_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str, port: int) -> None:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=self.hub.config.max_frame_bytes,
            max_queue=64,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=self.hub.config.handshake_timeout_s,
            compression=None,  # per-message deflate costs CPU on every fan-out
        )
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else port
        self._spawn(self._tick_loop())
        if self.parts.waveforms is not None and hasattr(self.parts.waveforms, "run_analysis"):
            self._spawn(self.parts.waveforms.run_analysis())

    async def stop(self) -> None:
        """Close every socket with GOING_AWAY, then the media layer and the audit log."""
        for task in list(self._tasks) + list(self._viewer_tasks.values()):
            task.cancel()
        if self._server is not None:
            self._server.close(close_connections=False)
            # all at once: each close may wait up to its close timeout for a silent client
            await asyncio.gather(
                *(ws.close(CLOSE_GOING_AWAY, "server shutting down") for ws in list(self.sockets.values())),
                return_exceptions=True,
            )
            await self._server.wait_closed()
            self._server = None
        if self.parts.media is not None:
            await self.parts.media.close()
        self.audit.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            try:
                self.apply(self.hub.tick(self.clock()))
            except Exception:
                log.exception("tick failed")

    # ------------------------------------------------------------------ websocket

    async def _handle(self, ws: ServerConnection) -> None:
        if split_path(ws.request.path if ws.request else "/ws")[0] != "/ws":
            await ws.close(CLOSE_POLICY, "websocket endpoint is /ws")
            return
        conn_id = self.hub.connect(self.clock())
        self.sockets[conn_id] = ws
        try:
            async for frame in ws:
                now = self.clock()
                if isinstance(frame, str):
                    self.apply(self.hub.receive_text(conn_id, frame, now))
                else:
                    self._binary(conn_id, frame, now)
        except websockets.ConnectionClosed:
            pass
        except Exception:
            log.exception("connection %s failed", conn_id)
        finally:
            self.sockets.pop(conn_id, None)
            self.apply(self.hub.disconnect(conn_id, self.clock()))

    def _binary(self, conn_id: str, frame: bytes, now: float) -> None:
        effects, route = self.hub.receive_binary(conn_id, len(frame), now)
        self.apply(effects)
        if route is None:
            return
        relay = self.parts.waveforms
        if relay is None:
            self.apply([fx.SendConn(conn_id, wire.Error(wire.Reason.INTERNAL, "waveforms are not enabled"))])
            return
        room_id, pid = route
        ws = self.sockets.get(conn_id)
        for reply in relay.on_publisher_frame(room_id, pid, frame):
            if ws is not None:
                broadcast([ws], reply)

    # ------------------------------------------------------------------ effects

    def apply(self, effects: list[fx.Effect]) -> None:
        """Carry out the hub's effects in order. Never blocks; media work is queued."""
        for e in effects:
            try:
                self._apply_one(e)
            except Exception:
                log.exception("effect %s failed", type(e).__name__)

    def _apply_one(self, e: fx.Effect) -> None:
        if isinstance(e, fx.Send):
            targets = [self.sockets[c] for pid in e.to if (c := self.hub.conn_of.get(pid)) in self.sockets]
            if targets:
                self._send(targets, wire.encode(e.message))
        elif isinstance(e, fx.SendConn):
            ws = self.sockets.get(e.conn_id)
            if ws is not None:
                self._send([ws], wire.encode(e.message))
        elif isinstance(e, fx.CloseConn):
            ws = self.sockets.get(e.conn_id)
            if ws is not None:
                self._spawn(ws.close(e.code, e.reason))
        elif isinstance(e, fx.Audit):
            self.audit.record(e, self.clock())
        elif isinstance(e, fx.WaveformViewer):
            self._waveform_viewer(e)
        elif isinstance(e, fx.WaveformPublisherGone):
            if self.parts.waveforms is not None:
                self.parts.waveforms.publisher_disconnected(e.room_id, e.participant_id)
        elif isinstance(e, fx.WaveformGroupClosed):
            if self.parts.waveforms is not None:
                self.parts.waveforms.close_group(e.room_id)
        elif isinstance(e, (fx.StartRecorder, fx.StopRecorder)):
            self._recording(e)
        else:
            self._media(e)

    def _send(self, targets: list[ServerConnection], text_frame: str) -> None:
        for ws in targets:
            transport = ws.transport
            if transport is not None and transport.get_write_buffer_size() > SLOW_CLIENT_BUFFER_BYTES:
                log.warning("closing %s: it reads too slowly", ws.remote_address)
                self._spawn(ws.close(CLOSE_POLICY, "client reads too slowly"))
        broadcast(targets, text_frame)

    def _media(self, e: fx.Effect) -> None:
        media = self.parts.media
        pid = getattr(e, "participant_id", None) or getattr(e, "track_id", "")
        if media is None:
            if isinstance(e, (fx.OpenPeer, fx.RequestPublish, fx.SubscribeTracks)) and pid:
                self.apply(self.hub.to_participant(pid, wire.Error(wire.Reason.INTERNAL, "media is not enabled on this server")))
            return
        make: Callable[[], Awaitable[None]]
        request_id = None
        if isinstance(e, fx.OpenPeer):
            make = lambda: media.open_peer(e.participant_id)  # noqa: E731
        elif isinstance(e, fx.ClosePeer):
            make = lambda: media.close_peer(e.participant_id)  # noqa: E731
        elif isinstance(e, fx.RequestPublish):
            make = lambda: media.request_publish(e.participant_id, e.kinds)  # noqa: E731
        elif isinstance(e, fx.StopPublishing):
            make = lambda: media.unpublish(e.participant_id, e.kind)  # noqa: E731
        elif isinstance(e, fx.SubscribeTracks):
            make = lambda: media.subscribe(e.participant_id, e.track_ids)  # noqa: E731
        elif isinstance(e, fx.UnsubscribeTracks):
            make = lambda: media.unsubscribe(e.participant_id, e.track_ids)  # noqa: E731
        elif isinstance(e, fx.PauseVideo):
            make = lambda: media.set_video_paused(e.participant_id, e.paused)  # noqa: E731
        elif isinstance(e, fx.RemoteAnswer):
            make = lambda: media.on_answer(e.participant_id, e.sdp)  # noqa: E731
            request_id = e.request_id
        elif isinstance(e, fx.RemoteCandidate):
            make = lambda: media.on_candidate(e.participant_id, e.candidate, e.sdp_mid, e.sdp_mline_index)  # noqa: E731
        elif isinstance(e, fx.MuteTrack):
            media.set_muted(e.track_id, e.muted)
            return
        else:
            raise TypeError(f"unknown effect {e!r}")

        def on_error(exc: BaseException) -> None:
            reason = getattr(exc, "reason", None)
            wire_reason = _wire_reason(getattr(reason, "value", None))
            if wire_reason is wire.Reason.INTERNAL and isinstance(e, fx.RemoteAnswer) and reason is not None:
                wire_reason = wire.Reason.INVALID_SDP  # an answer the SFU did not expect: the client's doing
            if wire_reason is wire.Reason.INTERNAL:
                log.error("media command %s for %s failed: %r", type(e).__name__, pid, exc)
            self.apply(self.hub.to_participant(pid, wire.Error(wire_reason, str(exc) or type(exc).__name__, request_id)))

        self._media_runner.submit(pid, make, on_error)

    def on_media_event(self, event: Any) -> None:
        """Callback for media_server events: turn them into room updates and messages."""
        name = type(event).__name__
        pid = getattr(event, "peer_id", None)
        if name == "OfferReady":
            self.apply(self.hub.to_participant(pid, wire.ServerSdp("offer", event.sdp)))
        elif name == "CandidateReady":
            self.apply(self.hub.to_participant(pid, wire.ServerCandidate(event.candidate, event.sdp_mid, event.sdp_mline_index)))
        elif name == "TrackPublished":
            self.apply(self.hub.track_published(pid, event.track_id, event.kind, event.codec))
        elif name == "TrackEnded":
            self.apply(self.hub.track_ended(pid, event.track_id))
        elif name == "PeerFailed":
            self.hub.media_closed(pid)
        elif name == "MediaError":
            wire_reason = _wire_reason(getattr(event.reason, "value", event.reason))
            self.apply(self.hub.to_participant(pid, wire.Error(wire_reason, event.message)))
        elif name == "QualityReport":
            q = event.quality
            self.apply(self.hub.quality(pid, wire.Quality(
                pid,
                getattr(q, "bitrate_kbps", None),
                getattr(q, "loss_pct", None),
                getattr(q, "rtt_ms", None),
                getattr(q, "jitter_ms", None),
            )))
        else:
            log.debug("media event %s ignored", name)

    def _waveform_viewer(self, e: fx.WaveformViewer) -> None:
        relay = self.parts.waveforms
        if relay is None:
            return
        key = (e.room_id, e.participant_id)
        if not e.add:
            relay.remove_viewer(e.room_id, e.participant_id)
            task = self._viewer_tasks.pop(key, None)
            if task is not None:
                task.cancel()
            return
        outbox = relay.add_viewer(e.room_id, e.participant_id)
        old = self._viewer_tasks.pop(key, None)
        if old is not None:
            old.cancel()
        task = asyncio.ensure_future(self._drain_viewer(e.participant_id, outbox))
        self._viewer_tasks[key] = task
        task.add_done_callback(lambda t, k=key: self._viewer_tasks.pop(k, None) if self._viewer_tasks.get(k) is t else None)

    async def _drain_viewer(self, pid: str, outbox: Any) -> None:
        """Write one viewer's waveform outbox to its socket; waits only for this viewer.

        After one awaited send (which waits while the socket is congested), whatever else is
        queued is written without a per-frame await as long as the socket's write buffer stays
        small: one wake-up per burst, not per frame. A congested viewer's frames stay in the
        outbox, where the relay's overflow policy applies."""
        while True:
            frame = await outbox.get()
            if frame is None:  # the viewer was removed or its room closed
                return
            ws = self.sockets.get(self.hub.conn_of.get(pid, ""))
            if ws is None:
                continue  # reconnecting: the relay's overflow policy bounds what piles up
            try:
                await ws.send(frame)
            except websockets.ConnectionClosed:
                continue
            while (
                (transport := ws.transport) is not None
                and transport.get_write_buffer_size() < VIEWER_BURST_BUFFER_BYTES
                and (frame := outbox.get_nowait()) is not None
            ):
                broadcast([ws], frame)

    def _recording(self, e: fx.StartRecorder | fx.StopRecorder) -> None:
        recorder = self.parts.recorder
        if recorder is None:
            if isinstance(e, fx.StartRecorder):
                self.apply(self.hub.recording_failed(e.room_id, "recording is not enabled on this server"))
            return
        if isinstance(e, fx.StartRecorder):
            self._spawn(recorder.start(e.room_id, e.by))
        else:
            self._spawn(recorder.stop(e.room_id, e.by))

    # ------------------------------------------------------------------ HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, query = split_path(request.path)
        if path == "/ws":
            return None  # websocket handshake proceeds
        try:
            resp = self._http(path, query, request.headers)
        except Exception:
            log.exception("HTTP %s failed", path)
            resp = text(500, "internal error\n")
        headers = Headers(resp.headers)
        headers["Content-Length"] = str(len(resp.body))
        headers["Connection"] = "close"
        return Response(resp.status, _REASONS.get(resp.status, "OK"), headers, resp.body)

    def _http(self, path: str, query: str, headers: Headers) -> HttpResponse:
        if path == "/healthz":
            return text(200, '{"status":"ok"}\n', "application/json")
        if path == "/metrics":
            return text(200, render(self.metric_samples()), "text/plain; version=0.0.4; charset=utf-8")
        if self.parts.extra_http is not None:
            resp = self.parts.extra_http(path, query, headers)
            if resp is not None:
                return resp
        if self.parts.static_root is not None and (path == "/" or path.startswith("/static/") or path.endswith(".html")):
            return static_file(self.parts.static_root, path.removeprefix("/static"))
        return not_found(path)

    def metric_samples(self) -> list[Sample]:
        m = self.hub.metrics
        rooms = list(self.hub.store.rooms())
        samples = [
            Sample("medstream_rooms", len(rooms), help="open rooms"),
            Sample("medstream_participants", sum(len(r.participants) for r in rooms), help="participants in rooms"),
            Sample("medstream_connections", len(self.sockets), help="open websocket connections"),
            Sample("medstream_joins_total", m.joins, kind="counter", help="successful joins"),
            Sample("medstream_resumes_total", m.resumes, kind="counter", help="resumed participants"),
            Sample("medstream_uptime_seconds", self.clock() - self.started_at),
        ]
        for kind in RoomKind:
            samples.append(Sample("medstream_rooms_by_kind", sum(r.kind is kind for r in rooms), (("kind", kind.value),)))
        for msg_type, n in sorted(m.messages_in.items()):
            samples.append(Sample("medstream_messages_total", n, (("type", msg_type),), "counter", "messages received"))
        for reason, n in sorted(m.errors.items()):
            samples.append(Sample("medstream_errors_total", n, (("reason", reason),), "counter", "error replies sent"))
        if self.parts.extra_metrics is not None:
            samples += self.parts.extra_metrics()
        return samples


def _wire_reason(value: object) -> wire.Reason:
    """The protocol reason for a media-layer reason value (they share names where they overlap)."""
    try:
        return wire.Reason(value)
    except ValueError:
        return wire.Reason.INTERNAL


_REASONS = {200: "OK", 206: "Partial Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found",
            416: "Range Not Satisfiable", 500: "Internal Server Error"}
