"""What the playback page needs of a recorded session, in one JSON-ready dict (`session_timeline`).

The page plays every media file of the session and draws its waveform records against one clock,
the **session clock** (seconds since `session_start_unix_s`): media files carry it in their
timestamps, a waveform record starts at its `start_offset_s` and goes on at `fs`. Beats and
alarms come from the record's annotations (`.atr`), participants' comings and goings from the
manifest. Reads the disk: call it in a worker thread. Encrypted headers and annotations are
decrypted in memory (through a RAM directory for wfdb, which reads only files).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder import crypto
from recorder.crypto import MasterKey
from recorder.manifest import ALARM_SYMBOL, SessionManifest, read_manifest

if TYPE_CHECKING:  # wfdb (and pandas with it) is imported on first use: a node that never plays back stays lean
    import wfdb

MEDIA_KINDS = frozenset({"video", "audio"})
PARTICIPANT_MEDIA_KIND = "participant_media"  # one remuxed file per participant (recorder.remux)


def _ram_dir() -> tempfile.TemporaryDirectory[str]:
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None)


def read_annotations(directory: Path, record: str, master: MasterKey | None) -> wfdb.Annotation | None:
    """The record's `.atr` (decrypted if needed), or None when it has none yet."""
    atr = directory / f"{record}.atr"
    if not atr.exists():
        return None
    with _ram_dir() as tmp:
        (Path(tmp) / f"{record}.atr").write_bytes(crypto.read_bytes(atr, master))
        import wfdb

        return wfdb.rdann(str(Path(tmp) / record), "atr")


def read_header(directory: Path, record: str, master: MasterKey | None) -> wfdb.Record:
    """The record's `.hea` (decrypted if needed)."""
    with _ram_dir() as tmp:
        (Path(tmp) / f"{record}.hea").write_bytes(crypto.read_bytes(directory / f"{record}.hea", master))
        import wfdb

        return wfdb.rdheader(str(Path(tmp) / record))


def session_timeline(directory: Path, url_prefix: str, master: MasterKey | None = None) -> dict[str, Any]:
    """The session in `directory` for the playback page; file URLs are `url_prefix` + name."""
    m: SessionManifest = read_manifest(directory, master)
    media: list[dict[str, Any]] = []
    combined: list[dict[str, Any]] = []
    waveforms: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    end_s = 0.0
    for f in m.files:
        start = f.start_offset_s or 0.0
        end_s = max(end_s, start + f.duration_s)
        entry = {"participant_id": f.participant_id, "kind": f.kind, "codec": f.codec, "name": f.name,
                 "url": url_prefix + f.name, "start_offset_s": start, "duration_s": f.duration_s,
                 "track_id": f.track_id}
        if f.kind in MEDIA_KINDS:
            media.append(entry)
            events.append({"t": start, "kind": f"{f.kind}_started", "participant_id": f.participant_id})
        elif f.kind == PARTICIPANT_MEDIA_KIND:
            combined.append(entry)
        elif f.kind == "waveform":
            record = str(f.details.get("record", Path(f.name).stem))
            head = read_header(directory, record, master)
            fs = float(head.fs)
            ann = read_annotations(directory, record, master)
            beats: list[list[Any]] = []
            alarms: list[list[Any]] = []
            if ann is not None:
                notes = ann.aux_note or [""] * len(ann.sample)
                for sample, symbol, note in zip(ann.sample.tolist(), ann.symbol, notes, strict=True):
                    if symbol == ALARM_SYMBOL:
                        label = note.rstrip("\x00")
                        alarms.append([sample, label])
                        events.append({"t": start + sample / fs, "kind": "alarm_cleared" if label.startswith("cleared ")
                                       else "alarm", "participant_id": f.participant_id, "label": label})
                    else:
                        beats.append([sample, symbol])
            units = list(head.units or [])
            ecg = next((i for i, u in enumerate(units) if u == "mV"), 0)
            waveforms.append({
                "record": record, "participant_id": f.participant_id, "url": url_prefix + f.name,
                "start_offset_s": start, "fs": fs, "n_samples": int(head.sig_len or 0),
                "format": int(head.fmt[0]) if head.fmt else 16,
                "channels": [{"name": n, "unit": u, "gain": float(g), "baseline": int(b)}
                             for n, u, g, b in zip(head.sig_name, units, head.adc_gain, head.baseline, strict=True)],
                "ecg_channel": ecg, "beats": beats, "alarms": alarms,
                "origin_sample_index": f.details.get("origin_sample_index"),
            })
            end_s = max(end_s, start + int(head.sig_len or 0) / fs)
    participants = []
    for p in m.participants:
        participants.append({"participant_id": p.participant_id, "role": p.role, "identity": p.identity,
                             "name": p.name or p.identity or p.participant_id,
                             "joined_offset_s": p.joined_offset_s, "left_offset_s": p.left_offset_s})
        if p.joined_offset_s is not None:
            events.append({"t": p.joined_offset_s, "kind": "joined", "participant_id": p.participant_id})
        if p.left_offset_s is not None:
            events.append({"t": p.left_offset_s, "kind": "left", "participant_id": p.participant_id})
    events.sort(key=lambda e: float(e["t"]))
    return {"session_id": m.session_id, "room": m.room, "room_kind": m.room_kind, "started_at": m.started_at,
            "stopped_at": m.stopped_at, "session_start_unix_s": m.session_start_unix_s,
            "duration_s": round(end_s, 3), "encrypted": m.encryption is not None,
            "participants": participants, "media": media, "combined": combined,
            "waveforms": waveforms, "events": events}
