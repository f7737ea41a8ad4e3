"""WFDB bytes codec: real records decoded like `wfdb.rdrecord`, our files read by `wfdb`, every error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from dsp.ecg12.record import Ecg12Error
from readings.wfdb_format import WfdbFormatError, decode_record, ecg_from_files, encode_record, lead_names, parse_header


def _files(folder: Path, record: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob(record + ".*")}


@pytest.mark.parametrize("record", ["cpsc2018/A0001", "cinc2021/E07500", "ptbdb/s0010_re"])
def test_decodes_like_wfdb(twelve_lead_dir: Path, record: str) -> None:
    folder, name = (twelve_lead_dir / record).parent, Path(record).name
    ecg, header = ecg_from_files(_files(folder, name))
    ref = wfdb.rdrecord(str(twelve_lead_dir / record))
    assert ecg.sampling_rate_hz == ref.fs
    assert np.allclose(ecg.signals_mv, ref.p_signal[:, :12].T, atol=1e-9)
    assert header.comments == tuple(ref.comments)
    assert lead_names(header)[:12] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def test_ptb_without_frank_leads_file(twelve_lead_dir: Path) -> None:
    files = _files(twelve_lead_dir / "ptbdb", "s0010_re")
    del files["s0010_re.xyz"]  # the Frank leads are not needed for the 12-lead ECG
    ecg, _ = ecg_from_files(files)
    assert ecg.n_samples == 38400


def test_round_trip_and_wfdb_reads_ours(twelve_lead_dir: Path, tmp_path: Path) -> None:
    ecg, _ = ecg_from_files(_files(twelve_lead_dir / "cpsc2018", "A0102"))
    files = encode_record(ecg, "rt1", ("Dx: I-AVB", "referral: R-1"))
    back, header = ecg_from_files(files)
    assert np.array_equal(back.signals_mv, ecg.signals_mv)  # 1 µV source, 1 µV storage: exact
    assert header.comments == ("Dx: I-AVB", "referral: R-1")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    ref = wfdb.rdrecord(str(tmp_path / "rt1"))  # checksums and initial values must satisfy wfdb
    assert ref.sig_name == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert np.allclose(ref.p_signal.T, ecg.signals_mv, atol=5e-4)


def test_format_212() -> None:
    samples = np.array([[0, 1], [-1, 2047], [-2048, 5]], dtype=np.int64)
    flat = samples.ravel() & 0xFFF
    packed = bytearray()
    for a, b in zip(flat[0::2], flat[1::2]):
        packed += bytes([a & 0xFF, ((a >> 8) & 0x0F) | ((b >> 4) & 0xF0), b & 0xFF])
    header = "r 2 250 3\nr.dat 212 200/mV 12 0 0 0 0 a\nr.dat 212 200/mV 12 0 0 0 0 b\n"
    _, signals = decode_record(header, {"r.dat": bytes(packed)})
    assert np.allclose(signals["a"], samples[:, 0] / 200.0) and np.allclose(signals["b"], samples[:, 1] / 200.0)


@pytest.mark.parametrize(
    ("header", "files", "message"),
    [
        ("", {}, r"header is empty"),
        ("r x 500 10\n", {}, r"record line must be"),
        ("r 2 500 10\nr.dat 16 1000/mV 16 0 0 0 0 I\n", {}, r"announces 2 signals, got 1 signal lines"),
        ("r 1 500 10\nr.dat 310 1000/mV 16 0 0 0 0 I\n", {"r.dat": b"\0" * 20}, r"must be 16 or 212, got 310"),
        ("r 1 500 10\nr.dat 16a 1000/mV\n", {}, r"format must look like '16' or '16\+24', got '16a'"),
        ("r 1 500 10\nr.dat 16 abc/mV\n", {}, r"gain must look like"),
        ("r 1 500 10\nr.dat 16 1000/mV 16 0 0 0 0 I\n", {}, r"signal file 'r.dat' named in the header is missing"),
        (
            "r 1 500 10\nr.dat 16 1000/mV 16 0 0 0 0 I\n",
            {"r.dat": b"\0" * 10},
            r"holds 5 samples per signal, header says 10",
        ),
        ("r 1 500 10\nr.dat 16\n", {"r.dat": b"\0" * 20}, None),
    ],
)
def test_header_and_file_errors(header: str, files: dict[str, bytes], message: str | None) -> None:
    if message is None:
        parse_header(header)  # minimal signal line: defaults (gain 200/mV) apply
        return
    with pytest.raises(WfdbFormatError, match=message):
        decode_record(header, files)


def test_upload_level_errors(twelve_lead_dir: Path) -> None:
    files = _files(twelve_lead_dir / "cpsc2018", "A0001")
    with pytest.raises(WfdbFormatError, match=r"exactly one .hea file"):
        ecg_from_files({**files, **_files(twelve_lead_dir / "cpsc2018", "A0002")})
    with pytest.raises(WfdbFormatError, match=r"must be ASCII"):
        ecg_from_files({"x.hea": "r 1 500 ü".encode(), "x.dat": b""})
    with pytest.raises(Ecg12Error, match=r"00001_lr: sampling rate must be 250-1000 Hz, got 100"):
        ecg_from_files(_files(twelve_lead_dir / "ptbxl", "00001_lr"))
    ecg, _ = ecg_from_files(files)
    with pytest.raises(WfdbFormatError, match=r"record name must be"):
        encode_record(ecg, "../etc")
    with pytest.raises(WfdbFormatError, match=r"overflow 16 bits"):
        encode_record(ecg, "ok", gain_per_mv=1e6)
