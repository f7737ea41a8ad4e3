"""manifest.json: what a recorded session contains, written atomically whenever it changes.

One JSON object per session directory. It is the index the library lists and serves from, and
the integrity record: each file's SHA-256 is filled in when the recording stops (a session killed
mid-recording has `stopped_at: null` and no hashes, which marks it incomplete). A session
encrypted at rest has its manifest encrypted like its files (recorder/crypto.py): it names the
participants, so reading it needs the recordings master key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recorder.crypto import Encryption, MasterKey

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# a room's directory name (session.py, library.py); here so the library needs no numpy
ROOM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# the annotation symbol of an alarm in a recorded WFDB record (wfdb_file.py, playback.py)
ALARM_SYMBOL = '"'


@dataclass(slots=True)
class ParticipantEntry:
    """A participant of the recorded room, their role (e.g. "host", "expert") and who they are.

    `identity` is the stable id from the access token (e.g. a staff number), `name` the display
    name; both empty when the host did not say.
    """

    participant_id: str
    role: str
    identity: str = ""
    name: str = ""
    joined_offset_s: float | None = None  # first seen in the recording (s since its start)
    left_offset_s: float | None = None  # left the room (None: there until the end)


@dataclass(slots=True)
class FileEntry:
    """One recorded file. Times in seconds; `start_offset_s` from the session start.

    kind: "video", "audio", "waveform" (a WFDB .dat), "waveform_header" (.hea) or "annotations"
    (.atr). `frame_count` counts muxed frames (media) or samples per channel (waveforms).
    """

    name: str
    kind: str
    track_id: str
    participant_id: str
    codec: str
    start_offset_s: float | None = None
    duration_s: float = 0.0
    frame_count: int = 0
    size_bytes: int = 0
    sha256: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SessionManifest:
    """The whole manifest. Timestamps are ISO 8601 UTC strings; `stop_reason` a StopReason value."""

    session_id: str
    room: str
    room_kind: str
    started_at: str
    started_by: str
    session_start_unix_s: float
    stopped_at: str | None = None
    stopped_by: str | None = None
    stop_reason: str | None = None
    stop_detail: str = ""
    participants: list[ParticipantEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    version: int = MANIFEST_VERSION
    # {"algorithm": "aes-256-gcm" | "sm4-gcm", "key_id": ...} when the files are encrypted at rest
    encryption: dict[str, str] | None = None
    repaired_at: str | None = None  # a crash-cut session made playable by `recorder.repair`

    def to_json(self) -> str:
        """Serialise to indented JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SessionManifest:
        """Parse manifest JSON. Raises ValueError if it is not a manifest of a known version."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"manifest is not valid JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("version") != MANIFEST_VERSION:
            got = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"manifest version must be {MANIFEST_VERSION}, got {got!r}")
        raw["participants"] = [ParticipantEntry(**p) for p in raw.get("participants", [])]
        raw["files"] = [FileEntry(**f) for f in raw.get("files", [])]
        try:
            return cls(**raw)
        except TypeError as e:
            raise ValueError(f"manifest has unexpected fields: {e}") from None


def write_manifest(directory: Path, manifest: SessionManifest, encryption: Encryption | None = None) -> None:
    """Atomically replace `<directory>/manifest.json` (write a temp file, then rename over).

    The manifest of an encrypted session (`manifest.encryption` set) is sealed with the session's
    key, `encryption`; it is never written in the clear. Raises ValueError without that key."""
    if manifest.encryption is not None:
        if encryption is None or encryption.key is None:
            raise ValueError(f"the manifest of encrypted session {manifest.session_id} needs the session's key")
        encryption.write_bytes(directory / MANIFEST_NAME, manifest.to_json().encode())
        return
    tmp = directory / f".{MANIFEST_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
    os.replace(tmp, directory / MANIFEST_NAME)


def read_manifest(directory: Path, master: MasterKey | None = None) -> SessionManifest:
    """Load `<directory>/manifest.json`, decrypting it with `master` if it is encrypted.

    Raises OSError if missing, ValueError if malformed (crypto.DecryptionError, a ValueError, if
    it is encrypted and `master` is None or another key)."""
    path = directory / MANIFEST_NAME
    raw = path.read_bytes()
    if raw.startswith(_ENCRYPTED_MAGIC):
        from recorder import crypto  # a plain library listing needs no cryptography

        if master is None:
            raise crypto.DecryptionError(f"the manifest of {directory.name} is encrypted and no recordings key "
                                         "is configured (--key-file or $MEDSTREAM_RECORDINGS_KEY)")
        raw = crypto.read_bytes(path, master)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"manifest is not UTF-8 text: {e}") from None
    return SessionManifest.from_json(text)


_ENCRYPTED_MAGIC = b"MSENC1\x00\x00"  # crypto.MAGIC, without importing cryptography here


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file as the manifest records it (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
