"""The admin API through a real node: round trips of every operation, refusals, the OpenAPI
document against the router, and the `medstream room|participant` CLI against a live server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from signaling.tokens import issue_admin_token
from tests.conftest import timeout_s
from tests.helpers import SECRET, WsClient, running_app, token

API_KEY = "api-key-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def api(method: str, url: str, body: Any = None, headers: dict[str, str] | None = AUTH) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(
            method, url, data=json.dumps(body).encode() if body is not None else None, headers=headers or {}) as r:
        raw = await r.read()
        return r.status, json.loads(raw) if raw.strip() else None


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s(timeout)
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_booked_room_round_trip_participants_recording_tokens(tmp_path: Path) -> None:
    async with running_app(api_key=API_KEY, recorder=True, recordings_dir=tmp_path) as app:
        v1 = f"{app.url}/api/v1"
        now = time.time()
        status, room = await api("POST", f"{v1}/rooms", {
            "room_id": "consult-1400", "kind": "consultation", "booked_from": now + 300, "booked_until": now + 3900,
            "max_participants": 3, "recording": "manual", "metadata": {"referral": "ZJ-2026-0412"}})
        assert status == 201, room
        assert room["booked_from"] == now + 300 and room["max_participants"] == 3
        assert room["metadata"] == {"referral": "ZJ-2026-0412"} and room["recording_policy"] == "manual"
        # a token minted by the API is valid for the booked window (from 10 min early) and joins
        status, minted = await api("POST", f"{v1}/tokens", {"room": "consult-1400", "identity": "dr-wang",
                                                           "name": "王医生", "role": "host"})
        assert status == 201 and minted["not_before"] == int(now + 300 - 600) and minted["expires"] == int(now + 3900)
        host = await WsClient.connect(app.ws_url)
        assert (await host.join(minted["token"]))["type"] == "joined"
        _, expert_token = await api("POST", f"{v1}/tokens", {"room": "consult-1400", "identity": "dr-li", "role": "expert"})
        expert = await WsClient.connect(app.ws_url)
        assert (await expert.join(expert_token["token"]))["type"] == "joined"
        status, people = await api("GET", f"{v1}/rooms/consult-1400/participants")
        assert status == 200
        assert sorted((p["identity"], p["role"], p["connected"]) for p in people["participants"]) == [
            ("dr-li", "expert", True), ("dr-wang", "host", True)]
        assert {p["name"] for p in people["participants"]} == {"王医生", "dr-li"}
        # mute: nothing published on a node without media -> 409 that says so
        status, err = await api("POST", f"{v1}/rooms/consult-1400/participants/{expert.participant_id}/mute",
                                {"kind": "audio"})
        assert status == 409 and "publishes no audio" in err["message"]
        # recording by the API: everyone hears it; stopped, the session is listed with its manifest
        status, rec = await api("POST", f"{v1}/rooms/consult-1400/recording")
        assert status == 200 and rec["recording"] is True
        assert (await host.wait_type("recording", active=True))["by"] is None
        assert (await api("POST", f"{v1}/rooms/consult-1400/recording"))[0] == 409
        assert (await api("DELETE", f"{v1}/rooms/consult-1400/recording"))[0] == 200
        await host.wait_type("recording", active=False)

        async def listed() -> bool:
            return bool((await api("GET", f"{v1}/recordings?room=consult-1400"))[1]["sessions"])
        await wait_for(listed, 10, "the stopped session to be listed")
        [session] = (await api("GET", f"{v1}/recordings?room=consult-1400"))[1]["sessions"]
        assert session["room"] == "consult-1400" and session["started_by"] == "api"
        # remove: the expert is told and closed, the host sees it leave
        status, _ = await api("DELETE", f"{v1}/rooms/consult-1400/participants/{expert.participant_id}")
        assert status == 200
        assert (await expert.wait_type("bye"))["reason"] == "removed"
        assert (await host.wait_type("participant_left"))["reason"] == "removed"
        assert (await api("DELETE", f"{v1}/rooms/consult-1400/participants/{expert.participant_id}"))[0] == 404
        # get, list, end
        status, one = await api("GET", f"{v1}/rooms/consult-1400")
        assert status == 200 and one["participants"] == 1
        assert [r["room_id"] for r in (await api("GET", f"{v1}/rooms"))[1]["rooms"]] == ["consult-1400"]
        assert (await api("DELETE", f"{v1}/rooms/consult-1400"))[0] == 200
        assert (await host.wait_type("room_ended"))["reason"] == "ended_by_api"
        assert (await api("GET", f"{v1}/rooms/consult-1400"))[0] == 404
        await host.close()
        await expert.close()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def test_refusals_every_route_wants_the_key_and_bodies_are_checked() -> None:
    now = time.time()
    refused = [None, bearer("wrong-key"), {"Authorization": API_KEY}, bearer(API_KEY[:-1]),
               bearer(token("r1", "dr-li", "host")),  # a join token is no admin grant
               bearer(issue_admin_token(SECRET, identity="ops", valid_from=now - 7200, valid_for_s=3600)),  # expired
               bearer(issue_admin_token(SECRET, identity="ops", valid_from=now + 3600)),  # not yet valid
               bearer(issue_admin_token("another-secret-0123456789-0123456789-abc", identity="ops"))]  # forged
    other_room = bearer(issue_admin_token(SECRET, identity="ward-2-desk", room="r2"))
    async with running_app(api_key=API_KEY) as app:
        status, doc = await api("GET", f"{app.url}/api/v1/openapi.json", headers=None)
        assert status == 200
        guarded = [(m.upper(), p) for p, ops in doc["paths"].items() for m, op in ops.items()
                   if op["security"] == [{"apiKey": []}, {"adminToken": []}]]
        assert len(guarded) >= 11
        for method, path in guarded:
            url = app.url + path.replace("{room_id}", "r1").replace("{participant_id}", "p1")
            for headers in refused:
                got, reply = await api(method, url, {}, headers=headers)
                assert got == 401 and reply["error"] == "unauthorized", (method, path, headers, reply)
            if "{room_id}" in path:  # a grant for room r2 reaches nothing of r1
                got, reply = await api(method, url, {}, headers=other_room)
                assert got == 403 and "r2" in reply["message"], (method, path, reply)
        v1 = f"{app.url}/api/v1"
        for body, status in [({"room_id": "r1", "max_participants": "four"}, 400),
                             ({"room_id": "r1", "booked_from": 1, "booked_until": 2}, 400),
                             ({"room": "r1", "identity": "x", "role": "emperor"}, 400)]:
            url = f"{v1}/tokens" if "room" in body else f"{v1}/rooms"
            got, reply = await api("POST", url, body)
            assert got == status and reply["error"] == "bad_request" and reply["message"], body
        assert (await api("POST", f"{v1}/tokens", {"room": "r1", "identity": "x", "role": "host",
                                                  "valid_for_s": 30 * 86400}))[0] == 400
    async with running_app() as app:  # no key configured: admin-grant tokens only
        assert (await api("GET", f"{app.url}/api/v1/rooms", headers=None))[0] == 401
        assert (await api("GET", f"{app.url}/api/v1/rooms"))[0] == 401
        all_rooms = bearer(issue_admin_token(SECRET, identity="ops"))
        assert (await api("GET", f"{app.url}/api/v1/rooms", headers=all_rooms))[0] == 200


async def test_an_admin_grant_for_one_room_reaches_that_room_only_and_joins_nothing() -> None:
    async with running_app(api_key=API_KEY) as app:
        v1 = f"{app.url}/api/v1"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "medstream.cli", "token", "--grant", "admin", "--room", "consult-1400",
            "--identity", "booking-desk", "--valid-for", "2h", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "MEDSTREAM_SECRET": SECRET})
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s(30))
        assert proc.returncode == 0, err
        desk = bearer(out.decode().strip())
        assert (await api("POST", f"{v1}/rooms", {"room_id": "consult-1400"}, headers=desk))[0] == 201
        assert (await api("POST", f"{v1}/rooms", {"room_id": "consult-1500"}, headers=desk))[0] == 403
        assert (await api("POST", f"{v1}/rooms", {"room_id": "consult-1500"}))[0] == 201  # the key: any room
        assert [r["room_id"] for r in (await api("GET", f"{v1}/rooms", headers=desk))[1]["rooms"]] == ["consult-1400"]
        status, minted = await api("POST", f"{v1}/tokens", {"room": "consult-1400", "identity": "dr-li",
                                                           "role": "expert"}, headers=desk)
        assert status == 201
        assert (await api("POST", f"{v1}/tokens", {"room": "consult-1500", "identity": "dr-li", "role": "expert"},
                          headers=desk))[0] == 403
        assert (await api("GET", f"{v1}/recordings?room=consult-1500", headers=desk))[0] == 403
        expert = await WsClient.connect(app.ws_url)
        assert (await expert.join(minted["token"]))["type"] == "joined"
        status, people = await api("GET", f"{v1}/rooms/consult-1400/participants", headers=desk)
        assert status == 200 and [p["identity"] for p in people["participants"]] == ["dr-li"]
        assert (await api("DELETE", f"{v1}/rooms/consult-1500", headers=desk))[0] == 403
        assert (await api("DELETE", f"{v1}/rooms/consult-1400", headers=desk))[0] == 200
        await expert.close()
        intruder = await WsClient.connect(app.ws_url)  # the grant is no way into a room
        reply = await intruder.join(desk["Authorization"][7:])
        assert reply["type"] == "error" and reply["reason"] == "invalid_token" and "admin-grant" in reply["message"]
        await intruder.close()


async def test_openapi_document_matches_the_router_both_ways() -> None:
    async with running_app(api_key=API_KEY, recorder=True, media=True) as app:  # every part that adds routes
        routes = {(m, p) for m, p in app.http_routes() if m != "HEAD"}
        assert app.route.undocumented(routes) == []
        _, doc = await api("GET", f"{app.url}/api/v1/openapi.json", headers=None)
        assert doc["openapi"].startswith("3.")
        from openapi_spec_validator import validate
        validate(doc)  # a valid OpenAPI 3.1 document (raises what is wrong)
        # an API path's wrong method is the API's 405 with its own Allow, not the pages' GET
        async with aiohttp.ClientSession() as s, s.options(f"{app.url}/api/v1/rooms/r1/recording") as r:
            assert r.status == 405 and sorted(r.headers["Allow"].split(",")) == ["DELETE", "POST"]
        from medstream.openapi import canonical
        in_doc = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        assert in_doc == {(m, canonical(p)) for m, p in routes}
        for path in ("/api/v1/rooms", "/api/v1/rooms/{room_id}/participants/{participant_id}/mute",
                     "/api/v1/tokens", "/recordings/{tail}", "/healthz", "/ws", "/whip/{room_id}",
                     "/whep/{room_id}/{session}"):
            assert path in doc["paths"], path
        for ops in doc["paths"].values():
            for op in ops.values():
                assert op["summary"] and op["responses"]


async def cli(app_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "medstream.cli", *args, "--url", app_url, "--api-key", API_KEY,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s(30))
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_room_and_participant_commands_against_a_live_node() -> None:
    async with running_app(api_key=API_KEY) as app:
        code, out, err = await cli(app.url, "room", "create", "ward-3", "--kind", "monitoring", "--max", "8",
                                   "--meta", "ward=3", "--recording", "off")
        assert code == 0, err
        assert json.loads(out)["metadata"] == {"ward": "3"} and json.loads(out)["max_participants"] == 8
        code, _, err = await cli(app.url, "room", "create", "ward-3")
        assert code == 1 and "exists" in err
        code, out, _ = await cli(app.url, "room", "list")
        assert code == 0 and "ward-3" in out and "monitoring" in out
        _, minted = await api("POST", f"{app.url}/api/v1/tokens", {"room": "ward-3", "identity": "nurse-zhang", "role": "viewer"})
        nurse = await WsClient.connect(app.ws_url)
        assert (await nurse.join(minted["token"]))["type"] == "joined"
        code, out, _ = await cli(app.url, "participant", "list", "ward-3")
        assert code == 0 and nurse.participant_id in out and "nurse-zhang" in out
        code, _, err = await cli(app.url, "participant", "remove", "ward-3", nurse.participant_id)
        assert code == 0, err
        assert (await nurse.wait_type("bye"))["reason"] == "removed"
        code, _, _ = await cli(app.url, "room", "end", "ward-3")
        assert code == 0 and app.hub.store.get("ward-3") is None
        code, _, err = await cli(app.url, "room", "end", "ward-3")
        assert code == 1 and "no room" in err
        await nurse.close()
