"""The reading workflow: queue order, claims and conflicts, access refusals and audit, signing, events."""

from __future__ import annotations

import pytest

from dsp.ecg12.flags import Priority
from readings.workflow import (
    Actor,
    ClaimReleased,
    Patient,
    ReadingDesk,
    ReadingRequest,
    Reason,
    Report,
    ReportSigned,
    RequestClaimed,
    RequestCreated,
    Role,
    State,
    WorkflowError,
)

T0 = 1_795_600_800.0
CLINIC_A = Actor("dr-wang", Role.CLINIC, "clinic-a")
CLINIC_B = Actor("dr-zhao", Role.CLINIC, "clinic-b")
READER_1 = Actor("dr-li", Role.READER, "centre")
READER_2 = Actor("dr-chen", Role.READER, "centre")
SUPERVISOR = Actor("dr-sun", Role.SUPERVISOR, "centre")
OTHER_CENTRE_READER = Actor("dr-he", Role.READER, "other-centre")
REPORT = Report("窦性心律", ("PR间期延长",), "一度房室传导阻滞")


def _submit(
    desk: ReadingDesk, priority: Priority, now: float, actor: Actor = CLINIC_A, ref: str = "R"
) -> ReadingRequest:
    return desk.submit(
        actor, ref, Patient("P1", "张三", "M", 60), "ecg-key", {"qrs_ms": 90.0}, {"flags": []}, priority, now
    )


def _reason(exc: pytest.ExceptionInfo[WorkflowError]) -> Reason:
    return exc.value.reason


def test_queue_orders_by_priority_then_waiting_time() -> None:
    desk = ReadingDesk("centre")
    routine_old = _submit(desk, Priority.ROUTINE, T0)
    flagged = _submit(desk, Priority.FLAGGED, T0 + 10)
    stemi = _submit(desk, Priority.STAT, T0 + 20)
    urgent_late = _submit(desk, Priority.URGENT, T0 + 40)
    urgent_early = _submit(desk, Priority.URGENT, T0 + 30)
    entries, audit = desk.queue(READER_1, T0 + 100)
    assert [e.request.request_id for e in entries] == [
        stemi.request_id,
        urgent_early.request_id,
        urgent_late.request_id,
        flagged.request_id,
        routine_old.request_id,
    ]
    assert entries[0].waiting_s == 80.0 and entries[-1].waiting_s == 100.0
    assert audit.allowed and audit.action == "queue" and audit.user_id == "dr-li"
    # signed requests leave the queue
    desk.claim(READER_1, stemi.request_id, T0 + 101)
    desk.sign(READER_1, stemi.request_id, REPORT, T0 + 102)
    assert stemi.request_id not in [e.request.request_id for e in desk.queue(SUPERVISOR, T0 + 103)[0]]


def test_claim_conflict_release_and_reclaim() -> None:
    desk = ReadingDesk("centre")
    req = _submit(desk, Priority.ROUTINE, T0)
    claimed = desk.claim(READER_1, req.request_id, T0 + 5)
    assert claimed.state is State.CLAIMED and claimed.claimed_by == "dr-li"
    assert desk.claim(READER_1, req.request_id, T0 + 6) == claimed  # idempotent for the claimer
    with pytest.raises(WorkflowError, match=r"being read by dr-li") as exc:
        desk.claim(READER_2, req.request_id, T0 + 7)
    assert _reason(exc) is Reason.CONFLICT
    with pytest.raises(WorkflowError, match=r"only dr-li or a supervisor") as exc:
        desk.release(READER_2, req.request_id, T0 + 8)
    assert _reason(exc) is Reason.FORBIDDEN
    desk.save_draft(READER_1, req.request_id, REPORT, T0 + 9)
    released = desk.release(SUPERVISOR, req.request_id, T0 + 10)
    assert released.state is State.QUEUED and released.claimed_by is None and released.report == REPORT  # draft kept
    assert desk.claim(READER_2, req.request_id, T0 + 11).claimed_by == "dr-chen"
    with pytest.raises(WorkflowError) as exc:
        desk.release(READER_1, "centre-0-99", T0)
    assert _reason(exc) is Reason.NOT_FOUND


def test_who_may_claim_and_sign() -> None:
    desk = ReadingDesk("centre")
    req = _submit(desk, Priority.ROUTINE, T0)
    for actor in (CLINIC_A, SUPERVISOR):
        with pytest.raises(WorkflowError, match=r"only a reader") as exc:
            desk.claim(actor, req.request_id, T0 + 1)
        assert _reason(exc) is Reason.FORBIDDEN
    with pytest.raises(WorkflowError, match=r"claim it first") as exc:
        desk.sign(READER_1, req.request_id, REPORT, T0 + 2)
    assert _reason(exc) is Reason.INVALID_STATE
    desk.claim(READER_1, req.request_id, T0 + 3)
    with pytest.raises(WorkflowError, match=r"claimed by dr-li, not dr-chen") as exc:
        desk.sign(READER_2, req.request_id, REPORT, T0 + 4)
    assert _reason(exc) is Reason.FORBIDDEN
    with pytest.raises(WorkflowError, match=r"rhythm must not be empty") as exc:
        desk.sign(READER_1, req.request_id, Report(" ", (), "x"), T0 + 5)
    assert _reason(exc) is Reason.INVALID_INPUT
    with pytest.raises(WorkflowError, match=r"conclusion must not be empty"):
        desk.sign(READER_1, req.request_id, Report("窦性心律", (), ""), T0 + 5)
    signed = desk.sign(READER_1, req.request_id, REPORT, T0 + 6)
    assert (signed.state, signed.signed_by, signed.signed_at) == (State.SIGNED, "dr-li", T0 + 6)
    assert [h[2] for h in signed.history] == ["submitted", "claimed", "signed"]
    with pytest.raises(WorkflowError, match=r"already signed by dr-li") as exc:
        desk.claim(READER_2, req.request_id, T0 + 7)
    assert _reason(exc) is Reason.INVALID_STATE
    with pytest.raises(WorkflowError, match=r"only a clinic submits") as exc:
        _submit(desk, Priority.ROUTINE, T0, actor=READER_1)
    assert _reason(exc) is Reason.FORBIDDEN
    with pytest.raises(WorkflowError, match=r"referral id must be 1-64 characters"):
        _submit(desk, Priority.ROUTINE, T0, ref="")


def test_access_rules_and_audit() -> None:
    desk = ReadingDesk("centre")
    req = _submit(desk, Priority.ROUTINE, T0)
    desk.audit_records()
    for actor in (CLINIC_B, OTHER_CENTRE_READER, Actor("x", Role.SUPERVISOR, "other-centre")):
        with pytest.raises(WorkflowError, match=r"no reading request") as exc:
            desk.view(actor, req.request_id, T0 + 1)
        assert _reason(exc) is Reason.NOT_FOUND  # an outsider cannot tell forbidden from absent
    for actor in (CLINIC_A, OTHER_CENTRE_READER):
        with pytest.raises(WorkflowError, match=r"for its readers and supervisors") as exc:
            desk.queue(actor, T0 + 1)
        assert _reason(exc) is Reason.FORBIDDEN
    refused = desk.audit_records()
    assert len(refused) == 5 and not any(r.allowed for r in refused)
    assert [r.user_id for r in refused[:3]] == ["dr-zhao", "dr-he", "x"] and refused[0].detail == "forbidden"
    for actor in (CLINIC_A, READER_1, READER_2, SUPERVISOR):
        seen, record = desk.view(actor, req.request_id, T0 + 2)
        assert seen.request_id == req.request_id
        assert record.allowed and record.action == "view" and record.user_id == actor.user_id
    assert len(desk.audit_records()) == 4


def test_clinic_sees_report_only_when_signed_and_events() -> None:
    desk = ReadingDesk("centre")
    req = _submit(desk, Priority.URGENT, T0)
    _submit(desk, Priority.ROUTINE, T0 + 1, actor=CLINIC_B)
    desk.claim(READER_1, req.request_id, T0 + 2)
    desk.save_draft(READER_1, req.request_id, REPORT, T0 + 3)
    assert desk.view(CLINIC_A, req.request_id, T0 + 4)[0].report is None
    assert desk.view(READER_1, req.request_id, T0 + 4)[0].report == REPORT
    desk.sign(READER_1, req.request_id, REPORT, T0 + 5)
    assert desk.view(CLINIC_A, req.request_id, T0 + 6)[0].report == REPORT
    own, record = desk.clinic_requests(CLINIC_A, T0 + 7)
    assert [r.request_id for r in own] == [req.request_id] and record.allowed
    events = desk.events_to_send()
    assert [type(e) for e in events] == [RequestCreated, RequestCreated, RequestClaimed, ReportSigned]
    assert isinstance(events[-1], ReportSigned) and events[-1].request.report == REPORT
    assert desk.events_to_send() == []  # drained
    desk2 = ReadingDesk("centre")
    r2 = _submit(desk2, Priority.ROUTINE, T0)
    desk2.claim(READER_1, r2.request_id, T0 + 1)
    desk2.release(READER_1, r2.request_id, T0 + 2)
    released = desk2.events_to_send()[-1]
    assert isinstance(released, ClaimReleased) and released.released_by == "dr-li"


def test_json_round_trip_and_restore() -> None:
    desk = ReadingDesk("centre")
    a = _submit(desk, Priority.STAT, T0)
    b = _submit(desk, Priority.ROUTINE, T0)
    desk.claim(READER_1, a.request_id, T0 + 1)
    desk.sign(READER_1, a.request_id, REPORT, T0 + 2)
    docs = [r.to_json() for r in desk.requests()]
    restored = ReadingDesk.restore("centre", [ReadingRequest.from_json(d) for d in docs])
    assert {r.request_id: r for r in restored.requests()} == {r.request_id: r for r in desk.requests()}
    assert restored.events_to_send() == []
    c = _submit(restored, Priority.ROUTINE, T0)  # same second: the id must still be new
    assert c.request_id not in (a.request_id, b.request_id)
