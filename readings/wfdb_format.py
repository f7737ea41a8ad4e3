"""WFDB records from and to bytes, without touching the file system.

The ``wfdb`` package reads and writes files by path; an upload arrives as bytes and the store
writes atomically, so this module parses and produces the header and the signal files itself.
Supported: signal formats 16 (little-endian int16) and 212 (packed 12-bit), with byte offsets
(``16+24`` is how the PhysioNet/CinC Challenge's MATLAB v4 ``.mat`` files are described),
several signal files per record, ``gain(baseline)/units``. Checked against ``wfdb.rdrecord``
on the real records in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dsp.ecg12.record import LEADS, Ecg12, Ecg12Error, canonical_lead, unit_factor_to_mv


class WfdbFormatError(ValueError):
    """The WFDB header or signal files are malformed or unsupported; the message names what and where."""


@dataclass(frozen=True)
class WfdbSignal:
    """One signal line of a header."""

    file_name: str
    fmt: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    description: str


@dataclass(frozen=True)
class WfdbHeader:
    """A parsed ``.hea``: record line, signal lines, comment lines (without ``#``)."""

    record_name: str
    n_signals: int
    sampling_rate_hz: float
    n_samples: int | None
    signals: tuple[WfdbSignal, ...]
    comments: tuple[str, ...]


_FMT_RE = re.compile(r"^(\d+)(?:x\d+)?(?::\d+)?(?:\+(\d+))?$")
_GAIN_RE = re.compile(r"^([-+0-9.eE]+)(?:\(([-+0-9]+)\))?(?:/(.+))?$")


def parse_header(text: str) -> WfdbHeader:
    """Parse the text of a ``.hea`` file. Raises `WfdbFormatError` naming the bad line."""
    lines = [ln.strip() for ln in text.splitlines()]
    comments = tuple(ln[1:].strip() for ln in lines if ln.startswith("#"))
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    if not body:
        raise WfdbFormatError("WFDB header is empty: expected a record line 'name n_signals fs n_samples'")
    rec = body[0].split()
    if len(rec) < 2:
        raise WfdbFormatError(f"record line must be 'name n_signals [fs [n_samples]]', got {body[0]!r}")
    name = rec[0].split("/")[0]
    try:
        n_signals = int(rec[1])
        fs = float(rec[2].split("/")[0].split("(")[0]) if len(rec) > 2 else 250.0
        n_samples = int(rec[3]) if len(rec) > 3 else None
    except ValueError as exc:
        raise WfdbFormatError(f"record line must be 'name n_signals fs n_samples', got {body[0]!r}") from exc
    if len(body) - 1 < n_signals:
        raise WfdbFormatError(f"header announces {n_signals} signals, got {len(body) - 1} signal lines")
    signals = []
    for ln in body[1 : 1 + n_signals]:
        parts = ln.split()
        if len(parts) < 2:
            raise WfdbFormatError(f"signal line must be 'file format [gain ...]', got {ln!r}")
        fmt_match = _FMT_RE.match(parts[1])
        if not fmt_match:
            raise WfdbFormatError(f"signal format must look like '16' or '16+24', got {parts[1]!r} in {ln!r}")
        fmt = int(fmt_match.group(1))
        offset = int(fmt_match.group(2) or 0)
        gain, baseline, units = 200.0, None, "mV"
        if len(parts) > 2:
            g = _GAIN_RE.match(parts[2])
            if not g:
                raise WfdbFormatError(f"gain must look like '1000(0)/mV', got {parts[2]!r}")
            gain = float(g.group(1)) or 200.0
            baseline = int(g.group(2)) if g.group(2) else None
            units = g.group(3) or "mV"
        adc_zero = int(parts[4]) if len(parts) > 4 else 0
        description = " ".join(parts[8:]) if len(parts) > 8 else ""
        signals.append(
            WfdbSignal(
                file_name=parts[0],
                fmt=fmt,
                byte_offset=offset,
                gain=gain,
                baseline=baseline if baseline is not None else adc_zero,
                units=units,
                description=description,
            )
        )
    return WfdbHeader(
        record_name=name,
        n_signals=n_signals,
        sampling_rate_hz=fs,
        n_samples=n_samples,
        signals=tuple(signals),
        comments=comments,
    )


def _decode(data: bytes, fmt: int, n_channels: int, offset: int, file_name: str) -> np.ndarray:
    """Samples (n, n_channels) int of one signal file."""
    raw = data[offset:]
    if fmt == 16:
        usable = len(raw) // (2 * n_channels) * 2 * n_channels
        return np.frombuffer(raw[:usable], dtype="<i2").reshape(-1, n_channels).astype(np.int64)
    if fmt == 212:
        usable = len(raw) // 3 * 3
        b = np.frombuffer(raw[:usable], dtype=np.uint8).reshape(-1, 3).astype(np.int64)
        first = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        second = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        flat = np.empty(first.size * 2, dtype=np.int64)
        flat[0::2], flat[1::2] = first, second
        flat[flat > 2047] -= 4096
        usable_samples = flat.size // n_channels * n_channels
        return flat[:usable_samples].reshape(-1, n_channels)
    raise WfdbFormatError(f"signal format of {file_name} must be 16 or 212, got {fmt}")


def decode_record(header_text: str, files: Mapping[str, bytes]) -> tuple[WfdbHeader, dict[str, np.ndarray]]:
    """Physical signals of a record: header text + {signal file name: bytes} -> (header, {description: values}).

    Raises:
        WfdbFormatError: a signal file is missing, formats differ within a file, or a file is
            shorter than the header says.
    """
    header = parse_header(header_text)
    by_file: dict[str, list[int]] = {}
    for i, sig in enumerate(header.signals):
        by_file.setdefault(sig.file_name, []).append(i)
    out: dict[str, np.ndarray] = {}
    for file_name, idx in by_file.items():
        if file_name not in files:
            if not any(canonical_lead(header.signals[i].description) for i in idx):
                continue  # e.g. PTB's Frank leads in .xyz: not needed for a 12-lead ECG
            raise WfdbFormatError(f"signal file {file_name!r} named in the header is missing; got {sorted(files)}")
        fmts = {(header.signals[i].fmt, header.signals[i].byte_offset) for i in idx}
        if len(fmts) != 1:
            raise WfdbFormatError(f"signals of {file_name} must share one format, got {sorted(fmts)}")
        fmt, offset = fmts.pop()
        samples = _decode(files[file_name], fmt, len(idx), offset, file_name)
        if header.n_samples is not None:
            if samples.shape[0] < header.n_samples:
                raise WfdbFormatError(
                    f"{file_name} holds {samples.shape[0]} samples per signal, header says {header.n_samples}"
                )
            samples = samples[: header.n_samples]
        for col, i in enumerate(idx):
            sig = header.signals[i]
            name = sig.description or f"signal {i}"
            out[name] = (samples[:, col] - sig.baseline) / sig.gain * unit_factor_to_mv(sig.units)
    return header, out


def ecg_from_files(files: Mapping[str, bytes], record_name: str | None = None) -> tuple[Ecg12, WfdbHeader]:
    """`Ecg12` from WFDB files given as bytes: {"A0001.hea": ..., "A0001.mat": ...}.

    ``record_name`` picks the header when several are given. Raises `WfdbFormatError` or `Ecg12Error`.
    """
    headers = [n for n in files if n.endswith(".hea")]
    if record_name is not None:
        headers = [n for n in headers if n[:-4] == record_name]
    if len(headers) != 1:
        raise WfdbFormatError(
            f"expected exactly one .hea file{' for ' + record_name if record_name else ''}, got {headers}"
        )
    try:
        text = files[headers[0]].decode("ascii")
    except UnicodeDecodeError as exc:
        raise WfdbFormatError(f"{headers[0]} must be ASCII text") from exc
    header, signals = decode_record(text, files)
    try:
        ecg = Ecg12.from_leads(signals, header.sampling_rate_hz, units="mV")
    except Ecg12Error as exc:
        raise Ecg12Error(f"{header.record_name}: {exc}") from exc
    return ecg, header


def encode_record(
    ecg: Ecg12, record_name: str, comments: tuple[str, ...] = (), gain_per_mv: float = 1000.0
) -> dict[str, bytes]:
    """WFDB format-16 files of an ECG: {name.hea: header, name.dat: samples}, 1 µV per unit by default.

    Raises:
        WfdbFormatError: the record name is not a plain WFDB name, or a sample overflows int16.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", record_name):
        raise WfdbFormatError(f"record name must be 1-64 letters, digits, '_' or '-', got {record_name!r}")
    digital = np.round(ecg.signals_mv * gain_per_mv)
    if np.abs(digital).max(initial=0) > 32767:
        raise WfdbFormatError(f"samples overflow 16 bits at {gain_per_mv:g}/mV; use a lower gain")
    samples = digital.astype("<i2").T  # (n, 12) interleaved
    dat_name = f"{record_name}.dat"
    lines = [f"{record_name} {len(LEADS)} {ecg.sampling_rate_hz:g} {ecg.n_samples}"]
    for row, lead in enumerate(LEADS):
        checksum = int(np.sum(samples[:, row].astype(np.int64))) & 0xFFFF
        checksum = checksum - 0x10000 if checksum > 0x7FFF else checksum
        lines.append(f"{dat_name} 16 {gain_per_mv:g}(0)/mV 16 0 {int(samples[0, row])} {checksum} 0 {lead}")
    for c in comments:
        lines.append("# " + c.replace("\n", " "))
    return {f"{record_name}.hea": ("\n".join(lines) + "\n").encode("ascii", "replace"), dat_name: samples.tobytes()}


def lead_names(header: WfdbHeader) -> list[str | None]:
    """Canonical lead name per signal (None for non-ECG channels)."""
    return [canonical_lead(s.description) for s in header.signals]
