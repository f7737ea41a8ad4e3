"""`medstream ecg12-send`: an ECG cart sends one resting 12-lead ECG (10 s) for remote reading.

Reads a WFDB record, takes 10 s of its standard leads (from `--start`), converts them to
integers at 1 µV per unit (int16; int32 where a lead exceeds ±32.7 mV), joins the clinic's room
as a device (role monitor) and sends one `ecg12_snapshot` over the waveform protocol
(docs/protocol-waveforms.md). Prints the reading request id the server queued it as, or the
server's reason for refusing it. The room a cart joins is its clinic's: the request belongs to
the clinic whose id is the room id (docs/ecg12.md).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from dataclasses import dataclass

import numpy as np
import websockets

from protocol import signaling as wire
from protocol.waveforms import (
    Ecg12Snapshot,
    SnapshotReceived,
    WaveformError,
    decode_server_frame,
    encode,
)

STANDARD = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
GAIN_ADU_PER_MV = 1000.0
SNAPSHOT_S = 10.0


class Ecg12SendError(Exception):
    """The record cannot be sent, or the server refused it (message for people)."""


def _standard_name(name: str) -> str | None:
    low = name.strip().lower()
    for lead in STANDARD:
        if low == lead.lower():
            return lead
    return None


def snapshot_from_record(path: str, referral_id: str, patient_id: str, *, start_s: float = 0.0,
                         sex: str = "U", age_years: float | None = None, name: str = "",
                         snapshot_id: str | None = None) -> Ecg12Snapshot:
    """10 s of a WFDB record's standard leads as a snapshot. Raises Ecg12SendError."""
    import wfdb

    try:
        rec = wfdb.rdrecord(path)
    except (OSError, ValueError) as exc:
        raise Ecg12SendError(f"cannot read WFDB record {path}: {exc}") from None
    fs = float(rec.fs)
    first = int(round(start_s * fs))
    n = int(round(SNAPSHOT_S * fs))
    signals = rec.p_signal
    if signals is None or signals.shape[0] < first + n:
        raise Ecg12SendError(f"record {path} has fewer than {SNAPSHOT_S:g} s from {start_s:g} s")
    leads: list[str] = []
    rows: list[np.ndarray] = []
    for i, sig_name in enumerate(rec.sig_name):
        lead = _standard_name(sig_name)
        if lead is None or lead in leads:
            continue
        unit = (rec.units[i] or "mV").strip()
        scale = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}.get(unit.lower())
        if scale is None:
            raise Ecg12SendError(f"lead {sig_name}: unit must be mV, uV or V, got {unit!r}")
        leads.append(lead)
        rows.append(np.nan_to_num(signals[first:first + n, i] * scale))
    if len(leads) not in (8, 12):
        raise Ecg12SendError(f"record {path} has {len(leads)} standard leads ({leads}); a cart sends 8 or 12")
    adu = np.round(np.vstack(rows) * GAIN_ADU_PER_MV)
    dtype = "<i2" if np.abs(adu).max(initial=0) <= 32767 else "<i4"
    return Ecg12Snapshot(snapshot_id or secrets.token_hex(6), referral_id, patient_id, tuple(leads), fs,
                         GAIN_ADU_PER_MV, adu.astype(dtype), name, sex, age_years)


@dataclass(frozen=True)
class SendResult:
    """What the server answered: the request id and its triage priority."""

    request_id: str
    priority: str


async def send_snapshot(url: str, token: str, snapshot: Ecg12Snapshot, timeout_s: float = 30.0) -> SendResult:
    """Join as a device, send the snapshot, wait for the server's answer. Raises Ecg12SendError."""
    # close_timeout: the answer is in hand; do not wait websockets' 10 s for a busy server's close
    async with websockets.connect(url, max_size=2**20, close_timeout=2.0) as ws:
        await ws.send(wire.encode(wire.Join(wire.PROTOCOL_VERSION, token, id=1)))
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await ws.recv()
                if isinstance(raw, bytes):
                    continue
                msg = wire.decode_server_message(raw)
                if isinstance(msg, wire.Joined):
                    break
                if isinstance(msg, wire.Error):
                    raise Ecg12SendError(f"join refused: {msg.reason.value}: {msg.message}")
            await ws.send(encode(snapshot))
            while True:
                raw = await ws.recv()
                if not isinstance(raw, bytes):
                    continue
                reply = decode_server_frame(raw)
                if isinstance(reply, SnapshotReceived) and reply.snapshot_id == snapshot.snapshot_id:
                    return SendResult(reply.request_id, reply.priority)
                if isinstance(reply, WaveformError) and reply.stream_id in (snapshot.snapshot_id, None):
                    raise Ecg12SendError(f"snapshot refused: {reply.reason.value}: {reply.message}")


def main(argv: list[str]) -> int:
    """`medstream ecg12-send --record PATH --referral ID --patient ID --token T [--url U]`."""
    p = argparse.ArgumentParser(prog="medstream ecg12-send", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--token", required=True, help="access token of the clinic's room, role monitor")
    p.add_argument("--record", required=True, help="WFDB record path without extension")
    p.add_argument("--referral", required=True, help="the clinic's referral or encounter id")
    p.add_argument("--patient", required=True, help="the clinic's patient id")
    p.add_argument("--name", default="", help="patient name")
    p.add_argument("--sex", default="U", choices=("M", "F", "U"))
    p.add_argument("--age", type=float, default=None, help="age in years")
    p.add_argument("--start", type=float, default=0.0, help="first second of the record to send")
    args = p.parse_args(argv)
    try:
        snap = snapshot_from_record(args.record, args.referral, args.patient, start_s=args.start, sex=args.sex,
                                    age_years=args.age, name=args.name)
        result = asyncio.run(send_snapshot(args.url, args.token, snap))
    except (Ecg12SendError, OSError, TimeoutError, websockets.WebSocketException) as exc:
        print(f"ecg12-send: {exc}", file=sys.stderr)
        return 1
    print(f"ecg12-send: queued as {result.request_id} (priority {result.priority})")
    return 0
