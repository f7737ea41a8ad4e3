"""One recorded media track: encoded frames muxed as they are into WebM/Matroska, no transcoding.

Runs on the recorder's writer thread (it blocks on disk). Each track gets its own file so that a
silent or late track never holds back another in the muxer's interleaving queue, and a broken track
never damages another. Timestamps are session-relative (see `recorder.timeline`), so the files of
one session line up when played side by side.

Crash safety: Matroska clusters are closed at least every `cluster_time_limit_ms` and written out
straight away (`flush_packets`), so a killed process leaves a file that plays up to the last closed
cluster; the Segment has "unknown size" until the trailer, which players accept.
"""

from __future__ import annotations

import fractions
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av

from media_server.frames import EncodedFrame
from recorder.codecs import CodecSpec, codec_spec, h264_keyframe_size, vp8_keyframe_size
from recorder.crypto import Encryption
from recorder.timeline import RtpTimeline, rtp_delta

MATROSKA_TIME_BASE = fractions.Fraction(1, 1000)
ANCHOR_WINDOW_S = 1.0  # a track's first frames are held this long to anchor it on the session clock
# ... and up to this long for its first Sender Report when none came yet (aiortc and Chrome video
# send one within ~1.5 s; a longer wait would keep a crash-cut file from holding anything)
SENDER_REPORT_WAIT_S = 2.5
# the publisher's clock is trusted when it puts a frame at most this much later than its arrival
# (clocks a little apart) and at most SENDER_CLOCK_MAX_LAG_S earlier (network, a stalled server)
SENDER_CLOCK_AHEAD_S = 0.25
SENDER_CLOCK_MAX_LAG_S = 5.0


def sender_clock_plausible(by_arrival: float, by_sender: float) -> bool:
    """Whether a start placed by the sender's clock may be trusted against the one by arrival."""
    return by_arrival - SENDER_CLOCK_MAX_LAG_S <= by_sender <= by_arrival + SENDER_CLOCK_AHEAD_S


@dataclass(slots=True)
class TrackStats:
    """Counters of one track file, for the manifest. Times in seconds since the session start."""

    frames_written: int = 0
    frames_before_keyframe: int = 0  # dropped: a video file must start at a keyframe
    frames_out_of_order: int = 0  # dropped: not after the previous frame on the RTP clock
    frames_before_start: int = 0  # dropped: audio captured before the session started
    timeline_resyncs: int = 0
    start_offset_s: float | None = None
    duration_s: float = 0.0
    bytes_muxed: int = 0
    anchor: str = ""  # how the track was placed: "sender_report" (publisher's clock) or "arrival"


class MediaTrackWriter:
    """Muxes one track's `EncodedFrame`s into `<stem>.webm` (VP8, Opus) or `<stem>.mkv` (H.264).

    The file is created at the first usable frame (a video track's first keyframe, which also tells
    the picture size). `write()` and `close()` raise OSError (ENOSPC...) and av.FFmpegError from the
    disk or muxer; the caller decides what that means for the recording.
    """

    def __init__(
        self,
        stem: Path,
        codec: str,
        kind: str,
        session_start: float,
        cluster_time_limit_ms: int = 1000,
        encryption: Encryption | None = None,
    ) -> None:
        self.spec: CodecSpec = codec_spec(codec)
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
        expected_kind = "audio" if self.spec.ffmpeg_name == "libopus" else "video"
        if kind != expected_kind:
            raise ValueError(f"codec {codec!r} is {expected_kind}, got kind {kind!r}")
        self.kind = kind
        self.path = stem.with_suffix(self.spec.suffix)
        self.stats = TrackStats()
        self._session_start = session_start
        self._cluster_time_limit_ms = cluster_time_limit_ms
        self._timeline: RtpTimeline | None = None
        self._container: Any = None
        self._stream: Any = None
        self._time_base: fractions.Fraction | None = None
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._last_delta: int | None = None
        self._closed = False
        self._encryption = encryption or Encryption()
        self._file: Any = None
        self._cluster_start_pts: int | None = None
        self.clusters_closed = 0
        self._held: list[EncodedFrame] = []  # the first frames, until the anchor is known
        self._arrival_lag = 0.0  # how much later than captured the anchoring frames arrived (s)
        self.anchor_window_s = ANCHOR_WINDOW_S

    @property
    def opened(self) -> bool:
        """True once the file exists on disk."""
        return self._container is not None

    def write(self, frame: EncodedFrame) -> bool:
        """Mux one frame; frames before the first video keyframe and stale frames are counted, not written.

        Returns True when this frame started a new Matroska cluster (the muxer has just written
        the previous one out): the moment for a per-cluster fsync."""
        if self._closed:
            return False
        if self._container is None:
            if not self._held and self._start_size(frame) is None:
                self.stats.frames_before_keyframe += 1
                return False
            self._held.append(frame)
            waited = frame.received_at - self._held[0].received_at
            if waited < self.anchor_window_s or (
                    waited < SENDER_REPORT_WAIT_S and all(f.sender_time is None for f in self._held)):
                return False
            return self._release()
        return self._mux(frame, frame.received_at - self._arrival_lag)

    def _release(self) -> bool:
        """Open the file and mux the held frames, anchored where the first frame was captured.

        The publisher's Sender Reports say it nearly (`sender_time`: its clock, no network or
        server delay in it; only its own lag in sending). Without one, or when that clock is
        implausibly far from ours, the least-delayed arrival: a frame's arrival minus its RTP
        distance from the first is when the first would have arrived had it been as quick, and
        delays are never negative, so the smallest is the best estimate. A server that stalled
        for the whole first second would place the track late by the stall; the report would not."""
        held, self._held = self._held, []
        first = held[0]

        def back_to_first(t: float, f: EncodedFrame) -> float:
            return t - rtp_delta(f.timestamp, first.timestamp) / f.clock_rate
        arrival = min(back_to_first(f.received_at, f) for f in held)
        reported = [back_to_first(f.sender_time, f) for f in held if f.sender_time is not None]
        anchor, self.stats.anchor = arrival, "arrival"
        if reported and sender_clock_plausible(arrival, min(reported)):
            # both are bounds from above (a report is late by the sender's lag, an arrival by the
            # network's and ours), so the earlier is the closer
            anchor, self.stats.anchor = min(arrival, *reported), "sender_report"
        # later frames keep the lag of the arrival they were anchored by (the RTP clock places
        # them; arrival only detects jumps), so the first frame's place carries over
        self._arrival_lag = max(0.0, arrival - anchor)
        times = [anchor + rtp_delta(f.timestamp, first.timestamp) / f.clock_rate for f in held]
        if self.kind == "audio":
            # sound captured before the session began (still on its way when it started) is not
            # part of it; video keeps its first keyframe (placed at 0), the file must start there
            kept = [(f, t) for f, t in zip(held, times, strict=True) if t >= self._session_start]
            self.stats.frames_before_start += len(held) - len(kept)
            if not kept:
                return False
            held, times = [f for f, _ in kept], [t for _, t in kept]
        self._open_for(held[0])
        new_cluster = False
        for f, t in zip(held, times, strict=True):
            new_cluster |= self._mux(f, t)
        return new_cluster

    def _mux(self, frame: EncodedFrame, received_at: float) -> bool:
        assert self._timeline is not None and self._time_base is not None
        pts = self._timeline.place(frame.timestamp, received_at)
        self.stats.timeline_resyncs = self._timeline.resyncs
        if pts is None:
            self.stats.frames_out_of_order += 1
            return False
        if self._last_pts is not None:
            self._last_delta = pts - self._last_pts
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.time_base = self._time_base
        packet.pts = pts
        packet.dts = pts
        packet.duration = self._last_delta or self._nominal_frame_ticks(frame.clock_rate)
        packet.is_keyframe = frame.keyframe or self.kind == "audio"
        self._container.mux(packet)
        # the muxer closes a cluster at its time limit, and at a video keyframe
        limit = self._cluster_time_limit_ms * frame.clock_rate // 1000
        new_cluster = self._cluster_start_pts is not None and (
            pts - self._cluster_start_pts >= limit or (self.kind == "video" and frame.keyframe))
        if new_cluster or self._cluster_start_pts is None:
            self._cluster_start_pts = pts
            self.clusters_closed += new_cluster
        if self._first_pts is None:
            self._first_pts = pts
            self.stats.start_offset_s = pts / frame.clock_rate
        self._last_pts = pts
        self.stats.frames_written += 1
        self.stats.bytes_muxed += len(frame.data)
        last = self._last_delta or self._nominal_frame_ticks(frame.clock_rate)
        self.stats.duration_s = (pts - self._first_pts + last) / frame.clock_rate
        return new_cluster

    def sync(self, fsync: bool) -> None:
        """Hand what is written to the OS (an encrypted file seals its open chunk), and with
        `fsync` to the disk itself."""
        if self._file is None or self._closed:
            return
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())

    def close(self, fsync: bool = False) -> None:
        """Write the trailer (cues, durations) and close the file. Idempotent."""
        if self._closed:
            return
        if self._held:
            self._release()
        self._closed = True
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            finally:
                f, self._file = self._file, None
                try:
                    f.flush()
                    if fsync:
                        os.fsync(f.fileno())
                finally:
                    f.close()

    def _nominal_frame_ticks(self, clock_rate: int) -> int:
        # Until two frames have been seen: 20 ms Opus packets, 30 fps video.
        return clock_rate // 50 if self.kind == "audio" else clock_rate // 30

    def _start_size(self, frame: EncodedFrame) -> tuple[int, int] | tuple[()] | None:
        """The picture size if `frame` can start the file (a video keyframe), () for audio,
        None if it cannot."""
        if self.kind != "video":
            return ()
        if not frame.keyframe:
            return None
        if self.spec.ffmpeg_name == "vp8":
            return vp8_keyframe_size(frame.data)
        return h264_keyframe_size(frame.data)

    def _open_for(self, frame: EncodedFrame) -> bool:
        """Create the file, started by `frame` (checked by `_start_size`)."""
        started = self._start_size(frame)
        size = cast("tuple[int, int]", started) if started else None
        self._file = self._encryption.create(self.path)
        container = av.open(
            self._file,
            "w",
            format=self.spec.container_format,
            options={
                "cluster_time_limit": str(self._cluster_time_limit_ms),
                "flush_packets": "1",
            },
        )
        try:
            if size is not None:
                stream = container.add_mux_stream(
                    self.spec.ffmpeg_name, width=size[0], height=size[1]
                )
            else:
                # An Opus track needs an OpusHead CodecPrivate; the libopus encoder context
                # writes one when opened (it never encodes anything here).
                stream = container.add_stream(self.spec.ffmpeg_name, rate=48000, layout="stereo")
            stream.time_base = MATROSKA_TIME_BASE
        except BaseException:
            container.close()
            self._file.close()
            raise
        self._container = container
        self._stream = stream
        self._time_base = fractions.Fraction(1, frame.clock_rate)
        self._timeline = RtpTimeline(self._session_start, frame.clock_rate)
        return True
