"""Findings 8 and 9 of issue 15 through the real server: hostile JSON and tokens get one error
reply and at most one log line (never a traceback); /metrics names nobody and can require a
bearer token; only allowed websocket Origins connect."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request

import jwt
import pytest
import websockets

from tests.helpers import SECRET, WsClient, running_app, token


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def test_finding_8_deep_json_and_out_of_range_claims_get_an_error_reply(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    now = time.time()
    claims = {"sub": "a", "room": "c1", "role": "host", "kind": "consultation"}
    hostile_tokens = [
        jwt.encode({**claims, "nbf": 10**20, "exp": 10**21}, SECRET, algorithm="HS256"),
        jwt.encode({**claims, "nbf": now - 10, "exp": 10**30}, SECRET, algorithm="HS256"),
        jwt.encode({**claims, "nbf": -(10**20), "exp": now + 60}, SECRET, algorithm="HS256"),
        jwt.encode({**claims, "nbf": now - 10, "exp": now + 60, "jti": ["x"]}, SECRET, algorithm="HS256"),
    ]
    async with running_app() as app:
        c = await WsClient.connect(app.ws_url)
        for depth in (1000, 20_000):
            await c.send("[" * depth + "]" * depth)
            err = await c.wait_type("error")
            assert err["reason"] == "bad_message" and ("nested" in err["message"] or "brackets" in err["message"])
            await c.send('{"type":"ping","x":' + "[" * 900 + "]" * 900 + "}")
            assert (await c.wait_type("error"))["reason"] == "bad_message"
        for tok in hostile_tokens:
            reply = await c.join(tok)
            assert reply["type"] == "error" and reply["reason"] == "invalid_token", reply
        host_token = token("c1", "dr-host", "host", kind="consultation")
        resumed = await c.join(host_token, resume="résumé-ключ-✓")
        assert resumed["type"] == "error" and resumed["reason"] == "resume_failed"
        assert (await c.join(host_token))["type"] == "joined"
        assert (await c.request("ping"))["type"] == "pong"  # still the same connection
        await c.close()
    _no_tracebacks(caplog)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2 * 2 + len(hostile_tokens) + 1  # one line per bad input


async def test_finding_9_metrics_need_the_bearer_token_and_name_nobody() -> None:
    async with running_app(metrics_token="m" * 40) as app:
        c = await WsClient.connect(app.ws_url)
        await c.join(token("c1", "dr-secret-name", "host", kind="consultation"))
        with pytest.raises(urllib.error.HTTPError) as denied:
            await asyncio.to_thread(urllib.request.urlopen, f"{app.url}/metrics", timeout=5)
        assert denied.value.code == 401
        request = urllib.request.Request(f"{app.url}/metrics", headers={"Authorization": "Bearer " + "m" * 40})
        text = (await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=5).read())).decode()
        assert "medstream_participants 1" in text
        assert c.participant_id not in text and "dr-secret-name" not in text and "c1" not in text
        await c.close()


def test_media_metrics_are_aggregates_without_participant_ids() -> None:
    from media_server.events import PeerQuality
    from medstream.metrics import media_samples

    fields = {f: 1.0 for f in PeerQuality.__dataclass_fields__ if f not in ("peer_id", "participant_id")}
    q = PeerQuality(**fields)  # type: ignore[arg-type]
    samples = media_samples(2, 1, [("p-secret-1", q), ("p-secret-2", q)])
    text = repr(samples)
    assert "p-secret" not in text and ("stat", "max") in {label for s in samples for label in s.labels}


async def test_finding_9_websocket_origin_allow_list() -> None:
    async with running_app(allowed_origins=("https://portal.hospital.example",)) as app:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(app.ws_url, origin="https://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        for origin in (f"http://127.0.0.1:{app.port}", "https://portal.hospital.example", None):
            ws = await websockets.connect(app.ws_url, origin=origin)  # type: ignore[arg-type]
            await ws.close()
