"""The /readings routes on a real node with real 12-lead records (CPSC 2018, PTB-XL): a clinic's
upload queued by triage, access by the room rules (and audited), claim conflicts, a signed
report reaching the clinic's live event stream, the PDF and the platform's webhook; a cart's
snapshot over the waveform protocol, refused with a clear error when it is not a usable ECG."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from clients.ecg12_send import Ecg12SendError, send_snapshot, snapshot_from_record
from protocol.waveforms import Ecg12Snapshot, WaveformErrorReason, decode_client_frame, encode
from readings.ingest import parse_upload, read_wfdb_directory
from tests.conftest import timeout_s
from tests.helpers import running_app, token
from tests.medstream.test_webhooks import SECRET as HOOK_SECRET
from tests.medstream.test_webhooks import Receiver, free_port, until

CENTRE = "county-ecg"


def desk_token(org: str, who: str, role: str, name: str | None = None) -> str:
    return token(f"readings.{org}", who, role, name=name or who)


def wfdb_form(record: Path, referral: str, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("referral_id", referral)
    for k, v in fields.items():
        form.add_field(k, v)
    for ext in (".hea", ".mat", ".dat"):
        f = record.with_suffix(ext)
        if f.exists():
            form.add_field("file", f.read_bytes(), filename=f.name, content_type="application/octet-stream")
    return form


async def sse_events(session: aiohttp.ClientSession, url: str, into: list[dict[str, Any]]) -> None:
    async with session.get(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        async for line in resp.content:
            if line.startswith(b"data: "):
                into.append(json.loads(line[6:]))


async def test_upload_triage_access_sign_and_webhook(tmp_path: Path, ecg_data_dir: Path) -> None:
    cpsc = ecg_data_dir / "12lead" / "cpsc2018"
    receiver = Receiver(free_port())
    await receiver.start()
    audit = tmp_path / "audit.jsonl"
    try:
        async with running_app(readings_dir=tmp_path / "readings", readings_centre=CENTRE, audit_log=audit,
                               webhook_urls=(receiver.url,), webhook_secret=HOOK_SECRET,
                               webhook_queue_dir=tmp_path / "hooks") as app, aiohttp.ClientSession() as http:
            base = f"{app.url}/readings"
            clinic = {"Authorization": "Bearer " + desk_token("clinic-a", "dr-wang", "host", "王医生")}
            other = {"Authorization": "Bearer " + desk_token("clinic-b", "dr-zhao", "host")}
            reader = {"Authorization": "Bearer " + desk_token(CENTRE, "dr-li", "expert", "李主任")}
            reader2 = {"Authorization": "Bearer " + desk_token(CENTRE, "dr-chen", "expert")}
            events: list[dict[str, Any]] = []
            listening = asyncio.ensure_future(sse_events(http, f"{base}/events?token="
                                                         + desk_token("clinic-a", "dr-wang", "host"), events))

            async with http.post(base, data=wfdb_form(cpsc / "A0002", "ZY-001", patient_id="P1", name="张三",
                                                      sex="M", age="56"), headers=clinic) as r:
                assert r.status == 201, await r.text()
                normal = (await r.json())["request"]
            async with http.post(base, data=wfdb_form(cpsc / "A0021", "ZY-002", patient_id="P2", sex="M",
                                                      age="67"), headers=clinic) as r:
                assert r.status == 201, await r.text()
                stemi = (await r.json())["request"]
            assert stemi["priority"] == "stat" and normal["priority"] != "stat"
            kinds = {f["kind"] for f in stemi["triage"]["flags"]}
            assert "st_elevation" in kinds
            for f in stemi["triage"]["flags"]:  # each flag carries the rule the reader sees
                assert f["rule_zh"] and f["rule_en"] and f["values"]
            # the same upload again (a double click) is the same request, not a second one
            async with http.post(base, data=wfdb_form(cpsc / "A0021", "ZY-002", patient_id="P2", sex="M",
                                                      age="67"), headers=clinic) as r:
                assert (await r.json())["request"]["request_id"] == stemi["request_id"]

            async with http.get(f"{base}/queue", headers=reader) as r:
                queue = (await r.json())["entries"]
            assert [e["request_id"] for e in queue] == [stemi["request_id"], normal["request_id"]]
            assert all(e["waiting_s"] >= 0 for e in queue)
            async with http.get(f"{base}/queue", headers=clinic) as r:
                assert r.status == 403
            # another clinic learns nothing: 404 as for a request that does not exist
            async with http.get(f"{base}/{stemi['request_id']}", headers=other) as r:
                assert r.status == 404
            async with http.get(f"{base}/mine", headers=other) as r:
                assert (await r.json())["requests"] == []
            async with http.get(f"{base}/{stemi['request_id']}") as r:
                assert r.status == 401
            async with http.get(f"{base}/{stemi['request_id']}", headers={
                    "Authorization": "Bearer " + desk_token("other-centre", "x", "expert")}) as r:
                assert r.status == 403

            rid = stemi["request_id"]
            async with http.post(f"{base}/{rid}/claim", headers=reader) as r:
                assert r.status == 200 and (await r.json())["request"]["claimed_by"] == "dr-li"
            async with http.post(f"{base}/{rid}/claim", headers=reader2) as r:
                assert r.status == 409 and "dr-li" in (await r.json())["message"]
            async with http.get(f"{base}/{rid}/ecg", headers=reader) as r:
                body = await r.json()
            ecg = body["ecg"]
            assert ecg["leads"][:3] == ["I", "II", "III"] and len(ecg["samples_uv"]) == 12
            assert len(ecg["samples_uv"][1]) == int(ecg["sampling_rate_hz"] * 10)
            assert set(ecg["median"]["fiducials_ms"]) >= {"qrs_on", "qrs_off", "t_end"}
            report = {"rhythm": "窦性心律", "findings": "下壁导联ST段抬高\nQRS电轴正常",
                      "conclusion": "急性下壁心肌梗死可能 请立即处理"}
            async with http.post(f"{base}/{rid}/sign", json={"rhythm": "", "conclusion": "x"}, headers=reader) as r:
                assert r.status == 400
            async with http.get(f"{base}/{rid}/report.pdf", headers=clinic) as r:
                assert r.status == 409  # nothing signed yet
            async with http.post(f"{base}/{rid}/sign", json=report, headers=reader2) as r:
                assert r.status == 403  # not the claimer
            async with http.post(f"{base}/{rid}/sign", json=report, headers=reader) as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{base}/{rid}", headers=clinic) as r:
                seen = (await r.json())["request"]
            assert seen["state"] == "signed" and seen["report"]["findings"] == ["下壁导联ST段抬高", "QRS电轴正常"]
            async with http.get(f"{base}/{rid}/report.pdf", headers=clinic) as r:
                assert r.status == 200 and (await r.read()).startswith(b"%PDF")
            # export as stored: WFDB (zip) and DICOM, each read back by our own ingest to the same ECG
            async with http.get(f"{base}/{rid}/export/wfdb.zip", headers=reader) as r:
                assert r.status == 200
                with zipfile.ZipFile(io.BytesIO(await r.read())) as z:
                    exported = parse_upload({n: z.read(n) for n in z.namelist()})
            async with http.get(f"{base}/{rid}/export/ecg.dcm", headers=clinic) as r:
                assert r.status == 200
                as_dicom = parse_upload({"x.dcm": await r.read()})
            original = read_wfdb_directory(cpsc, "A0021").ecg
            for e in (exported.ecg, as_dicom.ecg):
                assert np.abs(e.signals_mv[:, :5000] - original.signals_mv[:, :5000]).max() < 0.0011  # 1 µV units
            assert as_dicom.patient_id == "P2"
            async with http.get(f"{base}/{rid}/export/ecg.xml", headers=reader) as r:
                assert r.status == 400

            deadline = time.monotonic() + timeout_s(10)
            while not any(e["type"] == "signed" for e in events) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            signed = [e for e in events if e["type"] == "signed"]
            assert signed and signed[0]["request"]["report"]["conclusion"] == report["conclusion"]
            assert {e["type"] for e in events} >= {"created", "claimed", "signed"}
            await until(lambda: any(e["event"] == "ecg_report_signed" for e in receiver.unique()), 10,
                        "the ecg_report_signed webhook")
            hook = next(e for e in receiver.unique() if e["event"] == "ecg_report_signed")
            assert hook["request_id"] == rid and hook["referral_id"] == "ZY-002" and hook["clinic_id"] == "clinic-a"
            assert hook["report"]["rhythm"] == "窦性心律" and "st_elevation" in hook["flags"]
            listening.cancel()
    finally:
        await receiver.stop()
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    refused = [x for x in lines if x["event"] == "reading_view" and x["identity"] == "dr-zhao"]
    assert refused and refused[0]["details"]["allowed"] is False
    assert any(x["event"] == "reading_view" and x["identity"] == "dr-wang" and x["details"]["allowed"] for x in lines)
    assert (tmp_path / "readings" / "audit.jsonl").exists()


async def test_uploads_that_are_not_usable_ecgs_get_clear_reasons(tmp_path: Path, ecg_data_dir: Path) -> None:
    async with running_app(readings_dir=tmp_path, readings_centre=CENTRE) as app, aiohttp.ClientSession() as http:
        clinic = {"Authorization": "Bearer " + desk_token("clinic-a", "dr-wang", "host")}
        ptbxl = ecg_data_dir / "12lead" / "ptbxl" / "00001_lr"  # 100 Hz: below what a reading needs
        async with http.post(f"{app.url}/readings", data=wfdb_form(ptbxl, "R1", patient_id="P"), headers=clinic) as r:
            body = await r.json()
        assert r.status == 422 and "250-1000 Hz" in body["message"] and "100" in body["message"], body
        form = aiohttp.FormData()
        form.add_field("referral_id", "R2")
        form.add_field("file", b"not an ecg", filename="x.txt")
        async with http.post(f"{app.url}/readings", data=form, headers=clinic) as r:
            assert r.status == 422 and (await r.json())["error"] == "unsupported_file"
        async with http.post(f"{app.url}/readings", data=b"{}", headers={**clinic, "Content-Type": "application/json"}) as r:
            assert r.status == 415
        reader = {"Authorization": "Bearer " + desk_token(CENTRE, "dr-li", "expert")}
        async with http.post(f"{app.url}/readings", data=wfdb_form(ptbxl, "R3"), headers=reader) as r:
            assert r.status == 403
        async with http.get(f"{app.url}/api/v1/openapi.json") as r:
            assert r.status in (200, 401, 404)


async def test_cart_snapshot_over_the_waveform_protocol(tmp_path: Path, ecg_data_dir: Path) -> None:
    cpsc = ecg_data_dir / "12lead" / "cpsc2018"
    async with running_app(readings_dir=tmp_path, readings_centre=CENTRE, waveforms=True,
                           rooms=(("clinic-a", "monitoring"),)) as app, aiohttp.ClientSession() as http:
        cart = token("clinic-a", "cart-1", "monitor")
        snap = snapshot_from_record(str(cpsc / "A0044"), "ZY-100", "P9", sex="F", age_years=70)  # LBBB
        assert snap.samples.shape == (12, 5000)
        result = await send_snapshot(app.ws_url, cart, snap, timeout_s(30))
        reader = {"Authorization": "Bearer " + desk_token(CENTRE, "dr-li", "expert")}
        async with http.get(f"{app.url}/readings/{result.request_id}", headers=reader) as r:
            req = (await r.json())["request"]
        assert req["clinic_id"] == "clinic-a" and req["referral_id"] == "ZY-100" and req["patient"]["sex"] == "F"
        assert {"wide_qrs", "lbbb_pattern"} <= {f["kind"] for f in req["triage"]["flags"]}
        clinic = {"Authorization": "Bearer " + desk_token("clinic-a", "dr-wang", "host")}
        async with http.get(f"{app.url}/readings/mine", headers=clinic) as r:
            assert [x["request_id"] for x in (await r.json())["requests"]] == [result.request_id]

        # a well-formed snapshot that is no ECG (a flat line) is refused by name, the link stays up
        flat = Ecg12Snapshot("flat-1", "ZY-101", "P9", snap.leads, 500.0, 1000.0, np.zeros((12, 5000), "<i2"))
        try:
            await send_snapshot(app.ws_url, cart, flat, timeout_s(30))
            raise AssertionError("a flat snapshot was accepted")
        except Ecg12SendError as exc:
            assert WaveformErrorReason.INVALID_ECG.value in str(exc)


def test_snapshot_wire_checks_name_the_field() -> None:
    ok = Ecg12Snapshot("s1", "R1", "P1", ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"), 500.0, 1000.0,
                       np.ones((8, 5000), "<i2"))
    back = decode_client_frame(encode(ok))
    assert isinstance(back, Ecg12Snapshot) and back.leads == ok.leads and np.array_equal(back.samples, ok.samples)
    short = Ecg12Snapshot("s2", "R1", "P1", ok.leads, 500.0, 1000.0, np.ones((8, 2000), "<i2"))
    cases = [
        (short, "8-12 s long"),
        (Ecg12Snapshot("s3", "R1", "P1", ok.leads[:6], 500.0, 1000.0, np.ones((6, 5000), "<i2")), "8 or 12 lead names"),
        (Ecg12Snapshot("s4", "R1", "P1", ok.leads, 100.0, 1000.0, np.ones((8, 1000), "<i2")), "250-1000 Hz"),
    ]
    for msg, words in cases:
        try:
            decode_client_frame(encode(msg))
            raise AssertionError(f"accepted {msg.snapshot_id}")
        except Exception as exc:
            assert words in str(exc) and getattr(exc, "stream_id", None) == msg.snapshot_id, (words, exc)
    # 10 s x 12 leads at 1000 Hz fits one frame
    big = Ecg12Snapshot("s5", "R1", "P1", tuple(f"L{i}" for i in range(12)), 1000.0, 1000.0,
                        np.ones((12, 10000), "<i2"))
    assert isinstance(decode_client_frame(encode(big)), Ecg12Snapshot)


def test_every_error_the_reading_routes_send_has_words_in_both_languages() -> None:
    import re

    import medstream.readings_http as rh
    from readings.workflow import Reason
    from tests.clients.test_i18n import tables

    source = Path(rh.__file__).read_text()
    names = set(re.findall(r'HttpError\(\d+, "([a-z_]+)"', source))
    names |= set(re.findall(r'"[A-Za-z]+Error": "([a-z_]+)"', source)) | {"invalid_ecg"}
    names |= set(re.findall(r'\{"error": "([a-z_]+)"', source))
    names |= {r.value for r in Reason} | {"invalid_token", "token_expired", "token_not_yet_valid"}
    assert {"unauthorized", "too_large", "not_measurable", "unsupported_file"} <= names, names
    tabs = tables()
    for lang in ("zh", "en"):
        missing = sorted(n for n in names if f"rerror.{n}" not in tabs[lang])
        assert not missing, f"{lang}: no words for reading errors {missing}"


async def test_a_device_dicom_upload_and_the_supervisor(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    mortara = Path(get_testdata_file("waveform_ecg.dcm")).read_bytes()  # a real cart's export
    async with running_app(readings_dir=tmp_path, readings_centre=CENTRE) as app, aiohttp.ClientSession() as http:
        clinic = {"Authorization": "Bearer " + desk_token("clinic-a", "dr-wang", "host")}
        async with http.post(f"{app.url}/readings?referral_id=ZY-DCM", data=mortara,
                             headers={**clinic, "Content-Type": "application/dicom"}) as r:
            assert r.status == 201, await r.text()
            raw = (await r.json())["request"]
        form = aiohttp.FormData()
        form.add_field("referral_id", "ZY-DCM-2")
        form.add_field("patient_id", "P-77")
        form.add_field("file", mortara, filename="ecg.dcm", content_type="application/dicom")
        async with http.post(f"{app.url}/readings", data=form, headers=clinic) as r:
            assert r.status == 201, await r.text()
            multipart = (await r.json())["request"]
        assert raw["patient"]["patient_id"]  # taken from the file when the clinic gives none
        assert multipart["patient"]["patient_id"] == "P-77"
        assert 140 <= raw["measurements"]["pr_ms"] <= 170 and 60 <= raw["measurements"]["qrs_ms"] <= 90
        reader = {"Authorization": "Bearer " + desk_token(CENTRE, "dr-li", "expert")}
        boss = {"Authorization": "Bearer " + desk_token(CENTRE, "dr-qc", "supervisor")}
        rid = raw["request_id"]
        async with http.post(f"{app.url}/readings/{rid}/claim", headers=reader) as r:
            assert r.status == 200
        async with http.post(f"{app.url}/readings/{rid}/claim", headers=boss) as r:
            assert r.status == 403  # supervisors see and release, they do not read
        async with http.get(f"{app.url}/readings/queue", headers=boss) as r:
            assert {e["request_id"] for e in (await r.json())["entries"]} == {rid, multipart["request_id"]}
        async with http.post(f"{app.url}/readings/{rid}/release", headers=boss) as r:
            assert r.status == 200 and (await r.json())["request"]["state"] == "queued"
