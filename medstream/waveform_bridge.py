"""Waveforms <-> sockets: monitors' binary frames into the relay, viewers' outboxes onto sockets.

The relay is socket-free; the hub decides who may publish and who views. This bridge carries
the hub's waveform effects out on the relay and runs one writer task per viewer, which waits
only for its own socket: a congested viewer's frames stay in its outbox, where the relay's
overflow policy applies (see `waveforms.outbox`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from signaling import effects as fx
from signaling.server import SignalingServer, Socket
from waveforms import StoreSink, ViewerOutbox, WaveformStats
from waveforms.relay import SnapshotIntake

log = logging.getLogger("medstream.waveforms")

VIEWER_BURST_BUFFER_BYTES = 256 * 1024  # waveform frames written per wake-up while under this


class Relay(Protocol):
    """What the node needs of `waveforms.relay.WaveformRelay`."""

    on_snapshot: SnapshotIntake | None  # where 12-lead snapshots go (the reading desk)

    def on_publisher_frame(self, group: str, publisher_id: str, data: bytes) -> list[bytes]: ...
    def set_publisher_identity(self, group: str, publisher_id: str, identity: str) -> None: ...
    def publisher_disconnected(self, group: str, publisher_id: str) -> None: ...
    def add_viewer(self, group: str, viewer_id: str) -> ViewerOutbox: ...
    def remove_viewer(self, group: str, viewer_id: str) -> None: ...
    def close_group(self, group: str) -> None: ...
    def add_store_sink(self, group: str, sink: StoreSink) -> None: ...
    def remove_store_sink(self, group: str, sink: StoreSink) -> None: ...
    def stats(self) -> WaveformStats: ...
    async def run_analysis(self, interval_s: float = 0.2) -> None: ...
    def observe_analysis_steps(self, observe: Callable[[float], None]) -> None: ...


class WaveformBridge:
    """Registers the waveform handlers on the driver and owns the viewer writer tasks."""

    def __init__(self, driver: SignalingServer, relay: Relay) -> None:
        self.driver = driver
        self.relay = relay
        self._viewer_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._analysis: asyncio.Task[None] | None = None
        self.on_relay_latency: Callable[[float], None] | None = None  # seconds a frame waited for its viewer
        # a cluster's waveform journal: (room, publisher, identity, frame, replies, send) journals the
        # frame and sends the replies (acks) once it is stored (cluster.journal)
        self.journal: Callable[[str, str, str, bytes, list[bytes], Callable[[bytes], None]], None] | None = None
        self._identities: dict[tuple[str, str], str] = {}
        driver.on_binary = self._publisher_frame
        driver.handle(fx.WaveformViewer, self._viewer)
        driver.handle(fx.WaveformPublisher, self._publisher)
        driver.handle(fx.WaveformPublisherGone, self._publisher_gone)
        driver.handle(fx.WaveformGroupClosed, self._group_closed)

    def start(self) -> None:
        """Start the analysis loop (its DSP runs in a worker thread)."""
        if self._analysis is None:
            self._analysis = asyncio.get_running_loop().create_task(self.relay.run_analysis())

    async def close(self) -> None:
        tasks = list(self._viewer_tasks.values()) + ([self._analysis] if self._analysis else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._viewer_tasks.clear()
        self._analysis = None

    def _publisher(self, e: fx.WaveformPublisher) -> None:
        self.relay.set_publisher_identity(e.room_id, e.participant_id, e.identity)
        self._identities[(e.room_id, e.participant_id)] = e.identity

    def _publisher_gone(self, e: fx.WaveformPublisherGone) -> None:
        self.relay.publisher_disconnected(e.room_id, e.participant_id)
        self._identities.pop((e.room_id, e.participant_id), None)

    def _group_closed(self, e: fx.WaveformGroupClosed) -> None:
        self.relay.close_group(e.room_id)
        for key in [k for k in self._identities if k[0] == e.room_id]:
            del self._identities[key]

    def _publisher_frame(self, room_id: str, publisher_id: str, frame: bytes, socket: Socket) -> None:
        replies = self.relay.on_publisher_frame(room_id, publisher_id, frame)
        if self.journal is not None:
            identity = self._identities.get((room_id, publisher_id), publisher_id)
            self.journal(room_id, publisher_id, identity, frame, replies, socket.send_bytes)
            return
        for reply in replies:
            socket.send_bytes(reply)

    def _viewer(self, e: fx.WaveformViewer) -> None:
        key = (e.room_id, e.participant_id)
        old = self._viewer_tasks.pop(key, None)
        if old is not None:
            old.cancel()
        if not e.add:
            self.relay.remove_viewer(e.room_id, e.participant_id)
            return
        outbox = self.relay.add_viewer(e.room_id, e.participant_id)
        task = asyncio.get_running_loop().create_task(self._drain(e.participant_id, outbox))
        self._viewer_tasks[key] = task

        def forget(t: asyncio.Task[None]) -> None:
            if self._viewer_tasks.get(key) is t:
                del self._viewer_tasks[key]

        task.add_done_callback(forget)

    async def _drain(self, pid: str, outbox: ViewerOutbox) -> None:
        """Write one viewer's outbox to its socket: wait while the socket is congested, then write
        whatever is queued without a per-frame await while the socket's buffer stays small."""
        while True:
            frame = await outbox.get()
            if frame is None:  # the viewer was removed or its room closed
                return
            socket = self.driver.socket_of(pid)
            if socket is None:
                continue  # reconnecting: the relay's overflow policy bounds what piles up
            await socket.drain()
            socket.send_bytes(frame)
            observe = self.on_relay_latency
            if observe is not None:
                observe(outbox.last_age_s)
            while socket.buffered_bytes() < VIEWER_BURST_BUFFER_BYTES and (frame := outbox.get_nowait()) is not None:
                socket.send_bytes(frame)
                if observe is not None:
                    observe(outbox.last_age_s)
