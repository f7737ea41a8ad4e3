"""The waveform journal: every monitor frame of a room, in order, in a Redis Stream.

A room's node appends each frame a monitor sends (`XADD {p}wf:{room}`) and only then lets the
relay's `ack` go back to the monitor, so every sample a monitor has freed is in Redis. When the
node dies, the node that takes the room over replays the journal into its relay: the streams'
sample ranges, segments and owners are what they were, the monitor's back-fill of what it still
holds is trimmed to the samples not seen, and nothing is lost or stored twice.

While a write fails, acks are held and the batch retried (a slow Redis loses nothing); after
`max_hold_s` of failures acks go out unjournaled (the local relay and recorder have the samples)
and the journal is paused, loudly, until the node's heartbeat reaches Redis again: a failover in
that window could not back-fill from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster.records import SealError, as_bytes, as_text, seal, unseal

log = logging.getLogger("medstream.cluster.journal")

Send = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    publisher_id: str
    identity: str
    frame: bytes


@dataclass(slots=True)
class _Pending:
    room: str
    entry: JournalEntry
    replies: list[bytes]
    send: Send


class WaveformJournal:
    """Appends frames in order, one pipelined batch at a time; replies follow their batch.

    `max_entries`: per room, the stream is trimmed (approximately) beyond this many frames; at a
    monitor's 4 frames/s and 20 monitors a room, 200,000 frames are about 40 minutes."""

    def __init__(self, redis: Redis, secret: bytes, prefix: str = "ms:", max_entries: int = 200_000,
                 max_hold_s: float = 3.0) -> None:
        self.redis = redis
        self.max_hold_s = max_hold_s  # acks held this long while Redis fails, then sent unjournaled
        self.secret = secret
        self.p = prefix
        self.max_entries = max_entries
        self.appended = 0
        self.paused = False
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._release_all()

    def append(self, room: str, publisher_id: str, identity: str, frame: bytes, replies: list[bytes],
               send: Send) -> None:
        """Journal `frame`; `send(reply)` each reply once it is in Redis (at once while paused)."""
        if self.paused or self._task is None:
            for r in replies:
                send(r)
            return
        self._pending.append(_Pending(room, JournalEntry(publisher_id, identity, frame), replies, send))
        self._wake.set()

    def _release_all(self) -> None:
        batch, self._pending = self._pending, []
        for item in batch:
            self._reply(item)

    @staticmethod
    def _reply(item: _Pending) -> None:
        for r in item.replies:
            try:
                item.send(r)
            except Exception as exc:  # a socket gone meanwhile: the monitor re-sends, trimmed
                log.debug("ack after journaling not sent: %r", exc)

    async def _flush_loop(self) -> None:
        failing_since: float | None = None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for item in batch:
                        e = item.entry
                        pipe.xadd(f"{self.p}wf:{item.room}",
                                  {"p": e.publisher_id, "i": e.identity, "f": seal(self.secret, e.frame)},
                                  maxlen=self.max_entries, approximate=True)
                    await pipe.execute()
                self.appended += len(batch)
                failing_since = None
            except (RedisError, OSError) as exc:
                # a slow or briefly unreachable Redis: hold the acks and retry (the monitors keep
                # their samples); only after `max_hold_s` of failures do acks go out unjournaled
                now = asyncio.get_running_loop().time()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since < self.max_hold_s:
                    self._pending[:0] = batch
                    await asyncio.sleep(0.2)
                    self._wake.set()
                    continue
                log.error("waveform journal paused (Redis: %s): acks go out unjournaled; "
                          "a failover now cannot back-fill these samples", exc)
                self.paused = True
                failing_since = None
            for item in batch:
                self._reply(item)

    def resume(self) -> None:
        """Redis is back: journal again from the next frame."""
        if self.paused:
            log.warning("waveform journal resumed")
        self.paused = False

    async def replay(self, room: str) -> list[JournalEntry]:
        """Every frame of the room's journal, oldest first (entries that fail their seal skipped)."""
        out: list[JournalEntry] = []
        last = "-"
        while True:
            rows = await self.redis.xrange(f"{self.p}wf:{room}", min=last, max="+", count=5000)
            if last != "-" and rows:
                rows = rows[1:]  # min is inclusive
            if not rows:
                return out
            for entry_id, fields in rows:
                try:
                    row = dict(fields or {})
                    frame = unseal(self.secret, as_bytes(row[b"f"]))
                    out.append(JournalEntry(as_text(row[b"p"]), as_text(row[b"i"]), frame))
                except (SealError, KeyError):
                    log.warning("journal of room %s: entry %s not sealed by this cluster, skipped", room, entry_id)
            last = as_text(rows[-1][0])

    async def drop(self, room: str) -> None:
        """The room ended: its journal goes."""
        await self.redis.delete(f"{self.p}wf:{room}")
