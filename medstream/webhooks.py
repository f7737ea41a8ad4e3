"""Webhooks: the hospital system hears what happened (room started/ended, participant joined/left,
recording started/ready with its manifest, alarm raised/cleared, a 12-lead ECG report signed:
`ecg_report_signed`, published by medstream.readings_http), signed, at least once.

Delivery (per destination URL, in order, one request in flight):
- An event is queued in memory at once (the observer never waits), then written to the
  destination's spool directory (`<queue_dir>/<sha256(url)[:16]>/<seq>.json`, the exact body) by a
  worker thread, before its first attempt: a receiver that is down for minutes, or a node that is
  restarted meanwhile, misses nothing. The file is removed after a 2xx.
- Failures (connection refused, timeout, 5xx, 408, 429) are retried with exponential backoff and
  jitter, from `backoff_initial_s` up to `backoff_max_s`, for ever; a receiver that refuses the
  request itself (another 4xx) gets `max_refused_attempts` tries, then the event is dropped and
  logged as an error (it would block every later one).
- The spool is bounded (`max_queued` events per destination): when full, the oldest event is
  dropped, logged as an error and counted (`dropped`): the node never fills its disk for a
  receiver that is gone.
- At least once: a receiver deduplicates by the `Medstream-Event-Id` header (= the body's `id`).

Signature: `Medstream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`,
made at each attempt; `verify_signature` is what a receiver runs (reject if the time is off by
more than its tolerance: a replayed old request fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from protocol.waveforms import AlarmInfo, Analysis, Announce
from signaling import events as ev

log = logging.getLogger("medstream.webhooks")

SIGNATURE_HEADER = "Medstream-Signature"
EVENT_ID_HEADER = "Medstream-Event-Id"
EVENT_HEADER = "Medstream-Event"
RETRIED_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how events are delivered (units in the names)."""

    urls: tuple[str, ...]
    secret: str
    queue_dir: Path = Path("var/webhooks")
    max_queued: int = 10_000  # per destination, in memory and on disk together
    timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_refused_attempts: int = 5

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("webhooks need a signing secret (webhook_secret / MEDSTREAM_WEBHOOK_SECRET)")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook URL must start with http:// or https://, got {url!r}")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Medstream-Signature` header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300.0) -> bool:
    """True if `header` signs `body` with `secret` and its time is within `tolerance_s` of `now`."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, t), header)


@dataclass
class DestinationStats:
    delivered: int = 0
    attempts: int = 0
    failures: int = 0
    dropped: int = 0  # queue full, or refused by the receiver max_refused_attempts times


class Destination:
    """One URL's ordered, spooled, retried delivery (see the module docstring)."""

    def __init__(self, url: str, config: WebhookConfig, session: aiohttp.ClientSession,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.config = config
        self.session = session
        self.clock = clock
        self.directory = config.queue_dir / hashlib.sha256(url.encode()).hexdigest()[:16]
        self.stats = DestinationStats()
        self._unwritten: list[tuple[int, bytes]] = []  # queued, not on disk yet
        self._spooled: deque[int] = deque()  # on disk, oldest first
        self._bodies: dict[int, bytes] = {}  # bodies in memory (those queued by this process)
        self._next_seq = 1
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # a batch being written by the worker thread
        self._writing_n = 0
        self._drop_logged_at = -1e9

    @property
    def queued(self) -> int:
        return len(self._unwritten) + self._writing_n + len(self._spooled)

    async def start(self) -> None:
        """Load what an earlier run left in the spool, then start delivering."""
        seqs = await asyncio.to_thread(self._load)
        self._spooled.extend(seqs)
        self._next_seq = (max(seqs) + 1) if seqs else 1
        if seqs:
            log.info("webhooks: %d event(s) for %s left from an earlier run", len(seqs), self.url)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _load(self) -> list[int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        return sorted(int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit())

    def enqueue(self, body: bytes) -> None:
        """Queue one event body (never blocks; the oldest is dropped, loudly, when full)."""
        seq = self._next_seq
        self._next_seq += 1
        self._unwritten.append((seq, body))
        self._bodies[seq] = body
        while self.queued > self.config.max_queued and (self._spooled or self._unwritten):
            self._drop_oldest("the queue is full")
        self._wake.set()

    def _drop_oldest(self, why: str) -> None:
        if self._spooled:
            seq = self._spooled.popleft()
            self._unlink_later(seq)
        else:
            seq, _ = self._unwritten.pop(0)
        self._bodies.pop(seq, None)
        self.stats.dropped += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= 10.0:  # loud, but not a line per event in a flood
            self._drop_logged_at = now
            log.error("webhooks: dropping events for %s: %s (%d dropped so far)", self.url, why, self.stats.dropped)

    def _unlink_later(self, seq: int) -> None:
        path = self.directory / f"{seq:012d}.json"
        asyncio.get_running_loop().run_in_executor(None, lambda: path.unlink(missing_ok=True))

    def _write(self, batch: list[tuple[int, bytes]]) -> None:
        for seq, body in batch:
            tmp = self.directory / f"{seq:012d}.tmp"
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / f"{seq:012d}.json")

    async def _flush(self) -> None:
        """Write what is queued to disk (in a worker thread) and move it to the spool. A write
        that is under way when the task is cancelled finishes anyway (`close` waits for it)."""
        while self._unwritten:
            batch, self._unwritten = self._unwritten, []
            self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
            self._writing_n = len(batch)
            try:
                await asyncio.shield(self._writing)
            except OSError as exc:  # the disk is unusable: keep them in memory, try again later
                log.error("webhooks: cannot spool %d event(s) for %s: %s", len(batch), self.url, exc)
                self._unwritten[:0] = batch
                self._writing, self._writing_n = None, 0
                return
            self._writing, self._writing_n = None, 0
            self._spooled.extend(seq for seq, _ in batch)

    async def _body(self, seq: int) -> bytes | None:
        body = self._bodies.get(seq)
        if body is None:
            path = self.directory / f"{seq:012d}.json"
            with contextlib.suppress(OSError):
                body = await asyncio.to_thread(path.read_bytes)
        return body

    async def _run(self) -> None:
        while True:
            try:
                await self._deliver()
            except asyncio.CancelledError:
                raise
            except Exception:  # our bug: log it and go on, never stop delivering for good
                log.exception("webhooks: delivery to %s failed unexpectedly; retrying in 1 s", self.url)
                await asyncio.sleep(1.0)

    async def _deliver(self) -> None:
        backoff = self.config.backoff_initial_s
        refused = 0
        while True:
            await self._flush()
            if not self._spooled:
                self._wake.clear()
                if not self._unwritten:
                    await self._wake.wait()
                continue
            seq = self._spooled[0]
            body = await self._body(seq)
            outcome = "missing" if body is None else await self._attempt(body)
            if outcome != "delivered" and self._spooled and self._spooled[0] == seq and outcome == "refused":
                refused += 1
                if refused >= self.config.max_refused_attempts:
                    outcome = "give_up"
            if outcome in ("delivered", "give_up", "missing"):
                if self._spooled and self._spooled[0] == seq:  # not dropped meanwhile
                    self._spooled.popleft()
                    self._bodies.pop(seq, None)
                    await asyncio.to_thread((self.directory / f"{seq:012d}.json").unlink, True)
                if outcome == "give_up":
                    self.stats.dropped += 1
                    log.error("webhooks: event %d for %s dropped (refused %d times, or unreadable)", seq, self.url, refused)
                elif outcome == "delivered":
                    self.stats.delivered += 1
                backoff, refused = self.config.backoff_initial_s, 0
                continue
            self.stats.failures += 1
            delay = backoff * random.uniform(0.5, 1.0)
            backoff = min(backoff * 2, self.config.backoff_max_s)
            with contextlib.suppress(TimeoutError):  # new events are spooled while we wait
                await asyncio.wait_for(self._wait_and_flush(), delay)

    async def _wait_and_flush(self) -> None:
        while True:
            self._wake.clear()
            await self._wake.wait()
            await self._flush()

    async def _attempt(self, body: bytes) -> str:
        """POST once: "delivered", "retry" (receiver unreachable or failing) or "refused" (4xx)."""
        self.stats.attempts += 1
        try:
            event = json.loads(body)
        except ValueError:  # a damaged spool file (e.g. a disk error): nobody could use it
            log.error("webhooks: an unreadable event in the spool of %s: dropped", self.url)
            return "give_up"
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.config.secret, body, int(self.clock())),
            EVENT_ID_HEADER: str(event.get("id", "")),
            EVENT_HEADER: str(event.get("event", "")),
            "User-Agent": "medstream-webhooks",
        }
        try:
            async with self.session.post(self.url, data=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)) as r:
                await r.read()
                if 200 <= r.status < 300:
                    return "delivered"
                log.warning("webhooks: %s answered %d to event %s", self.url, r.status, event.get("id"))
                return "refused" if 400 <= r.status < 500 and r.status not in RETRIED_STATUSES else "retry"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("webhooks: %s unreachable (%s); will retry", self.url, exc.__class__.__name__)
            return "retry"

    async def close(self) -> None:
        """Stop delivering; what is still queued is written to the spool for the next run."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._writing is not None:
            try:
                await self._writing
            except OSError as exc:
                log.error("webhooks: %d event(s) for %s could not be spooled at shutdown: %s",
                          self._writing_n, self.url, exc)
            self._writing = None
        await self._flush()


class Webhooks:
    """Turns the node's events into webhook bodies and hands them to every destination.

    `observe` is a room observer (medstream.app); `recording_ready` is called by the recorder
    when a session's files are final; `alarm_sink(room_id)` is a waveforms `StoreSink` that
    reports alarms raised and cleared in that room."""

    def __init__(self, config: WebhookConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.destinations: list[Destination] = []
        self._session: aiohttp.ClientSession | None = None
        self._metadata: dict[str, dict[str, str]] = {}  # room id -> the platform's labels

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        for url in self.config.urls:
            d = Destination(url, self.config, self._session, self.clock)
            await d.start()
            self.destinations.append(d)

    async def close(self) -> None:
        for d in self.destinations:
            await d.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def publish(self, event: str, room_id: str, data: dict[str, Any]) -> None:
        """Queue one event for every destination (never blocks)."""
        body = json.dumps({"id": uuid.uuid4().hex, "event": event, "created_at": self.clock(), "room_id": room_id,
                           "metadata": self._metadata.get(room_id, {}), **data}, ensure_ascii=False).encode()
        for d in self.destinations:
            d.enqueue(body)

    def observe(self, event: ev.RoomEvent) -> None:
        """Room events -> webhook events."""
        match event:
            case ev.RoomStarted(room_id=room, kind=kind, metadata=metadata):
                self._metadata[room] = dict(metadata)
                self.publish("room_started", room, {"kind": kind})
            case ev.RoomEnded(room_id=room, reason=reason):
                self.publish("room_ended", room, {"reason": reason})
                self._metadata.pop(room, None)
            case ev.ParticipantJoined(room_id=room, participant_id=pid, identity=who, name=name, role=role):
                self.publish("participant_joined", room, {"participant": {
                    "participant_id": pid, "identity": who, "name": name, "role": role}})
            case ev.ParticipantLeft(room_id=room, participant_id=pid, identity=who, reason=reason):
                self.publish("participant_left", room, {"participant": {"participant_id": pid, "identity": who},
                                                        "reason": reason})
            case ev.RecordingStarted(room_id=room, by=by):
                self.publish("recording_started", room, {"by": by})
            case ev.RecordingStopped(room_id=room, by=by, reason=reason):
                self.publish("recording_stopped", room, {"by": by, "reason": reason})
            case _:
                pass

    def recording_ready(self, room_id: str, manifest: dict[str, Any]) -> None:
        """A recording's files are final: its manifest (files, sizes, SHA-256) goes out."""
        self.publish("recording_ready", room_id, {"session_id": manifest.get("session_id"), "manifest": manifest})

    def alarm_sink(self, room_id: str) -> AlarmSink:
        return AlarmSink(self, room_id)


class AlarmSink:
    """A waveforms `StoreSink` that reports only alarms (raised, cleared) of one room."""

    def __init__(self, hooks: Webhooks, room_id: str) -> None:
        self.hooks = hooks
        self.room_id = room_id
        self._publisher: dict[str, str] = {}  # stream id -> publisher participant id

    def on_stream(self, publisher_id: str, announce: Announce) -> None:
        self._publisher[announce.stream_id] = publisher_id

    def on_samples(self, stream_id: str, first_sample: int, samples: np.ndarray, t0: float) -> None:
        pass

    def on_stream_ended(self, stream_id: str) -> None:
        self._publisher.pop(stream_id, None)

    def on_analysis(self, stream_id: str, analysis: Analysis) -> None:
        for event, alarms in (("alarm_raised", analysis.alarms_raised), ("alarm_cleared", analysis.alarms_cleared)):
            for a in alarms:
                self.hooks.publish(event, self.room_id, {"stream_id": stream_id,
                                                         "publisher_id": self._publisher.get(stream_id),
                                                         "alarm": _alarm(a)})


def _alarm(a: AlarmInfo) -> dict[str, Any]:
    return {"kind": a.kind, "priority": a.priority, "message": a.message, "since_sample": a.since_sample}
