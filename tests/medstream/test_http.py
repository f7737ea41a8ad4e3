"""The node's HTTP edge through a real server: bodies reach handlers, files stream whole or in
ranges of any size, the admin API refuses whom it should, and websocket frames are well formed."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest
import websockets

from media_server.events import MediaErrorReason
from medstream.http import ws_frame
from medstream.media_bridge import MEDIA_REASONS
from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token

API_KEY = "api-key-for-tests-0123456789abcdef"


async def http(method: str, url: str, *, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.request(method, url, data=body, headers=headers or {}) as r:
        return r.status, dict(r.headers), await r.read()


def test_ws_frame_headers_follow_rfc6455_for_each_length_form() -> None:
    assert ws_frame(0x1, b"hi") == b"\x81\x02hi"
    mid = ws_frame(0x2, b"x" * 300)
    assert mid[:4] == b"\x82\x7e\x01\x2c" and len(mid) == 304
    big = ws_frame(0x2, b"y" * 70000)
    assert big[:2] == b"\x82\x7f" and int.from_bytes(big[2:10], "big") == 70000 and len(big) == 70010


def test_every_media_error_reason_has_a_protocol_reason() -> None:
    assert set(MEDIA_REASONS) == set(MediaErrorReason)


async def test_post_body_reaches_the_admin_api_and_creates_a_standing_room() -> None:
    async with running_app(api_key=API_KEY) as app:
        base = f"{app.url}/api/v1/rooms"
        auth = {"Authorization": f"Bearer {API_KEY}"}
        body = json.dumps({"room_id": "consult-1400", "kind": "consultation"}).encode()
        status, _, reply = await http("POST", base, body=body, headers=auth)
        assert status == 201 and json.loads(reply)["room_id"] == "consult-1400" and json.loads(reply)["standing"]
        assert (await http("POST", base, body=body, headers=auth))[0] == 409
        # the room exists before anyone joins, and stays while empty (a tick ends other empty rooms)
        app.driver.apply(app.hub.tick(time.time()))
        assert app.hub.store.get("consult-1400") is not None
        expert = await WsClient.connect(app.ws_url)
        assert (await expert.join(token("consult-1400", "dr-li", "expert")))["type"] == "joined"
        status, _, listing = await http("GET", base, headers=auth)
        assert status == 200
        [row] = [r for r in json.loads(listing)["rooms"] if r["room_id"] == "consult-1400"]
        assert row["participants"] == 1 and row["kind"] == "consultation"
        # DELETE ends it: the participant is told and closed
        status, _, _ = await http("DELETE", f"{base}/consult-1400", headers=auth)
        assert status == 200
        ended = await expert.wait(lambda m: m["type"] in ("room_ended", "bye"), timeout=timeout_s(5))
        assert ended["type"] in ("room_ended", "bye")
        assert (await http("DELETE", f"{base}/consult-1400", headers=auth))[0] == 404
        await expert.close()


async def test_admin_api_refusals() -> None:
    async with running_app(api_key=API_KEY) as app:
        base = f"{app.url}/api/v1/rooms"
        ok = {"Authorization": f"Bearer {API_KEY}"}
        assert (await http("GET", base))[0] == 401
        assert (await http("GET", base, headers={"Authorization": "Bearer wrong"}))[0] == 401
        for bad in (b"{not json", b"[1]", json.dumps({"room_id": "../x"}).encode(),
                    json.dumps({"room_id": "r1", "kind": "party"}).encode()):
            status, _, reply = await http("POST", base, body=bad, headers=ok)
            assert status == 400 and json.loads(reply)["message"], bad
        status, _, _ = await http("POST", base, body=b"x" * 200_000, headers=ok)
        assert status == 413
    async with running_app() as app:  # no key configured: admin-grant tokens only, and this is none
        assert (await http("GET", f"{app.url}/api/v1/rooms", headers={"Authorization": "Bearer x"}))[0] == 401


async def test_recordings_stream_whole_and_in_ranges_beyond_8_mib(tmp_path: Path) -> None:
    session = tmp_path / "consult-1" / "20261201T100000Z-abc123"
    session.mkdir(parents=True)
    (session / "manifest.json").write_text(json.dumps({"room": "consult-1"}))
    blob = os.urandom(9 * 1024 * 1024 + 17)
    (session / "host-video.webm").write_bytes(blob)
    async with running_app(recorder=True, recordings_dir=tmp_path) as app:
        url = f"{app.url}/recordings/consult-1/20261201T100000Z-abc123/host-video.webm"
        auth = {"Authorization": f"Bearer {token('consult-1', 'dr-grey', 'host')}"}
        status, headers, body = await http("GET", url, headers=auth)
        assert status == 200 and body == blob and headers["Accept-Ranges"] == "bytes"
        status, headers, body = await http("GET", url, headers={**auth, "Range": "bytes=100-"})
        assert status == 206 and body == blob[100:]
        assert headers["Content-Range"] == f"bytes 100-{len(blob) - 1}/{len(blob)}"
        assert (await http("GET", url))[0] == 401


async def test_static_pages_and_no_way_out_of_the_web_root() -> None:
    async with running_app() as app:
        status, headers, body = await http("GET", f"{app.url}/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        status, headers, _ = await http("GET", f"{app.url}/static/js/signaling.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        for path in ("/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/nope.html"):
            assert (await http("GET", f"{app.url}{path}"))[0] == 404, path
        status, _, body = await http("GET", f"{app.url}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, headers, body = await http("GET", f"{app.url}/metrics")
        assert status == 200 and b"medstream_rooms " in body and headers["Content-Type"].startswith("text/plain")


async def test_oversized_websocket_frame_closes_with_1009_and_others_stay() -> None:
    async with running_app(max_frame_bytes=64 * 1024) as app:
        bystander = await WsClient.connect(app.ws_url)
        assert (await bystander.join(token("c1", "dr-a", "host", kind="consultation")))["type"] == "joined"
        async with websockets.connect(app.ws_url, max_size=None) as ws:
            await ws.send("x" * (65 * 1024))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout_s(5))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert (await bystander.request("ping"))["type"] == "pong"
        await bystander.close()
