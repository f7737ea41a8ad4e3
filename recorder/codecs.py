"""What the muxer needs to know about a codec without decoding the stream.

Matroska wants the picture size in its track header. For VP8 it is in every keyframe's
uncompressed header (RFC 6386 §9.1); for H.264 we decode the first keyframe once (parsing SPS
cropping and VUI by hand is not worth the risk).
"""

from __future__ import annotations

from dataclasses import dataclass

import av

VP8_START_CODE = b"\x9d\x01\x2a"


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """How one RTP codec is stored: the container format, file suffix and FFmpeg codec name."""

    rtp_name: str
    ffmpeg_name: str
    container_format: str
    suffix: str


CODECS: dict[str, CodecSpec] = {
    "vp8": CodecSpec("VP8", "vp8", "webm", ".webm"),
    "opus": CodecSpec("opus", "libopus", "webm", ".webm"),
    "h264": CodecSpec("H264", "h264", "matroska", ".mkv"),
}


def codec_spec(codec: str) -> CodecSpec:
    """Look up a codec by its RTP name (case-insensitive). Raises ValueError if not supported."""
    try:
        return CODECS[codec.lower()]
    except KeyError:
        raise ValueError(
            f"codec must be one of {sorted(c.rtp_name for c in CODECS.values())}, got {codec!r}"
        ) from None


def vp8_keyframe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from a VP8 keyframe, or None if `data` is not a VP8 keyframe.

    Frame tag: 3 bytes, bit 0 of the first is 0 on keyframes; then the start code 9d 01 2a and
    two little-endian 16-bit fields whose low 14 bits are width and height (top 2 bits: scaling).
    """
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != VP8_START_CODE:
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    if width == 0 or height == 0:
        return None
    return width, height


def h264_keyframe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels of an H.264 Annex-B access unit with SPS/PPS + IDR, else None."""
    decoder = av.CodecContext.create("h264", "r")
    try:
        for frame in [*decoder.decode(av.Packet(data)), *decoder.decode(None)]:
            return frame.width, frame.height
    except av.error.FFmpegError:
        return None
    return None
