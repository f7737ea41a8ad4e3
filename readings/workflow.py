"""The remote ECG reading workflow of one ECG centre, as a plain state machine (sans-I/O).

    QUEUED --claim--> CLAIMED --sign--> SIGNED
       ^                 |
       +----release------+

A clinic submits a request (its referral/encounter id, the patient, the ECG's measurements and
triage flags); the centre's queue is ordered by triage priority, then by waiting time; a reader
claims one (one reader at a time: a second claim is a conflict), writes a structured report and
signs it; the signed report becomes visible to the inviting clinic. Access follows the room
rules: the inviting clinic, the centre's readers and its supervisors see a request, nobody else;
every view (allowed or refused) returns an audit record. Changes come out as events
(`RequestCreated`, `RequestClaimed`, `ReportSigned`, `ClaimReleased`) drained with
`events_to_send()`, for webhooks and live pages later. Time is always passed in (``now``, epoch
seconds) so tests drive it and nothing here reads a clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Union

from dsp.ecg12.flags import Priority


class Role(str, Enum):
    """Who an actor is in the workflow."""

    CLINIC = "clinic"  # a township clinic's doctor: submits, sees its own requests' reports
    READER = "reader"  # an ECG-centre expert: claims, reports, signs
    SUPERVISOR = "supervisor"  # ECG-centre supervisor: sees all, may release a claim


class State(str, Enum):
    """Where a request is in the workflow."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    SIGNED = "signed"


class Reason(str, Enum):
    """Why an operation was refused (stable names for the HTTP layer's error replies)."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"  # claimed by someone else
    INVALID_STATE = "invalid_state"
    INVALID_INPUT = "invalid_input"


class WorkflowError(Exception):
    """An operation was refused; ``reason`` says whose fault, the message what to do."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Actor:
    """An authenticated user: id, role, and organisation (the clinic's id, or the centre's id)."""

    user_id: str
    role: Role
    organization: str


@dataclass(frozen=True)
class Patient:
    """Patient attributes the reader needs (the clinic's own patient id; no national id here)."""

    patient_id: str
    name: str = ""
    sex: str = "U"  # "M", "F" or "U"
    age_years: float | None = None


@dataclass(frozen=True)
class Report:
    """A structured report. ``language`` defaults to Chinese; findings are one statement each."""

    rhythm: str
    findings: tuple[str, ...]
    conclusion: str
    language: str = "zh-CN"

    def validate(self) -> None:
        """Raise `WorkflowError` (INVALID_INPUT) if the report cannot be signed as it is."""
        if not self.rhythm.strip():
            raise WorkflowError(Reason.INVALID_INPUT, "report rhythm must not be empty (e.g. 窦性心律)")
        if not self.conclusion.strip():
            raise WorkflowError(Reason.INVALID_INPUT, "report conclusion must not be empty")
        if len(self.rhythm) > 200 or len(self.conclusion) > 2000 or len(self.findings) > 50:
            raise WorkflowError(
                Reason.INVALID_INPUT, "report too long: rhythm <= 200, conclusion <= 2000 characters, <= 50 findings"
            )


@dataclass(frozen=True)
class ReadingRequest:
    """One ECG to be read. ``measurements``/``triage`` are the JSON of `dsp.ecg12` (kept as sent)."""

    request_id: str
    clinic_id: str
    referral_id: str
    patient: Patient
    ecg_key: str
    measurements: dict[str, Any]
    triage: dict[str, Any]
    priority: Priority
    created_at: float
    state: State = State.QUEUED
    claimed_by: str | None = None
    claimed_at: float | None = None
    report: Report | None = None
    signed_by: str | None = None
    signed_at: float | None = None
    history: tuple[tuple[float, str, str], ...] = ()  # (time, user, action)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the JSON store and the HTTP layer."""
        return {
            "request_id": self.request_id,
            "clinic_id": self.clinic_id,
            "referral_id": self.referral_id,
            "patient": {
                "patient_id": self.patient.patient_id,
                "name": self.patient.name,
                "sex": self.patient.sex,
                "age_years": self.patient.age_years,
            },
            "ecg_key": self.ecg_key,
            "measurements": self.measurements,
            "triage": self.triage,
            "priority": self.priority.name.lower(),
            "created_at": self.created_at,
            "state": self.state.value,
            "claimed_by": self.claimed_by,
            "claimed_at": self.claimed_at,
            "report": None
            if self.report is None
            else {
                "rhythm": self.report.rhythm,
                "findings": list(self.report.findings),
                "conclusion": self.report.conclusion,
                "language": self.report.language,
            },
            "signed_by": self.signed_by,
            "signed_at": self.signed_at,
            "history": [list(h) for h in self.history],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ReadingRequest:
        """Inverse of `to_json`. Raises KeyError/ValueError on a malformed document."""
        rep = d.get("report")
        return cls(
            request_id=d["request_id"],
            clinic_id=d["clinic_id"],
            referral_id=d["referral_id"],
            patient=Patient(**d["patient"]),
            ecg_key=d["ecg_key"],
            measurements=d["measurements"],
            triage=d["triage"],
            priority=Priority[d["priority"].upper()],
            created_at=float(d["created_at"]),
            state=State(d["state"]),
            claimed_by=d.get("claimed_by"),
            claimed_at=d.get("claimed_at"),
            report=None
            if rep is None
            else Report(rep["rhythm"], tuple(rep["findings"]), rep["conclusion"], rep.get("language", "zh-CN")),
            signed_by=d.get("signed_by"),
            signed_at=d.get("signed_at"),
            history=tuple((float(t), str(u), str(a)) for t, u, a in d.get("history", [])),
        )


@dataclass(frozen=True)
class QueueEntry:
    """A queued request as the centre's queue shows it."""

    request: ReadingRequest
    waiting_s: float


@dataclass(frozen=True)
class AuditRecord:
    """Who looked at (or tried to look at) what, when, and whether it was allowed."""

    at: float
    user_id: str
    role: Role
    organization: str
    action: str
    request_id: str | None
    allowed: bool
    detail: str = ""


@dataclass(frozen=True)
class RequestCreated:
    """A clinic submitted a request."""

    request: ReadingRequest


@dataclass(frozen=True)
class RequestClaimed:
    """A reader claimed a request."""

    request: ReadingRequest


@dataclass(frozen=True)
class ClaimReleased:
    """A claim was given back (by the reader or a supervisor): the request is queued again."""

    request: ReadingRequest
    released_by: str


@dataclass(frozen=True)
class ReportSigned:
    """A report was signed: visible to the clinic; the platform's webhook fires on this."""

    request: ReadingRequest


Event = Union[RequestCreated, RequestClaimed, ClaimReleased, ReportSigned]


@dataclass
class ReadingDesk:
    """One ECG centre's reading workflow. All state in memory; persist with `readings.store`."""

    centre_id: str
    _requests: dict[str, ReadingRequest] = field(default_factory=dict)
    _events: list[Event] = field(default_factory=list)
    _audit: list[AuditRecord] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    # --- access -----------------------------------------------------------------------------
    def _is_centre(self, actor: Actor) -> bool:
        return actor.role in (Role.READER, Role.SUPERVISOR) and actor.organization == self.centre_id

    def _may_see(self, actor: Actor, req: ReadingRequest) -> bool:
        return self._is_centre(actor) or (actor.role is Role.CLINIC and actor.organization == req.clinic_id)

    def _audit_record(
        self, actor: Actor, action: str, request_id: str | None, allowed: bool, now: float, detail: str = ""
    ) -> AuditRecord:
        record = AuditRecord(now, actor.user_id, actor.role, actor.organization, action, request_id, allowed, detail)
        self._audit.append(record)
        return record

    def _get(self, actor: Actor, request_id: str, action: str, now: float) -> ReadingRequest:
        req = self._requests.get(request_id)
        if req is None:
            self._audit_record(actor, action, request_id, False, now, "not found")
            raise WorkflowError(Reason.NOT_FOUND, f"no reading request {request_id!r}")
        if not self._may_see(actor, req):
            self._audit_record(actor, action, request_id, False, now, "forbidden")
            # the same answer as for a missing request: an outsider learns nothing of its existence
            raise WorkflowError(Reason.NOT_FOUND, f"no reading request {request_id!r}")
        return req

    # --- operations -------------------------------------------------------------------------
    def submit(
        self,
        actor: Actor,
        referral_id: str,
        patient: Patient,
        ecg_key: str,
        measurements: dict[str, Any],
        triage: dict[str, Any],
        priority: Priority,
        now: float,
    ) -> ReadingRequest:
        """A clinic submits an ECG for reading. Raises `WorkflowError` (FORBIDDEN, INVALID_INPUT)."""
        if actor.role is not Role.CLINIC:
            self._audit_record(actor, "submit", None, False, now, "only a clinic submits")
            raise WorkflowError(
                Reason.FORBIDDEN, f"only a clinic submits reading requests, got role {actor.role.value}"
            )
        if not referral_id.strip() or len(referral_id) > 64:
            raise WorkflowError(Reason.INVALID_INPUT, f"referral id must be 1-64 characters, got {referral_id!r}")
        if not patient.patient_id.strip():
            raise WorkflowError(Reason.INVALID_INPUT, "patient id must not be empty")
        request_id = f"{self.centre_id}-{int(now)}-{next(self._ids)}"
        while request_id in self._requests:  # after a restore the counter may repeat an old id
            request_id = f"{self.centre_id}-{int(now)}-{next(self._ids)}"
        req = ReadingRequest(
            request_id=request_id,
            clinic_id=actor.organization,
            referral_id=referral_id,
            patient=patient,
            ecg_key=ecg_key,
            measurements=measurements,
            triage=triage,
            priority=priority,
            created_at=now,
            history=((now, actor.user_id, "submitted"),),
        )
        self._requests[request_id] = req
        self._audit_record(actor, "submit", request_id, True, now)
        self._events.append(RequestCreated(req))
        return req

    def queue(self, actor: Actor, now: float) -> tuple[list[QueueEntry], AuditRecord]:
        """Unsigned requests, suspected STEMI first, then by priority, then longest waiting first.

        Raises `WorkflowError` (FORBIDDEN) unless the actor is one of the centre's readers or supervisors.
        """
        if not self._is_centre(actor):
            self._audit_record(actor, "queue", None, False, now, "not of this centre")
            raise WorkflowError(Reason.FORBIDDEN, f"the queue of {self.centre_id} is for its readers and supervisors")
        pending = [r for r in self._requests.values() if r.state is not State.SIGNED]
        pending.sort(key=lambda r: (int(r.priority), r.created_at, r.request_id))
        record = self._audit_record(actor, "queue", None, True, now, f"{len(pending)} requests")
        return [QueueEntry(r, now - r.created_at) for r in pending], record

    def view(self, actor: Actor, request_id: str, now: float) -> tuple[ReadingRequest, AuditRecord]:
        """One request as this actor may see it; a clinic sees the report only once signed.

        Raises `WorkflowError` (NOT_FOUND also for requests the actor may not see).
        """
        req = self._get(actor, request_id, "view", now)
        record = self._audit_record(actor, "view", request_id, True, now)
        if actor.role is Role.CLINIC and req.state is not State.SIGNED:
            req = replace(req, report=None)
        return req, record

    def clinic_requests(self, actor: Actor, now: float) -> tuple[list[ReadingRequest], AuditRecord]:
        """A clinic's own requests, newest first (reports only where signed)."""
        if actor.role is not Role.CLINIC:
            raise WorkflowError(Reason.FORBIDDEN, "only a clinic lists its own requests")
        own = [
            r if r.state is State.SIGNED else replace(r, report=None)
            for r in self._requests.values()
            if r.clinic_id == actor.organization
        ]
        own.sort(key=lambda r: -r.created_at)
        return own, self._audit_record(actor, "list", None, True, now, f"{len(own)} requests")

    def claim(self, actor: Actor, request_id: str, now: float) -> ReadingRequest:
        """A reader takes a queued request. Claiming one's own claim again is a no-op.

        Raises `WorkflowError`: FORBIDDEN (not a reader of this centre), CONFLICT (claimed by
        another reader), INVALID_STATE (already signed).
        """
        req = self._get(actor, request_id, "claim", now)
        if not (actor.role is Role.READER and actor.organization == self.centre_id):
            self._audit_record(actor, "claim", request_id, False, now, "not a reader")
            raise WorkflowError(Reason.FORBIDDEN, "only a reader of the ECG centre claims a request")
        if req.state is State.SIGNED:
            raise WorkflowError(Reason.INVALID_STATE, f"request {request_id} is already signed by {req.signed_by}")
        if req.state is State.CLAIMED:
            if req.claimed_by == actor.user_id:
                return req
            self._audit_record(actor, "claim", request_id, False, now, f"claimed by {req.claimed_by}")
            raise WorkflowError(
                Reason.CONFLICT, f"request {request_id} is being read by {req.claimed_by} since {req.claimed_at}"
            )
        req = replace(
            req,
            state=State.CLAIMED,
            claimed_by=actor.user_id,
            claimed_at=now,
            history=(*req.history, (now, actor.user_id, "claimed")),
        )
        self._requests[request_id] = req
        self._audit_record(actor, "claim", request_id, True, now)
        self._events.append(RequestClaimed(req))
        return req

    def release(self, actor: Actor, request_id: str, now: float) -> ReadingRequest:
        """Give a claim back to the queue: the claiming reader or a supervisor. Draft report kept.

        Raises `WorkflowError` (FORBIDDEN, INVALID_STATE).
        """
        req = self._get(actor, request_id, "release", now)
        if req.state is not State.CLAIMED:
            raise WorkflowError(Reason.INVALID_STATE, f"request {request_id} is {req.state.value}, not claimed")
        if not (req.claimed_by == actor.user_id or (actor.role is Role.SUPERVISOR and self._is_centre(actor))):
            self._audit_record(actor, "release", request_id, False, now, "not the claimer")
            raise WorkflowError(Reason.FORBIDDEN, f"only {req.claimed_by} or a supervisor releases this claim")
        req = replace(
            req,
            state=State.QUEUED,
            claimed_by=None,
            claimed_at=None,
            history=(*req.history, (now, actor.user_id, "released")),
        )
        self._requests[request_id] = req
        self._audit_record(actor, "release", request_id, True, now)
        self._events.append(ClaimReleased(req, actor.user_id))
        return req

    def save_draft(self, actor: Actor, request_id: str, report: Report, now: float) -> ReadingRequest:
        """Store the claimer's unsigned report. Raises `WorkflowError` (FORBIDDEN, INVALID_STATE)."""
        req = self._own_claim(actor, request_id, "draft", now)
        req = replace(req, report=report)
        self._requests[request_id] = req
        return req

    def sign(self, actor: Actor, request_id: str, report: Report, now: float) -> ReadingRequest:
        """Sign the report: final, visible to the clinic, `ReportSigned` emitted.

        Raises `WorkflowError`: FORBIDDEN (not the claimer), INVALID_STATE (not claimed),
        INVALID_INPUT (empty rhythm or conclusion).
        """
        req = self._own_claim(actor, request_id, "sign", now)
        report.validate()
        req = replace(
            req,
            state=State.SIGNED,
            report=report,
            signed_by=actor.user_id,
            signed_at=now,
            history=(*req.history, (now, actor.user_id, "signed")),
        )
        self._requests[request_id] = req
        self._audit_record(actor, "sign", request_id, True, now)
        self._events.append(ReportSigned(req))
        return req

    def _own_claim(self, actor: Actor, request_id: str, action: str, now: float) -> ReadingRequest:
        req = self._get(actor, request_id, action, now)
        if req.state is not State.CLAIMED:
            raise WorkflowError(Reason.INVALID_STATE, f"request {request_id} is {req.state.value}; claim it first")
        if req.claimed_by != actor.user_id:
            self._audit_record(actor, action, request_id, False, now, f"claimed by {req.claimed_by}")
            raise WorkflowError(
                Reason.FORBIDDEN, f"request {request_id} is claimed by {req.claimed_by}, not {actor.user_id}"
            )
        return req

    # --- outputs ----------------------------------------------------------------------------
    def events_to_send(self) -> list[Event]:
        """Events since the last call, oldest first (drained)."""
        out, self._events = self._events, []
        return out

    def audit_records(self) -> list[AuditRecord]:
        """Audit records since the last call, oldest first (drained); the store appends them to a log."""
        out, self._audit = self._audit, []
        return out

    def requests(self) -> list[ReadingRequest]:
        """Every request (for persistence), in no particular order."""
        return list(self._requests.values())

    @classmethod
    def restore(cls, centre_id: str, requests: Iterable[ReadingRequest]) -> ReadingDesk:
        """A desk holding previously stored requests (no events re-emitted)."""
        desk = cls(centre_id)
        reqs = list(requests)
        for r in reqs:
            desk._requests[r.request_id] = r
        desk._ids = itertools.count(len(reqs))
        return desk
