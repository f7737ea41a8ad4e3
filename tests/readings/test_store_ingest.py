"""Store (atomic files, round trips, safe keys) and upload ingest (format detection, errors, assessment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from dsp.ecg12.flags import FlagKind, Priority
from readings.dicom import DicomEcgError
from readings.ingest import IngestError, assess, is_dicom, parse_upload, read_wfdb_directory
from readings.store import ReadingStore, StoreError
from readings.wfdb_format import WfdbFormatError
from readings.workflow import Actor, Patient, ReadingDesk, Report, Role


def _files(folder: Path, record: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob(record + ".*")}


def test_upload_wfdb_and_dicom(twelve_lead_dir: Path) -> None:
    up = parse_upload(_files(twelve_lead_dir / "cpsc2018", "A0044"))
    assert (up.source_format, up.sex, up.age_years) == ("wfdb", "M", 84.0)
    mortara = get_testdata_file("waveform_ecg.dcm")
    assert mortara is not None
    data = Path(mortara).read_bytes()
    assert is_dicom(data) and not is_dicom(b"x" * 200)
    d = parse_upload({"ecg.dcm": data})
    assert (d.source_format, d.sex, d.patient_id) == ("dicom", "F", "642341")
    same = read_wfdb_directory(twelve_lead_dir / "cpsc2018", "A0044")
    assert np.array_equal(same.ecg.signals_mv, up.ecg.signals_mv)


def test_upload_errors(twelve_lead_dir: Path) -> None:
    with pytest.raises(IngestError, match=r"got no file"):
        parse_upload({})
    mortara = Path(get_testdata_file("waveform_ecg.dcm") or "")
    with pytest.raises(IngestError, match=r"one DICOM file per upload, got 2 files"):
        parse_upload({"a.dcm": mortara.read_bytes(), "b.hea": b"x 1"})
    with pytest.raises(IngestError, match=r"expected a DICOM file .* or a WFDB .hea header, got \['ecg.pdf'\]"):
        parse_upload({"ecg.pdf": b"%PDF-1.4"})
    with pytest.raises(IngestError, match=r"nothere.hea, not found"):
        read_wfdb_directory(twelve_lead_dir / "cpsc2018", "nothere")
    files = _files(twelve_lead_dir / "cpsc2018", "A0044")
    files["A0044.mat"] = files["A0044.mat"][:1000]
    with pytest.raises(WfdbFormatError, match=r"A0044.mat holds \d+ samples per signal, header says 5000"):
        parse_upload(files)
    with pytest.raises(DicomEcgError):
        parse_upload({"x.dcm": b"\0" * 128 + b"DICM" + b"\x02\x00"})


def test_assessment_of_a_stemi_record(twelve_lead_dir: Path) -> None:
    up = read_wfdb_directory(twelve_lead_dir / "cpsc2018", "A0021")
    a = assess(up.ecg, up.sex, up.age_years)
    assert a.priority is Priority.STAT and FlagKind.STEMI_SUSPECTED in a.triage.kinds()


def test_store_round_trips_atomically(twelve_lead_dir: Path, tmp_path: Path) -> None:
    store = ReadingStore(tmp_path / "readings")
    up = read_wfdb_directory(twelve_lead_dir / "cpsc2018", "A0102")
    store.save_ecg("ecg-1", up.ecg, ("referral R-9",))
    assert np.array_equal(store.load_ecg("ecg-1").signals_mv, up.ecg.signals_mv)
    desk = ReadingDesk("centre")
    clinic, reader = Actor("dr-wang", Role.CLINIC, "clinic-a"), Actor("dr-li", Role.READER, "centre")
    a = assess(up.ecg)
    req = desk.submit(
        clinic,
        "R-9",
        Patient("P9", "李四", "F", 80),
        "ecg-1",
        a.analysis.measurements.to_json(),
        a.triage.to_json(),
        a.priority,
        1e9,
    )
    store.save_request(req)
    desk.claim(reader, req.request_id, 1e9 + 60)
    signed = desk.sign(reader, req.request_id, Report("窦性心律", ("PR 240 ms",), "一度房室传导阻滞"), 1e9 + 120)
    store.save_request(signed)  # replaces the queued version
    assert store.load_requests() == [signed]
    assert store.append_audit(desk.audit_records()) == 3
    assert [r["action"] for r in store.read_audit()] == ["submit", "claim", "sign"]
    path = store.save_report_pdf(req.request_id, b"%PDF-1.4 test")
    assert path.read_bytes() == b"%PDF-1.4 test"
    leftovers = [p for p in (tmp_path / "readings").rglob(".*") if p.is_file()]
    assert leftovers == []  # no temporary files remain
    restored = ReadingDesk.restore("centre", store.load_requests())
    assert restored.view(clinic, req.request_id, 1e9 + 200)[0].report == signed.report


def test_store_refuses_unsafe_keys_and_reports_missing(tmp_path: Path) -> None:
    store = ReadingStore(tmp_path)
    for key in ("../escape", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(StoreError, match=r"key must be 1-64 letters"):
            store.load_request(key)
    with pytest.raises(StoreError, match=r"no stored request 'nope'"):
        store.load_request("nope")
    with pytest.raises(StoreError, match=r"no stored ECG 'nope'"):
        store.load_ecg("nope")
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "bad.json").write_text('{"request_id": "bad"}')
    with pytest.raises(StoreError, match=r"stored request 'bad' is malformed"):
        store.load_request("bad")
    assert ReadingStore(tmp_path / "empty").load_requests() == [] and store.append_audit([]) == 0
