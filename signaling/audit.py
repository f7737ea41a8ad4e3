"""Append-only JSON-lines audit log: the record supervision of tele-medicine services requires.

Each line: time (UTC ISO 8601 and epoch), event, room, identity, role and details. Lines are
appended and flushed one by one by a writer thread so the event loop never waits on the disk.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path

from signaling.effects import Audit

log = logging.getLogger("medstream.audit")


class AuditLog:
    """Writes `Audit` effects to a file (or nowhere when `path` is None)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
            self._thread.start()

    def record(self, event: Audit, now: float | None = None) -> None:
        """Queue one audit line (non-blocking)."""
        if self.path is None:
            return
        ts = time.time() if now is None else now
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z",
            "ts": round(ts, 3),
            "event": event.event,
            "room": event.room_id,
            "identity": event.identity,
            "role": event.role,
            **({"details": event.details} if event.details else {}),
        }
        self._queue.put(json.dumps(line, separators=(",", ":"), default=str))

    def close(self) -> None:
        """Flush what is queued and stop the writer (idempotent)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _write_loop(self) -> None:
        assert self.path is not None
        with open(self.path, "a", encoding="utf-8") as f:
            while True:
                line = self._queue.get()
                if line is None:
                    return
                try:
                    f.write(line + "\n")
                    f.flush()
                except OSError:
                    log.exception("audit log write failed: %s", self.path)
