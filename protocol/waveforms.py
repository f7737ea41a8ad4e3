"""Waveform messages on the wire: msgpack binary websocket frames, version 1.

The only module that touches msgpack. Every frame is one msgpack map with a ``"type"`` key. A
monitor sends `Announce`, `Chunk` and `Numerics`, an ECG cart `Ecg12Snapshot` (all in
`ClientWaveformMessage`); the server sends `Ack`, `SnapshotReceived` and `WaveformError` back to it, and `StreamAnnounce`, `ViewerChunk`, `Numerics`, `Analysis`, `Gap`,
`Skipped` and `StreamEnded` to viewers (all in `ServerWaveformMessage`). The field-by-field
description lives in ``docs/protocol-waveforms.md``.

`decode_client_frame` validates everything a peer can get wrong and raises `WaveformWireError`
naming the field, what was expected and what it got; checks that need stream state (channel count
matches the announce, sequence rules) belong to `waveforms.relay`.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import msgpack
import numpy as np

VERSION: Final = 1
MAX_FRAME_BYTES: Final = 256 * 1024
MAX_CHANNELS: Final = 16
MAX_SAMPLES_PER_CHUNK: Final = 8192  # per channel: ~8 s at 1000 Hz, 65 s at 125 Hz
MIN_SAMPLING_RATE_HZ: Final = 125.0
MAX_SAMPLING_RATE_HZ: Final = 1000.0
MAX_NUMERICS: Final = 32
MAX_SEQ: Final = 2**53  # sample counter; 2**53 samples at 1 kHz is ~285,000 years
MIN_RATE_LIMIT_BPM: Final = 15.0
MAX_RATE_LIMIT_BPM: Final = 350.0
# 12-lead resting ECG snapshots (a device's 10 s recording for the ECG centre, docs/ecg12.md)
SNAPSHOT_LEAD_COUNTS: Final = (8, 12)  # 8: I, II, V1-V6 (the limb leads derived), 12: all
SNAPSHOT_MIN_RATE_HZ: Final = 250.0
SNAPSHOT_MIN_S: Final = 8.0
SNAPSHOT_MAX_S: Final = 12.0  # 10 s is the standard; 12 s x 12 leads x 1000 Hz x int16 > MAX_FRAME_BYTES
DTYPES: Final[Mapping[str, np.dtype[Any]]] = {"<i2": np.dtype("<i2"), "<i4": np.dtype("<i4")}

_STREAM_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_LABEL = re.compile(r"^[^\x00-\x1f]{1,32}$")


class WaveformErrorReason(StrEnum):
    """Why a waveform frame was refused (the `reason` of an `error` frame)."""

    BAD_MESSAGE = "bad_message"  # not msgpack, not a map, unknown type, wrong field type or range
    UNSUPPORTED_VERSION = "unsupported_version"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNKNOWN_STREAM = "unknown_stream"  # chunk/numerics before announce (or after the group closed)
    STREAM_TAKEN = "stream_taken"  # another connected publisher owns this stream id
    STREAM_MISMATCH = "stream_mismatch"  # re-announce differs from the open stream, or channel count
    SEQUENCE_ERROR = "sequence_error"  # seq too far ahead, or too many unfilled gaps
    TOO_MANY_STREAMS = "too_many_streams"
    FORBIDDEN = "forbidden"  # this connection may not publish waveforms (used by the server)
    INVALID_ECG = "invalid_ecg"  # a 12-lead snapshot that is well formed but not a usable ECG
    INTERNAL = "internal"


class WaveformWireError(Exception):
    """A frame that cannot be accepted; `reason` is for programs, `message` for people."""

    def __init__(self, reason: WaveformErrorReason, message: str,
                 stream_id: str | None = None) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.stream_id = stream_id


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One channel of a stream. Physical value = (adu - baseline) / gain, in `unit` (WFDB rule)."""

    name: str  # "II", "V1", "PLETH", "RESP", "MLII", ...
    unit: str  # "mV", "%", "Ohm", ...
    gain: float  # adu per unit, > 0
    baseline: int  # adu


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Heart-rate alarm limits a monitor asks for (bpm); None = analyzer default."""

    brady_bpm: float | None = None
    tachy_bpm: float | None = None


@dataclass(frozen=True, slots=True)
class Announce:
    """Monitor -> server: describe (or re-describe after a reconnect) one stream.

    `oldest_seq` is the first sample the monitor can still send: samples before it that the relay
    never received are lost for good (the monitor's buffer overflowed), so the relay stops waiting.
    """

    stream_id: str
    channels: tuple[ChannelInfo, ...]
    sampling_rate_hz: float
    ecg_channel: int | None = None
    limits: RateLimits | None = None
    oldest_seq: int = 0
    session: str | None = None  # the monitor's run (new at each start): a new one = a new segment
    segment: int = 0  # server -> viewers/sinks: which segment of the bed's record (0, 1, ...)

    def description(self) -> Announce:
        """What must match on a re-announce within one segment (not oldest_seq, session, segment)."""
        return Announce(self.stream_id, self.channels, self.sampling_rate_hz, self.ecg_channel, self.limits)


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    """Monitor -> server: consecutive samples of all channels of a stream.

    `seq` is the stream-wide index of the first sample (counter from 0, so gaps and overlaps are
    exact); `t0` the monitor's epoch time of that sample (s); `samples` int16 or int32 ADC values,
    shape (n_channels, n_samples), channel-major. `backfill` marks samples re-sent from the
    monitor's buffer after a reconnect (viewers see them with `live: false`).
    """

    stream_id: str
    seq: int
    t0: float
    samples: np.ndarray
    backfill: bool = False

    @property
    def n_samples(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[1])


@dataclass(frozen=True, slots=True)
class Numerics:
    """Monitor -> server -> viewers: slow numeric values, sent when they change.

    `values` maps names with units (spo2_pct, nibp_sys_mmhg, nibp_dia_mmhg, resp_rate_bpm, temp_c,
    ...) to numbers; `time` is the monitor's epoch time (s).
    """

    stream_id: str
    time: float
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True, eq=False)
class Ecg12Snapshot:
    """Device -> server: one resting 12-lead ECG (10 s at 250-1000 Hz) for remote reading.

    `samples` int16/int32 (n_leads, n), lead-major, in the order of `leads` (standard names, 8 or
    12 of them); physical value in mV = adu / `gain_adu_per_mv` (no baseline: an ECG is AC).
    `snapshot_id` is the device's own id for it (the reply names it; a re-send after a lost
    reply is recognised by its content). The referral/encounter id and patient come from the
    clinic's order the cart was given.
    """

    snapshot_id: str
    referral_id: str
    patient_id: str
    leads: tuple[str, ...]
    sampling_rate_hz: float
    gain_adu_per_mv: float
    samples: np.ndarray
    patient_name: str = ""
    sex: str = "U"  # "M", "F" or "U"
    age_years: float | None = None
    acquired_at: float | None = None  # the device's epoch time of the first sample

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return float(self.samples.shape[1]) / self.sampling_rate_hz


ClientWaveformMessage = Announce | Chunk | Numerics | Ecg12Snapshot


@dataclass(frozen=True, slots=True)
class Ack:
    """Server -> monitor: every sample before `next_seq` is stored; the monitor may free it."""

    stream_id: str
    next_seq: int


@dataclass(frozen=True, slots=True)
class WaveformError:
    """Server -> monitor: a refused frame. The connection stays open."""

    reason: WaveformErrorReason
    message: str
    stream_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamAnnounce:
    """Server -> viewers: a stream exists; `publisher_id` is the participant that publishes it."""

    publisher_id: str
    announce: Announce


@dataclass(frozen=True, slots=True, eq=False)
class ViewerChunk:
    """Server -> viewers: a chunk; `live` is False while catching up after a back-fill."""

    chunk: Chunk
    live: bool


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    """One alarm as viewers see it; `kind`/`priority` are the DSP enum values as strings."""

    kind: str
    priority: str
    message: str
    since_sample: int


@dataclass(frozen=True, slots=True)
class Analysis:
    """Server -> viewers: what the ECG analyzer found since the previous `analysis` of the stream.

    `beats` are stream sample indices of detected QRS complexes; `beat_labels` their classes,
    one MIT-BIH symbol per beat in the same order (``N`` normal, ``V`` ventricular, ``Q``
    unclassifiable; empty from a server that does not classify: read every beat as ``N``,
    see `labels`); `heart_rate_bpm`, `rr_ms` (last
    RR interval) and `irregularity` (0 = regular, analyzer-defined scale) are the latest values or
    None while unknown. `active_alarms` is the full current set; raised/cleared are the changes.
    """

    stream_id: str
    beats: tuple[int, ...] = ()
    heart_rate_bpm: float | None = None
    rr_ms: float | None = None
    irregularity: float | None = None
    active_alarms: tuple[AlarmInfo, ...] = ()
    alarms_raised: tuple[AlarmInfo, ...] = ()
    alarms_cleared: tuple[AlarmInfo, ...] = ()
    beat_labels: str = ""

    @property
    def labels(self) -> str:
        """One class symbol per beat (``N`` for each when the sender gave none)."""
        if len(self.beat_labels) == len(self.beats):
            return self.beat_labels
        return "N" * len(self.beats)


@dataclass(frozen=True, slots=True)
class Gap:
    """Server -> viewers: samples [from_sample, to_sample) of a stream are missing.

    `lost` False: still waiting for a back-fill; True: they will never come (the monitor's buffer
    overflowed or the stream ended with the hole open).
    """

    stream_id: str
    from_sample: int
    to_sample: int
    lost: bool


@dataclass(frozen=True, slots=True)
class Skipped:
    """Server -> one slow viewer: `chunks` chunks of samples [from_sample, to_sample) were dropped
    from its queue because it fell behind. Nothing is missing from the stored record."""

    stream_id: str
    from_sample: int
    to_sample: int
    chunks: int


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """Server -> viewers: the stream is closed (`reason`: "group_closed", "publisher_gone" after
    the retention period, "new_segment" when its monitor restarted: an `announce` follows)."""

    stream_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SnapshotReceived:
    """Server -> device: the snapshot is stored and queued for reading as `request_id`."""

    snapshot_id: str
    request_id: str
    priority: str  # the triage priority it was queued with ("stat", "urgent", "flagged", "routine")


ServerWaveformMessage = (
    Ack
    | SnapshotReceived
    | WaveformError
    | StreamAnnounce
    | ViewerChunk
    | Numerics
    | Analysis
    | Gap
    | Skipped
    | StreamEnded
)

# --------------------------------------------------------------------------- encoding


def _announce_map(a: Announce) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "announce",
        "v": VERSION,
        "stream": a.stream_id,
        "channels": [
            {"name": c.name, "unit": c.unit, "gain": float(c.gain), "baseline": int(c.baseline)}
            for c in a.channels
        ],
        "sampling_rate_hz": float(a.sampling_rate_hz),
        "oldest_seq": int(a.oldest_seq),
    }
    if a.session is not None:
        out["session"] = a.session
    if a.segment:
        out["segment"] = int(a.segment)
    if a.ecg_channel is not None:
        out["ecg_channel"] = int(a.ecg_channel)
    if a.limits is not None:
        out["limits"] = {
            k: v
            for k, v in (("brady_bpm", a.limits.brady_bpm), ("tachy_bpm", a.limits.tachy_bpm))
            if v is not None
        }
    return out


_LITTLE_ENDIAN: Final[Mapping[np.dtype[Any], str]] = {np.dtype("<i2"): "<i2",
                                                       np.dtype("<i4"): "<i4"}


def _chunk_map(c: Chunk) -> dict[str, Any]:
    samples = c.samples
    dtype_name = _LITTLE_ENDIAN.get(samples.dtype)
    if dtype_name is not None and samples.ndim == 2 and samples.flags.c_contiguous:
        data = samples.tobytes()  # the relay's common case: no conversion
    else:
        if samples.dtype.kind != "i" or samples.dtype.itemsize not in (2, 4) or samples.ndim != 2:
            raise TypeError(f"chunk samples must be int16/int32 (n_channels, n), got "
                            f"{samples.dtype} shape {samples.shape}")
        le = samples.dtype.newbyteorder("<")
        dtype_name = le.str
        data = np.ascontiguousarray(samples, dtype=le).tobytes()
    return {
        "type": "chunk",
        "stream": c.stream_id,
        "seq": int(c.seq),
        "t0": float(c.t0),
        "dtype": dtype_name,
        "n_channels": int(samples.shape[0]),
        "data": data,
        "backfill": bool(c.backfill),
    }


def _int_block(samples: np.ndarray, what: str) -> tuple[str, bytes]:
    dtype_name = _LITTLE_ENDIAN.get(samples.dtype)
    if dtype_name is not None and samples.ndim == 2 and samples.flags.c_contiguous:
        return dtype_name, samples.tobytes()
    if samples.dtype.kind != "i" or samples.dtype.itemsize not in (2, 4) or samples.ndim != 2:
        raise TypeError(f"{what} samples must be int16/int32 (n, m), got {samples.dtype} shape {samples.shape}")
    le = samples.dtype.newbyteorder("<")
    return le.str, np.ascontiguousarray(samples, dtype=le).tobytes()


def _snapshot_map(m: Ecg12Snapshot) -> dict[str, Any]:
    dtype_name, data = _int_block(m.samples, "snapshot")
    out: dict[str, Any] = {
        "type": "ecg12_snapshot", "v": VERSION, "snapshot": m.snapshot_id, "referral": m.referral_id,
        "patient": {"id": m.patient_id, "name": m.patient_name, "sex": m.sex},
        "leads": list(m.leads), "sampling_rate_hz": float(m.sampling_rate_hz),
        "gain_adu_per_mv": float(m.gain_adu_per_mv), "dtype": dtype_name, "data": data,
    }
    if m.age_years is not None:
        out["patient"]["age_years"] = float(m.age_years)
    if m.acquired_at is not None:
        out["acquired_at"] = float(m.acquired_at)
    return out


_BEAT_LABELS = frozenset("NVQ")


def _decode_beat_labels(raw: Any, n_beats: int) -> str:
    """``beat_labels`` of an analysis: absent (an older server) is ""; otherwise one known
    symbol per beat."""
    if raw == "":
        return ""
    if not isinstance(raw, str) or len(raw) != n_beats or not set(raw) <= _BEAT_LABELS:
        raise ValueError("beat_labels must give one of N, V, Q per beat")
    return raw


def _alarm_map(a: AlarmInfo) -> dict[str, Any]:
    return {"kind": a.kind, "priority": a.priority, "message": a.message,
            "since_sample": int(a.since_sample)}


def _analysis_map(msg: Analysis) -> dict[str, Any]:
    return {
        "type": "analysis",
        "stream": msg.stream_id,
        "beats": [int(b) for b in msg.beats],
        "heart_rate_bpm": msg.heart_rate_bpm,
        "rr_ms": msg.rr_ms,
        "irregularity": msg.irregularity,
        "active_alarms": [_alarm_map(a) for a in msg.active_alarms],
        "alarms_raised": [_alarm_map(a) for a in msg.alarms_raised],
        "alarms_cleared": [_alarm_map(a) for a in msg.alarms_cleared],
        "beat_labels": msg.beat_labels,
    }


# one encoder per message class: a dict lookup, not a chain of isinstance checks (hot path)
_MAPPERS: Final[Mapping[type, Callable[[Any], dict[str, Any]]]] = {
    Announce: _announce_map,
    Chunk: _chunk_map,
    Numerics: lambda m: {"type": "numerics", "stream": m.stream_id, "time": float(m.time),
                         "values": {k: float(v) for k, v in m.values.items()}},
    Ack: lambda m: {"type": "ack", "stream": m.stream_id, "next_seq": int(m.next_seq)},
    Ecg12Snapshot: _snapshot_map,
    SnapshotReceived: lambda m: {"type": "ecg12_received", "snapshot": m.snapshot_id, "request": m.request_id,
                                 "priority": m.priority},
    WaveformError: lambda m: {"type": "error", "reason": m.reason.value, "message": m.message,
                              "stream": m.stream_id},
    StreamAnnounce: lambda m: {**_announce_map(m.announce), "publisher": m.publisher_id},
    ViewerChunk: lambda m: {**_chunk_map(m.chunk), "live": bool(m.live)},
    Analysis: _analysis_map,
    Gap: lambda m: {"type": "gap", "stream": m.stream_id, "from_sample": m.from_sample,
                    "to_sample": m.to_sample, "lost": m.lost},
    Skipped: lambda m: {"type": "skipped", "stream": m.stream_id, "from_sample": m.from_sample,
                        "to_sample": m.to_sample, "chunks": m.chunks},
    StreamEnded: lambda m: {"type": "stream_ended", "stream": m.stream_id, "reason": m.reason},
}


def _to_map(msg: ClientWaveformMessage | ServerWaveformMessage) -> dict[str, Any]:
    mapper = _MAPPERS.get(type(msg))
    if mapper is None:
        raise TypeError(f"not a waveform message: {type(msg).__name__}")
    return mapper(msg)


def encode(msg: ClientWaveformMessage | ServerWaveformMessage) -> bytes:
    """Encode one message as a msgpack binary frame.

    Raises TypeError for an object that is not a waveform message (our bug, not the peer's).
    """
    frame: bytes = msgpack.packb(_to_map(msg), use_bin_type=True)
    return frame


# --------------------------------------------------------------------------- decoding


def _bad(message: str) -> WaveformWireError:
    return WaveformWireError(WaveformErrorReason.BAD_MESSAGE, message)


def _get(m: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in m:
        raise _bad(f"{where} needs field {key!r}")
    return m[key]


def _str(m: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str]) -> str:
    v = _get(m, key, where)
    if not isinstance(v, str):
        raise _bad(f"{where}.{key} must be a string, got {type(v).__name__}")
    if not pattern.match(v):
        raise _bad(f"{where}.{key} must match {pattern.pattern}, got {v[:80]!r}")
    return v


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{name} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _bad(f"{name} must be {lo}-{hi}, got {v}")
    return v


def _float(v: Any, name: str, lo: float, hi: float, unit: str = "") -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(f"{name} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f) or not lo <= f <= hi:
        suffix = f" {unit}" if unit else ""
        raise _bad(f"{name} must be {lo:g}-{hi:g}{suffix}, got {v!r}")
    return f


def _decode_announce(m: Mapping[str, Any]) -> Announce:
    v = _get(m, "v", "announce")
    if v != VERSION:
        raise WaveformWireError(WaveformErrorReason.UNSUPPORTED_VERSION,
                                f"announce.v must be {VERSION}, got {v!r}")
    stream_id = _str(m, "stream", "announce", _STREAM_ID)
    raw_channels = _get(m, "channels", "announce")
    if not isinstance(raw_channels, list):
        raise _bad(f"announce.channels must be a list, got {type(raw_channels).__name__}")
    if not 1 <= len(raw_channels) <= MAX_CHANNELS:
        raise _bad(f"announce.channels must have 1-{MAX_CHANNELS} entries, got {len(raw_channels)}")
    channels = []
    for i, ch in enumerate(raw_channels):
        where = f"announce.channels[{i}]"
        if not isinstance(ch, dict):
            raise _bad(f"{where} must be a map, got {type(ch).__name__}")
        channels.append(ChannelInfo(
            name=_str(ch, "name", where, _LABEL),
            unit=_str(ch, "unit", where, _LABEL),
            gain=_float(_get(ch, "gain", where), f"{where}.gain", 1e-6, 1e9, "adu/unit"),
            baseline=_int(_get(ch, "baseline", where), f"{where}.baseline", -(2**31), 2**31 - 1),
        ))
    fs = _float(_get(m, "sampling_rate_hz", "announce"), "sampling_rate_hz",
                MIN_SAMPLING_RATE_HZ, MAX_SAMPLING_RATE_HZ, "Hz")
    ecg = m.get("ecg_channel")
    if ecg is not None:
        ecg = _int(ecg, "announce.ecg_channel", 0, len(channels) - 1)
    limits = None
    raw_limits = m.get("limits")
    if raw_limits is not None:
        if not isinstance(raw_limits, dict):
            raise _bad(f"announce.limits must be a map, got {type(raw_limits).__name__}")
        brady = raw_limits.get("brady_bpm")
        tachy = raw_limits.get("tachy_bpm")
        if brady is not None:
            brady = _float(brady, "limits.brady_bpm", MIN_RATE_LIMIT_BPM, MAX_RATE_LIMIT_BPM, "bpm")
        if tachy is not None:
            tachy = _float(tachy, "limits.tachy_bpm", MIN_RATE_LIMIT_BPM, MAX_RATE_LIMIT_BPM, "bpm")
        if brady is not None and tachy is not None and brady >= tachy:
            raise _bad(f"limits.brady_bpm must be below tachy_bpm, got {brady:g} >= {tachy:g}")
        limits = RateLimits(brady, tachy)
    oldest = _int(m.get("oldest_seq", 0), "announce.oldest_seq", 0, MAX_SEQ)
    session = m.get("session")
    if session is not None and (not isinstance(session, str) or not _STREAM_ID.match(session)):
        raise _bad(f"announce.session must match {_STREAM_ID.pattern}, got {str(session)[:80]!r}")
    return Announce(stream_id, tuple(channels), fs, ecg, limits, oldest, session)


def _decode_chunk(m: Mapping[str, Any]) -> Chunk:
    stream_id = _str(m, "stream", "chunk", _STREAM_ID)
    seq = _int(_get(m, "seq", "chunk"), "chunk.seq", 0, MAX_SEQ)
    t0 = _float(_get(m, "t0", "chunk"), "chunk.t0", 0.0, 1e11, "s")
    dtype_name = _get(m, "dtype", "chunk")
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise _bad(f"chunk.dtype must be one of {sorted(DTYPES)}, got {str(dtype_name)[:40]!r}")
    dtype = DTYPES[dtype_name]
    n_channels = _int(_get(m, "n_channels", "chunk"), "chunk.n_channels", 1, MAX_CHANNELS)
    data = _get(m, "data", "chunk")
    if not isinstance(data, bytes):
        raise _bad(f"chunk.data must be bin, got {type(data).__name__}")
    row_bytes = n_channels * dtype.itemsize
    if len(data) == 0 or len(data) % row_bytes:
        raise _bad(f"chunk.data must be a non-empty multiple of n_channels*itemsize = {row_bytes}"
                   f" bytes, got {len(data)}")
    n = len(data) // row_bytes
    if n > MAX_SAMPLES_PER_CHUNK:
        raise _bad(f"chunk must have at most {MAX_SAMPLES_PER_CHUNK} samples per channel, got {n}")
    backfill = m.get("backfill", False)
    if not isinstance(backfill, bool):
        raise _bad(f"chunk.backfill must be a boolean, got {type(backfill).__name__}")
    samples = np.frombuffer(data, dtype=dtype).reshape(n_channels, n)
    return Chunk(stream_id, seq, t0, samples, backfill)


def _decode_numerics(m: Mapping[str, Any]) -> Numerics:
    stream_id = _str(m, "stream", "numerics", _STREAM_ID)
    t = _float(_get(m, "time", "numerics"), "numerics.time", 0.0, 1e11, "s")
    raw = _get(m, "values", "numerics")
    if not isinstance(raw, dict):
        raise _bad(f"numerics.values must be a map, got {type(raw).__name__}")
    if len(raw) > MAX_NUMERICS:
        raise _bad(f"numerics.values must have at most {MAX_NUMERICS} entries, got {len(raw)}")
    values: dict[str, float] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not _LABEL.match(k):
            raise _bad(f"numerics.values keys must be short strings, got {k!r}")
        values[k] = _float(v, f"numerics.values[{k!r}]", -1e9, 1e9)
    return Numerics(stream_id, t, values)


_REFERRAL = re.compile(r"^[^\x00-\x1f]{1,64}$")
_NAME = re.compile(r"^[^\x00-\x1f]{0,64}$")


def _decode_snapshot(m: Mapping[str, Any]) -> Ecg12Snapshot:
    w = "ecg12_snapshot"
    v = _get(m, "v", w)
    if v != VERSION:
        raise WaveformWireError(WaveformErrorReason.UNSUPPORTED_VERSION, f"{w}.v must be {VERSION}, got {v!r}")
    snapshot_id = _str(m, "snapshot", w, _STREAM_ID)
    try:
        referral = _str(m, "referral", w, _REFERRAL)
        patient = _get(m, "patient", w)
        if not isinstance(patient, dict):
            raise _bad(f"{w}.patient must be a map, got {type(patient).__name__}")
        patient_id = _str(patient, "id", f"{w}.patient", _REFERRAL)
        name = patient.get("name", "")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _bad(f"{w}.patient.name must be a string of at most 64 characters, got {str(name)[:80]!r}")
        sex = patient.get("sex", "U")
        if sex not in ("M", "F", "U"):
            raise _bad(f"{w}.patient.sex must be one of M, F, U, got {str(sex)[:8]!r}")
        age = patient.get("age_years")
        if age is not None:
            age = _float(age, f"{w}.patient.age_years", 0.0, 130.0, "years")
        leads = _get(m, "leads", w)
        if not isinstance(leads, list) or len(leads) not in SNAPSHOT_LEAD_COUNTS:
            got = len(leads) if isinstance(leads, list) else type(leads).__name__
            raise _bad(f"{w}.leads must list {' or '.join(map(str, SNAPSHOT_LEAD_COUNTS))} lead names, got {got}")
        for i, name_i in enumerate(leads):
            if not isinstance(name_i, str) or not _LABEL.match(name_i):
                raise _bad(f"{w}.leads[{i}] must be a lead name such as II or V1, got {str(name_i)[:40]!r}")
        if len(set(leads)) != len(leads):
            raise _bad(f"{w}.leads must not repeat a lead, got {leads}")
        fs = _float(_get(m, "sampling_rate_hz", w), f"{w}.sampling_rate_hz", SNAPSHOT_MIN_RATE_HZ,
                    MAX_SAMPLING_RATE_HZ, "Hz")
        gain = _float(_get(m, "gain_adu_per_mv", w), f"{w}.gain_adu_per_mv", 1.0, 1e7, "adu/mV")
        dtype_name = _get(m, "dtype", w)
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise _bad(f"{w}.dtype must be one of {sorted(DTYPES)}, got {str(dtype_name)[:40]!r}")
        dtype = DTYPES[dtype_name]
        data = _get(m, "data", w)
        if not isinstance(data, bytes):
            raise _bad(f"{w}.data must be bin, got {type(data).__name__}")
        row = len(leads) * dtype.itemsize
        if len(data) == 0 or len(data) % row:
            raise _bad(f"{w}.data must be a non-empty multiple of len(leads)*itemsize = {row} bytes, got {len(data)}")
        n = len(data) // row
        if not SNAPSHOT_MIN_S <= n / fs <= SNAPSHOT_MAX_S:
            raise _bad(f"{w} must be {SNAPSHOT_MIN_S:g}-{SNAPSHOT_MAX_S:g} s long (10 s is standard), "
                       f"got {n / fs:.2f} s ({n} samples at {fs:g} Hz)")
        acquired = m.get("acquired_at")
        if acquired is not None:
            acquired = _float(acquired, f"{w}.acquired_at", 0.0, 1e11, "s")
    except WaveformWireError as exc:
        raise WaveformWireError(exc.reason, exc.message, snapshot_id) from None
    samples = np.frombuffer(data, dtype=dtype).reshape(len(leads), n)
    return Ecg12Snapshot(snapshot_id, referral, patient_id, tuple(leads), fs, gain, samples, name, sex, age, acquired)


def _unpack(data: bytes) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _bad(f"waveform frames are binary, got {type(data).__name__}")
    if len(data) > MAX_FRAME_BYTES:
        raise WaveformWireError(WaveformErrorReason.MESSAGE_TOO_LARGE,
                                f"frame must be at most {MAX_FRAME_BYTES} bytes, got {len(data)}")
    try:
        m = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:
        raise _bad(f"frame is not valid msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(m, dict):
        raise _bad(f"frame must be a msgpack map, got {type(m).__name__}")
    return m


_CLIENT_DECODERS: dict[str, Callable[[Mapping[str, Any]], ClientWaveformMessage]] = {
    "announce": _decode_announce,
    "chunk": _decode_chunk,
    "numerics": _decode_numerics,
    "ecg12_snapshot": _decode_snapshot,
}


def decode_client_frame(data: bytes) -> ClientWaveformMessage:
    """Decode and validate one binary frame a monitor sent.

    Raises WaveformWireError (reason + human message naming expected and got) for anything that is
    not a well-formed v1 `announce`, `chunk` or `numerics` message within the limits above.
    """
    m = _unpack(data)
    kind = m.get("type")
    decoder = _CLIENT_DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise _bad(f"type must be one of {sorted(_CLIENT_DECODERS)}, got {repr(kind)[:40]}")
    try:
        return decoder(m)
    except WaveformWireError:
        raise
    except (TypeError, ValueError, OverflowError, KeyError) as exc:
        # A check above missed a shape (found by fuzzing: a list as dtype): still the peer's
        # fault, still an error frame, never an exception out of the wire module.
        raise _bad(f"malformed {kind}: {type(exc).__name__}") from None


def _decode_alarm(a: Mapping[str, Any]) -> AlarmInfo:
    return AlarmInfo(str(a["kind"]), str(a["priority"]), str(a["message"]), int(a["since_sample"]))


def _optional_float(v: Any) -> float | None:
    return None if v is None else float(v)


def decode_server_frame(data: bytes) -> ServerWaveformMessage:
    """Decode one binary frame the server sent (for monitors, viewers, tests and benchmarks).

    Trusts the server more than `decode_client_frame` trusts monitors: structure errors raise
    WaveformWireError(BAD_MESSAGE) but values are not range-checked.
    """
    m = _unpack(data)
    kind = m.get("type")
    try:
        match kind:
            case "ack":
                return Ack(m["stream"], int(m["next_seq"]))
            case "ecg12_received":
                return SnapshotReceived(m["snapshot"], m["request"], m["priority"])
            case "error":
                return WaveformError(WaveformErrorReason(m["reason"]), m["message"], m.get("stream"))
            case "announce":
                a = _decode_announce(m)
                return StreamAnnounce(m["publisher"], Announce(
                    a.stream_id, a.channels, a.sampling_rate_hz, a.ecg_channel, a.limits,
                    a.oldest_seq, a.session, int(m.get("segment", 0))))
            case "chunk":
                return ViewerChunk(_decode_chunk(m), bool(m["live"]))
            case "numerics":
                return _decode_numerics(m)
            case "analysis":
                return Analysis(
                    m["stream"], tuple(int(b) for b in m["beats"]),
                    _optional_float(m["heart_rate_bpm"]), _optional_float(m["rr_ms"]),
                    _optional_float(m["irregularity"]),
                    tuple(_decode_alarm(a) for a in m["active_alarms"]),
                    tuple(_decode_alarm(a) for a in m["alarms_raised"]),
                    tuple(_decode_alarm(a) for a in m["alarms_cleared"]),
                    _decode_beat_labels(m.get("beat_labels", ""), len(m["beats"])),
                )
            case "gap":
                return Gap(m["stream"], int(m["from_sample"]), int(m["to_sample"]), bool(m["lost"]))
            case "skipped":
                return Skipped(m["stream"], int(m["from_sample"]), int(m["to_sample"]),
                               int(m["chunks"]))
            case "stream_ended":
                return StreamEnded(m["stream"], m["reason"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(f"malformed {kind} frame: {type(exc).__name__}: {exc}") from None
    raise _bad(f"unknown server frame type {kind!r}")


# --------------------------------------------------------------------------- cheap paths


_T0_KEY: Final = b"\xa2t0\xcb"  # msgpack: fixstr "t0", then a float64 marker
_T0_SENTINEL: Final = 1234567.890625  # exactly representable, unlikely in a real frame


@dataclass(frozen=True, slots=True)
class PrecodedChunk:
    """A chunk frame encoded once whose `t0` is patched in place per send.

    Encoding is a sender's cost; benchmarks and high-rate simulated monitors encode every chunk
    before the run and stamp the send time as `t0` with `frame_at(t0)` (a copy and an 8-byte
    patch). Build with `precode_chunk`.
    """

    frame: bytes
    t0_offset: int  # index of the 8 big-endian bytes of t0 in `frame`

    def frame_at(self, t0: float) -> bytes:
        """The frame with `t0` (epoch seconds) in place of the encoded one."""
        buf = bytearray(self.frame)
        struct.pack_into(">d", buf, self.t0_offset, t0)
        return bytes(buf)


def precode_chunk(chunk: Chunk) -> PrecodedChunk:
    """Encode `chunk` (its `t0` is ignored) as a `PrecodedChunk`.

    Raises TypeError for samples that are not int16/int32 (n_channels, n), like `encode`.
    """
    frame = encode(Chunk(chunk.stream_id, chunk.seq, _T0_SENTINEL, chunk.samples, chunk.backfill))
    offset = frame.find(_T0_KEY + struct.pack(">d", _T0_SENTINEL))
    if offset < 0:  # msgpack-python always packs Python floats as float64 (use_single_float=False)
        raise AssertionError("t0 is not encoded as a msgpack float64")
    return PrecodedChunk(frame, offset + len(_T0_KEY))


def chunk_timing(frame: bytes) -> tuple[str, int, float] | None:
    """(stream id, seq, t0) of a chunk frame, None for any other message; no validation, no copy
    of the samples. For viewers that only timestamp frames (benchmarks).

    Raises WaveformWireError(BAD_MESSAGE) for a frame that is not a msgpack map.
    """
    m = _unpack(frame)
    if m.get("type") != "chunk":
        return None
    return m["stream"], m["seq"], m["t0"]


def physical(samples: np.ndarray, channel: ChannelInfo) -> np.ndarray:
    """ADC integers of one channel -> float64 physical values: (adu - baseline) / gain."""
    return (samples.astype(np.float64) - channel.baseline) / channel.gain


__all__ = [
    "MAX_CHANNELS", "MAX_FRAME_BYTES", "MAX_SAMPLES_PER_CHUNK", "VERSION", "Ack", "AlarmInfo",
    "Analysis", "Announce", "ChannelInfo", "Chunk", "ClientWaveformMessage", "Ecg12Snapshot", "Gap", "Numerics",
    "PrecodedChunk", "RateLimits", "ServerWaveformMessage", "Skipped", "SnapshotReceived", "StreamAnnounce",
    "StreamEnded", "ViewerChunk", "WaveformError", "WaveformErrorReason", "WaveformWireError",
    "chunk_timing", "decode_client_frame", "decode_server_frame", "encode", "physical",
    "precode_chunk",
]
