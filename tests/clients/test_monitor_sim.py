"""clients.monitor_sim against a real server on 127.0.0.1: back-fill after an outage with no sample
lost or duplicated, refusals of bad frames, slow viewers that do not slow fast ones.

The monitor runs faster than real time (`speed`), so a 30 s outage takes ~1.5 s of wall time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
import websockets
import wfdb

from clients.monitor_sim import (
    MonitorSimConfig,
    MonitorSimulator,
    RecordSource,
    SyntheticSource,
    parse_events,
)
from medstream.app import MedstreamApp
from medstream.config import ServerConfig
from protocol.waveforms import (
    Ack,
    Announce,
    Chunk,
    ServerWaveformMessage,
    Skipped,
    StreamAnnounce,
    ViewerChunk,
    WaveformError,
    WaveformErrorReason,
    decode_server_frame,
    encode,
)
from signaling.hub import Hub, SignalingConfig
from signaling.tokens import issue_token
from tests.conftest import timeout_s
from tests.waveforms.helpers import RecordingSink
from waveforms import WaveformConfig, WaveformRelay

SECRET = "test-secret-waveforms-0123456789abcdef"
RECORDS = ("100", "105", "106", "108", "109", "112", "116", "118", "119", "122", "201", "203",
           "205", "208", "215", "220")
ROOM = "ward-1"


@dataclass
class Server:
    relay: WaveformRelay
    url: str
    sink: RecordingSink
    hub: Hub

    def participants(self, identity: str) -> list[bool]:
        """`connected` of every participant of the room with this identity."""
        room = self.hub.store.get(ROOM)
        assert room is not None
        return [p.connected for p in room.participants.values() if p.identity == identity]

    def token(self, identity: str, role: str) -> str:
        return issue_token(SECRET, room=ROOM, identity=identity, role=role)


async def _server(config: WaveformConfig) -> tuple[MedstreamApp, Server]:
    signaling = SignalingConfig(secret=SECRET)
    hub = Hub(signaling)
    hub.create_room(ROOM, "monitoring", time.time(), persistent=True)
    relay = WaveformRelay(config)
    sink = RecordingSink()
    relay.add_store_sink(ROOM, sink)
    node = MedstreamApp(ServerConfig(signaling, port=0, audit_log=None, media=False, recorder=False),
                        hub=hub, relay=relay)
    await node.start()
    return node, Server(relay, node.ws_url, sink, hub)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv, info = await _server(WaveformConfig(analysis=False))
    yield info
    await srv.stop()


async def _join(url: str, token: str, **connect_kwargs: object) -> websockets.ClientConnection:
    ws = await websockets.connect(url, **connect_kwargs)  # type: ignore[arg-type]
    await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": token}))
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout_s(5))
        if isinstance(msg, str) and json.loads(msg)["type"] == "joined":
            return ws
        assert not (isinstance(msg, str) and json.loads(msg)["type"] == "error"), msg


async def _collect(ws: websockets.ClientConnection, into: list[ServerWaveformMessage]) -> None:
    async for raw in ws:
        if isinstance(raw, bytes):
            into.append(decode_server_frame(raw))


def _viewer_samples(msgs: list[ServerWaveformMessage], n_channels: int) -> np.ndarray:
    chunks = [m.chunk for m in msgs if isinstance(m, ViewerChunk)]
    end = max(c.seq + c.n_samples for c in chunks)
    out = np.zeros((n_channels, end), dtype=np.int64)
    seen = np.zeros(end, dtype=np.int32)
    for c in chunks:
        out[:, c.seq:c.seq + c.n_samples] = c.samples
        seen[c.seq:c.seq + c.n_samples] += 1
    assert seen.max() == 1 and seen.min() == 1, "viewer saw a sample twice or missed one"
    return out


async def test_outage_of_30_s_is_backfilled_with_no_sample_lost_or_duplicated(
    server: Server, ecg_data_dir: Path
) -> None:
    record = ecg_data_dir / "mitdb" / "100"
    duration_s = 60.0
    viewer = await _join(server.url, server.token("nurse", "viewer"))
    seen: list[ServerWaveformMessage] = []
    reader = asyncio.create_task(_collect(viewer, seen))
    sim = MonitorSimulator(RecordSource(record), MonitorSimConfig(
        url=server.url, token=server.token("monitor-100", "monitor"), stream_id="bed-100",
        speed=20.0, reconnect_min_s=0.05))

    async def outage() -> None:
        while sim.next_seq < 10 * sim.fs:
            await asyncio.sleep(0.01)
        sim.set_offline(True)
        while sim.next_seq < 40 * sim.fs:
            await asyncio.sleep(0.01)
        assert sim.buffered_chunks >= 290  # the 30 s generated while offline are kept
        sim.set_offline(False)

    chaos = asyncio.create_task(outage())
    stats = await asyncio.wait_for(sim.run(duration_s), timeout_s(30))
    await asyncio.wait_for(chaos, timeout_s(5))
    n = sim.next_seq
    assert n >= (duration_s - 0.1) * sim.fs
    expected = wfdb.rdrecord(str(record), physical=False, sampto=n).d_signal.T

    np.testing.assert_array_equal(server.sink.assembled(), expected)  # stored exactly once
    st = server.relay.stats()
    assert st.samples_in == n and st.lost_samples == 0
    assert st.backfilled_samples >= 29 * sim.fs
    assert stats.connections == 2 and stats.acked_seq == n and sim.buffered_chunks == 0
    assert stats.chunks_backfilled >= 290
    # back within the grace period: the same participant resumed, no ghost left behind
    assert (stats.resumed, stats.resume_refused) == (1, 0)
    assert len(server.participants("monitor-100")) == 1
    assert server.hub.metrics.resumes == 1

    await asyncio.sleep(0.2)  # let the last frames reach the viewer
    reader.cancel()
    await viewer.close()
    assert isinstance(seen[0], StreamAnnounce) and seen[0].announce.stream_id == "bed-100"
    np.testing.assert_array_equal(_viewer_samples(seen, 2), expected)
    not_live = [m.chunk.seq for m in seen if isinstance(m, ViewerChunk) and not m.live]
    assert not_live and min(not_live) >= 9 * sim.fs and max(not_live) < 41 * sim.fs


async def test_a_refused_resume_falls_back_to_a_fresh_join_and_loses_nothing(
    server: Server, ecg_data_dir: Path
) -> None:
    record = ecg_data_dir / "mitdb" / "100"
    sim = MonitorSimulator(RecordSource(record), MonitorSimConfig(
        url=server.url, token=server.token("monitor-100", "monitor"), stream_id="bed-100",
        speed=20.0, reconnect_min_s=0.05))

    async def outage() -> None:
        while sim.next_seq < 3 * sim.fs:
            await asyncio.sleep(0.01)
        sim.set_offline(True)
        sim._resume_key = "not-a-valid-key"  # what a server restart or an expired place gives
        while sim.next_seq < 6 * sim.fs:
            await asyncio.sleep(0.01)
        sim.set_offline(False)

    chaos = asyncio.create_task(outage())
    stats = await asyncio.wait_for(sim.run(10.0), timeout_s(30))
    await asyncio.wait_for(chaos, timeout_s(5))
    assert (stats.connections, stats.resumed, stats.resume_refused) == (2, 0, 1)
    n = sim.next_seq
    expected = wfdb.rdrecord(str(record), physical=False, sampto=n).d_signal.T
    np.testing.assert_array_equal(server.sink.assembled(), expected)
    # a fresh join of the same device took over at once: one participant, no ghost beside it
    assert len(server.participants("monitor-100")) == 1


async def test_bad_frames_get_errors_and_the_connection_keeps_working(server: Server) -> None:
    ws = await _join(server.url, server.token("monitor-x", "monitor"))
    announce = Announce("bed-x", SyntheticSource().channels, 500.0, 0)
    bad_frames = [
        b"\xc1",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"type": "launch"}),
        msgpack.packb({**msgpack.unpackb(encode(announce)), "sampling_rate_hz": 0}),
        msgpack.packb({**msgpack.unpackb(encode(announce)), "v": 9}),
        encode(Chunk("bed-x", 0, 1.0, np.zeros((1, 10), np.int16))),  # before announce
        b"\x00" * 300_000,
    ]
    reasons = []
    for frame in bad_frames:
        await ws.send(frame)
        reply = decode_server_frame(await asyncio.wait_for(ws.recv(), timeout_s(5)))
        assert isinstance(reply, WaveformError)
        reasons.append(reply.reason)
    assert reasons == [WaveformErrorReason.BAD_MESSAGE] * 4 + [
        WaveformErrorReason.UNSUPPORTED_VERSION, WaveformErrorReason.UNKNOWN_STREAM,
        WaveformErrorReason.MESSAGE_TOO_LARGE]
    await ws.send(encode(announce))
    assert decode_server_frame(await ws.recv()) == Ack("bed-x", 0)
    await ws.send(encode(Chunk("bed-x", 0, 1.0, np.ones((2, 10), np.int16))))  # 2 ch, announced 1
    reply = decode_server_frame(await ws.recv())
    assert isinstance(reply, WaveformError) and "n_channels must be 1" in reply.message
    await ws.send(encode(Chunk("bed-x", 0, 1.0, np.ones((1, 10), np.int16))))
    assert decode_server_frame(await ws.recv()) == Ack("bed-x", 10)
    # a viewer may not publish: the server refuses in JSON and the viewer stays connected
    viewer = await _join(server.url, server.token("nurse", "viewer"))
    await viewer.send(encode(announce))
    while isinstance(raw := await asyncio.wait_for(viewer.recv(), timeout_s(5)), bytes):
        pass
    assert json.loads(raw)["reason"] == "forbidden"
    await viewer.send(json.dumps({"type": "ping", "id": 2}))
    while isinstance(raw := await asyncio.wait_for(viewer.recv(), timeout_s(5)), bytes):
        pass
    assert json.loads(raw)["type"] == "pong"
    await ws.close()
    await viewer.close()


async def test_a_viewer_that_never_reads_does_not_slow_a_fast_one(ecg_data_dir: Path) -> None:
    # 256 chunks = 0.7 s of this burst (12 monitors x 30 chunks/s): headroom for the fast viewer on
    # a loaded machine, far below the 1,440 chunks the stuck viewer is sent
    srv, server = await _server(WaveformConfig(analysis=False, viewer_max_chunks=256))
    try:
        fast = await _join(server.url, server.token("fast", "viewer"))
        # the slow viewer stops reading after joining; a tiny receive buffer makes that bite
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect(("127.0.0.1", srv.port))
        slow = await _join(server.url, server.token("slow", "viewer"), sock=sock, max_queue=1)
        fast_seen: list[ServerWaveformMessage] = []
        fast_chunks = [0]

        async def read_fast() -> None:
            async for raw in fast:
                if isinstance(raw, bytes):
                    fast_seen.append(m := decode_server_frame(raw))
                    fast_chunks[0] += isinstance(m, ViewerChunk)
        reader = asyncio.create_task(read_fast())

        # The monitors burst at 150x, and this process also runs the server and the fast viewer:
        # on a busy machine its reader could fall 256 chunks behind for want of CPU alone. So the
        # monitors' clock stands still while the fast viewer is more than 128 chunks behind them.
        # If the stuck viewer held the server up, the fast one would stop and the run time out.
        def fast_behind() -> int:
            return sum(s.stats.chunks_sent for s in sims) - fast_chunks[0]

        class GatedClock:
            def __init__(self) -> None:
                self.t, self.last = time.time(), time.time()

            def __call__(self) -> float:
                now = time.time()
                if fast_behind() < 128:
                    self.t += now - self.last
                self.last = now
                return self.t

        sims: list[MonitorSimulator] = []
        sims += [MonitorSimulator(RecordSource(ecg_data_dir / "mitdb" / rec, loop=True),
                                  MonitorSimConfig(url=server.url, stream_id=f"bed-{rec}",
                                                   token=server.token(f"mon-{rec}", "monitor"),
                                                   chunk_ms=5000.0, speed=150.0), clock=GatedClock())
                 for rec in RECORDS]
        # ~14 MB for each viewer: more than the kernel and websockets buffer for the stuck one
        await asyncio.wait_for(asyncio.gather(*(s.run(600.0) for s in sims)), timeout_s(60))

        def fast_has(s: MonitorSimulator) -> int:
            return sum(m.chunk.n_samples for m in fast_seen
                       if isinstance(m, ViewerChunk) and m.chunk.stream_id == s.config.stream_id)

        # the last frames may still be on their way: wait for them (bounded), not a fixed sleep
        deadline = asyncio.get_running_loop().time() + timeout_s(10)
        while any(fast_has(s) < s.next_seq for s in sims) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        # the fast viewer got every sample of every stream, once, in spite of the stuck one
        for s in sims:
            assert fast_has(s) == s.next_seq
        assert server.relay.stats().dropped_chunks_slow_viewers > 0
        # when the slow one finally reads, it is told what it missed
        async def first_skipped() -> Skipped:
            async for raw in slow:
                if isinstance(raw, bytes) and isinstance(m := decode_server_frame(raw), Skipped):
                    return m
            raise AssertionError("connection closed without a skipped notice")

        skipped = await asyncio.wait_for(first_skipped(), timeout_s(20))
        assert skipped.chunks >= 1 and skipped.to_sample > skipped.from_sample
        await fast.close()
        slow.transport.abort()
    finally:
        await srv.stop()


def test_synthetic_source_rate_and_asystole_event() -> None:
    fs = 250.0
    src = SyntheticSource(90.0, parse_events("asystole@10+5"), fs, seed=3)
    sim = MonitorSimulator(src, MonitorSimConfig(chunk_ms=200.0, start_epoch=1000.0))
    chunks = [sim.next_chunk() for _ in range(100)]  # 20 s, no socket
    assert all(c is not None for c in chunks)
    x = np.concatenate([c.samples[0] for c in chunks if c is not None]).astype(float) / 200.0
    assert x.shape == (5000,) and chunks[1] is not None and chunks[1].t0 == 1000.2
    before, during = x[: int(10 * fs)], x[int(10 * fs): int(15 * fs)]
    assert np.ptp(during) < 0.2 < np.ptp(before)  # flat line during the pause
    # beats before the pause come at ~90 bpm: count R peaks above half the max
    r = before > 0.5 * before.max()
    onsets = np.flatnonzero(r[1:] & ~r[:-1])
    assert 13 <= len(onsets) <= 17  # 10 s at 90 bpm = 15 beats
    assert sim.buffered_chunks == 100
    sim.on_ack(50 * 50)
    assert sim.buffered_chunks == 50


def test_vital_signs_stay_plausible_over_a_simulated_week() -> None:
    """Bounded and mean-reverting (not a random walk): a week of numerics every 5 s stays within
    physiological limits, centres on the resting means and keeps its spread."""
    from clients.monitor_sim import PULSE_PRESSURE_MIN_MMHG, VITALS

    sim = MonitorSimulator(SyntheticSource(72.0, seed=1), MonitorSimConfig(seed=7))
    steps = 7 * 24 * 3600 // 5
    rows = [sim.vitals_at(5.0 * i) for i in range(1, steps + 1)]
    series = {k: np.array([r[k] for r in rows]) for k in VITALS}
    assert series["spo2_pct"].max() <= 100.0 and series["spo2_pct"].min() >= 88.0
    assert series["temp_c"].min() >= 36.0 and series["temp_c"].max() <= 38.0
    assert series["resp_rate_bpm"].min() >= 8 and series["resp_rate_bpm"].max() <= 25
    assert (series["nibp_sys_mmhg"] - series["nibp_dia_mmhg"] >= PULSE_PRESSURE_MIN_MMHG - 1).all()
    for name, spec in VITALS.items():
        x = series[name]
        assert spec.low <= x.min() and x.max() <= spec.high, name
        assert abs(x.mean() - spec.mean) < 0.25 * spec.sd + 0.5 * 10 ** -spec.digits, (name, x.mean())
        # a random walk's spread grows with time; this one's is the same in each day
        daily_sd = [x[d * len(x) // 7:(d + 1) * len(x) // 7].std() for d in range(7)]
        assert max(daily_sd) < 1.6 * spec.sd and min(daily_sd) > 0.5 * spec.sd, (name, daily_sd)
    assert len({r["temp_c"] for r in rows[:100]}) > 1  # it does move


def test_vital_signs_follow_the_scripted_asystole_and_recover() -> None:
    src = SyntheticSource(72.0, parse_events("asystole@600+120,tachy@1800+300:150"), seed=2)
    sim = MonitorSimulator(src, MonitorSimConfig(seed=3))
    rows = {t: sim.vitals_at(float(t)) for t in range(5, 3600, 5)}
    spo2 = lambda a, b: np.mean([rows[t]["spo2_pct"] for t in rows if a <= t < b])  # noqa: E731
    sys_p = lambda a, b: np.mean([rows[t]["nibp_sys_mmhg"] for t in rows if a <= t < b])  # noqa: E731
    resp = lambda a, b: np.mean([rows[t]["resp_rate_bpm"] for t in rows if a <= t < b])  # noqa: E731
    assert spo2(300, 600) > 95 and spo2(690, 720) < 88  # saturation falls without a heartbeat
    assert sys_p(690, 720) < 80 < 110 < sys_p(300, 600)
    assert spo2(1300, 1800) > 95  # and recovers
    assert resp(2000, 2100) > resp(1300, 1800) + 3  # tachycardia: faster breathing
    assert all(r["spo2_pct"] <= 100 and 36.0 <= r["temp_c"] <= 38.0 for r in rows.values())


def test_parse_events_refuses_garbage() -> None:
    assert parse_events("tachy@60+20:150,asystole@30+8")[0].kind == "asystole"
    with pytest.raises(ValueError, match="got 'fib@1'"):
        parse_events("fib@1")
