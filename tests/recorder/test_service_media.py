"""Recording real aiortc publishers through the real server, and a server killed mid-recording.

Run inside a loopback-only namespace:
    unshare --net -- sh -c 'ip link set lo up && exec python -m pytest tests/recorder -m webrtc'
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import pytest

from recorder.manifest import read_manifest
from tests.conftest import REPO_ROOT, timeout_s
from tests.helpers import SECRET, running_app, token
from tests.recorder.rtc import RtcParticipant, wait_until
from tests.support.rtc_peer import nal_units

ROOM = "consult-1"
FPS = 15


def ffprobe_frames(path: Path) -> int:
    """Number of packets ffprobe counts in the file's first stream (it must parse the file)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "0",
         "-show_entries", "stream=codec_name,nb_read_packets", "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=timeout_s(20)).stdout
    return int(json.loads(out)["streams"][0]["nb_read_packets"])


def read_packets(path: Path) -> tuple[list[bytes], list[float]]:
    """(payloads, pts in s) of the only stream, read back with PyAV; every video frame decodes."""
    payloads, pts = [], []
    with av.open(str(path)) as container:
        stream = container.streams[0]
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            payloads.append(bytes(packet))
            pts.append(float(packet.pts * packet.time_base))
            if stream.type == "video":
                packet.decode()  # raises if the file does not start at a keyframe
    return payloads, pts


def avcc_units(data: bytes) -> tuple[bytes, ...]:
    """The NAL units of an H.264 frame as Matroska stores it (each after a 4-byte length)."""
    units, i = [], 0
    while i + 4 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        units.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return tuple(units)


def contiguous_run(recorded: list[bytes], sent: list[bytes]) -> int:
    """Index in `sent` where `recorded` appears as one unbroken run; AssertionError otherwise."""
    assert recorded, "nothing recorded"
    first = sent.index(recorded[0])
    assert sent[first:first + len(recorded)] == recorded, "recorded frames are not a contiguous run of sent frames"
    return first


@pytest.mark.webrtc
async def test_recording_real_publishers_files_match_what_was_sent(tmp_path: Path) -> None:
    async with running_app(media=True, recorder=True, recordings_dir=tmp_path,
                           ice_host_addresses=("127.0.0.1",)) as app:
        host = await RtcParticipant.join(app.ws_url, token(ROOM, "dr-grey", "host", kind="consultation"),
                                         "host", video_codec="VP8", audio=True, fps=FPS)
        expert = await RtcParticipant.join(app.ws_url, token(ROOM, "dr-yang", "expert"), "expert",
                                           video_codec="H264", fps=FPS)
        try:
            host_tracks = await host.publish(audio=True, video=True, timeout=timeout_s(15))
            vsrc = host.peer.video_source
            assert vsrc is not None
            await wait_until(lambda: len(vsrc.sent) > FPS, 10, "host video flowing")
            before_start = len(vsrc.sent)
            assert (await host.ws.request("start_recording"))["type"] == "ok"
            for p in (host, expert):
                assert (await p.ws.wait_type("recording"))["active"] is True
            start_sent = len(vsrc.sent)
            # A track published while recording is picked up and starts at a requested keyframe.
            await asyncio.sleep(0.6)
            expert_tracks = await expert.publish(video=True, timeout=timeout_s(15))
            esrc = expert.peer.video_source
            assert esrc is not None
            await asyncio.sleep(2.5)
            assert (await host.ws.request("stop_recording"))["type"] == "ok"
            for p in (host, expert):
                assert (await p.ws.wait_type("recording"))["active"] is False
            await wait_until(lambda: ROOM not in app.recorder.rooms, 10, "the recording to be final")
            stop_sent = len(vsrc.sent)
        finally:
            await host.close()
            await expert.close()

    [directory] = list((tmp_path / ROOM).iterdir())
    manifest = read_manifest(directory)
    assert manifest.stop_reason == "requested"
    assert {p.identity: p.role for p in manifest.participants} == {"dr-grey": "host", "dr-yang": "expert"}
    tracks = [f for f in manifest.files if f.kind in ("video", "audio")]
    by_track = {f.track_id: f for f in tracks}
    assert set(by_track) == {host_tracks["video"], host_tracks["audio"], expert_tracks["video"]}, manifest.files
    # and one file per participant (both streams of the host in one)
    assert sorted(f.name.rsplit(".", 1)[1] for f in manifest.files if f.kind == "participant_media") == ["mkv", "webm"]
    for entry in tracks:
        path = directory / entry.name
        payloads, pts = read_packets(path)
        assert ffprobe_frames(path) == len(payloads) == entry.frame_count, entry
        # durations match the frames (within one frame), starting where the manifest says
        step = 1 / FPS if entry.kind == "video" else 0.02
        assert abs((pts[-1] - pts[0]) - (len(pts) - 1) * step) <= step, (entry.name, pts[0], pts[-1])
        assert entry.start_offset_s is not None and abs(pts[0] - entry.start_offset_s) <= step
        assert abs(entry.duration_s - (pts[-1] - pts[0] + step)) <= step + 1e-3

    # Host VP8: byte-identical to what the encoder produced, one unbroken run started by the
    # keyframe the recorder asked for; nothing after the stop.
    hv = by_track[host_tracks["video"]]
    payloads, _ = read_packets(directory / hv.name)
    sent = [f.data for f in vsrc.sent]
    first = contiguous_run(payloads, sent)
    # (a frame made just before the request may still be on its way as the recording starts)
    # and at most a keyframe in flight at the start passed over (however long the request took)
    keyframes = [i for i, f in enumerate(vsrc.sent) if f.keyframe and i >= before_start - 2]
    assert vsrc.sent[first].keyframe and first in keyframes[:2], (first, keyframes, before_start, start_sent)
    assert first + len(payloads) <= stop_sent
    assert hv.details["frames_out_of_order"] == 0
    # Opus: byte-identical run too.
    ha = by_track[host_tracks["audio"]]
    audio_payloads, _ = read_packets(directory / ha.name)
    asrc = host.peer.audio_source
    assert asrc is not None
    a_first = contiguous_run(audio_payloads, asrc.sent)
    # Each track is placed where its first frame was made (by the publisher's Sender Reports; the
    # video file begins at the keyframe the recorder asked for, placed at 0 if it was made just
    # before the start; sound made before the start is left out): within 100 ms.
    start = manifest.session_start_unix_s

    def placed_as_made(entry: Any, made_at: float, kind: str) -> None:
        expected = max(0.0, made_at - start) if kind == "video" else made_at - start
        assert abs(entry.start_offset_s - expected) <= 0.1, (entry, made_at - start)
    placed_as_made(hv, vsrc.sent_at[first], "video")
    placed_as_made(ha, asrc.sent_at[a_first], "audio")
    # Expert H.264 (.mkv) joined late: its offset on the session clock is when its first frame was made.
    ev = by_track[expert_tracks["video"]]
    assert ev.name.endswith(".mkv") and esrc.keyframes_forced >= 1
    assert ev.start_offset_s is not None and hv.start_offset_s is not None and ha.start_offset_s is not None
    e_first = contiguous_run([avcc_units(d) for d in read_packets(directory / ev.name)[0]],
                             [nal_units(f.data) for f in esrc.sent])
    assert esrc.sent_at[e_first] - start > 0.5  # it was published after the 0.6-s wait
    placed_as_made(ev, esrc.sent_at[e_first], "video")


@pytest.mark.webrtc
async def test_server_killed_mid_recording_leaves_readable_files(tmp_path: Path) -> None:
    recordings = tmp_path / "rec"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MEDSTREAM_SECRET": SECRET}
    server = subprocess.Popen(
        [sys.executable, "-m", "medstream.cli", "serve", "--port", "0",
         "--recordings-dir", str(recordings), "--audit-log", "none", "--ice-host", "127.0.0.1",
         "--log-level", "WARNING"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    host: RtcParticipant | None = None
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), timeout_s(20))
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        ws_url = f"ws://127.0.0.1:{match.group(1)}/ws"
        host = await RtcParticipant.join(ws_url, token(ROOM, "dr-grey", "host", kind="consultation"),
                                         "host", video_codec="VP8", fps=FPS)
        await host.publish(video=True, timeout=timeout_s(15))
        assert (await host.ws.request("start_recording"))["type"] == "ok"
        await asyncio.sleep(3.0)  # > checkpoint interval and a few clusters
        server.send_signal(signal.SIGKILL)
        await asyncio.to_thread(server.wait, timeout_s(10))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if host is not None:
            await host.close()

    [directory] = list((recordings / ROOM).iterdir())
    manifest = read_manifest(directory)
    assert manifest.stopped_at is None  # marks it incomplete
    [video] = [f for f in manifest.files if f.kind == "video"]
    path = directory / video.name
    payloads, pts = read_packets(path)
    assert ffprobe_frames(path) == len(payloads)
    assert len(payloads) >= FPS and pts[-1] - pts[0] >= 1.5, (len(payloads), pts[-1] - pts[0])
    # The next start repairs it: a complete file with its seek index, the manifest final.
    assert b"\x1c\x53\xbb\x6b" not in path.read_bytes()  # no Cues in a crash-cut file
    async with running_app(recorder=True, recordings_dir=recordings) as app:
        assert await app.recorder.repaired() == [directory.name]
    repaired = read_manifest(directory)
    assert repaired.stop_reason == "interrupted" and repaired.repaired_at and repaired.stopped_at
    assert b"\x1c\x53\xbb\x6b" in path.read_bytes()
    again, _ = read_packets(path)
    assert again == payloads and all(f.sha256 for f in repaired.files)

