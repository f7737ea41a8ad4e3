"""protocol.waveforms: round trips and precise refusals of bad monitor frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from protocol.waveforms import (
    MAX_CHANNELS,
    MAX_FRAME_BYTES,
    Ack,
    AlarmInfo,
    Analysis,
    Announce,
    ChannelInfo,
    Chunk,
    Gap,
    Numerics,
    RateLimits,
    Skipped,
    StreamAnnounce,
    StreamEnded,
    ViewerChunk,
    WaveformError,
    WaveformErrorReason,
    WaveformWireError,
    decode_client_frame,
    decode_server_frame,
    encode,
)

ANNOUNCE = Announce(
    "bed-1",
    (ChannelInfo("MLII", "mV", 200.0, 1024), ChannelInfo("V5", "mV", 200.0, 1024)),
    360.0,
    ecg_channel=0,
    limits=RateLimits(40.0, 140.0),
)


def _raw(**fields: object) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def _announce_map(**override: object) -> dict[str, object]:
    m = msgpack.unpackb(encode(ANNOUNCE), raw=False)
    m.update(override)
    return m


def _refused(data: bytes) -> WaveformWireError:
    with pytest.raises(WaveformWireError) as info:
        decode_client_frame(data)
    return info.value


def test_announce_round_trip() -> None:
    assert decode_client_frame(encode(ANNOUNCE)) == ANNOUNCE


@pytest.mark.parametrize("dtype", [np.int16, np.int32, ">i2"])
def test_chunk_round_trip_keeps_values_shape_and_little_endian(dtype: object) -> None:
    rng = np.random.default_rng(1)
    samples = rng.integers(-30000, 30000, size=(3, 37)).astype(dtype)
    chunk = Chunk("bed-1", 12345, 1.7e9, samples, backfill=True)
    out = decode_client_frame(encode(chunk))
    assert isinstance(out, Chunk)
    assert (out.stream_id, out.seq, out.t0, out.backfill) == ("bed-1", 12345, 1.7e9, True)
    assert out.samples.shape == (3, 37)
    assert out.samples.dtype.str in ("<i2", "<i4")
    np.testing.assert_array_equal(out.samples, samples)


def test_numerics_round_trip() -> None:
    n = Numerics("bed-1", 1.7e9, {"spo2_pct": 97.0, "nibp_sys_mmhg": 120.0})
    assert decode_client_frame(encode(n)) == n


def test_server_messages_round_trip() -> None:
    alarm = AlarmInfo("asystole", "high", "Asystole", 1000)
    samples = np.arange(8, dtype=np.int16).reshape(2, 4)
    msgs = [
        Ack("bed-1", 4000),
        WaveformError(WaveformErrorReason.UNKNOWN_STREAM, "x", "bed-1"),
        StreamAnnounce("p1", ANNOUNCE),
        Numerics("bed-1", 5.0, {"temp_c": 37.1}),
        Analysis("bed-1", (10, 300), 72.0, 833.0, 0.05, (alarm,), (alarm,), ()),
        Gap("bed-1", 10, 20, lost=False),
        Skipped("bed-1", 10, 90, 2),
        StreamEnded("bed-1", "group_closed"),
    ]
    for m in msgs:
        assert decode_server_frame(encode(m)) == m
    vc = decode_server_frame(encode(ViewerChunk(Chunk("bed-1", 4, 2.0, samples), live=False)))
    assert isinstance(vc, ViewerChunk) and vc.live is False
    np.testing.assert_array_equal(vc.chunk.samples, samples)


@pytest.mark.parametrize(
    ("data", "reason", "text"),
    [
        (b"\xc1", WaveformErrorReason.BAD_MESSAGE, "not valid msgpack"),
        (msgpack.packb([1, 2]), WaveformErrorReason.BAD_MESSAGE, "must be a msgpack map, got list"),
        (_raw(type="hello"), WaveformErrorReason.BAD_MESSAGE, "got 'hello'"),
        (_raw(), WaveformErrorReason.BAD_MESSAGE, "got None"),
        (b"\x00" * (MAX_FRAME_BYTES + 1), WaveformErrorReason.MESSAGE_TOO_LARGE,
         f"at most {MAX_FRAME_BYTES} bytes, got {MAX_FRAME_BYTES + 1}"),
        (_raw(**_announce_map(v=2)), WaveformErrorReason.UNSUPPORTED_VERSION, "must be 1, got 2"),
        (_raw(**_announce_map(sampling_rate_hz=0)), WaveformErrorReason.BAD_MESSAGE,
         "sampling_rate_hz must be 125-1000 Hz, got 0"),
        (_raw(**_announce_map(sampling_rate_hz="360")), WaveformErrorReason.BAD_MESSAGE,
         "sampling_rate_hz must be a number, got str"),
        (_raw(**_announce_map(channels=[])), WaveformErrorReason.BAD_MESSAGE,
         f"1-{MAX_CHANNELS} entries, got 0"),
        (_raw(**_announce_map(channels=[{"name": "II", "unit": "mV", "gain": 200.0,
                                         "baseline": 0}] * 17)),
         WaveformErrorReason.BAD_MESSAGE, "got 17"),
        (_raw(**_announce_map(channels=[{"name": "II", "unit": "mV", "gain": 0,
                                         "baseline": 0}], ecg_channel=0)),
         WaveformErrorReason.BAD_MESSAGE, "gain must be"),
        (_raw(**_announce_map(ecg_channel=2)), WaveformErrorReason.BAD_MESSAGE,
         "ecg_channel must be 0-1, got 2"),
        (_raw(**_announce_map(limits={"brady_bpm": 150, "tachy_bpm": 100})),
         WaveformErrorReason.BAD_MESSAGE, "brady_bpm must be below tachy_bpm, got 150 >= 100"),
        (_raw(**_announce_map(stream="bad id with spaces")), WaveformErrorReason.BAD_MESSAGE,
         "announce.stream must match"),
        (_raw(type="chunk", stream="bed-1", seq=0, t0=1.0, dtype="<f4", n_channels=1,
              data=b"\0" * 8), WaveformErrorReason.BAD_MESSAGE,
         "chunk.dtype must be one of ['<i2', '<i4'], got '<f4'"),
        (_raw(type="chunk", stream="bed-1", seq=0, t0=1.0, dtype="<i2", n_channels=2,
              data=b"\0" * 6), WaveformErrorReason.BAD_MESSAGE,
         "multiple of n_channels*itemsize = 4 bytes, got 6"),
        (_raw(type="chunk", stream="bed-1", seq=-1, t0=1.0, dtype="<i2", n_channels=1,
              data=b"\0" * 2), WaveformErrorReason.BAD_MESSAGE, "chunk.seq must be 0-"),
        (_raw(type="chunk", stream="bed-1", seq=0, t0=1.0, dtype="<i2", n_channels=1,
              data="text"), WaveformErrorReason.BAD_MESSAGE, "chunk.data must be bin, got str"),
        (_raw(type="chunk", stream="bed-1", seq=0, t0=1.0, dtype="<i2", n_channels=1,
              data=b"\0" * 2 * 9000), WaveformErrorReason.BAD_MESSAGE,
         "at most 8192 samples per channel, got 9000"),
        (_raw(type="numerics", stream="bed-1", time=1.0, values={"spo2_pct": "high"}),
         WaveformErrorReason.BAD_MESSAGE, "must be a number, got str"),
        (_raw(type="numerics", stream="bed-1", time=1.0, values={"hr": float("nan")}),
         WaveformErrorReason.BAD_MESSAGE, "got nan"),
    ],
)
def test_bad_frames_are_refused_with_reason_and_precise_message(
    data: bytes, reason: WaveformErrorReason, text: str
) -> None:
    err = _refused(data)
    assert err.reason is reason
    assert text in err.message, err.message


def test_encode_refuses_non_integer_samples() -> None:
    with pytest.raises(TypeError, match="int16/int32"):
        encode(Chunk("bed-1", 0, 0.0, np.zeros((1, 4), dtype=np.float32)))


def test_precoded_chunk_patches_t0_and_decodes_like_a_fresh_encode() -> None:
    from protocol.waveforms import chunk_timing, precode_chunk

    samples = np.arange(-50, 50, dtype=np.int16).reshape(2, 50)
    pre = precode_chunk(Chunk("bed-7", 2**40, 0.0, samples))
    frame = pre.frame_at(1.7e9 + 0.25)
    got = decode_client_frame(frame)
    assert isinstance(got, Chunk) and got.seq == 2**40 and got.t0 == 1.7e9 + 0.25
    np.testing.assert_array_equal(got.samples, samples)
    assert frame == encode(Chunk("bed-7", 2**40, 1.7e9 + 0.25, samples))
    assert chunk_timing(frame) == ("bed-7", 2**40, 1.7e9 + 0.25)
    assert chunk_timing(encode(Ack("bed-7", 3))) is None
    with pytest.raises(WaveformWireError):
        chunk_timing(b"\xc1")


def test_analysis_carries_beat_classes_and_reads_an_older_server_as_all_normal() -> None:
    labelled = Analysis("bed-1", (10, 300, 620), 72.0, beat_labels="NVQ")
    back = decode_server_frame(encode(labelled))
    assert isinstance(back, Analysis) and back == labelled and back.labels == "NVQ"
    old = msgpack.unpackb(encode(labelled), raw=False)
    del old["beat_labels"]  # what a server from before the classes sends
    legacy = decode_server_frame(msgpack.packb(old, use_bin_type=True))
    assert isinstance(legacy, Analysis) and legacy.beat_labels == "" and legacy.labels == "NNN"
    for bad in ("NV", "NVX", 3):
        with pytest.raises(WaveformWireError, match="beat_labels"):
            decode_server_frame(msgpack.packb({**old, "beat_labels": bad}, use_bin_type=True))
