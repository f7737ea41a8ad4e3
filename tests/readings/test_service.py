"""`ReadingService` end to end on real files: upload -> queue -> claim -> sign -> PDF -> restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dsp.ecg12.flags import Priority
from readings.service import ReadingService
from readings.store import ReadingStore
from readings.workflow import Actor, Patient, Reason, Report, ReportSigned, RequestCreated, Role, State, WorkflowError

T0 = 1_795_600_800.0
CLINIC = Actor("dr-wang", Role.CLINIC, "clinic-a")
OTHER_CLINIC = Actor("dr-zhao", Role.CLINIC, "clinic-b")
READER = Actor("dr-li", Role.READER, "centre")


def _files(folder: Path, record: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob(record + ".*")}


def test_upload_to_signed_pdf_and_restart(twelve_lead_dir: Path, tmp_path: Path) -> None:
    service = ReadingService("centre", ReadingStore(tmp_path), {"clinic-a": "东坝乡卫生院"})
    routine = service.submit_upload(
        CLINIC, _files(twelve_lead_dir / "cpsc2018", "A0002"), "R-1", Patient("P1", "王五", "F", 49), T0
    )
    stemi = service.submit_upload(
        CLINIC, _files(twelve_lead_dir / "cpsc2018", "A0021"), "R-2", Patient("P2", "赵六", "M", 64), T0 + 60
    )
    mortara = Path(get_testdata_file("waveform_ecg.dcm") or "")
    dicom = service.submit_upload(OTHER_CLINIC, {"ecg.dcm": mortara.read_bytes()}, "R-3", None, T0 + 90)
    assert dicom.patient.patient_id == "642341" and dicom.patient.sex == "F"  # from the DICOM file
    assert stemi.priority is Priority.STAT and routine.priority is Priority.ROUTINE
    queue = service.queue(READER, T0 + 120)
    assert queue[0].request.request_id == stemi.request_id  # suspected STEMI first
    service.claim(READER, stemi.request_id, T0 + 130)
    with pytest.raises(WorkflowError) as exc:
        service.report_pdf(CLINIC, stemi.request_id, T0 + 135)
    assert exc.value.reason is Reason.INVALID_STATE
    signed, pdf_path = service.sign(
        READER, stemi.request_id, Report("窦性心律", ("II、III、aVF ST段抬高",), "急性下壁心肌梗死可能"), T0 + 200
    )
    assert signed.state is State.SIGNED and pdf_path.read_bytes().startswith(b"%PDF-")
    assert service.report_pdf(CLINIC, stemi.request_id, T0 + 210) == pdf_path.read_bytes()
    with pytest.raises(WorkflowError) as exc:
        service.report_pdf(OTHER_CLINIC, stemi.request_id, T0 + 210)
    assert exc.value.reason is Reason.NOT_FOUND
    events = service.events_to_send()
    assert [type(e).__name__ for e in events] == ["RequestCreated"] * 3 + ["RequestClaimed", "ReportSigned"]
    assert isinstance(events[0], RequestCreated) and isinstance(events[-1], ReportSigned)
    audit = service.store.read_audit()
    assert [a["action"] for a in audit if not a["allowed"]] == ["view"]  # the other clinic's attempt
    assert sum(a["action"] == "view" for a in audit) == 3  # the unsigned try, the download, the refused one
    # a restart restores the desk from the store: same requests, same report for the clinic
    again = ReadingService("centre", ReadingStore(tmp_path))
    seen, _ = again.view(CLINIC, stemi.request_id, T0 + 300)
    assert seen.report == signed.report and seen.signed_by == "dr-li"
    assert {r.request_id for r in again.desk.requests()} == {routine.request_id, stemi.request_id, dicom.request_id}


def test_invalid_uploads_queue_nothing(twelve_lead_dir: Path, tmp_path: Path) -> None:
    service = ReadingService("centre", ReadingStore(tmp_path))
    with pytest.raises(ValueError, match=r"sampling rate must be 250-1000 Hz, got 100"):
        service.submit_upload(CLINIC, _files(twelve_lead_dir / "ptbxl", "00001_lr"), "R-1", Patient("P1"), T0)
    assert service.queue(READER, T0) == [] and service.events_to_send() == []
    assert not (tmp_path / "ecg").exists()
