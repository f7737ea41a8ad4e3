"""`ReadingService`: the workflow, its store and the report PDF composed, one call per HTTP route.

The desk (`readings.workflow`) decides; this class persists what the desk decided (request
JSON, the ECG as WFDB, the signed report's PDF, the audit log) after every operation, so an HTTP
handler is three steps: parse the request, call one method, write the reply and dispatch
`events_to_send()` (live pages, webhooks). Time is passed in, as in the desk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from dsp.ecg12.delineation import condition
from dsp.ecg12.measurements import analyze
from dsp.ecg12.record import LEADS, Ecg12
from readings.ingest import Assessment, Upload, assess, parse_upload
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

    def __init__(self, centre_id: str, store: ReadingStore, clinic_names: Mapping[str, str] | None = None,
                 on_audit: Callable[[list[AuditRecord]], None] | None = None) -> None:
        self.store = store
        self.desk = ReadingDesk.restore(centre_id, store.load_requests())
        self.clinic_names = dict(clinic_names or {})
        self.on_audit = on_audit  # the node's own (hash-chained) audit log hears of every record too

    @property
    def centre_id(self) -> str:
        """The ECG centre this service reads for."""
        return self.desk.centre_id

    def _flush_audit(self) -> None:
        records = self.desk.audit_records()
        if records:
            self.store.append_audit(records)
            if self.on_audit is not None:
                self.on_audit(records)

    def _persist(self, request: ReadingRequest | None = None) -> None:
        if request is not None:
            self.store.save_request(request)
        self._flush_audit()

    def prepare(self, files: Mapping[str, bytes]) -> tuple[Upload, Assessment]:
        """Decode, validate, measure and triage an upload: the CPU part of `submit_upload`, with
        no state touched (an HTTP handler runs it in a worker thread).

        Raises the ValueError subclasses listed in `submit_upload`.
        """
        upload = parse_upload(files)
        return upload, assess(upload.ecg, (upload.sex or "U")[:1].upper(), upload.age_years)

    def submit_prepared(
        self, actor: Actor, upload: Upload, assessment: Assessment, referral_id: str, patient: Patient | None,
        now: float,
    ) -> ReadingRequest:
        """Store the ECG of a `prepare`d upload and queue its request.

        ``patient`` None takes the patient id/name/sex/age the file carries (DICOM); when the
        clinic's sex/age differ from the file's, the triage is redone with the clinic's (the
        ST-elevation cut-points depend on them).
        """
        if patient is None:
            patient = Patient(upload.patient_id, upload.patient_name, (upload.sex or "U")[:1].upper(), upload.age_years)
        if (patient.sex, patient.age_years) != ((upload.sex or "U")[:1].upper(), upload.age_years):
            assessment = assess(upload.ecg, patient.sex, patient.age_years)
        digest = hashlib.sha256(upload.ecg.signals_mv.tobytes() + str(upload.ecg.sampling_rate_hz).encode()).hexdigest()
        key = f"ecg-{digest[:24]}"
        # the ECG first: a stored request never points to a missing ECG (the key is content-addressed,
        # so a refused submit leaves at most a file that the same upload would write again)
        for known in self.desk.requests():  # the same ECG sent again (a lost reply, a double click)
            if (known.clinic_id, known.referral_id, known.ecg_key) == (actor.organization, referral_id, key):
                return known
        self.store.save_ecg(key, upload.ecg, (f"clinic {actor.organization}", f"source {upload.source_format}"))
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
            self._flush_audit()
        self._persist(request)
        return request

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
        upload, assessment = self.prepare(files)
        return self.submit_prepared(actor, upload, assessment, referral_id, patient, now)

    def clinic_requests(self, actor: Actor, now: float) -> list[ReadingRequest]:
        """A clinic's own requests, newest first (see `ReadingDesk.clinic_requests`); audited."""
        try:
            requests, _ = self.desk.clinic_requests(actor, now)
        finally:
            self._persist()
        return requests

    def load_ecg(self, request: ReadingRequest) -> Ecg12:
        """The stored ECG of a request the caller has already been allowed to `view`."""
        return self.store.load_ecg(request.ecg_key)

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
        request = self.sign_only(actor, request_id, report, now)
        return request, self.render_report(request)

    def sign_only(self, actor: Actor, request_id: str, report: Report, now: float) -> ReadingRequest:
        """`sign` without the PDF: the HTTP layer renders it with `render_report` in a worker
        thread and dispatches `ReportSigned` once the PDF exists."""
        try:
            request = self.desk.sign(actor, request_id, report, now)
        finally:
            self._persist()
        self.store.save_request(request)
        return request

    def render_report(self, request: ReadingRequest) -> Path:
        """Render and store the signed request's PDF (CPU: ~0.3-1 s; no desk state touched)."""
        from readings.pdf import render_pdf  # matplotlib: ~2 s of imports a node's start-up need not pay

        ecg = self.store.load_ecg(request.ecg_key)
        pdf = render_pdf(ecg, request, self.clinic_names.get(request.clinic_id, ""))
        return self.store.save_report_pdf(request.request_id, pdf)

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


VIEW_MAX_RATE_HZ = 500.0  # the viewer draws at most this rate (a 1 mm grid at 25 mm/s needs far less)


def ecg_view_json(ecg: Ecg12) -> dict[str, object]:
    """The ECG as the 12-lead viewer draws it: the display-filtered leads (0.5-60 Hz, 50/60 Hz
    notches, as on the PDF) in µV integers, decimated to <= 500 Hz, and the median beat with its
    fiducials (ms) for the calipers. CPU ~20-50 ms; run it off the event loop.

    Raises dsp.ecg12.measurements.MeasurementError when the ECG cannot be measured.
    """
    fs = ecg.sampling_rate_hz
    step = max(1, int(fs // VIEW_MAX_RATE_HZ))
    x = condition(ecg.signals_mv, fs)[:, ::step]
    return {
        "sampling_rate_hz": fs / step,
        "recorded_rate_hz": fs,
        "leads": list(LEADS),
        "derived_leads": list(ecg.derived_leads),
        "samples_uv": [[int(v) for v in row] for row in np.round(x * 1000.0)],
        "median": analyze(ecg).median_beat_json(),
    }
