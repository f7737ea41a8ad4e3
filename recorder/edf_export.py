"""EDF+ export of recorded waveforms (`export_edf`): the format most hospital tools open.

The samples go in as they are (digital values, no rescaling): EDF's linear digital->physical map
is set so that physical = (digital - baseline) / gain, exactly the WFDB header's, so an EDF+ file
read back digitally equals the WFDB record sample for sample. Format-16 records become EDF+
(16-bit), format-32 records BDF+ (24-bit; values beyond 24 bits are refused). Beats go in as
annotations named by their WFDB symbol (`N`, `V`...), alarms as `alarm: <label>`. The last data
record is padded with the digital minimum (the WFDB "no sample" value of format 16).
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib

from recorder import crypto
from recorder.crypto import MasterKey
from recorder.manifest import ALARM_SYMBOL, FileEntry, file_sha256, read_manifest, write_manifest
from recorder.playback import read_annotations, read_header

EDF_KIND = "edf"


def _record_duration(fs: float) -> tuple[float, int]:
    """(data record duration s, samples per record): whole samples per record, at most 10 s."""
    frac = Fraction(fs).limit_denominator(1000)
    if abs(float(frac) - fs) > 1e-9:
        raise ValueError(f"sampling rate {fs} Hz has no whole number of samples per EDF data record")
    seconds = frac.denominator
    if seconds > 10:
        raise ValueError(f"sampling rate {fs} Hz needs data records of {seconds} s, more than EDF tools accept")
    return float(seconds), int(frac * seconds)


def _physical(value: int, baseline: int, gain: float) -> float:
    return (value - baseline) / gain


def export_edf(directory: Path, record: str, output: Path | None = None,
               master: MasterKey | None = None, session_start_unix_s: float | None = None,
               start_offset_s: float = 0.0) -> Path:
    """Write `<record>.edf` (or .bdf) next to the record (or to `output`); returns its path.

    Raises ValueError for a sampling rate EDF cannot hold or 32-bit samples beyond 24 bits."""
    head = read_header(directory, record, master)
    fs = float(head.fs)
    n_sig = int(head.n_sig)
    fmt = int(head.fmt[0])
    width = 2 if fmt == 16 else 4
    raw = crypto.read_bytes(directory / f"{record}.dat", master)
    n = len(raw) // (n_sig * width)
    n = min(n, int(head.sig_len or n))
    samples = np.frombuffer(raw[:n * n_sig * width], dtype="<i2" if fmt == 16 else "<i4").reshape(n, n_sig)
    bdf = fmt != 16
    dmin, dmax = (-(1 << 23), (1 << 23) - 1) if bdf else (-32768, 32767)
    if bdf and samples.size and (samples.min() < dmin or samples.max() > dmax):
        raise ValueError(f"samples of {record} do not fit the 24 bits of BDF+: [{samples.min()}, {samples.max()}]")
    duration_s, per_record = _record_duration(fs)
    output = output or directory / f"{record}{'.bdf' if bdf else '.edf'}"
    from recorder.playback import _ram_dir
    from recorder.remux import session_encryption

    encryption = session_encryption(directory, master)
    ram = _ram_dir() if encryption.key is not None else None  # pyedflib writes only paths: plaintext stays in RAM
    tmp = (Path(ram.name) if ram is not None else output.parent) / f".{output.name}.tmp"
    tmp.unlink(missing_ok=True)
    writer = pyedflib.EdfWriter(str(tmp), n_sig, pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS)
    try:
        headers: list[dict[str, Any]] = []
        for c in range(n_sig):
            gain = float(head.adc_gain[c]) or 1.0
            base = int(head.baseline[c])
            headers.append({
                "label": str(head.sig_name[c])[:16], "dimension": str(head.units[c])[:8],
                "sample_frequency": fs, "digital_min": dmin, "digital_max": dmax,
                "physical_min": _physical(dmin, base, gain), "physical_max": _physical(dmax, base, gain),
                "transducer": "", "prefilter": ""})
        ann = read_annotations(directory, record, master)
        n_ann = 0 if ann is None else len(ann.sample)
        n_records = max(1, math.ceil(n / per_record))
        # EDF+ keeps a fixed number of annotations per data record (one per annotation signal):
        # enough for the densest second of beats and alarms, at most EDFlib's 64
        if ann is not None and n_ann:
            per = np.bincount((ann.sample // per_record).astype(np.int64)).max()
            writer.set_number_of_annotation_signals(int(min(64, max(1, per + 1))))
        writer.setSignalHeaders(headers)
        with warnings.catch_warnings():  # "may alter sample frequencies": not with whole samples per record
            warnings.simplefilter("ignore", UserWarning)
            writer.setDatarecordDuration(duration_s)
        if session_start_unix_s is not None:
            start = dt.datetime.fromtimestamp(session_start_unix_s + start_offset_s, dt.UTC).replace(tzinfo=None)
            writer.setStartdatetime(start)
        padded = np.full((n_records * per_record, n_sig), dmin, dtype=np.int32)
        padded[:n] = samples
        writer.writeSamples([np.ascontiguousarray(padded[:, c]) for c in range(n_sig)], digital=True)
        if ann is not None:
            notes = ann.aux_note or [""] * len(ann.sample)
            for sample, symbol, note in zip(ann.sample.tolist(), ann.symbol, notes, strict=True):
                text = f"alarm: {note.rstrip(chr(0))}" if symbol == ALARM_SYMBOL else symbol
                writer.writeAnnotation(sample / fs, -1, text)
    finally:
        writer.close()
    if ram is not None:
        with ram:
            encryption.write_bytes(output, tmp.read_bytes())
    else:
        tmp.replace(output)
    return output


def export_session(directory: Path, master: MasterKey | None = None) -> list[Path]:
    """EDF+ of every waveform record of the session, listed in the manifest (kind `edf`)."""
    from recorder.remux import session_encryption

    manifest = read_manifest(directory, master)
    made = []
    have = {f.name for f in manifest.files}
    for f in list(manifest.files):
        if f.kind != "waveform":
            continue
        record = str(f.details.get("record", Path(f.name).stem))
        path = export_edf(directory, record, master=master, session_start_unix_s=manifest.session_start_unix_s,
                          start_offset_s=f.start_offset_s or 0.0)
        made.append(path)
        if path.name not in have:
            manifest.files.append(FileEntry(
                name=path.name, kind=EDF_KIND, track_id=f.track_id, participant_id=f.participant_id,
                codec="bdf+" if path.suffix == ".bdf" else "edf+", start_offset_s=f.start_offset_s,
                duration_s=f.duration_s, frame_count=f.frame_count, size_bytes=path.stat().st_size,
                sha256=file_sha256(path), details={"record": record}))
    if made:
        write_manifest(directory, manifest, session_encryption(directory, master))
    return made
