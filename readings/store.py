"""The reading store: ECGs as WFDB, requests as JSON, report PDFs, the audit log, in one directory.

Layout under ``root``::

    ecg/<key>/<key>.hea, <key>.dat     the ECG as received (format 16, 1 µV per unit)
    requests/<request_id>.json         the request and its report (`ReadingRequest.to_json`)
    reports/<request_id>.pdf           the signed report in the standard layout
    audit.jsonl                        one JSON line per `AuditRecord`

Every file is written to a temporary name in its directory, fsynced and renamed over the target
(atomic on POSIX), so a reader or a crash never sees half a file; an ECG's header is written after
its samples, so a record with a header is complete.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from dsp.ecg12.record import Ecg12
from readings.wfdb_format import ecg_from_files, encode_record
from readings.workflow import AuditRecord, ReadingRequest

_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class StoreError(ValueError):
    """A key is not a safe file name, or a stored document is missing or malformed."""


def _check_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise StoreError(f"key must be 1-64 letters, digits, '_' or '-' (starting with a letter or digit), got {key!r}")
    return key


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ReadingStore:
    """Files of the reading workflow under one directory (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save_ecg(self, key: str, ecg: Ecg12, comments: tuple[str, ...] = ()) -> None:
        """Store an ECG as a WFDB record named ``key``."""
        _check_key(key)
        files = encode_record(ecg, key, comments)
        folder = self.root / "ecg" / key
        header = f"{key}.hea"
        for name, data in files.items():
            if name != header:
                atomic_write(folder / name, data)
        atomic_write(folder / header, files[header])

    def load_ecg(self, key: str) -> Ecg12:
        """The stored ECG ``key``. Raises `StoreError` if absent."""
        folder = self.root / "ecg" / _check_key(key)
        if not (folder / f"{key}.hea").exists():
            raise StoreError(f"no stored ECG {key!r}")
        files = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
        ecg, _ = ecg_from_files(files, key)
        return ecg

    def save_request(self, request: ReadingRequest) -> None:
        """Store (or replace) a request document."""
        path = self.root / "requests" / f"{_check_key(request.request_id)}.json"
        atomic_write(path, json.dumps(request.to_json(), ensure_ascii=False, indent=1).encode("utf-8"))

    def load_request(self, request_id: str) -> ReadingRequest:
        """One stored request. Raises `StoreError` if absent or malformed."""
        path = self.root / "requests" / f"{_check_key(request_id)}.json"
        try:
            return ReadingRequest.from_json(json.loads(path.read_text("utf-8")))
        except FileNotFoundError as exc:
            raise StoreError(f"no stored request {request_id!r}") from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise StoreError(f"stored request {request_id!r} is malformed: {exc}") from exc

    def load_requests(self) -> list[ReadingRequest]:
        """Every stored request (to `ReadingDesk.restore` after a restart)."""
        folder = self.root / "requests"
        if not folder.exists():
            return []
        return [self.load_request(p.stem) for p in sorted(folder.glob("*.json"))]

    def save_report_pdf(self, request_id: str, pdf: bytes) -> Path:
        """Store a report PDF; returns its path."""
        path = self.root / "reports" / f"{_check_key(request_id)}.pdf"
        atomic_write(path, pdf)
        return path

    def append_audit(self, records: Iterable[AuditRecord]) -> int:
        """Append audit records to ``audit.jsonl`` (fsynced); returns how many were written."""
        lines = [json.dumps({**asdict(r), "role": r.role.value}, ensure_ascii=False) for r in records]
        if not lines:
            return 0
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "audit.jsonl", "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return len(lines)

    def read_audit(self) -> list[dict[str, object]]:
        """The audit log as dicts, oldest first."""
        path = self.root / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
