"""The driver of the sans-I/O `Hub`: sockets in, effects out, and nothing else.

A driver is three steps (websockets' `asyncio/connection.py`): feed the core, write its output,
dispatch its events. The node's HTTP layer owns the sockets and adapts each one to `Socket`; it
calls `opened` / `text` / `binary` / `closed`. Sends are encoded once per message and written
without waiting for slow readers; closes are scheduled. Every effect that is not about sockets or
the audit log (media, waveforms, recording, room events) goes to the handler the node registered
for its type, so this package knows none of those parts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from protocol import signaling as wire
from protocol.signaling import CLOSE_POLICY
from signaling import effects as fx
from signaling.audit import AuditLog
from signaling.hub import Hub

log = logging.getLogger("medstream.server")

SLOW_CLIENT_BUFFER_BYTES = 4 * 1024 * 1024  # a reader this far behind is cut off, not waited for

E = TypeVar("E")


class Socket(Protocol):
    """One client websocket as the driver needs it; never blocks."""

    def send_text(self, frame: str) -> None:
        """Queue a text frame (the same str object may be sent to many sockets in a row)."""

    def send_bytes(self, frame: bytes) -> None:
        """Queue a binary frame."""

    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel (how far behind the reader is)."""

    async def drain(self) -> None:
        """Wait until the socket takes data again (returns at once when it is not congested)."""

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued (idempotent); the HTTP layer then calls `closed`."""


BinaryRoute = Callable[[str, str, bytes, Socket], None]
"""(room id, publisher participant id, frame, the publisher's socket) for an admitted binary frame."""


class SignalingServer:
    """Drives one `Hub` from the sockets the HTTP layer hands it."""

    def __init__(
        self,
        hub: Hub,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
        tick_interval_s: float = 1.0,
    ) -> None:
        self.hub = hub
        self.audit = audit or AuditLog(None)
        self.clock = clock
        self.tick_interval_s = tick_interval_s
        self.sockets: dict[str, Socket] = {}
        self.started_at = clock()
        self.on_binary: BinaryRoute | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {}
        self._unhandled: set[type] = set()
        self._tick_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ wiring

    def handle(self, effect_type: type[E], handler: Callable[[E], None]) -> None:
        """Carry out effects of `effect_type` with `handler` (one handler per type)."""
        if effect_type in self._handlers:
            raise ValueError(f"a handler for {effect_type.__name__} is already registered")
        self._handlers[effect_type] = handler

    def socket_of(self, participant_id: str) -> Socket | None:
        """The socket a joined participant is connected through, if any."""
        conn_id = self.hub.conn_of.get(participant_id)
        return self.sockets.get(conn_id) if conn_id is not None else None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the timer that drives handshake/idle timeouts and resume grace."""
        if self._tick_task is None:
            self._tick_task = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        """Stop the timer and close the audit log (sockets are closed by the HTTP layer)."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
            self._tick_task = None
        self.audit.close()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            try:
                self.apply(self.hub.tick(self.clock()))
            except Exception:
                log.exception("tick failed")

    # ------------------------------------------------------------------ sockets in

    def opened(self, socket: Socket) -> str:
        """A websocket opened on /ws; returns its connection id."""
        conn_id = self.hub.connect(self.clock())
        self.sockets[conn_id] = socket
        return conn_id

    def text(self, conn_id: str, frame: str) -> None:
        self.apply(self.hub.receive_text(conn_id, frame, self.clock()))

    def binary(self, conn_id: str, frame: bytes) -> None:
        effects, route = self.hub.receive_binary(conn_id, len(frame), self.clock())
        self.apply(effects)
        if route is None:
            return
        socket = self.sockets.get(conn_id)
        if self.on_binary is None or socket is None:
            self.apply([fx.SendConn(conn_id, wire.Error(wire.Reason.INTERNAL, "waveforms are not enabled"))])
            return
        self.on_binary(route[0], route[1], frame, socket)

    def closed(self, conn_id: str) -> None:
        self.sockets.pop(conn_id, None)
        self.apply(self.hub.disconnect(conn_id, self.clock()))

    # ------------------------------------------------------------------ effects out

    def apply(self, effects: list[fx.Effect]) -> None:
        """Carry out the hub's effects in order. Never blocks; a failing one is logged, the rest
        still run."""
        for e in effects:
            try:
                self._apply_one(e)
            except Exception:
                log.exception("effect %s failed", type(e).__name__)

    def _apply_one(self, e: fx.Effect) -> None:
        match e:
            case fx.Send(to=to, message=message):
                targets = [s for pid in to if (s := self.socket_of(pid)) is not None]
                if targets:
                    self._send(targets, wire.encode(message))
            case fx.SendConn(conn_id=conn_id, message=message):
                if (socket := self.sockets.get(conn_id)) is not None:
                    self._send([socket], wire.encode(message))
            case fx.CloseConn(conn_id=conn_id, code=code, reason=reason):
                if (socket := self.sockets.get(conn_id)) is not None:
                    socket.close(code, reason)
            case fx.Audit():
                self.audit.record(e, self.clock())
            case _:
                handler = self._handlers.get(type(e))
                if handler is not None:
                    handler(e)
                elif type(e) not in self._unhandled:  # a part that is off on this node
                    self._unhandled.add(type(e))
                    log.debug("no handler for %s on this node", type(e).__name__)

    def _send(self, targets: list[Socket], text_frame: str) -> None:
        for socket in targets:
            if socket.buffered_bytes() > SLOW_CLIENT_BUFFER_BYTES:
                log.warning("closing a connection that reads too slowly")
                socket.close(CLOSE_POLICY, "client reads too slowly")
                continue
            socket.send_text(text_frame)
