"""A bounded fuzz run through the real server (fixed seed, a few thousand inputs from the
generators of `bench.abuse`): every input the wire module refuses gets an error reply, nothing
closes the fuzzing connections, no traceback or ERROR line is logged, and a canary participant's
pings are answered throughout. `python -m bench.abuse` is the long version."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest

from bench.abuse import binary_inputs, hostile_tokens, text_inputs
from protocol import signaling as wire
from protocol.signaling import WireError
from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token
from tests.security.conftest import announce, next_binary, send_frame

UNLIMITED = {"rate_per_s": 1e9, "rate_burst": 10**9, "binary_rate_per_s": 1e9, "binary_rate_burst": 10**9,
             "flood_close_after": 10**9, "max_message_bytes": 64 * 1024}


def _refused_locally(text: str) -> bool:
    try:
        wire.decode_client_message(text)
    except WireError:
        return True
    return len(text) > UNLIMITED["max_message_bytes"]


async def test_bounded_fuzz_through_the_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rng = random.Random(15)
    texts = list(text_inputs(rng, 2500))
    frames = list(binary_inputs(rng, 1500))
    tokens = list(hostile_tokens(rng, 200, secret="test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"))
    async with running_app(waveforms=True, rooms=(("ward", "monitoring"),), **UNLIMITED) as app:
        canary = await WsClient.connect(app.ws_url)
        await canary.join(token("c1", "canary", "host", kind="consultation"))
        fuzzer = await WsClient.connect(app.ws_url)
        await fuzzer.join(token("c1", "fuzz-viewer", "viewer"))
        monitor = await WsClient.connect(app.ws_url)
        await monitor.join(token("ward", "fuzz-monitor", "monitor"))
        stranger = await WsClient.connect(app.ws_url)  # never joins

        for i, text in enumerate(texts):
            await fuzzer.send(text)
            if i % 500 == 0:
                assert (await canary.request("ping"))["type"] == "pong"
        for frame in frames:
            await monitor.ws.send(frame)
        for tok in tokens:
            reply = await stranger.request("join", v=1, token=tok)
            assert reply["type"] == "error" and reply["reason"] in ("invalid_token", "token_expired",
                                                                     "token_not_yet_valid", "unknown_room"), reply
        end = await fuzzer.request("ping")
        assert end["type"] == "pong"
        errors = sum(m["type"] == "error" for m in fuzzer.inbox)
        assert errors >= sum(map(_refused_locally, texts))
        await send_frame(monitor, announce("still-works"))
        from protocol.waveforms import Ack

        assert await next_binary(monitor, lambda m: isinstance(m, Ack) and m.stream_id == "still-works",
                                 timeout=10) == Ack("still-works", 0)
        assert (await asyncio.wait_for(canary.request("ping"), timeout_s(5)))["type"] == "pong"
        for c in (canary, fuzzer, monitor, stranger):
            assert not c._reader.done(), "a fuzzing connection was closed"
            await c.close()
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage()[:200] for r in bad[:5]]
    assert json.dumps(texts[:1])  # the inputs are reproducible from the seed
