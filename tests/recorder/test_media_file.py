"""MediaTrackWriter: real VP8/Opus frames muxed without transcoding, read back with ffprobe and PyAV."""

from __future__ import annotations

import fractions
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.media_file import MediaTrackWriter
from tests.recorder.media import Clip, frames, probe_packets

T0 = 1_700_000_000.0


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_streams", "-show_format",
         "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def decode_all(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams[0]))


def test_vp8_muxed_as_is_reads_back_with_counts_and_duration(tmp_path: Path, vp8_clip: Clip) -> None:
    w = MediaTrackWriter(tmp_path / "v", "VP8", "video", session_start=T0)
    for f in frames(vp8_clip, "t1", start_at=T0 + 2.0):
        w.write(f)
    w.close()
    info = ffprobe(w.path)
    (stream,) = info["streams"]
    assert stream["codec_name"] == "vp8"
    assert (stream["width"], stream["height"]) == (160, 120)
    assert int(stream["nb_read_packets"]) == len(vp8_clip.payloads) == w.stats.frames_written
    _, first_s, last_s = probe_packets(str(w.path))
    assert first_s == pytest.approx(2.0, abs=0.002)  # session-relative
    assert last_s - first_s == pytest.approx((len(vp8_clip.payloads) - 1) / 30, abs=0.002)
    assert w.stats.duration_s == pytest.approx(len(vp8_clip.payloads) / 30, abs=1 / 30)
    assert decode_all(w.path) == len(vp8_clip.payloads)
    # The bytes in the file are the bytes fed: no transcoding.
    with av.open(str(w.path)) as c:
        muxed = [bytes(p) for p in c.demux(c.streams[0]) if p.size]
    assert muxed == vp8_clip.payloads


def test_video_starts_at_first_keyframe(tmp_path: Path, vp8_clip: Clip) -> None:
    w = MediaTrackWriter(tmp_path / "v", "VP8", "video", session_start=T0)
    fed = frames(vp8_clip, "t1", start_at=T0, indices=range(10, 90))  # joins mid-GOP
    for f in fed:
        w.write(f)
    w.close()
    first_key = next(i for i in range(10, 90) if vp8_clip.keyframes[i])
    assert w.stats.frames_before_keyframe == first_key - 10
    n, first_s, _ = probe_packets(str(w.path))
    assert n == 90 - first_key
    assert first_s == pytest.approx(first_key / 30, abs=0.002)  # frame i arrives at T0 + i/30
    assert decode_all(w.path) == n


def test_lost_frames_and_rtp_wraparound_keep_the_file_valid(tmp_path: Path, vp8_clip: Clip) -> None:
    kept = [i for i in range(90) if i % 7 not in (3, 4)]  # bursts of loss
    fed = frames(vp8_clip, "t1", start_at=T0, rtp_start=(1 << 32) - 3000 * 40, indices=kept)
    fed.insert(20, fed[10])  # a late duplicate: dropped, not muxed backwards
    w = MediaTrackWriter(tmp_path / "v", "VP8", "video", session_start=T0)
    for f in fed:
        w.write(f)
    w.close()
    assert w.stats.frames_out_of_order == 1
    n, first_s, last_s = probe_packets(str(w.path))
    assert n == len(kept)
    assert last_s - first_s == pytest.approx(89 / 30, abs=0.002)  # gaps keep their length
    # FFmpeg demuxes and decodes every packet without error (frames after a loss may look wrong,
    # the container does not).
    assert subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(w.path), "-f", "null", "-"],
                          capture_output=True, check=False).returncode == 0


def test_opus_track(tmp_path: Path, opus_clip: Clip) -> None:
    w = MediaTrackWriter(tmp_path / "a", "opus", "audio", session_start=T0)
    for f in frames(opus_clip, "a1", start_at=T0 + 0.5):
        w.write(f)
    w.close()
    (stream,) = ffprobe(w.path)["streams"]
    assert stream["codec_name"] == "opus"
    assert int(stream["extradata_size"]) == 19  # OpusHead present, as WebM requires
    n, first_s, last_s = probe_packets(str(w.path))
    assert n == 150
    assert first_s == pytest.approx(0.5, abs=0.002)
    assert last_s - first_s == pytest.approx(149 * 0.02, abs=0.002)


def test_rejects_codec_kind_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="codec 'opus' is audio, got kind 'video'"):
        MediaTrackWriter(tmp_path / "x", "opus", "video", session_start=T0)
    with pytest.raises(ValueError, match="codec must be one of"):
        MediaTrackWriter(tmp_path / "x", "AV1", "video", session_start=T0)


def test_h264_annexb_into_matroska(tmp_path: Path) -> None:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 176, 144, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.gop_size = 15
    enc.options = {"tune": "zerolatency", "preset": "ultrafast"}
    payloads: list[tuple[bytes, bool]] = []
    rng = np.random.default_rng(0)
    for i in range(45):
        img = rng.integers(0, 255, (144, 176, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        payloads += [(bytes(p), bool(p.is_keyframe)) for p in enc.encode(frame)]
    payloads += [(bytes(p), bool(p.is_keyframe)) for p in enc.encode(None)]
    clip = Clip([p for p, _ in payloads], [k for _, k in payloads], 3000, 90000, "video", "H264")
    w = MediaTrackWriter(tmp_path / "h", "H264", "video", session_start=T0)
    for f in frames(clip, "h1", start_at=T0, indices=range(5, 45)):  # starts mid-GOP
        w.write(f)
    w.close()
    assert w.path.suffix == ".mkv"
    (stream,) = ffprobe(w.path)["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 176, 144)
    assert int(stream["nb_read_packets"]) == 30  # from the keyframe at 15
    assert decode_all(w.path) == 30
