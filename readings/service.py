"""`ReadingService`: the workflow, its store and the report PDF composed, one call per HTTP route.

The desk (`readings.workflow`) decides; this class persists what the desk decided (request
JSON, the ECG as WFDB, the signed report's PDF, the audit log) after every operation, so an HTTP
handler is three steps: parse the request, call one method, write the reply and dispatch
`events_to_send()` (live pages, webhooks). Time is passed in, as in the desk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from readings.ingest import assess, parse_upload
from readings.pdf import render_pdf
from readings.store import ReadingStore
from readings.workflow import (
    Actor,
    AuditRecord,
    Event,
    Patient,
    QueueEntry,
    ReadingDesk,
    ReadingRequest,
    Reason,
    Report,
    State,
    WorkflowError,
)


class ReadingService:
    """One ECG centre's reading service over a directory store.

    ``clinic_names`` maps clinic ids to the names printed on reports.
    """

    def __init__(self, centre_id: str, store: ReadingStore, clinic_names: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.desk = ReadingDesk.restore(centre_id, store.load_requests())
        self.clinic_names = dict(clinic_names or {})

    def _persist(self, request: ReadingRequest | None = None) -> None:
        if request is not None:
            self.store.save_request(request)
        self.store.append_audit(self.desk.audit_records())

    def submit_upload(
        self, actor: Actor, files: Mapping[str, bytes], referral_id: str, patient: Patient | None, now: float
    ) -> ReadingRequest:
        """Decode, validate, measure and triage an upload, store the ECG, and queue the request.

        ``patient`` None takes the patient id/name/sex/age the file carries (DICOM).

        Raises:
            ValueError subclasses: the upload is not a valid 12-lead ECG (`IngestError`,
                `WfdbFormatError`, `DicomEcgError`, `Ecg12Error`) or cannot be measured
                (`MeasurementError`); `WorkflowError` from `ReadingDesk.submit`.
        """
        upload = parse_upload(files)
        if patient is None:
            patient = Patient(upload.patient_id, upload.patient_name, (upload.sex or "U")[:1].upper(), upload.age_years)
        assessment = assess(upload.ecg, patient.sex, patient.age_years)
        digest = hashlib.sha256(upload.ecg.signals_mv.tobytes() + str(upload.ecg.sampling_rate_hz).encode()).hexdigest()
        key = f"ecg-{digest[:24]}"
        # the ECG first: a stored request never points to a missing ECG (the key is content-addressed,
        # so a refused submit leaves at most a file that the same upload would write again)
        self.store.save_ecg(key, upload.ecg, (f"clinic {actor.organization}",))
        try:
            request = self.desk.submit(
                actor,
                referral_id,
                patient,
                key,
                assessment.analysis.measurements.to_json(),
                assessment.triage.to_json(),
                assessment.priority,
                now,
            )
        finally:
            self.store.append_audit(self.desk.audit_records())
        self._persist(request)
        return request

    def queue(self, actor: Actor, now: float) -> list[QueueEntry]:
        """The centre's queue (see `ReadingDesk.queue`); the view is audited."""
        try:
            entries, _ = self.desk.queue(actor, now)
        finally:
            self._persist()
        return entries

    def view(self, actor: Actor, request_id: str, now: float) -> tuple[ReadingRequest, AuditRecord]:
        """One request as the actor may see it (see `ReadingDesk.view`); the view is audited."""
        try:
            return self.desk.view(actor, request_id, now)
        finally:
            self._persist()

    def claim(self, actor: Actor, request_id: str, now: float) -> ReadingRequest:
        """Claim for reading (see `ReadingDesk.claim`)."""
        try:
            request = self.desk.claim(actor, request_id, now)
        finally:
            self._persist()
        self.store.save_request(request)
        return request

    def release(self, actor: Actor, request_id: str, now: float) -> ReadingRequest:
        """Give a claim back (see `ReadingDesk.release`)."""
        try:
            request = self.desk.release(actor, request_id, now)
        finally:
            self._persist()
        self.store.save_request(request)
        return request

    def save_draft(self, actor: Actor, request_id: str, report: Report, now: float) -> ReadingRequest:
        """Keep the claimer's unsigned report (see `ReadingDesk.save_draft`)."""
        try:
            request = self.desk.save_draft(actor, request_id, report, now)
        finally:
            self._persist()
        self.store.save_request(request)
        return request

    def sign(self, actor: Actor, request_id: str, report: Report, now: float) -> tuple[ReadingRequest, Path]:
        """Sign (see `ReadingDesk.sign`), store the request and render the report PDF; returns the PDF's path."""
        try:
            request = self.desk.sign(actor, request_id, report, now)
        finally:
            self._persist()
        self.store.save_request(request)
        ecg = self.store.load_ecg(request.ecg_key)
        pdf = render_pdf(ecg, request, self.clinic_names.get(request.clinic_id, ""))
        return request, self.store.save_report_pdf(request.request_id, pdf)

    def report_pdf(self, actor: Actor, request_id: str, now: float) -> bytes:
        """The signed report's PDF for anyone who may see the request (audited as a view).

        Raises `WorkflowError` (NOT_FOUND also while unsigned for a clinic: no report yet).
        """
        request, _ = self.view(actor, request_id, now)
        if request.state is not State.SIGNED:
            raise WorkflowError(Reason.INVALID_STATE, f"request {request_id} has no signed report yet")
        return (self.store.root / "reports" / f"{request_id}.pdf").read_bytes()

    def events_to_send(self) -> list[Event]:
        """The desk's events since the last call (see `ReadingDesk.events_to_send`)."""
        return self.desk.events_to_send()
