"""The recordings library: list, inspect, serve and prune recorded sessions.

Plain functions over the recordings root for the HTTP layer (`list_sessions`, `resolve_file`,
`parse_range`, `prune`), and `main(argv)` for `medstream recordings`:

    medstream recordings [--root DIR] list [--room R] [--json]
    medstream recordings [--root DIR] show SESSION_ID
    medstream recordings [--root DIR] prune --older-than DAYS [--dry-run]
    medstream recordings [--root DIR] [--key-file F] remux SESSION_ID [--compose OUT.webm]
    medstream recordings [--root DIR] [--key-file F] edf SESSION_ID
    medstream recordings [--root DIR] [--key-file F] repair [SESSION_ID]

A session is addressed by its directory name (`<UTC timestamp>-<short id>`), unique across rooms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recorder.errors import (
    RangeNotSatisfiableError,
    SessionNotFoundError,
    UnsafePathError,
)
from recorder.manifest import MANIFEST_NAME, ROOM_NAME_RE, SessionManifest, read_manifest

if TYPE_CHECKING:
    from recorder.crypto import MasterKey

DEFAULT_ROOT = Path("var/recordings")  # the server's default `recordings_dir` too
SESSION_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One recorded session as listed. `complete`: stopped cleanly with every file hashed.

    `error` is set (and most fields None) when the manifest is missing or unreadable, e.g. a
    session killed before its first manifest write, or encrypted and listed without the key. Sizes in bytes, times ISO 8601 UTC.
    """

    session_id: str
    room: str
    path: Path
    room_kind: str | None
    started_at: str | None
    started_by: str | None
    stopped_at: str | None
    stop_reason: str | None
    session_start_unix_s: float | None
    n_files: int
    size_bytes: int
    complete: bool
    error: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (path as a string)."""
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


def list_sessions(root: Path, room: str | None = None, master: MasterKey | None = None) -> list[SessionSummary]:
    """Every session under `root` (optionally of one room), newest first. Never raises on a bad session."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for room_dir in sorted(root.iterdir()):
        if not room_dir.is_dir() or not ROOM_NAME_RE.match(room_dir.name):
            continue
        if room is not None and room_dir.name != room:
            continue
        for session_dir in room_dir.iterdir():
            if session_dir.is_dir() and SESSION_ID_RE.match(session_dir.name):
                out.append(_summarise(session_dir, master))
    out.sort(key=lambda s: s.session_id, reverse=True)
    return out


def find_session(root: Path, session_id: str) -> Path:
    """Directory of session `session_id`. Raises SessionNotFoundError (also for malformed ids)."""
    if not SESSION_ID_RE.match(session_id):
        raise SessionNotFoundError(
            f"session id must look like 20250101T120000Z-abc123, got {session_id!r}")
    matches = [p for p in Path(root).glob(f"*/{session_id}") if p.is_dir()
               and ROOM_NAME_RE.match(p.parent.name)]
    if not matches:
        raise SessionNotFoundError(f"no session {session_id!r} under {root}")
    return matches[0]


def load_session(root: Path, session_id: str, master: MasterKey | None = None) -> SessionManifest:
    """The manifest of a session. Raises SessionNotFoundError, ValueError if it is unreadable."""
    directory = find_session(root, session_id)
    try:
        return read_manifest(directory, master)
    except OSError as e:
        raise ValueError(f"session {session_id!r} has no readable manifest: {e}") from None


def resolve_file(root: Path, session_id: str, name: str) -> Path:
    """Path of file `name` of a session, safe to serve.

    Only plain, non-hidden regular files directly inside the session directory qualify.
    Raises UnsafePathError (traversal, separators, hidden or special files),
    SessionNotFoundError, FileNotFoundError.
    """
    if (not name or name != Path(name).name or "/" in name or "\\" in name or "\x00" in name
            or name.startswith(".")):
        raise UnsafePathError(f"file name must be a plain name inside the session, got {name!r}")
    directory = find_session(root, session_id)
    path = directory / name
    if path.is_symlink():
        raise UnsafePathError(f"file name must not be a symbolic link, got {name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"session {session_id!r} has no file {name!r}")
    if path.resolve().parent != directory.resolve():
        raise UnsafePathError(f"{name!r} resolves outside session {session_id!r}")
    return path


def parse_range(header_value: str | None, size: int) -> tuple[int, int] | None:
    """Parse an HTTP `Range` header for a file of `size` bytes into inclusive (start, end).

    Returns None when the whole file should be sent (no header, a malformed header, or several
    ranges, which RFC 9110 lets a server ignore). Raises RangeNotSatisfiableError (answer 416
    with `Content-Range: bytes */size`) for a valid range that lies outside the file.
    """
    if not header_value:
        return None
    m = _RANGE_RE.match(header_value)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(f"range {header_value!r} is empty for size {size}")
        return max(0, size - n), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignore the header
    end = size - 1 if last == "" else int(last)
    if start >= size:
        raise RangeNotSatisfiableError(
            f"range start must be < file size {size}, got {start} in {header_value!r}")
    return start, min(end, size - 1)


def prune(root: Path, older_than_s: float, now: float | None = None,
          dry_run: bool = False, master: MasterKey | None = None) -> list[SessionSummary]:
    """Delete sessions that started more than `older_than_s` seconds ago; returns them.

    A session that has not stopped is kept while any of its files changed within the window
    (it may still be recording). `now` is Unix time in seconds (default: time.time()).
    """
    if older_than_s < 0:
        raise ValueError(f"older_than_s must be >= 0, got {older_than_s}")
    now = time.time() if now is None else now
    cutoff = now - older_than_s
    removed = []
    for summary in list_sessions(root, master=master):
        last_change = max((p.stat().st_mtime for p in summary.path.iterdir()), default=0.0)
        started = summary.session_start_unix_s
        if started is None:
            started = last_change
        if started >= cutoff:
            continue
        if summary.stopped_at is None and last_change >= cutoff:
            continue
        if not dry_run:
            shutil.rmtree(summary.path)
        removed.append(summary)
    return removed


def _summarise(directory: Path, master: MasterKey | None) -> SessionSummary:
    room, session_id = directory.parent.name, directory.name
    files = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]
    size = sum(p.stat().st_size for p in files)
    try:
        m = read_manifest(directory, master)
    except (OSError, ValueError) as e:
        return SessionSummary(session_id, room, directory, None, None, None, None, None, None,
                              len(files), size, False, error=str(e))
    complete = m.stopped_at is not None and all(f.sha256 for f in m.files)
    return SessionSummary(session_id, room, directory, m.room_kind, m.started_at, m.started_by,
                          m.stopped_at, m.stop_reason, m.session_start_unix_s,
                          len(files), size, complete)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medstream recordings",
                                description="List, inspect and prune recorded sessions.")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                   help=f"recordings folder (default: {DEFAULT_ROOT}, where `medstream serve` records)")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list sessions, newest first")
    ls.add_argument("--room", help="only this room")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.add_argument("--ids", action="store_true", help="session ids only, one a line (for scripts)")
    show = sub.add_parser("show", help="print a session's manifest")
    show.add_argument("session_id")
    pr = sub.add_parser("prune", help="delete sessions older than a number of days")
    pr.add_argument("--older-than", type=float, required=True, metavar="DAYS")
    pr.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    p.add_argument("--key-file", type=Path,
                   help="recordings master key of encrypted sessions (default: $MEDSTREAM_RECORDINGS_KEY)")
    rx = sub.add_parser("remux", help="one file per participant, no transcoding (WebM or Matroska)")
    rx.add_argument("session_id")
    rx.add_argument("--compose", type=Path, metavar="OUT",
                    help="also one transcoded file of everyone side by side, audio mixed (needs ffmpeg)")
    ed = sub.add_parser("edf", help="EDF+ (BDF+ for 32-bit) of every waveform record, with annotations")
    ed.add_argument("session_id")
    rp = sub.add_parser("repair", help="make crash-cut sessions playable (all, or one)")
    rp.add_argument("session_id", nargs="?")
    return p


def _master(args: argparse.Namespace) -> MasterKey | None:
    """The recordings master key from --key-file or $MEDSTREAM_RECORDINGS_KEY (None: neither)."""
    import os

    from recorder.crypto import ENV_KEY, MasterKey

    if args.key_file is not None or os.environ.get(ENV_KEY):
        return MasterKey.load(args.key_file)
    return None


def _files_command(args: argparse.Namespace) -> int:
    """remux / edf / repair (imported here: the listing needs none of their libraries)."""
    from recorder import edf_export, remux, repair
    from recorder.crypto import DecryptionError

    master = _master(args)
    try:
        if args.command == "repair" and args.session_id is None:
            done = repair.repair_all(args.root, master)
            print(f"repaired {len(done)} session(s){': ' + ', '.join(done) if done else ''}")
            return 0
        directory = find_session(args.root, args.session_id)
        if args.command == "remux":
            for r in remux.remux_participants(directory, master):
                print(f"{directory / r.name}: {r.packets} packets" + (" (an input ended early)" if r.damaged_inputs else ""))
            if args.compose is not None:
                print(remux.compose(directory, args.compose, master))
        elif args.command == "edf":
            for path in edf_export.export_session(directory, master):
                print(path)
        else:
            m = repair.repair_session(directory, master)
            print(f"{directory}: {m.stop_reason}, repaired at {m.repaired_at}")
    except (SessionNotFoundError, ValueError, OSError, DecryptionError) as e:
        print(f"medstream recordings: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """`medstream recordings ...`; returns the exit status (0 ok, 1 not found/unreadable, 2 usage)."""
    args = _parser().parse_args(argv)
    if not args.root.is_dir():
        where = (f"no recordings yet: {str(args.root)!r} does not exist (the server records into "
                 f"{DEFAULT_ROOT} of the folder it runs in; --root DIR for another)")
        if args.command == "list":
            print(where)
            return 0
        print(f"medstream recordings: {where}", file=sys.stderr)
        return 1 if args.command == "show" else 2
    if args.command in ("remux", "edf", "repair"):
        return _files_command(args)
    if args.command == "list":
        sessions = list_sessions(args.root, room=args.room, master=_master(args))
        if args.json:
            for s in sessions:
                print(json.dumps(s.to_dict()))
            return 0
        if args.ids:
            for s in sessions:
                print(s.session_id)
            return 0
        if not sessions:
            print(f"no sessions under {args.root}")
        for s in sessions:
            unreadable = "encrypted: needs the key" if "encrypted" in s.error else "unreadable"
            state = "ok" if s.complete else (s.error and unreadable) or (s.stop_reason or "incomplete")
            print(f"{s.session_id}  {s.room:<16} {s.started_at or '?':<30} "
                  f"{s.n_files:>3} files {s.size_bytes / 1e6:>9.1f} MB  {state}")
        return 0
    if args.command == "show":
        try:
            manifest = load_session(args.root, args.session_id, _master(args))
        except (SessionNotFoundError, ValueError) as e:
            print(f"medstream recordings: {e}", file=sys.stderr)
            return 1
        print(manifest.to_json(), end="")
        return 0
    if args.older_than < 0:
        print(f"medstream recordings: --older-than must be >= 0 days, got {args.older_than}",
              file=sys.stderr)
        return 2
    removed = prune(args.root, args.older_than * 86400.0, dry_run=args.dry_run, master=_master(args))
    verb = "would delete" if args.dry_run else "deleted"
    for s in removed:
        print(f"{verb} {s.room}/{s.session_id} ({s.size_bytes / 1e6:.1f} MB)")
    print(f"{verb} {len(removed)} session(s)")
    return 0


__all__ = ["MANIFEST_NAME", "SessionSummary", "find_session", "list_sessions", "load_session",
           "main", "parse_range", "prune", "resolve_file"]
