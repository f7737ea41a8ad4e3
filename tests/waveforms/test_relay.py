"""waveforms.relay, sans-I/O: exactly-once storage, back-fill, refusals, fan-out policy.

Samples are the ADC integers of a real MIT-BIH record; time is a fake clock.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
import wfdb
import wfdb.processing

from protocol.waveforms import (
    Ack,
    Analysis,
    Announce,
    ChannelInfo,
    Chunk,
    Gap,
    Numerics,
    ServerWaveformMessage,
    Skipped,
    StreamAnnounce,
    StreamEnded,
    ViewerChunk,
    WaveformError,
    WaveformErrorReason,
    decode_server_frame,
    encode,
)
from tests.waveforms.helpers import FakeClock, RecordingSink
from waveforms import ViewerOutbox, WaveformConfig, WaveformRelay

GROUP = "room-1"
FS = 360.0
CHUNK = 36  # 100 ms at 360 Hz


@pytest.fixture(scope="module")
def adc(ecg_data_dir: Path) -> np.ndarray:
    """60 s of mitdb/100, both channels, raw ADC integers, shape (2, n)."""
    rec = wfdb.rdrecord(str(ecg_data_dir / "mitdb" / "100"), physical=False, sampto=int(60 * FS))
    return np.ascontiguousarray(rec.d_signal.T.astype(np.int16))


ANNOUNCE = Announce("bed-1", (ChannelInfo("MLII", "mV", 200.0, 1024),
                              ChannelInfo("V5", "mV", 200.0, 1024)), FS, ecg_channel=0)


def _relay(**cfg: object) -> tuple[WaveformRelay, FakeClock]:
    clock = FakeClock()
    return WaveformRelay(WaveformConfig(analysis=False, **cfg), clock=clock), clock  # type: ignore[arg-type]


def _send(relay: WaveformRelay, msg: object, publisher: str = "mon-1") -> list[ServerWaveformMessage]:
    return [decode_server_frame(f) for f in relay.on_publisher_frame(GROUP, publisher, encode(msg))]


def _chunk(adc: np.ndarray, start: int, end: int, backfill: bool = False) -> Chunk:
    return Chunk("bed-1", start, 1.7e9 + start / FS, adc[:, start:end], backfill)


def _drain(out: ViewerOutbox) -> list[ServerWaveformMessage]:
    msgs = []
    while (f := out.get_nowait()) is not None:
        msgs.append(decode_server_frame(f))
    return msgs


def test_in_order_stream_is_stored_fanned_out_and_acked(adc: np.ndarray) -> None:
    relay, _ = _relay()
    sink = RecordingSink()
    relay.add_store_sink(GROUP, sink)
    viewer = relay.add_viewer(GROUP, "v1")
    assert _send(relay, ANNOUNCE) == [Ack("bed-1", 0)]
    n = 100 * CHUNK
    for start in range(0, n, CHUNK):
        assert _send(relay, _chunk(adc, start, start + CHUNK)) == [Ack("bed-1", start + CHUNK)]
    np.testing.assert_array_equal(sink.assembled(), adc[:, :n])
    assert sink.announces == [("mon-1", ANNOUNCE)]
    msgs = _drain(viewer)
    assert msgs[0] == StreamAnnounce("mon-1", ANNOUNCE)
    chunks = [m for m in msgs if isinstance(m, ViewerChunk)]
    assert all(c.live for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.chunk.samples for c in chunks], axis=1),
                                  adc[:, :n])
    st = relay.stats()
    assert (st.samples_in, st.duplicate_samples, st.gaps, st.streams) == (n, 0, 0, 1)


def test_out_of_order_overlapping_and_duplicate_chunks_store_every_sample_once(
    adc: np.ndarray,
) -> None:
    relay, _ = _relay()
    sink = RecordingSink()
    relay.add_store_sink(GROUP, sink)
    _send(relay, ANNOUNCE)
    rng = np.random.default_rng(7)
    n = adc.shape[1] // 4
    # random windows with overlaps, sent shuffled, then the whole range again once
    starts = np.sort(rng.integers(0, n - 200, size=300))
    windows = [(int(s), int(s + rng.integers(1, 200))) for s in starts]
    windows += [(s, min(s + 150, n)) for s in range(0, n, 100)]  # covers everything
    order = rng.permutation(len(windows))
    acks = []
    for i in order:
        lo, hi = windows[i]
        (reply,) = _send(relay, _chunk(adc, lo, hi))
        assert isinstance(reply, Ack)
        acks.append(reply.next_seq)
    assert acks == sorted(acks), "ack must never go backwards"
    assert acks[-1] == n
    np.testing.assert_array_equal(sink.assembled(), adc[:, :n])
    st = relay.stats()
    assert st.samples_in == n
    assert st.duplicate_samples == sum(hi - lo for lo, hi in windows) - n
    assert _send(relay, _chunk(adc, 0, 50)) == [Ack("bed-1", n)]  # pure duplicate: just re-ack


def test_gap_then_backfill_after_reconnect_is_not_live_and_acks_contiguous_prefix(
    adc: np.ndarray,
) -> None:
    relay, _ = _relay()
    sink = RecordingSink()
    relay.add_store_sink(GROUP, sink)
    viewer = relay.add_viewer(GROUP, "v1")
    _send(relay, ANNOUNCE)
    _send(relay, _chunk(adc, 0, 360))
    relay.publisher_disconnected(GROUP, "mon-1")
    # a new connection (new participant id) of the same device takes its stream back and sends
    # live data first
    relay.set_publisher_identity(GROUP, "mon-1b", "mon-1")
    assert _send(relay, ANNOUNCE, "mon-1b") == [Ack("bed-1", 360)]
    assert _send(relay, _chunk(adc, 1080, 1440), "mon-1b") == [Ack("bed-1", 360)]
    assert _send(relay, _chunk(adc, 360, 1080, backfill=True), "mon-1b") == [Ack("bed-1", 1440)]
    np.testing.assert_array_equal(sink.assembled(), adc[:, :1440])
    assert [p[1] for p in sink.pieces] == [0, 1080, 360]  # arrival order, each once
    msgs = _drain(viewer)
    assert Gap("bed-1", 360, 1080, lost=False) in msgs
    assert StreamAnnounce("mon-1b", ANNOUNCE) in msgs
    live = [(m.chunk.seq, m.live) for m in msgs if isinstance(m, ViewerChunk)]
    assert live == [(0, True), (1080, True), (360, False)]
    st = relay.stats()
    assert (st.gaps, st.backfilled_samples) == (1, 720)


def test_monitor_declaring_oldest_seq_ends_the_wait_for_lost_samples(adc: np.ndarray) -> None:
    relay, _ = _relay()
    viewer = relay.add_viewer(GROUP, "v1")
    _send(relay, ANNOUNCE)
    _send(relay, _chunk(adc, 0, 360))
    relay.publisher_disconnected(GROUP, "mon-1")
    from dataclasses import replace

    assert _send(relay, replace(ANNOUNCE, oldest_seq=720)) == [Ack("bed-1", 720)]
    assert Gap("bed-1", 360, 720, lost=True) in _drain(viewer)
    assert _send(relay, _chunk(adc, 720, 1080)) == [Ack("bed-1", 1080)]
    assert relay.stats().lost_samples == 360


def test_refusals_name_the_problem_and_leave_the_stream_working(adc: np.ndarray) -> None:
    relay, _ = _relay(max_streams_per_group=1, max_ahead_s=10.0)

    def error(msg: object, publisher: str = "mon-1") -> WaveformError:
        (reply,) = _send(relay, msg, publisher)
        assert isinstance(reply, WaveformError), reply
        return reply

    assert error(_chunk(adc, 0, 36)).reason is WaveformErrorReason.UNKNOWN_STREAM
    assert error(Numerics("bed-1", 1.0, {"spo2_pct": 97})).reason is \
        WaveformErrorReason.UNKNOWN_STREAM
    _send(relay, ANNOUNCE)
    e = error(Chunk("bed-1", 0, 1.0, adc[:1, :36]))
    assert e.reason is WaveformErrorReason.STREAM_MISMATCH
    assert "n_channels must be 2 (as announced), got 1" in e.message
    assert error(ANNOUNCE, "intruder").reason is WaveformErrorReason.STREAM_TAKEN
    assert error(_chunk(adc, 0, 36), "intruder").reason is WaveformErrorReason.STREAM_TAKEN
    other = Announce("bed-2", ANNOUNCE.channels, FS)
    assert error(other).reason is WaveformErrorReason.TOO_MANY_STREAMS
    from dataclasses import replace

    assert error(replace(ANNOUNCE, sampling_rate_hz=250.0)).reason is \
        WaveformErrorReason.STREAM_MISMATCH
    e = error(_chunk(adc, 3601 + 10, 3601 + 20))
    assert e.reason is WaveformErrorReason.SEQUENCE_ERROR and "got 3611" in e.message
    for junk in (b"", b"\xc1", msgpack.packb({"type": "chunk"}), b"x" * 300_000):
        (reply,) = [decode_server_frame(f) for f in relay.on_publisher_frame(GROUP, "mon-1", junk)]
        assert isinstance(reply, WaveformError)
    # the stream still works after all of that
    assert _send(relay, _chunk(adc, 0, 36)) == [Ack("bed-1", 36)]
    assert relay.stats().frames_rejected == 12


def test_too_many_open_gaps_are_refused(adc: np.ndarray) -> None:
    relay, _ = _relay(max_open_gaps=3)
    _send(relay, ANNOUNCE)
    for k in range(3):
        assert isinstance(_send(relay, _chunk(adc, 100 * (2 * k + 1), 100 * (2 * k + 2)))[0], Ack)
    (reply,) = _send(relay, _chunk(adc, 900, 1000))
    assert isinstance(reply, WaveformError) and reply.reason is WaveformErrorReason.SEQUENCE_ERROR
    assert "back-fill from seq 0" in reply.message
    # filling a hole is always allowed
    assert _send(relay, _chunk(adc, 0, 100)) == [Ack("bed-1", 200)]


def test_slow_viewer_gets_skipped_notice_and_never_slows_the_fast_one(adc: np.ndarray) -> None:
    relay, _ = _relay(viewer_max_chunks=5)
    fast = relay.add_viewer(GROUP, "fast")
    slow = relay.add_viewer(GROUP, "slow")
    _send(relay, ANNOUNCE)
    n_chunks = 50
    fast_got: list[ServerWaveformMessage] = []
    for k in range(n_chunks):
        _send(relay, _chunk(adc, k * CHUNK, (k + 1) * CHUNK))
        slow.put_analysis(Analysis("bed-1", beats=(k,), heart_rate_bpm=70.0 + k))
        fast_got += _drain(fast)
    assert len([m for m in fast_got if isinstance(m, ViewerChunk)]) == n_chunks
    slow_got = _drain(slow)
    chunks = [m for m in slow_got if isinstance(m, ViewerChunk)]
    skipped = [m for m in slow_got if isinstance(m, Skipped)]
    assert [c.chunk.seq for c in chunks] == [k * CHUNK for k in range(n_chunks - 5, n_chunks)]
    assert skipped == [Skipped("bed-1", 0, (n_chunks - 5) * CHUNK, n_chunks - 5)]
    assert slow_got.index(skipped[0]) < slow_got.index(chunks[0])
    # analysis is never dropped: the 50 messages were merged into one with every beat
    (analysis,) = [m for m in slow_got if isinstance(m, Analysis)]
    assert analysis.beats == tuple(range(n_chunks)) and analysis.heart_rate_bpm == 119.0
    assert relay.stats().dropped_chunks_slow_viewers == n_chunks - 5
    assert len(slow) == 0


def test_failing_store_sink_is_detached_loudly_and_others_lose_nothing(
    adc: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    failures = []

    class FullSink(RecordingSink):
        def on_samples(self, stream_id: str, first_sample: int, samples: np.ndarray, t0: float) -> None:
            if first_sample >= 360:
                raise OverflowError("recorder queue full")
            super().on_samples(stream_id, first_sample, samples, t0)

    relay = WaveformRelay(WaveformConfig(analysis=False),
                          on_sink_failure=lambda g, s, e: failures.append((g, s, e)))
    good, bad = RecordingSink(), FullSink()
    relay.add_store_sink(GROUP, bad)
    relay.add_store_sink(GROUP, good)
    relay.on_publisher_frame(GROUP, "mon-1", encode(ANNOUNCE))
    for start in range(0, 1080, CHUNK):
        relay.on_publisher_frame(GROUP, "mon-1", encode(_chunk(adc, start, start + CHUNK)))
    np.testing.assert_array_equal(good.assembled(), adc[:, :1080])
    assert len(failures) == 1 and failures[0][1] is bad
    assert isinstance(failures[0][2], OverflowError)
    assert "failed in on_samples and was detached" in caplog.text
    assert relay.stats().sink_failures == 1


async def test_close_group_ends_streams_and_closes_outboxes(adc: np.ndarray) -> None:
    relay, _ = _relay()
    sink = RecordingSink()
    relay.add_store_sink(GROUP, sink)
    _send(relay, ANNOUNCE)
    _send(relay, Numerics("bed-1", 1.0, {"spo2_pct": 97.0}))
    _send(relay, _chunk(adc, 0, 36))
    late = relay.add_viewer(GROUP, "late")
    relay.close_group(GROUP)
    relay.close_group(GROUP)  # idempotent
    got = []
    while (f := await late.get()) is not None:
        got.append(decode_server_frame(f))
    assert got == [StreamAnnounce("mon-1", ANNOUNCE), Numerics("bed-1", 1.0, {"spo2_pct": 97.0}),
                   StreamEnded("bed-1", "group_closed")]
    assert sink.ended == ["bed-1"]
    assert relay.stats().streams == 0


async def test_outbox_get_waits_for_a_frame() -> None:
    import asyncio

    out = ViewerOutbox("v", 4, lambda n: None)
    task = asyncio.create_task(out.get())
    await asyncio.sleep(0)
    assert not task.done()
    out.put_chunk("s", 0, 1, b"frame")
    assert await asyncio.wait_for(task, 1.0) == b"frame"
    out.close()
    assert await out.get() is None


# --------------------------------------------------------------------------- analysis (real DSP)


def _beats(msgs: list[ServerWaveformMessage]) -> list[int]:
    return [b for m in msgs if isinstance(m, Analysis) for b in m.beats]


def test_analysis_of_out_of_order_chunks_matches_reference_beats(
    adc: np.ndarray, ecg_data_dir: Path
) -> None:
    relay = WaveformRelay(WaveformConfig(), clock=FakeClock())
    viewer = relay.add_viewer(GROUP, "v1")
    _send(relay, ANNOUNCE)
    n = adc.shape[1]
    starts = list(range(0, n, CHUNK))
    # every 10 s the next second arrives late (after the following one): held, then fed in order
    order: list[int] = []
    for i, s in enumerate(starts):
        if (s // int(FS)) % 10 == 5 and s % int(FS) == 0:
            order.extend(starts[i + 10:i + 20] + starts[i:i + 10])
        elif s not in order:
            order.append(s)
    assert sorted(order) == starts
    got: list[ServerWaveformMessage] = []
    for k, s in enumerate(order):
        _send(relay, _chunk(adc, s, min(s + CHUNK, n)))
        if k % 2 == 1:
            relay.analyze_once()
            got += _drain(viewer)
    relay.analyze_once()
    got += _drain(viewer)
    beats = _beats(got)
    assert beats == sorted(set(beats)), "a beat reported twice or out of order"
    ann = wfdb.rdann(str(ecg_data_dir / "mitdb" / "100"), "atr", sampto=n)
    ref = [s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in "NLRBAaJSVrFejnE/fQ?"]
    cmp = wfdb.processing.compare_annotations(np.array(ref), np.array(beats), int(0.15 * FS))
    assert cmp.sensitivity > 0.95 and cmp.positive_predictivity > 0.95
    hr = [m.heart_rate_bpm for m in got if isinstance(m, Analysis) and m.heart_rate_bpm]
    assert hr and 60 < hr[-1] < 90  # record 100 runs at ~75 bpm
    assert relay.stats().analysis_steps > 0


def test_analysis_resumes_after_an_unfilled_gap_times_out(adc: np.ndarray) -> None:
    clock = FakeClock()
    relay = WaveformRelay(WaveformConfig(gap_timeout_s=10.0), clock=clock)
    viewer = relay.add_viewer(GROUP, "v1")
    _send(relay, ANNOUNCE)
    hole = (int(20 * FS), int(25 * FS))
    for s in range(0, int(20 * FS), CHUNK):
        _send(relay, _chunk(adc, s, s + CHUNK))
    relay.analyze_once()
    for s in range(hole[1], int(40 * FS), CHUNK):  # the hole is never back-filled
        _send(relay, _chunk(adc, s, s + CHUNK))
    relay.analyze_once()
    before = _beats(_drain(viewer))
    assert before and max(before) < hole[0]  # analysis waits for the hole
    clock.now += 10.0
    relay.analyze_once()
    relay.analyze_once()
    after = _beats(_drain(viewer))
    assert after and min(after) >= hole[1] and max(after) > 35 * FS


def _asystole_run(chunks_per_step: int) -> tuple[list[ServerWaveformMessage], RecordingSink]:
    """45 s of synthetic ECG at 250 Hz with asystole from 20 s to 30 s, through the relay; an
    analysis step every `chunks_per_step` chunks of 200 ms. Everything is driven by sample counts
    (fake clock, synchronous steps), so machine load cannot change the outcome."""
    from clients.monitor_sim import (
        MonitorSimConfig,
        MonitorSimulator,
        SyntheticSource,
        parse_events,
    )

    sim = MonitorSimulator(SyntheticSource(75.0, parse_events("asystole@20+10"), 250.0, seed=5),
                           MonitorSimConfig(stream_id="bed-1", chunk_ms=200.0, start_epoch=1.0),
                           clock=FakeClock())
    relay = WaveformRelay(WaveformConfig(), clock=FakeClock())
    sink = RecordingSink()
    relay.add_store_sink(GROUP, sink)
    viewer = relay.add_viewer(GROUP, "v1")
    _send(relay, sim.announce)
    got: list[ServerWaveformMessage] = []
    for k in range(5 * 45):
        chunk = sim.next_chunk()
        assert chunk is not None
        _send(relay, chunk)
        if (k + 1) % chunks_per_step == 0:
            relay.analyze_once()
            got += _drain(viewer)
    relay.analyze_once()
    got += _drain(viewer)
    return got, sink


def test_asystole_in_a_synthetic_stream_raises_and_clears_an_alarm() -> None:
    fs = 250
    results = {step: _asystole_run(step) for step in (1, 7)}
    since = {}
    for step, (got, sink) in results.items():
        raised = [a for m in got if isinstance(m, Analysis) for a in m.alarms_raised]
        cleared = [a for m in got if isinstance(m, Analysis) for a in m.alarms_cleared]
        asystole = [a for a in raised if a.kind == "asystole"]
        assert asystole, raised
        beats = _beats(got)
        last_beat = max(b for b in beats if b < 20 * fs)
        # raised 4 s (the default asystole_s) after the last beat, found in the flat line
        assert asystole[0].since_sample == last_beat + 4 * fs
        assert 20 * fs <= asystole[0].since_sample <= 25 * fs
        assert any(a.kind == "asystole" for a in cleared)
        assert any(b >= 30 * fs for b in beats)  # beats again after the pause
        since[step] = asystole[0].since_sample
        # the store sink got the same beats and alarm changes, unmerged
        assert sink.beats() == beats
        sink_raised = [a for _, m in sink.analyses for a in m.alarms_raised]
        assert [a.kind for a in sink_raised] == [a.kind for a in raised]
    assert since[1] == since[7]  # the step size (how busy the loop is) does not move the alarm


def test_limits_the_analyzer_refuses_are_an_error_reply() -> None:
    from protocol.waveforms import RateLimits

    relay = WaveformRelay(WaveformConfig(), clock=FakeClock())
    (reply,) = _send(relay, Announce("bed-1", ANNOUNCE.channels, FS, 0, RateLimits(50.0, 120.0)))
    assert reply == Ack("bed-1", 0)
    (reply,) = _send(relay, Announce("bed-2", ANNOUNCE.channels, FS, 0, RateLimits(None, 20.0)))
    assert isinstance(reply, WaveformError) and "refused by the analyzer" in reply.message


def test_a_stream_belongs_to_its_device_and_a_restart_opens_a_new_segment(adc: np.ndarray) -> None:
    from dataclasses import replace

    relay, _ = _relay()
    sink = RecordingSink()
    relay.add_store_sink(GROUP, sink)
    viewer = relay.add_viewer(GROUP, "v1")
    relay.set_publisher_identity(GROUP, "mon-1", "device-A")
    relay.set_publisher_identity(GROUP, "intruder", "device-B")
    run1 = replace(ANNOUNCE, session="run-1")
    assert _send(relay, run1) == [Ack("bed-1", 0)]
    assert _send(relay, _chunk(adc, 0, 720)) == [Ack("bed-1", 720)]
    relay.publisher_disconnected(GROUP, "mon-1")
    (taken,) = _send(relay, replace(ANNOUNCE, session="x"), "intruder")  # disconnected or not
    assert isinstance(taken, WaveformError) and taken.reason is WaveformErrorReason.STREAM_TAKEN
    relay.set_publisher_identity(GROUP, "mon-2", "device-A")  # the same device, restarted
    assert _send(relay, replace(ANNOUNCE, session="run-2"), "mon-2") == [Ack("bed-1", 0)]
    assert _send(relay, _chunk(adc, 0, 360), "mon-2") == [Ack("bed-1", 360)]
    msgs = _drain(viewer)
    assert StreamEnded("bed-1", "new_segment") in msgs
    seg = [m for m in msgs if isinstance(m, StreamAnnounce) and m.announce.segment == 1]
    assert seg and seg[0].publisher_id == "mon-2"
    assert sink.ended == ["bed-1"] and [a.segment for _, a in sink.announces] == [0, 1]
    assert sum(p[2].shape[1] for p in sink.pieces) == 720 + 360  # both runs stored, none dropped
    assert relay.stats().segments == 1 and relay.stats().duplicate_samples == 0


def test_departed_streams_close_after_the_retention_period(adc: np.ndarray) -> None:
    relay, clock = _relay(stream_retention_s=60.0, max_streams_per_group=1)
    viewer = relay.add_viewer(GROUP, "v1")
    _send(relay, ANNOUNCE)
    relay.publisher_disconnected(GROUP, "mon-1")
    clock.now += 59
    assert relay.expire_streams() == 0
    clock.now += 1
    (full,) = _send(relay, Announce("bed-2", ANNOUNCE.channels, FS), "mon-3")  # frees the slot itself
    assert full == Ack("bed-2", 0)
    assert StreamEnded("bed-1", "publisher_gone") in _drain(viewer)
    assert relay.stats().streams_expired == 1


def test_a_12_lead_snapshot_goes_whole_to_the_intake_or_is_refused_by_name() -> None:
    from protocol.waveforms import Ecg12Snapshot

    relay, _ = _relay()
    leads = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    snap = Ecg12Snapshot("s-1", "R-1", "P-1", leads, 500.0, 1000.0, np.ones((8, 5000), "<i2"))
    refused = _send(relay, snap)  # no intake on this relay: a clear refusal, not silence
    assert len(refused) == 1 and isinstance(refused[0], WaveformError)
    assert refused[0].stream_id == "s-1" and "not taken" in refused[0].message
    got: list[tuple[str, str, str, Ecg12Snapshot]] = []
    relay.on_snapshot = lambda group, pid, identity, s: got.append((group, pid, identity, s))
    relay.set_publisher_identity(GROUP, "mon-1", "cart-7")
    assert _send(relay, snap) == []  # the intake answers once the ECG is stored
    assert [(g, p, i, s.snapshot_id) for g, p, i, s in got] == [(GROUP, "mon-1", "cart-7", "s-1")]
    assert np.array_equal(got[0][3].samples, snap.samples)
    assert relay.stats().streams == 0  # a snapshot is no stream: nothing announced, nothing to view
