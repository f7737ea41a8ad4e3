"""Making crash-cut sessions playable at the next start (`repair_session`).

A session whose process died (or whose machine lost power) has `stopped_at: null`. What it
leaves: track files without trailer or Cues, possibly cut in the middle of a cluster or of an
encrypted chunk; a `.dat` whose header counts fewer samples than it holds (or a torn last
sample); annotations and manifest as of the last checkpoint (both replaced atomically). The
repair copies each track file's readable packets into a complete file with Cues, cuts torn
tails, rewrites each WFDB header to the samples really there (checksums recomputed), hashes
everything and marks the manifest `stop_reason: interrupted` with `repaired_at`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np

from recorder import crypto
from recorder.crypto import Encryption, MasterKey
from recorder.manifest import SessionManifest, file_sha256, read_manifest, write_manifest
from recorder.playback import read_annotations
from recorder.remux import rewrite_media, session_encryption

log = logging.getLogger(__name__)


def needs_repair(directory: Path, started_before: float | None = None, master: MasterKey | None = None) -> bool:
    """Whether the session in `directory` was never stopped (and never repaired); with
    `started_before` (Unix s), only a session that started before then (an earlier run's)."""
    try:
        m = read_manifest(directory, master)
    except (OSError, ValueError):
        return False
    if started_before is not None and m.session_start_unix_s >= started_before:
        return False  # this run's own: possibly being recorded right now
    return m.stopped_at is None and m.repaired_at is None


def _fix_header(directory: Path, record: str, master: MasterKey | None, encryption: Encryption) -> int:
    """Rewrite `<record>.hea` for the whole samples in the `.dat`; returns samples per channel."""
    hea = directory / f"{record}.hea"
    lines = crypto.read_bytes(hea, master).decode().splitlines()
    first = lines[0].split()
    n_sig = int(first[1])
    fmt = int(lines[1].split()[1])
    width = 2 if fmt == 16 else 4
    dat = directory / f"{record}.dat"
    if crypto.is_encrypted(dat):
        with crypto.EncryptedFile(dat, "r+", master=master) as f:
            f.drop_damaged_tail()
            size = f.size
            n = size // (n_sig * width)
            f.seek(0)
            raw = f.read(n * n_sig * width)
    else:
        size = dat.stat().st_size
        n = size // (n_sig * width)
        with open(dat, "r+b") as g:
            g.truncate(n * n_sig * width)  # a torn last sample frame
            raw = g.read()
    samples = np.frombuffer(raw, dtype="<i2" if fmt == 16 else "<i4").reshape(n, n_sig)
    first[3] = str(n)
    out = [" ".join(first)]
    for c, line in enumerate(lines[1:1 + n_sig]):
        fields = line.split()
        fields[5] = str(int(samples[0, c])) if n else "0"  # initial value
        checksum = int(samples[:, c].astype(np.int64).sum())
        fields[6] = str((checksum + 32768) % 65536 - 32768)
        out.append(" ".join(fields))
    out += lines[1 + n_sig:]
    encryption.write_bytes(hea, ("\n".join(out) + "\n").encode())
    return n


def repair_session(directory: Path, master: MasterKey | None = None, now: float | None = None) -> SessionManifest:
    """Make the crash-cut session in `directory` whole (see the module docstring); idempotent."""
    manifest = read_manifest(directory, master)
    if manifest.stopped_at is not None or manifest.repaired_at is not None:
        return manifest
    encryption = session_encryption(directory, master)
    for f in manifest.files:
        path = directory / f.name
        if not path.exists():
            continue
        try:
            if f.kind in ("video", "audio"):
                if crypto.is_encrypted(path):
                    with crypto.EncryptedFile(path, "r+", master=master) as ef:
                        ef.drop_damaged_tail()
                result = rewrite_media(path, master, encryption)
                f.frame_count = result.packets
                f.details["repaired"] = True
            elif f.kind == "waveform":
                record = str(f.details.get("record", path.stem))
                f.frame_count = _fix_header(directory, record, master, encryption)
                fs = float(f.details.get("sampling_rate_hz") or 0) or None
                if fs:
                    f.duration_s = f.frame_count / fs
                f.details["repaired"] = True
            elif f.kind == "annotations":
                try:
                    read_annotations(directory, path.stem, master)
                except Exception as exc:  # torn: set it aside, the samples stay
                    log.warning("repair: %s unreadable, set aside: %s", path, exc)
                    path.rename(path.with_name(f".{path.name}.damaged"))
        except Exception as exc:  # nothing readable (a header torn by the power cut): set aside
            log.error("repair: %s has nothing playable, set aside: %s", path, exc)
            path.rename(path.with_name(f".{path.name}.damaged"))
    manifest.files = [f for f in manifest.files if (directory / f.name).exists()]
    for f in manifest.files:
        f.size_bytes = (directory / f.name).stat().st_size
        f.sha256 = file_sha256(directory / f.name)
    stamp = time.time() if now is None else now
    last_write = max([(directory / f.name).stat().st_mtime for f in manifest.files] or [stamp])
    manifest.stopped_at = dt.datetime.fromtimestamp(last_write, dt.UTC).isoformat(timespec="milliseconds")
    manifest.stop_reason = "interrupted"
    manifest.stop_detail = "the recording process ended without stopping; files repaired at the next start"
    manifest.repaired_at = dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat(timespec="milliseconds")
    (directory / ".manifest-reserve").unlink(missing_ok=True)
    write_manifest(directory, manifest, encryption)
    return manifest


def repair_all(root: Path, master: MasterKey | None = None, skip: frozenset[str] = frozenset(),
               started_before: float | None = None) -> list[str]:
    """Repair every crash-cut session under `root` (but those in `skip`, and with
    `started_before` those started since); returns their ids."""
    done: list[str] = []
    if not Path(root).is_dir():
        return done
    for room_dir in sorted(Path(root).iterdir()):
        if not room_dir.is_dir():
            continue
        for session_dir in sorted(room_dir.iterdir()):
            if session_dir.name in skip or not session_dir.is_dir() \
                    or not needs_repair(session_dir, started_before, master):
                continue
            try:
                repair_session(session_dir, master)
                done.append(session_dir.name)
                log.info("repaired crash-cut recording %s/%s", room_dir.name, session_dir.name)
            except Exception:
                log.exception("repair of %s failed", session_dir)
    return done
