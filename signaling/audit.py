"""Append-only, hash-chained JSON-lines audit log: the record supervision of tele-medicine
services requires.

Each line: time (UTC ISO 8601 and epoch), event, room, identity, role, details, then `alg`, `prev`
(the hash of the line before; 64 zeros for the first) and `hash`: the digest of the line's JSON
without its `hash` field. Deleting, reordering or editing any line breaks the chain from there
on; `medstream audit verify FILE` (`verify_chain`) finds the first broken line. The digest is
SHA-256 by default or SM3 (GB/T 32905-2016, `signaling.sm3`), as the national-cryptography
policy for medical systems asks. Lines are appended and flushed one by one by a writer thread so
the event loop never waits on the disk; a restarted server continues the chain of the file.
Tokens are never written: only their id (`jti`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from signaling.effects import Audit
from signaling.sm3 import sm3_hex

log = logging.getLogger("medstream.audit")

GENESIS = "0" * 64


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sm3(data: bytes) -> str:
    if "sm3" in hashlib.algorithms_available:  # OpenSSL's, when it has one (same digest, faster)
        return hashlib.new("sm3", data).hexdigest()
    return sm3_hex(data)


HASHES: dict[str, Callable[[bytes], str]] = {"sha256": _sha256, "sm3": _sm3}


def _dump(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def chain_line(body: dict[str, object], prev: str, alg: str) -> tuple[str, str]:
    """The log line for `body` after a line hashed `prev`, and its hash."""
    obj = {**body, "alg": alg, "prev": prev}
    digest = HASHES[alg](_dump(obj).encode())
    return _dump({**obj, "hash": digest}), digest


def _last_hash(path: Path) -> str:
    """The hash of the file's last line (to continue its chain), or GENESIS."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().splitlines()
    except OSError:
        return GENESIS
    for raw in reversed(tail):
        try:
            h = json.loads(raw).get("hash")
        except (ValueError, AttributeError):
            continue
        if isinstance(h, str):
            return h
    return GENESIS


class AuditLog:
    """Writes `Audit` effects to a file (or nowhere when `path` is None), hash-chained."""

    def __init__(self, path: Path | None, *, hash_alg: str = "sha256") -> None:
        if hash_alg not in HASHES:
            raise ValueError(f"audit hash must be one of {sorted(HASHES)}, got {hash_alg!r}")
        self.path = path
        self.hash_alg = hash_alg
        self._queue: queue.SimpleQueue[dict[str, object] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
            self._thread.start()

    def record(self, event: Audit, now: float | None = None) -> None:
        """Queue one audit line (non-blocking; hashed and written by the writer thread)."""
        if self.path is None:
            return
        ts = time.time() if now is None else now
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z",
            "ts": round(ts, 3),
            "event": event.event,
            "room": event.room_id,
            "identity": event.identity,
            "role": event.role,
            **({"details": event.details} if event.details else {}),
        }
        self._queue.put(json.loads(_dump(line)))  # details made plain JSON now, not in the thread

    def close(self) -> None:
        """Flush what is queued and stop the writer (idempotent)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _write_loop(self) -> None:
        assert self.path is not None
        prev = _last_hash(self.path)
        with open(self.path, "a", encoding="utf-8") as f:
            while True:
                body = self._queue.get()
                if body is None:
                    return
                text, prev = chain_line(body, prev, self.hash_alg)
                try:
                    f.write(text + "\n")
                    f.flush()
                except OSError as exc:
                    log.error("audit log write failed: %s: %s", self.path, exc)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What `verify_chain` found: `ok`, lines checked, and the first bad line (1-based) and why."""

    ok: bool
    records: int
    bad_line: int | None = None
    problem: str = ""


def verify_chain(path: Path) -> ChainReport:
    """Check every line's hash and its link to the line before."""
    prev = GENESIS
    n = 0
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            try:
                obj = json.loads(raw)
            except ValueError:
                return ChainReport(False, n - 1, n, "not JSON")
            if not isinstance(obj, dict):
                return ChainReport(False, n - 1, n, "not a JSON object")
            digest, alg = obj.pop("hash", None), obj.get("alg")
            if alg not in HASHES:
                return ChainReport(False, n - 1, n, f"unknown hash {str(alg)[:16]!r}")
            if obj.get("prev") != prev:
                return ChainReport(False, n - 1, n, "does not follow the line before (removed, inserted or reordered)")
            if HASHES[str(alg)](_dump(obj).encode()) != digest:
                return ChainReport(False, n - 1, n, "hash does not match its content (edited)")
            prev = str(digest)
    return ChainReport(True, n)


def main(argv: list[str]) -> int:
    """`medstream audit verify FILE...`: exit 0 if every chain holds, 1 if not."""
    parser = argparse.ArgumentParser(prog="medstream audit", description="Audit log tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check the hash chain of audit log files")
    verify.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            report = verify_chain(path)
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        if report.ok:
            print(f"{path}: ok, {report.records} records, chain intact")
        else:
            print(f"{path}: BROKEN at line {report.bad_line}: {report.problem} "
                  f"({report.records} records before it verified)")
            status = 1
    return status
