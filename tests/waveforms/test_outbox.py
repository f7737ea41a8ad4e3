"""waveforms.outbox: the viewer overflow policy, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.waveforms import (
    AlarmInfo,
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
    decode_server_frame,
    encode,
)
from waveforms.outbox import ViewerOutbox, merge_analysis

N = 50  # samples per chunk
CHANNELS = (ChannelInfo("II", "mV", 200.0, 0),)


def _chunk_frame(stream_id: str, k: int) -> bytes:
    samples = np.full((1, N), k, dtype=np.int16)
    return encode(ViewerChunk(Chunk(stream_id, k * N, 1.0 + k * N / 250.0, samples), live=True))


def _put_chunk(out: ViewerOutbox, stream_id: str, k: int) -> None:
    out.put_chunk(stream_id, k * N, (k + 1) * N, _chunk_frame(stream_id, k))


def _drain(out: ViewerOutbox) -> list[ServerWaveformMessage]:
    msgs = []
    while (f := out.get_nowait()) is not None:
        msgs.append(decode_server_frame(f))
    return msgs


def _describe(msgs: list[ServerWaveformMessage]) -> list[tuple[object, ...]]:
    """Messages as short tuples, for comparing whole sequences."""
    out: list[tuple[object, ...]] = []
    for m in msgs:
        match m:
            case ViewerChunk():
                out.append(("chunk", m.chunk.stream_id, m.chunk.seq // N))
            case Skipped():
                out.append(("skipped", m.stream_id, m.from_sample, m.to_sample, m.chunks))
            case _:
                out.append((type(m).__name__, getattr(m, "stream_id", None)))
    return out


def test_full_outbox_drops_oldest_chunk_for_a_skipped_notice_in_its_place() -> None:
    drops: list[int] = []
    out = ViewerOutbox("v", 3, drops.append)
    out.put_control(StreamAnnounce("mon", Announce("a", CHANNELS, 250.0)))
    for k in range(6):
        _put_chunk(out, "a", k)
    # chunks 0, 1, 2 were dropped one at a time; one notice covers them, before chunk 3
    assert _describe(_drain(out)) == [
        ("StreamAnnounce", None),
        ("skipped", "a", 0, 3 * N, 3),
        ("chunk", "a", 3), ("chunk", "a", 4), ("chunk", "a", 5),
    ]
    assert drops == [1, 1, 1] and out.dropped_chunks == 3 and len(out) == 0


def test_skipped_notices_are_per_stream_and_keep_stream_order() -> None:
    out = ViewerOutbox("v", 2, lambda n: None)
    for k in range(4):  # a0 b0 a1 b1 a2 b2 a3 b3 into room for 2 chunks
        _put_chunk(out, "a", k)
        _put_chunk(out, "b", k)
    got = _describe(_drain(out))
    assert got == [("skipped", "a", 0, 3 * N, 3), ("skipped", "b", 0, 3 * N, 3),
                   ("chunk", "a", 3), ("chunk", "b", 3)]


def test_a_sent_notice_is_not_widened_a_new_one_follows() -> None:
    out = ViewerOutbox("v", 1, lambda n: None)
    _put_chunk(out, "a", 0)
    _put_chunk(out, "a", 1)
    assert _describe(_drain(out)) == [("skipped", "a", 0, N, 1), ("chunk", "a", 1)]
    _put_chunk(out, "a", 2)
    _put_chunk(out, "a", 3)
    assert _describe(_drain(out)) == [("skipped", "a", 2 * N, 3 * N, 1), ("chunk", "a", 3)]


def test_control_is_never_dropped_nor_merged() -> None:
    out = ViewerOutbox("v", 1, lambda n: None)
    sent = []
    for k in range(20):
        gap = Gap("a", k * N, k * N + 1, lost=bool(k % 2))
        out.put_control(gap)
        sent.append(gap)
        _put_chunk(out, "a", k)
    out.put_control(StreamEnded("a", "group_closed"))
    got = _drain(out)
    assert [m for m in got if isinstance(m, Gap)] == sent
    assert isinstance(got[-1], StreamEnded)
    assert [m.chunk.seq for m in got if isinstance(m, ViewerChunk)] == [19 * N]


def test_unsent_analysis_of_a_stream_is_merged_never_dropped() -> None:
    out = ViewerOutbox("v", 1, lambda n: None)
    brady = AlarmInfo("bradycardia", "medium", "HR 38", 100)
    out.put_analysis(Analysis("a", beats=(10, 20), heart_rate_bpm=60.0, rr_ms=1000.0,
                              alarms_raised=(brady,), active_alarms=(brady,)))
    out.put_analysis(Analysis("b", beats=(5,)))
    for k in range(5):
        _put_chunk(out, "a", k)
    out.put_analysis(Analysis("a", beats=(30,), heart_rate_bpm=None, rr_ms=900.0,
                              alarms_cleared=(brady,)))
    got = _drain(out)
    analyses = [m for m in got if isinstance(m, Analysis)]
    assert analyses == [
        Analysis("a", beats=(10, 20, 30), heart_rate_bpm=None, rr_ms=900.0, active_alarms=(),
                 alarms_raised=(brady,), alarms_cleared=(brady,)),
        Analysis("b", beats=(5,)),
    ]
    # merged in the first one's place: before the skipped notice and the surviving chunk
    assert _describe(got)[:2] == [("Analysis", "a"), ("Analysis", "b")]
    out.put_analysis(Analysis("a", beats=(40,)))  # after sending, a new one is not merged back
    assert _drain(out) == [Analysis("a", beats=(40,))]


def test_unsent_numerics_keep_the_newest_value_per_name() -> None:
    out = ViewerOutbox("v", 4, lambda n: None)
    out.put_numerics(Numerics("a", 1.0, {"spo2_pct": 97.0, "resp_rate_bpm": 14.0}))
    out.put_numerics(Numerics("b", 1.0, {"spo2_pct": 91.0}))
    out.put_numerics(Numerics("a", 2.0, {"spo2_pct": 95.0}))
    assert _drain(out) == [Numerics("a", 2.0, {"spo2_pct": 95.0, "resp_rate_bpm": 14.0}),
                           Numerics("b", 1.0, {"spo2_pct": 91.0})]


def test_an_unmerged_frame_is_sent_as_given() -> None:
    out = ViewerOutbox("v", 4, lambda n: None)
    msg = Analysis("a", beats=(1,))
    frame = encode(msg)
    out.put_analysis(msg, frame)
    assert out.get_nowait() is frame


async def test_close_keeps_what_is_queued_unless_discarded() -> None:
    out = ViewerOutbox("v", 4, lambda n: None)
    _put_chunk(out, "a", 0)
    out.close()
    out.close()  # idempotent
    _put_chunk(out, "a", 1)  # refused after close
    out.put_control(StreamEnded("a", "group_closed"))
    assert out.closed
    assert _describe([decode_server_frame(f) for f in [await out.get()] if f]) == [("chunk", "a", 0)]
    assert await out.get() is None
    gone = ViewerOutbox("v", 4, lambda n: None)
    _put_chunk(gone, "a", 0)
    gone.close(discard=True)
    assert len(gone) == 0 and await gone.get() is None


def test_max_chunks_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chunks must be >= 1, got 0"):
        ViewerOutbox("v", 0, lambda n: None)


def test_merge_analysis_joins_news_and_keeps_the_newest_values() -> None:
    a1 = AlarmInfo("tachycardia", "medium", "HR 130", 7)
    old = Analysis("s", (1, 2), 80.0, 750.0, 0.1, (a1,), (a1,), ())
    new = Analysis("s", (3,), 84.0, 714.0, 0.2, (), (), (a1,))
    assert merge_analysis(old, new) == Analysis("s", (1, 2, 3), 84.0, 714.0, 0.2, (), (a1,), (a1,))


def test_merge_analysis_shows_a_rate_that_became_unknown_as_unknown() -> None:
    """The wire says None is "unknown now" (lead off, asystole): a viewer whose messages were
    merged while it was behind must see the meter blank, like everyone else (it kept 80)."""
    old = Analysis("s", (1, 2), 80.0, 750.0, 0.1)
    new = Analysis("s", (), None, None, None)
    merged = merge_analysis(old, new)
    assert (merged.heart_rate_bpm, merged.rr_ms, merged.irregularity) == (None, None, None)
