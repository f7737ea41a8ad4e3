"""Real encoded media for recorder tests: clips encoded once with libvpx/libopus, fed as frames."""

from __future__ import annotations

import fractions
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from media_server.frames import EncodedFrame

VIDEO_CLOCK_HZ = 90000
AUDIO_CLOCK_HZ = 48000


@dataclass(frozen=True)
class Clip:
    """Encoded frames of one track: payloads, keyframe flags and the RTP tick step per frame."""

    payloads: list[bytes]
    keyframes: list[bool]
    ticks_per_frame: int
    clock_rate: int
    kind: str
    codec: str


def encode_vp8(n_frames: int, width: int = 160, height: int = 120, fps: int = 30,
               keyframe_interval: int = 30, bit_rate: int = 300_000, seed: int = 0) -> Clip:
    """Encode `n_frames` of moving noise with libvpx (realtime), a keyframe every `keyframe_interval`."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, fps)
    enc.bit_rate = bit_rate
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                   "kf-max-dist": str(keyframe_interval), "kf-min-dist": str(keyframe_interval)}
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    packets: list[tuple[bytes, bool]] = []
    for i in range(n_frames):
        img = np.roll(base, i * 2, axis=1)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        if i % keyframe_interval == 0:
            frame.pict_type = av.video.frame.PictureType.I  # libvpx honours forced keyframes
        for p in enc.encode(frame):
            packets.append((bytes(p), bool(p.is_keyframe)))
    for p in enc.encode(None):
        packets.append((bytes(p), bool(p.is_keyframe)))
    return Clip([p for p, _ in packets], [k for _, k in packets], VIDEO_CLOCK_HZ // fps,
                VIDEO_CLOCK_HZ, "video", "VP8")


def encode_opus(n_frames: int) -> Clip:
    """Encode `n_frames` 20 ms Opus packets of a 440 Hz tone with libopus."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "stereo", "s16", 32000
    payloads: list[bytes] = []
    i = 0
    while len(payloads) < n_frames:
        t = (np.arange(960) + i * 960) / 48000
        x = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([x, x]).T.reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate, frame.pts = 48000, i * 960
        payloads.extend(bytes(p) for p in enc.encode(frame))
        i += 1
    payloads = payloads[:n_frames]
    return Clip(payloads, [True] * n_frames, 960, AUDIO_CLOCK_HZ, "audio", "opus")


def frames(clip: Clip, track_id: str, start_at: float, rtp_start: int = 1234,
           indices: Iterator[int] | list[int] | range | None = None) -> list[EncodedFrame]:
    """EncodedFrames of `clip` as the relay would hand them over, arriving in real time from
    `start_at` (Unix s). `indices` picks frames (to simulate loss); RTP timestamps wrap at 2**32."""
    rate = clip.clock_rate
    out = []
    for i in (range(len(clip.payloads)) if indices is None else indices):
        out.append(EncodedFrame(
            track_id=track_id, kind=clip.kind, codec=clip.codec, data=clip.payloads[i],  # type: ignore[arg-type]
            timestamp=(rtp_start + i * clip.ticks_per_frame) % (1 << 32), clock_rate=rate,
            keyframe=clip.keyframes[i], received_at=start_at + i * clip.ticks_per_frame / rate))
    return out


def probe_packets(path: str) -> tuple[int, float, float]:
    """(packet count, first pts s, last pts s) of the only stream of `path`, read back with PyAV."""
    with av.open(path) as container:
        stream = container.streams[0]
        pts = [p.pts * p.time_base for p in container.demux(stream) if p.pts is not None]
    return len(pts), float(pts[0]), float(pts[-1])
