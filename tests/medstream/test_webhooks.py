"""Webhooks through real nodes and a real receiver (an aiohttp server in the test): signed, in
order, and nothing lost across a receiver outage and a node restart in between; alarms from a
real simulated monitor; signatures that a receiver can check and a forger cannot make."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from clients.monitor_sim import ArraySource, MonitorSimConfig, MonitorSimulator, SyntheticSource, parse_events
from medstream.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, sign, verify_signature
from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token

SECRET = "webhook-secret-for-tests-0123456789"
API_KEY = "api-key-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Receiver:
    """The hospital system's endpoint: verifies each request and keeps what it got."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/medstream"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        if not verify_signature(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body, time.time()):
            self.bad_signatures += 1
            return web.Response(status=401)
        event = json.loads(body)
        assert request.headers[EVENT_ID_HEADER] == event["id"]
        self.got.append(event)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/medstream", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def unique(self) -> list[dict[str, Any]]:
        """Events deduplicated by id (delivery is at least once), in arrival order."""
        seen: set[str] = set()
        out = []
        for e in self.got:
            if e["id"] not in seen:
                seen.add(e["id"])
                out.append(e)
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def api(method: str, url: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as s, s.request(
            method, url, data=json.dumps(body).encode() if body is not None else None, headers=AUTH) as r:
        assert r.status < 300, (r.status, await r.text())
        return await r.json()


def test_signatures_verify_and_forgeries_and_replays_do_not() -> None:
    body = b'{"id":"e1","event":"room_ended"}'
    now = 1_800_000_000
    header = sign(SECRET, body, now)
    assert verify_signature(SECRET, header, body, now + 10)
    assert not verify_signature("another-secret", header, body, now)
    assert not verify_signature(SECRET, header, body + b" ", now)
    assert not verify_signature(SECRET, header, body, now + 3600)  # an old request replayed
    assert not verify_signature(SECRET, header.replace("t=", "t=1"), body, now)
    assert not verify_signature(SECRET, "garbage", body, now)


async def test_a_receiver_down_for_a_while_and_a_node_restart_lose_nothing(tmp_path: Path) -> None:
    receiver = Receiver(free_port())  # not listening yet: connections are refused
    node_config = dict(api_key=API_KEY, recorder=True, recordings_dir=tmp_path / "rec",
                       webhook_urls=(receiver.url,), webhook_secret=SECRET,
                       webhook_queue_dir=tmp_path / "hooks", webhook_retry_max_s=0.3)
    async with running_app(**node_config) as node:
        v1 = f"{node.url}/api/v1"
        await api("POST", f"{v1}/rooms", {"room_id": "consult-1400", "recording": "manual",
                                          "metadata": {"referral": "ZJ-2026-0412"}})
        doctor = await WsClient.connect(node.ws_url)
        assert (await doctor.join(token("consult-1400", "dr-li", "expert")))["type"] == "joined"
        await api("POST", f"{v1}/rooms/consult-1400/recording")
        await api("DELETE", f"{v1}/rooms/consult-1400/recording")
        await doctor.close()  # leaves without `leave`: the room ends at DELETE below
        [dest] = node.webhooks.destinations if node.webhooks else []
        await until(lambda: dest.stats.failures >= 3, 10, "three failed attempts while the receiver is down")
        await until(lambda: any(b"recording_ready" in b for b in dest._bodies.values()), 10, "recording_ready queued")
        await api("DELETE", f"{v1}/rooms/consult-1400")
    # the node is gone; its queue is on disk. A new node takes it over, then the receiver comes up.
    spooled = sorted(p.name for p in (tmp_path / "hooks").glob("*/*.json"))
    assert len(spooled) >= 7
    async with running_app(**node_config) as node:
        await api("POST", f"{node.url}/api/v1/rooms", {"room_id": "consult-1500"})
        await receiver.start()
        try:
            await until(lambda: [e["event"] for e in receiver.unique()][-1:] == ["room_started"]
                        and len(receiver.unique()) >= 8, 20, "every event after the outage")
        finally:
            await receiver.stop()
    events = receiver.unique()
    assert receiver.bad_signatures == 0
    assert [(e["event"], e["room_id"]) for e in events] == [
        ("room_started", "consult-1400"), ("participant_joined", "consult-1400"),
        ("recording_started", "consult-1400"), ("recording_stopped", "consult-1400"),
        ("recording_ready", "consult-1400"), ("participant_left", "consult-1400"),
        ("room_ended", "consult-1400"), ("room_started", "consult-1500")]
    by = {e["event"]: e for e in events}
    assert all(e["metadata"] == {"referral": "ZJ-2026-0412"} for e in events if e["room_id"] == "consult-1400")
    assert by["participant_joined"]["participant"]["identity"] == "dr-li"
    assert by["recording_started"]["by"] == "api" and by["room_ended"]["reason"] == "ended_by_api"
    manifest = by["recording_ready"]["manifest"]
    assert manifest["room"] == "consult-1400" and manifest["stopped_by"] == "api"
    assert by["recording_ready"]["session_id"] == manifest["session_id"]
    assert (tmp_path / "rec" / "consult-1400" / manifest["session_id"] / "manifest.json").is_file()
    assert not list((tmp_path / "hooks").glob("*/*.json"))  # delivered: the spool is empty


async def test_alarms_of_a_monitored_bed_reach_the_receiver(tmp_path: Path) -> None:
    samples = _bed_samples()  # generated before the node starts: neurokit2 is not imported on its loop
    receiver = Receiver(free_port())
    await receiver.start()
    try:
        async with running_app(waveforms=True, rooms=(("ward-3", "monitoring"),), webhook_urls=(receiver.url,),
                               webhook_secret=SECRET, webhook_queue_dir=tmp_path) as node:
            src = ArraySource(samples, 250.0, SyntheticSource(80.0).channels)
            sim = MonitorSimulator(src, MonitorSimConfig(url=node.ws_url, token=token("ward-3", "bed-7", "monitor"),
                                                         stream_id="bed-7", chunk_ms=200.0, speed=8.0))
            run = asyncio.ensure_future(sim.run(duration_s=30.0))
            try:
                await until(lambda: sim.stats.acked_seq > 0, 20, "the monitor streaming")  # deadlines from here
                # a bed at 200 bpm for 14 s of its stream (8x real time): raised, then cleared at 80 bpm
                await until(lambda: any(e["event"] == "alarm_cleared" and e["alarm"]["kind"] == "extreme_tachycardia"
                                        for e in receiver.got), 30, "the tachycardia alarm raised and cleared")
            finally:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
    finally:
        await receiver.stop()
    alarms = [e for e in receiver.unique() if e["event"].startswith("alarm_")]
    raised = [e for e in alarms if e["event"] == "alarm_raised" and e["alarm"]["kind"] == "extreme_tachycardia"]
    assert raised and raised[0]["stream_id"] == "bed-7" and raised[0]["room_id"] == "ward-3"
    assert raised[0]["alarm"]["priority"] and raised[0]["publisher_id"]
    cleared = [e for e in alarms if e["event"] == "alarm_cleared" and e["alarm"]["kind"] == "extreme_tachycardia"]
    assert cleared and cleared[0]["alarm"]["since_sample"] == raised[0]["alarm"]["since_sample"]
    # the same alarms, to the sample, as the offline analyzer fed the same samples in 0.2-s blocks
    # (the node analyses on a grid of stream time, however the samples arrived)
    got = [(e["event"], e["alarm"]["kind"], e["alarm"]["since_sample"]) for e in alarms]
    assert got[:_through_tachy_clear(got)] == _offline_alarms(samples)[:_through_tachy_clear(got)]


async def test_the_queue_is_bounded_drops_the_oldest_and_the_loop_never_waits(tmp_path: Path) -> None:
    from medstream.webhooks import Destination, WebhookConfig

    receiver = Receiver(free_port())
    config = WebhookConfig((receiver.url,), SECRET, tmp_path, max_queued=500, backoff_initial_s=0.05,
                           backoff_max_s=0.2)
    async with aiohttp.ClientSession() as session:
        dest = Destination(receiver.url, config, session)
        await dest.start()
        stalls: list[float] = []

        async def ticker() -> None:  # how late a 5 ms timer fires while 2000 events are queued
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                stalls.append(time.perf_counter() - t - 0.005)

        tick = asyncio.ensure_future(ticker())
        bodies = [json.dumps({"id": f"e{i}", "event": "participant_joined", "n": i}).encode() for i in range(2000)]
        for body in bodies:
            dest.enqueue(body)
        await until(lambda: not dest._unwritten and dest._writing is None, 30, "the spool to be written")
        tick.cancel()
        assert dest.stats.dropped == 1500 and dest.queued == 500
        await until(lambda: len(list(tmp_path.glob("*/*.json"))) == 500, 10, "dropped events' files removed")
        await receiver.start()
        try:
            await until(lambda: len(receiver.unique()) == 500, 30, "the 500 newest events")
        finally:
            await receiver.stop()
            await dest.close()
    assert [e["n"] for e in receiver.unique()] == list(range(1500, 2000))  # the newest, in order
    print(f"loop stall while spooling 2000 events: max {max(stalls) * 1000:.1f} ms over {len(stalls)} ticks")
    assert max(stalls) < timeout_s(0.25)


async def test_a_receiver_that_refuses_an_event_gets_a_few_tries_then_the_next_one(tmp_path: Path) -> None:
    from medstream.webhooks import Destination, WebhookConfig

    refused_first: list[str] = []
    got: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if event["id"] == "bad":
            refused_first.append(event["id"])
            return web.Response(status=422)  # the receiver says the request itself is wrong
        got.append(event["id"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/hook"
    try:
        (tmp_path / "x").mkdir()
        async with aiohttp.ClientSession() as session:
            dest = Destination(url, WebhookConfig((url,), SECRET, tmp_path, backoff_initial_s=0.01,
                                                  backoff_max_s=0.05, max_refused_attempts=3), session)
            await dest.start()
            for event_id in ("bad", "good"):
                dest.enqueue(json.dumps({"id": event_id, "event": "room_ended"}).encode())
            # delivered counts once the response is back, after the handler ran
            await until(lambda: got == ["good"] and dest.stats.delivered == 1, 10,
                        "the next event after the refused one")
            await dest.close()
    finally:
        await runner.cleanup()
    assert refused_first == ["bad"] * 3 and dest.stats.dropped == 1 and dest.stats.delivered == 1


def _bed_samples() -> np.ndarray:
    """30 s of a bed at 250 Hz: 80 bpm, 200 bpm from 4 s to 18 s, then 80 bpm (ADC, shape (1, n))."""
    return SyntheticSource(80.0, parse_events("tachy@4+14:200"), 250.0, seed=1).read(int(30 * 250))


def _offline_alarms(samples: np.ndarray) -> list[tuple[str, str, int]]:
    """The alarm changes of the bed's samples through `dsp` directly, 0.2-s blocks."""
    from dsp.analyzer import MultiStreamAnalyzer

    mv = samples[0] / SyntheticSource.GAIN
    analyzer = MultiStreamAnalyzer()
    analyzer.add_stream("bed-7", 250.0)
    out: list[tuple[str, str, int]] = []
    for lo in range(0, mv.size, 50):
        analyzer.feed("bed-7", mv[lo:lo + 50], lo)
        r = analyzer.process()["bed-7"]
        out += [("alarm_raised", a.kind.value, a.since_sample) for a in r.alarms_raised]
        out += [("alarm_cleared", a.kind.value, a.since_sample) for a in r.alarms_cleared]
    return out


def _through_tachy_clear(alarms: list[tuple[str, str, int]]) -> int:
    return alarms.index(next(a for a in alarms if a[:2] == ("alarm_cleared", "extreme_tachycardia"))) + 1
