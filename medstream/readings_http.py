"""`/readings...`: remote 12-lead ECG reading over HTTP, live pushes (SSE), device snapshots.

The node's edge of `readings.service.ReadingService` (docs/ecg12.md): a township clinic uploads
an ECG (WFDB as multipart, or DICOM) with its referral id, or its cart sends a snapshot over the
waveform protocol; the ECG centre's readers see the queue (suspected STEMI first), claim, read
the 12-lead view and sign a report, which reaches the clinic's page live and the platform by
webhook. Each handler is three steps: authorise (token -> `Actor`), one service call, reply and
dispatch the desk's events. The service (desk, store with its fsyncs, DSP, PDF) runs in one
worker thread, one call at a time: the node's event loop, which also carries consultations and
monitors, never waits on the disk or the analysis.

Tokens are the ordinary access tokens (signaling/tokens.py); the room claim names the
organisation's reading desk and the role what its holder is there (the room rules):

    room "readings.<clinic id>"  role host        -> the inviting clinic (submits, sees its own)
    room "readings.<centre id>"  role expert      -> a reader of the ECG centre (claims, signs)
    room "readings.<centre id>"  role supervisor  -> a supervisor of the centre (sees all, releases)
    room "ecg-<request id>"      any of those     -> that request's live consultation: view only

Everything else is 403; a request the actor may not see is 404 (an outsider learns nothing).
Every view, listing and refusal is audited twice: the readings store's own log and the node's
hash-chained audit log (`reading_<action>` events).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import logging
import re
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from aiohttp import BodyPartReader, web

from dsp.ecg12.record import Ecg12
from medstream.http import json_response
from medstream.openapi import Operation
from protocol.signaling import WireError
from protocol.waveforms import Ecg12Snapshot, SnapshotReceived, WaveformError, WaveformErrorReason, encode
from readings.dicom import encode_dicom
from readings.ingest import Upload, assess
from readings.service import ReadingService, ecg_view_json
from readings.wfdb_format import encode_record
from readings.workflow import (
    Actor,
    AuditRecord,
    ClaimReleased,
    Patient,
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
from signaling.effects import Audit
from signaling.roles import Role as TokenRole
from signaling.tokens import Grant, KeyRing, issue_token, verify_token

log = logging.getLogger("medstream.readings")

DESK_PREFIX = "readings."
CONSULT_PREFIX = "ecg-"
MAX_UPLOAD_BYTES = 16 * 2**20  # a 60 s 12-lead ECG at 1000 Hz in format 16 is 1.4 MiB; DICOM a little more
MAX_UPLOAD_FILES = 4
MAX_REPORT_BYTES = 64 * 1024
CONSULTATION_VALID_S = 2 * 3600.0
SSE_KEEPALIVE_S = 15.0
SSE_QUEUE = 256  # events buffered per live page; a page that falls this far behind reloads its list

STATUS = {Reason.NOT_FOUND: 404, Reason.FORBIDDEN: 403, Reason.CONFLICT: 409, Reason.INVALID_STATE: 409,
          Reason.INVALID_INPUT: 400}
DESK_ROLES = {TokenRole.HOST: Role.CLINIC, TokenRole.EXPERT: Role.READER, TokenRole.SUPERVISOR: Role.SUPERVISOR}
CONSULT_ROLES = {Role.CLINIC: TokenRole.HOST, Role.READER: TokenRole.EXPERT, Role.SUPERVISOR: TokenRole.SUPERVISOR}

T = TypeVar("T")
OpenRoom = Callable[[str, str, float], None]
"""(room id, kind, closes at): open a standing room for a consultation (the node's admin seam)."""
SendToDevice = Callable[[str, bytes], None]
"""(publisher participant id, frame): a reply to a device on its websocket."""


class HttpError(Exception):
    """A refusal with its HTTP status, stable error name and a message for people."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def response(self) -> web.Response:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return json_response(self.status, {"error": self.error, "message": self.message}, headers)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the workflow actor, and for a consultation token the one request it opens."""

    actor: Actor
    grant: Grant
    only_request: str | None = None


@dataclass(eq=False)
class _Listener:
    caller: Caller
    queue: asyncio.Queue[dict[str, Any] | None]


def consultation_room(request_id: str) -> str:
    """The room of a request's live consultation."""
    return CONSULT_PREFIX + request_id


def request_json(req: ReadingRequest, actor: Actor) -> dict[str, Any]:
    """A request as `actor` sees it (a clinic sees the report only once signed)."""
    d = req.to_json()
    if actor.role is Role.CLINIC and req.state is not State.SIGNED:
        d["report"] = None
    d["consultation_room"] = consultation_room(req.request_id)
    return d


def ecg_of_snapshot(snap: Ecg12Snapshot) -> Ecg12:
    """The device's integers as a validated `Ecg12` (mV). Raises `Ecg12Error` naming the problem."""
    mv = snap.samples.astype(np.float64) / snap.gain_adu_per_mv
    return Ecg12.from_leads({name: mv[i] for i, name in enumerate(snap.leads)}, snap.sampling_rate_hz, "mV")


class ReadingsHttp:
    """The `/readings` routes, the live event streams and the device snapshot intake of one node.

    `service`: the centre's reading service; `keys`: the token keys (verify and mint);
    `audit`: the node's audit log; `webhook`: (event, room id, data) to the platform (None: off);
    `open_room`: opens a consultation room; `send_to_device`: replies to a snapshot's sender.
    """

    def __init__(self, service: ReadingService, keys: str | KeyRing, *,
                 audit: Callable[[Audit], None] | None = None,
                 webhook: Callable[[str, str, dict[str, Any]], None] | None = None,
                 open_room: OpenRoom | None = None,
                 send_to_device: SendToDevice | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.keys = keys
        self.audit = audit
        self.webhook = webhook
        self.open_room = open_room
        self.send_to_device = send_to_device
        self.clock = clock
        self.centre_id = service.centre_id
        self._listeners: set[_Listener] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # one worker: decoding, measuring and PDF rendering never run on the event loop, and
        # matplotlib figures are drawn one at a time
        self._cpu = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="readings")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        service.on_audit = self._audit_from_worker

    # ------------------------------------------------------------------ wiring

    def install(self, route: Callable[..., None]) -> None:
        """Add the routes (static paths before `{request_id}`)."""
        tok = (("token", "access token (or Authorization: Bearer)"),)
        errors = {401: "no valid token", 403: "not this organisation or role", 404: "no such request"}

        def op(summary: str, responses: dict[int, str] | None = None, **kw: Any) -> Operation:
            return Operation(summary, "readings", "accessToken", query=tok, responses={200: "done", **(responses or {}),
                             **errors}, **kw)

        route("POST", "/readings", self.upload, op(
            "a clinic uploads a 12-lead ECG (multipart: referral_id, patient_id, name, sex, age, and the WFDB "
            ".hea + .dat or one DICOM file; or a DICOM body with ?referral_id=)",
            {201: "queued", 413: "too large", 422: "not a usable 12-lead ECG"}, request_type="multipart/form-data"))
        route("GET", "/readings/queue", self.queue, op("the ECG centre's queue, suspected STEMI first, with waiting times"))
        route("GET", "/readings/mine", self.mine, op("a clinic's own requests, newest first"))
        route("GET", "/readings/events", self.events, op("live events for this caller (text/event-stream)",
                                                         response_type="text/event-stream"))
        route("GET", "/readings/{request_id}", self.view, op("one request: measurements, flags with their rules, report"))
        route("GET", "/readings/{request_id}/ecg", self.ecg, op("the ECG for the 12-lead viewer (µV, display-filtered) "
                                                                "and the median beat with fiducials"))
        route("GET", "/readings/{request_id}/export/{format}", self.export, op(
            "the ECG as stored, for a PACS or a workstation: wfdb.zip (.hea + .dat, 1 µV per unit) or ecg.dcm "
            "(DICOM 12-lead ECG Waveform Storage)", {400: "unknown format, or too long for DICOM"},
            response_type="application/octet-stream"))
        route("POST", "/readings/{request_id}/claim", self.claim, op("a reader claims a request", {409: "claimed by another"}))
        route("POST", "/readings/{request_id}/release", self.release, op("give a claim back to the queue"))
        route("PUT", "/readings/{request_id}/draft", self.draft, op("keep the claimer's unsigned report"))
        route("POST", "/readings/{request_id}/sign", self.sign, op("sign the report (rhythm, findings, conclusion)",
                                                                   {400: "rhythm or conclusion missing"}))
        route("GET", "/readings/{request_id}/report.pdf", self.report_pdf, op(
            "the signed report as PDF (standard layout)", {409: "not signed yet"}, response_type="application/pdf"))
        route("POST", "/readings/{request_id}/consultation", self.consultation, op(
            "open (or join) the request's live consultation: a token and link for the caller"))

    async def close(self) -> None:
        """End the live streams (their pages reconnect to the next node) and the worker."""
        for listener in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                listener.queue.put_nowait(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._closed = True
        self._cpu.shutdown(wait=True, cancel_futures=True)  # a store write under way completes

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the readings worker: the desk and its store (fsyncs) live there, one call
        at a time, so the node's event loop never waits on the disk or the DSP."""
        if self._closed:
            raise HttpError(503, "unavailable", "the reading desk is shutting down; try again in a moment")
        self._loop = asyncio.get_running_loop()
        return await self._loop.run_in_executor(self._cpu, fn)

    # ------------------------------------------------------------------ access

    def _grant(self, request: web.Request) -> Grant:
        tok = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if not tok and auth.lower().startswith("bearer "):
            tok = auth[7:].strip()
        if not tok:
            raise HttpError(401, "unauthorized", "the reading pages need ?token=<access token>")
        try:
            return verify_token(self.keys, tok, self.clock())
        except WireError as exc:
            raise HttpError(401, exc.reason.value, exc.message) from None

    async def _caller(self, request: web.Request, *, consultation_ok: bool = False) -> Caller:
        grant = self._grant(request)
        role = DESK_ROLES.get(grant.role)
        if grant.room.startswith(DESK_PREFIX) and role is not None:
            org = grant.room[len(DESK_PREFIX):]
            if role is not Role.CLINIC and org != self.centre_id:
                raise HttpError(403, "forbidden", f"readers and supervisors belong to {self.centre_id!r}, "
                                                  f"this token is for {org!r}")
            return Caller(Actor(grant.identity, role, org), grant)
        if grant.room.startswith(CONSULT_PREFIX) and role is not None and consultation_ok:
            request_id = grant.room[len(CONSULT_PREFIX):]
            if request.match_info.get("request_id") != request_id:
                raise HttpError(403, "forbidden", f"this consultation token opens request {request_id!r} only")
            # the node minted it for an authorised caller (see `consultation`): the clinic's token
            # is its host's, the centre's its expert's and supervisor's
            org = self.centre_id
            if role is Role.CLINIC:
                org = await self._in_worker(lambda: self._clinic_of(request_id))
            return Caller(Actor(grant.identity, role, org), grant, request_id)
        raise HttpError(403, "forbidden", f"a reading token has room {DESK_PREFIX}<organisation> and role host, "
                                          f"expert or supervisor; got room {grant.room!r}, role {grant.role.value!r}")

    def _clinic_of(self, request_id: str) -> str:
        for r in self.service.desk.requests():
            if r.request_id == request_id:
                return r.clinic_id
        return ""

    def _audit_from_worker(self, records: list[AuditRecord]) -> None:
        # the desk runs in the worker thread; the node's audit log is fed on the loop
        loop = self._loop
        if loop is None:
            self._audit_records(records)
        else:
            loop.call_soon_threadsafe(self._audit_records, records)

    def _audit_records(self, records: list[AuditRecord]) -> None:
        if self.audit is None:
            return
        for r in records:
            self.audit(Audit(f"reading_{r.action}", DESK_PREFIX + r.organization, r.user_id, r.role.value, {
                "request": r.request_id, "allowed": r.allowed, "organization": r.organization,
                **({"detail": r.detail} if r.detail else {})}))

    async def _run(self, request: web.Request, fn: Callable[[Caller], Awaitable[web.StreamResponse]], *,
                   consultation_ok: bool = False) -> web.StreamResponse:
        try:
            caller = await self._caller(request, consultation_ok=consultation_ok)
            response = await fn(caller)
        except HttpError as exc:
            return exc.response()
        except WorkflowError as exc:
            return json_response(STATUS[exc.reason], {"error": exc.reason.value, "message": str(exc)})
        except Exception as exc:  # our bug or the disk: one log line with the trace, a reply, the node stays up
            log.exception("%s %s failed", request.method, request.path)
            return json_response(500, {"error": "internal", "message": f"the server failed: {type(exc).__name__}"})
        finally:
            await self._dispatch()
        return response

    # ------------------------------------------------------------------ routes

    async def upload(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            if c.actor.role is not Role.CLINIC:
                raise HttpError(403, "forbidden", "only an inviting clinic uploads ECGs (a host token of readings.<clinic>)")
            fields, files = await _read_upload(request)
            referral = fields.get("referral_id", "").strip()
            patient = _patient(fields)
            try:
                upload, assessment = await self._in_worker(lambda: self.service.prepare(files))
            except ValueError as exc:  # IngestError, WfdbFormatError, DicomEcgError, Ecg12Error, MeasurementError
                log.info("upload from %s refused: %s", c.actor.organization, str(exc)[:200])
                return json_response(422, {"error": _ecg_error(exc), "message": str(exc)})
            req = await self._in_worker(lambda: self.service.submit_prepared(c.actor, upload, assessment, referral,
                                                                              patient, self.clock()))
            return json_response(201, {"request": request_json(req, c.actor)})
        return await self._run(request, do)

    async def queue(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            entries = await self._in_worker(lambda: self.service.queue(c.actor, self.clock()))
            return json_response(200, {"centre": self.centre_id, "entries": [
                {**_summary(e.request), "waiting_s": round(e.waiting_s, 1)} for e in entries]})
        return await self._run(request, do)

    async def mine(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            if c.actor.role is not Role.CLINIC:
                raise HttpError(403, "forbidden", "only a clinic lists its own requests; the centre uses /readings/queue")
            reqs = await self._in_worker(lambda: self.service.clinic_requests(c.actor, self.clock()))
            return json_response(200, {"clinic": c.actor.organization,
                                       "requests": [request_json(r, c.actor) for r in reqs]})
        return await self._run(request, do)

    async def view(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            req, _ = await self._in_worker(lambda: self.service.view(c.actor, request.match_info["request_id"],
                                                                     self.clock()))
            return json_response(200, {"request": request_json(req, c.actor)})
        return await self._run(request, do, consultation_ok=True)

    async def ecg(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            req, _ = await self._in_worker(lambda: self.service.view(c.actor, request.match_info["request_id"],
                                                                     self.clock()))
            body = await self._in_worker(lambda: ecg_view_json(self.service.load_ecg(req)))
            return json_response(200, {"request": request_json(req, c.actor), "ecg": body})
        return await self._run(request, do, consultation_ok=True)

    async def export(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            fmt = request.match_info["format"]
            if fmt not in ("wfdb.zip", "ecg.dcm"):
                raise HttpError(400, "invalid_input", f"export format must be wfdb.zip or ecg.dcm, got {fmt!r}")
            req, _ = await self._in_worker(lambda: self.service.view(c.actor, request.match_info["request_id"],
                                                                     self.clock()))
            try:
                body = await self._in_worker(lambda: _export(self.service.load_ecg(req), req, fmt))
            except ValueError as exc:  # DicomEcgError: longer than the IOD's 16384 samples per lead
                raise HttpError(400, "invalid_input", str(exc)) from None
            ctype = "application/zip" if fmt == "wfdb.zip" else "application/dicom"
            return web.Response(body=body, headers={
                "Content-Type": ctype, "Cache-Control": "no-store",
                "Content-Disposition": f'attachment; filename="{req.request_id}-{fmt}"'})
        return await self._run(request, do, consultation_ok=True)

    async def claim(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            req = await self._in_worker(lambda: self.service.claim(c.actor, request.match_info["request_id"], self.clock()))
            return json_response(200, {"request": request_json(req, c.actor)})
        return await self._run(request, do)

    async def release(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            req = await self._in_worker(lambda: self.service.release(c.actor, request.match_info["request_id"], self.clock()))
            return json_response(200, {"request": request_json(req, c.actor)})
        return await self._run(request, do)

    async def draft(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            report = await _read_report(request)
            req = await self._in_worker(lambda: self.service.save_draft(c.actor, request.match_info["request_id"], report,
                                                                         self.clock()))
            return json_response(200, {"request": request_json(req, c.actor)})
        return await self._run(request, do)

    async def sign(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            report = await _read_report(request)
            req = await self._in_worker(lambda: self.service.sign_only(c.actor, request.match_info["request_id"], report,
                                                                        self.clock()))
            # ReportSigned waits in the desk until the PDF exists: the clinic's page and the
            # webhook never point at a report that cannot be downloaded yet
            await self._in_worker(lambda: self.service.render_report(req))
            return json_response(200, {"request": request_json(req, c.actor),
                                       "pdf_url": f"/readings/{req.request_id}/report.pdf"})
        return await self._run(request, do)

    async def report_pdf(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            rid = request.match_info["request_id"]
            pdf = await self._in_worker(lambda: self.service.report_pdf(c.actor, rid, self.clock()))
            return web.Response(body=pdf, headers={
                "Content-Type": "application/pdf", "Cache-Control": "no-store",
                "Content-Disposition": f'inline; filename="{rid}.pdf"'})
        return await self._run(request, do, consultation_ok=True)

    async def consultation(self, request: web.Request) -> web.StreamResponse:
        async def do(c: Caller) -> web.StreamResponse:
            if self.open_room is None:
                raise HttpError(503, "unavailable", "live consultations are not enabled on this server")
            now = self.clock()
            req, _ = await self._in_worker(lambda: self.service.view(c.actor, request.match_info["request_id"], now))
            room = consultation_room(req.request_id)
            if len(room) > 64:
                raise HttpError(400, "invalid_input", f"request id too long for a room id: {req.request_id!r}")
            try:
                self.open_room(room, "consultation", now + CONSULTATION_VALID_S)
            except Exception as exc:  # e.g. a room of that id is closing: the caller may try again
                log.warning("consultation room %s not opened: %s", room, exc)
                raise HttpError(503, "unavailable", f"the consultation room {room} cannot be opened now: {exc}") from None
            token = issue_token(self.keys, room=room, identity=c.grant.identity, name=c.grant.name,
                                role=CONSULT_ROLES[c.actor.role], valid_from=now, valid_for_s=CONSULTATION_VALID_S)
            self._push({"type": "consultation", "request_id": req.request_id, "room": room,
                        "by": c.grant.name, "by_role": c.actor.role.value}, req)
            return json_response(200, {"room": room, "token": token,
                                       "url": f"/consultation.html?ecg={req.request_id}#token={token}"})
        return await self._run(request, do)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `created`, `claimed`, `released`, `signed`, `consultation` for the
        requests this caller may see (a clinic: its own)."""
        try:
            caller = await self._caller(request)
        except HttpError as exc:
            return exc.response()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        listener = _Listener(caller, asyncio.Queue(SSE_QUEUE))
        self._listeners.add(listener)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await response.write(b"retry: 3000\n: connected\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(listener.queue.get(), SSE_KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if item is None:
                    break
                await response.write(f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._listeners.discard(listener)
            if task is not None:
                self._tasks.discard(task)
        return response

    # ------------------------------------------------------------------ events

    async def _dispatch(self) -> None:
        """The desk's events to the live pages and the webhook (drained in the worker, which owns the desk)."""
        if self._closed:
            return
        for event in await self._in_worker(self.service.events_to_send):
            kind = _EVENT_NAMES[type(event)]
            self._push({"type": kind}, event.request)
            if isinstance(event, ReportSigned) and self.webhook is not None:
                self.webhook("ecg_report_signed", DESK_PREFIX + event.request.clinic_id, _signed_webhook(event.request))

    def _push(self, item: dict[str, Any], req: ReadingRequest) -> None:
        for listener in list(self._listeners):
            actor = listener.caller.actor
            if actor.role is Role.CLINIC and actor.organization != req.clinic_id:
                continue
            try:
                listener.queue.put_nowait({**item, "request": request_json(req, actor)})
            except asyncio.QueueFull:  # a page this far behind reloads its list on reconnect
                listener.queue = asyncio.Queue(SSE_QUEUE)
                listener.queue.put_nowait(None)

    # ------------------------------------------------------------------ device snapshots

    def take_snapshot(self, group: str, publisher_id: str, identity: str, snap: Ecg12Snapshot) -> None:
        """A device's 12-lead snapshot (waveforms relay seam): measured in the worker, queued for
        clinic `group` (the room the device joined is its clinic's), the device told either way."""
        task = asyncio.get_running_loop().create_task(self._snapshot(group, publisher_id, identity, snap))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _snapshot(self, group: str, publisher_id: str, identity: str, snap: Ecg12Snapshot) -> None:
        clinic = group.removeprefix(DESK_PREFIX)
        actor = Actor(identity, Role.CLINIC, clinic)
        reply: SnapshotReceived | WaveformError
        try:
            def prepare() -> tuple[Upload, Any]:
                ecg = ecg_of_snapshot(snap)
                upload = Upload(ecg, "device", snap.patient_id, snap.patient_name, snap.sex, snap.age_years,
                                (f"device {identity}", f"snapshot {snap.snapshot_id}"))
                return upload, assess(ecg, snap.sex, snap.age_years)

            upload, assessment = await self._in_worker(prepare)
            patient = Patient(snap.patient_id, snap.patient_name, snap.sex, snap.age_years)
            req = await self._in_worker(lambda: self.service.submit_prepared(actor, upload, assessment, snap.referral_id,
                                                                              patient, self.clock()))
            reply = SnapshotReceived(snap.snapshot_id, req.request_id, req.priority.name.lower())
        except (ValueError, WorkflowError) as exc:
            log.info("12-lead snapshot %s from %s refused: %s", snap.snapshot_id, identity, str(exc)[:200])
            reply = WaveformError(WaveformErrorReason.INVALID_ECG, str(exc), snap.snapshot_id)
        except Exception as exc:  # our bug: the device still hears, and the room stays up
            log.exception("12-lead snapshot %s from %s failed", snap.snapshot_id, identity)
            reply = WaveformError(WaveformErrorReason.INTERNAL, f"snapshot not stored: {type(exc).__name__}",
                                  snap.snapshot_id)
        finally:
            await self._dispatch()
        if self.send_to_device is not None:
            self.send_to_device(publisher_id, encode(reply))


_EVENT_NAMES: dict[type, str] = {RequestCreated: "created", RequestClaimed: "claimed", ClaimReleased: "released",
                                 ReportSigned: "signed"}


def _summary(r: ReadingRequest) -> dict[str, Any]:
    d = r.to_json()
    d.pop("history", None)
    d["consultation_room"] = consultation_room(r.request_id)
    return d


def _signed_webhook(r: ReadingRequest) -> dict[str, Any]:
    assert r.report is not None
    return {"request_id": r.request_id, "clinic_id": r.clinic_id, "referral_id": r.referral_id,
            "patient_id": r.patient.patient_id, "priority": r.priority.name.lower(),
            "flags": [f.get("kind") for f in r.triage.get("flags", [])],
            "signed_by": r.signed_by, "signed_at": r.signed_at,
            "report": {"rhythm": r.report.rhythm, "findings": list(r.report.findings),
                       "conclusion": r.report.conclusion, "language": r.report.language},
            "pdf_url": f"/readings/{r.request_id}/report.pdf"}


def _export(ecg: Ecg12, req: ReadingRequest, fmt: str) -> bytes:
    """The ECG of `req` as a WFDB zip (record named by the request) or a DICOM file."""
    if fmt == "ecg.dcm":
        p = req.patient
        return encode_dicom(ecg, p.patient_id, p.name, p.sex if p.sex in ("M", "F") else "",
                            None if p.age_years is None else int(p.age_years))
    name = re.sub(r"[^A-Za-z0-9_-]", "_", req.request_id)[:64]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for file_name, data in encode_record(ecg, name, (f"referral {req.referral_id}", f"clinic {req.clinic_id}")).items():
            z.writestr(file_name, data)
    return buf.getvalue()


def _ecg_error(exc: ValueError) -> str:
    name = type(exc).__name__
    return {"MeasurementError": "not_measurable", "IngestError": "unsupported_file"}.get(name, "invalid_ecg")


def _patient(fields: dict[str, str]) -> Patient | None:
    """The clinic's patient fields, or None to take the file's (DICOM carries them)."""
    pid = fields.get("patient_id", "").strip()
    if not pid:
        return None
    sex = fields.get("sex", "U").strip().upper()[:1] or "U"
    if sex not in ("M", "F", "U"):
        raise HttpError(400, "invalid_input", f"sex must be M, F or U, got {fields.get('sex')!r}")
    age: float | None = None
    if fields.get("age", "").strip():
        try:
            age = float(fields["age"])
        except ValueError:
            raise HttpError(400, "invalid_input", f"age must be a number of years, got {fields['age']!r}") from None
        if not 0 <= age <= 130:
            raise HttpError(400, "invalid_input", f"age must be 0-130 years, got {age:g}")
    return Patient(pid[:64], fields.get("name", "").strip()[:64], sex, age)


async def _read_upload(request: web.Request) -> tuple[dict[str, str], dict[str, bytes]]:
    """Form fields and files of a multipart upload, or a DICOM body (fields from the query)."""
    ctype = request.content_type
    if ctype in ("application/dicom", "application/octet-stream"):
        if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
            raise HttpError(413, "too_large", f"an upload must be at most {MAX_UPLOAD_BYTES // 2**20} MiB")
        body = await _read_limited(request.content.read, MAX_UPLOAD_BYTES)
        return dict(request.query), {"upload.dcm": body}
    if ctype != "multipart/form-data":
        raise HttpError(415, "unsupported_media_type",
                        f"send multipart/form-data (WFDB .hea + .dat, or a DICOM file) or application/dicom, got {ctype!r}")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise HttpError(400, "invalid_input", "nested multipart bodies are not accepted")
        data = await _read_limited(part.read_chunk, MAX_UPLOAD_BYTES - total)
        total += len(data)
        if part.filename:
            if len(files) >= MAX_UPLOAD_FILES:
                raise HttpError(400, "invalid_input", f"at most {MAX_UPLOAD_FILES} files per upload")
            files[part.filename.rsplit("/", 1)[-1]] = data
        elif part.name:
            fields[part.name] = data.decode("utf-8", "replace")[:256]
    if not files:
        raise HttpError(400, "invalid_input", "no file in the upload: attach the WFDB .hea and .dat, or a DICOM file")
    return fields, files


async def _read_limited(read: Callable[[int], Awaitable[bytes]], limit: int) -> bytes:
    out = bytearray()
    while chunk := await read(65536):
        out += chunk
        if len(out) > limit:
            raise HttpError(413, "too_large", f"an upload must be at most {MAX_UPLOAD_BYTES // 2**20} MiB")
    return bytes(out)


async def _read_report(request: web.Request) -> Report:
    body = await _read_limited(request.content.read, MAX_REPORT_BYTES)
    try:
        d = json.loads(body)
    except ValueError:
        raise HttpError(400, "invalid_input", "the report must be a JSON object") from None
    if not isinstance(d, dict):
        raise HttpError(400, "invalid_input", f"the report must be a JSON object, got {type(d).__name__}")
    findings = d.get("findings", [])
    if isinstance(findings, str):
        findings = [line.strip() for line in findings.splitlines() if line.strip()]
    if not isinstance(findings, list) or not all(isinstance(f, str) for f in findings):
        raise HttpError(400, "invalid_input", "findings must be a list of statements (strings)")
    rhythm, conclusion, language = d.get("rhythm", ""), d.get("conclusion", ""), d.get("language", "zh-CN")
    if not all(isinstance(v, str) for v in (rhythm, conclusion, language)):
        raise HttpError(400, "invalid_input", "rhythm, conclusion and language must be strings")
    return Report(rhythm.strip(), tuple(f[:500] for f in findings), conclusion.strip(), language[:16] or "zh-CN")


