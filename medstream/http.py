"""HTTP and the websocket on one port (aiohttp): the node's I/O edge.

One port is what a hospital firewall admin wants to open, so the signaling websocket (`/ws`), the
browser pages, health, metrics, recordings and the API share it. aiohttp was chosen over the
`websockets` server this project started with because it takes request bodies (WHIP, the admin
API), streams files with ranges of any size through `sendfile` (recordings, off the event loop),
and its C HTTP parser and websocket reader cost less per join (measured: docs/architecture.md).

Fan-out writes each websocket frame to the socket's transport directly: the frame is built once
per message and written to every recipient without an await per recipient (the idea of
`websockets.broadcast`), and a reader that falls behind is cut off by the driver, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import resource
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSMsgType, web

from protocol.signaling import CLOSE_GOING_AWAY
from signaling.server import SignalingServer

log = logging.getLogger("medstream.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp4": "video/mp4",
    ".svg": "image/svg+xml",
}

_OP_TEXT, _OP_BINARY = 0x1, 0x2
DRAIN_LOW_WATER_BYTES = 64 * 1024  # a congested socket is written to again below this


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, unfragmented websocket frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


class WsSocket:
    """An aiohttp websocket as the driver's `Socket`: writes never wait."""

    # the last text frame built, shared by every recipient of one fan-out
    _last_text: str | None = None
    _last_frame: bytes = b""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.remote = request.remote
        self._transport = request.transport
        self._closing: asyncio.Task[bool] | None = None

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        """The TCP transport (tests cut a link by aborting it)."""
        return self._transport

    def send_text(self, frame: str) -> None:
        if frame is not WsSocket._last_text:
            WsSocket._last_text, WsSocket._last_frame = frame, ws_frame(_OP_TEXT, frame.encode())
        self._write(WsSocket._last_frame)

    def send_bytes(self, frame: bytes) -> None:
        self._write(ws_frame(_OP_BINARY, frame))

    def _write(self, data: bytes) -> None:
        t = self._transport
        if t is not None and not t.is_closing() and self._closing is None:
            t.write(data)

    def buffered_bytes(self) -> int:
        t = self._transport
        return t.get_write_buffer_size() if t is not None and not t.is_closing() else 0

    async def drain(self) -> None:
        while self.buffered_bytes() > DRAIN_LOW_WATER_BYTES and self._closing is None:
            await asyncio.sleep(0.005)

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self.ws.close(code=code, message=reason.encode()[:123]))

    def abort(self) -> None:
        t = self._transport
        if t is not None and not t.is_closing():
            t.abort()

    async def aclose(self, code: int, reason: str) -> None:
        self.close(code, reason)
        assert self._closing is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._closing), 5.0)


FD_RESERVE = 128  # descriptors kept free of websockets: listener, files, recordings, ICE sockets


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to its hard limit where it can; returns the soft
    limit in force (a server at the common 1,024 default runs out under a few hundred stalled
    connections plus media sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def origin_allowed(origin: str | None, host: str | None, secure: bool, allowed: tuple[str, ...]) -> bool:
    """May a websocket with this `Origin` header open? No header: not a browser, yes. A browser:
    the server's own origin (scheme://Host of the request) or one of `allowed` ('*': any)."""
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    if host is None:
        return False
    own = {f"{'https' if secure else 'http'}://{host}"}
    return origin.lower() in {o.lower() for o in own}


class ListenError(OSError):
    """Listening failed on `port`, the one `option` sets (a worker's own port, not --port)."""

    def __init__(self, exc: OSError, port: int, option: str) -> None:
        super().__init__(exc.errno, exc.strerror)
        self.port = port
        self.option = option


class HttpServer:
    """The aiohttp application: `/ws` for the driver, plus the routes the node adds."""

    def __init__(
        self,
        driver: SignalingServer,
        *,
        max_frame_bytes: int,
        static_root: Path | None = None,
        ping_interval_s: float = 40.0,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        self.driver = driver
        self.allowed_origins = allowed_origins
        self.fd_cap = 1 << 30  # websockets allowed by the descriptor limit (set at start)
        self.static_root = static_root
        self.max_frame_bytes = max_frame_bytes
        self.ping_interval_s = ping_interval_s
        self.app = web.Application(client_max_size=max_frame_bytes)
        self.app.router.add_get("/ws", self._websocket)
        self._runner: web.AppRunner | None = None
        self._sockets: set[WsSocket] = set()
        self.port: int | None = None
        self.own_port: int | None = None
        # a cluster: pages served by another node of it may open websockets here (their redirect)
        self.origin_of_peer: Callable[[str], bool] | None = None
        # a cluster node's join router: (conn id, text) -> True if it answered the frame itself
        self.before_join: Callable[[str, str], Awaitable[bool]] | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Add a route (aiohttp path syntax, e.g. `/recordings/{room}/{session}/{name}`)."""
        self.app.router.add_route(method, path, handler)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None, *,
                    reuse_port: bool = False, own_port: int | None = None) -> None:
        """Listen on host:port; with `ssl_context`, HTTPS and WSS on that same port.
        `reuse_port`: several worker processes share `port` (SO_REUSEPORT); `own_port`: this
        process alone also listens there (the address a cluster redirects to)."""
        self.fd_cap = max(16, raise_nofile_limit() - FD_RESERVE)
        self.driver.limit_connections(self.fd_cap)
        if self.static_root is not None:
            self.app.router.add_get("/", self._static)
            # last: pages and /static/*; not the API's or WHIP's paths, so their 404/405 (and Allow) are theirs
            self.app.router.add_get("/{path:(?!(?:api|whip|whep)/).*}", self._static)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024, ssl_context=ssl_context,
                           reuse_port=reuse_port or None)
        await site.start()
        self.port = _bound_port(site, port)
        self.own_port = self.port
        if own_port is not None:
            own = web.TCPSite(self._runner, host, own_port, backlog=1024, ssl_context=ssl_context)
            try:
                await own.start()
            except OSError as exc:
                raise ListenError(exc, own_port, "--node-port") from exc
            self.own_port = _bound_port(own, own_port)

    async def stop(self) -> None:
        """Close every websocket with GOING_AWAY (all at once), then the listener."""
        await asyncio.gather(*(s.aclose(CLOSE_GOING_AWAY, "server shutting down") for s in list(self._sockets)),
                             return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # Refusals come before the upgrade: they cost one small HTTP reply and no state.
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.host, request.secure, self.allowed_origins) and not (
                self.origin_of_peer is not None and origin is not None and self.origin_of_peer(origin)):
            return web.Response(status=403, text="websocket Origin not allowed\n")
        why = self.driver.admit(request.remote)
        if why is None and len(self._sockets) >= self.fd_cap:
            why = f"server full ({self.fd_cap} connections, the descriptor limit)"
        if why is not None:
            return web.Response(status=503, text=why + "\n", headers={"Retry-After": "5"})
        # aiohttp gives up on a ping after heartbeat/2: 20 s, as lenient as a congested township
        # link needs (a ping queued behind video on a 200 kbit/s link can take seconds)
        ws = web.WebSocketResponse(
            max_msg_size=self.max_frame_bytes, compress=False, heartbeat=self.ping_interval_s, autoping=True,
        )
        await ws.prepare(request)
        socket = WsSocket(ws, request)
        self._sockets.add(socket)
        conn_id = self.driver.opened(socket, request.remote)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    gate = self.before_join
                    if gate is not None and self.driver.hub.participant_of(conn_id) is None \
                            and await gate(conn_id, msg.data):
                        continue
                    self.driver.text(conn_id, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self.driver.binary(conn_id, msg.data)
        except Exception as exc:  # one line: a peer that can trigger it must not flood the log
            log.error("connection %s failed: %s: %s", conn_id, type(exc).__name__, str(exc)[:200])
        finally:
            self._sockets.discard(socket)
            self.driver.closed(conn_id)
        return ws

    async def _static(self, request: web.Request) -> web.StreamResponse:
        """Pages and their modules below `static_root`; nothing outside it."""
        assert self.static_root is not None
        rel = request.match_info.get("path", "").removeprefix("static/") or "index.html"
        if not (request.path == "/" or request.path.startswith("/static/") or rel.endswith(".html")):
            return not_found(request.path)
        path = safe_path(self.static_root, rel)
        if path is not None and path.is_dir():
            path = path / "index.html"
        if path is None or not path.is_file():
            return not_found(request.path)
        return web.FileResponse(path, headers={"Content-Type": content_type(path), "Cache-Control": "no-cache"})


def _bound_port(site: web.TCPSite, asked: int) -> int:
    server = site._server  # the listening asyncio.Server: the only way to learn an ephemeral port
    sockets = getattr(server, "sockets", None) or ()
    return int(sockets[0].getsockname()[1]) if sockets else asked


def safe_path(root: Path, rel: str) -> Path | None:
    """`root/rel` if it stays below `root` (no traversal, no symlinks out), else None."""
    try:
        path = (root / rel.lstrip("/")).resolve()
        path.relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return path


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def not_found(path: str) -> web.Response:
    return web.Response(status=404, text=f"not found: {path}\n")


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=(json.dumps(body) + "\n").encode(),
                        headers={"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})})
