"""SessionRecorder end to end: real frames and samples in, files + manifest out, failures reported."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import wfdb

from recorder import (
    RecorderConfig,
    RecorderOverloaded,
    RecorderStateError,
    RecordingStopped,
    SessionRecorder,
    StopReason,
    UnknownTrackError,
    WaveformStreamInfo,
)
from recorder.manifest import read_manifest
from tests.conftest import REPO_ROOT, timeout_s
from tests.recorder.media import Clip, frames, probe_packets

ECG = WaveformStreamInfo(("II", "V5"), ("mV", "mV"), (200.0, 200.0), (1024, 1024), 500.0)


class FakeClock:
    """Unix time that only moves when the test says so."""

    def __init__(self, now: float = 1_760_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_session_files_line_up_and_manifest_is_complete(
    tmp_path: Path, vp8_clip: Clip, opus_clip: Clip
) -> None:
    clock = FakeClock()
    events: list[object] = []
    rec = SessionRecorder(RecorderConfig(tmp_path), room="icu-3", room_kind="consultation",
                          on_event=events.append, clock=clock)
    directory = rec.start("dr-grey")
    assert directory.parent == tmp_path / "icu-3" and directory.name.startswith("20251009T")
    t0 = clock.now
    rec.add_participant("dr-grey", "clinician")
    rec.add_participant("pat-1", "patient")
    video = rec.add_track("v1", "pat-1", "video", "VP8")
    audio = rec.add_track("a1", "dr-grey", "audio", "opus")
    wave = rec.add_waveform_stream("mon-1", "pat-1", ECG)
    # Audio starts 1.0 s into the session, video 1.5 s; both must line up on the session clock.
    for f in sorted(frames(vp8_clip, "v1", start_at=t0 + 1.5, rtp_start=77)
                    + frames(opus_clip, "a1", start_at=t0 + 1.0, rtp_start=(1 << 32) - 5000),
                    key=lambda f: f.received_at):
        (video if f.kind == "video" else audio).on_frame(f)
    clock.now = t0 + 2.25  # the first chunk (2 s of samples) arrives as its last sample is taken
    samples = np.random.default_rng(1).integers(-500, 500, (2, 1500))
    wave.on_chunk(42_000, samples[:, :1000])
    clock.now = t0 + 3.25
    wave.on_chunk(43_000, samples[:, 1000:])
    wave.on_beat(42_100, "N")
    wave.on_alarm(42_900, "HR high")
    clock.now = t0 + 10
    manifest = await rec.stop("dr-grey")
    assert rec.state == "stopped"
    assert events == [RecordingStopped(rec.session_id, StopReason.REQUESTED)]

    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk["room"] == "icu-3" and on_disk["room_kind"] == "consultation"
    assert on_disk["started_by"] == "dr-grey" and on_disk["stopped_by"] == "dr-grey"
    assert on_disk["stop_reason"] == "requested"
    assert on_disk["started_at"].startswith("2025-10-09T") and on_disk["stopped_at"]
    assert {(p["participant_id"], p["role"]) for p in on_disk["participants"]} == {
        ("dr-grey", "clinician"), ("pat-1", "patient")}
    files = {f["name"]: f for f in on_disk["files"]}
    assert set(files) == {"video01_pat-1.webm", "audio02_dr-grey.webm",
                          "wave01_pat_1.dat", "wave01_pat_1.hea", "wave01_pat_1.atr"}
    for name, entry in files.items():
        assert entry["sha256"] == hashlib.sha256((directory / name).read_bytes()).hexdigest()
        assert entry["size_bytes"] == (directory / name).stat().st_size
    v, a = files["video01_pat-1.webm"], files["audio02_dr-grey.webm"]
    assert (v["track_id"], v["participant_id"], v["kind"], v["codec"]) == ("v1", "pat-1", "video", "VP8")
    assert v["start_offset_s"] == pytest.approx(1.5, abs=0.001)
    assert a["start_offset_s"] == pytest.approx(1.0, abs=0.001)
    assert v["frame_count"] == 90 and a["frame_count"] == 150
    assert v["duration_s"] == pytest.approx(3.0, abs=1 / 30)
    assert a["duration_s"] == pytest.approx(3.0, abs=0.02)
    # The files agree with the manifest: first pts is the start offset on the shared clock.
    _, v_first, _ = probe_packets(str(directory / v["name"]))
    _, a_first, _ = probe_packets(str(directory / a["name"]))
    assert v_first - a_first == pytest.approx(0.5, abs=0.002)
    w = files["wave01_pat_1.dat"]
    assert w["frame_count"] == 1500 and w["duration_s"] == pytest.approx(3.0)
    assert w["start_offset_s"] == pytest.approx(0.25)
    assert w["details"]["origin_sample_index"] == 42_000
    back = wfdb.rdrecord(str(directory / "wave01_pat_1"), physical=False)
    assert np.array_equal(back.d_signal.T, samples)
    ann = wfdb.rdann(str(directory / "wave01_pat_1"), "atr")
    assert list(ann.sample) == [100, 900] and ann.aux_note[1] == "HR high"
    assert read_manifest(directory) == manifest
    assert await rec.stop("again") == manifest  # idempotent


async def test_a_stalled_server_shifts_no_track_whose_sender_tells_its_clock(
    tmp_path: Path, vp8_clip: Clip, opus_clip: Clip
) -> None:
    """The server runs 3 s behind while the tracks start (a loaded machine): every frame and the
    first chunks arrive 3 s late. Tracks whose publishers report their clock (RTCP Sender Reports, the
    monitor's chunk t0) are placed where they were captured; a monitor whose clock is 10 min off
    falls back to arrival. Before, each track was placed by its first second's arrivals: 3 s late."""
    clock = FakeClock()
    rec = SessionRecorder(RecorderConfig(tmp_path), room="icu-4", room_kind="consultation", clock=clock)
    directory = rec.start("dr-grey")
    t0 = clock.now
    rec.add_participant("pat-1", "patient")
    video = rec.add_track("v1", "pat-1", "video", "VP8")
    audio = rec.add_track("a1", "pat-1", "audio", "opus")
    good = rec.add_waveform_stream("mon-1", "pat-1", ECG)
    skewed = rec.add_waveform_stream("mon-2", "pat-1", ECG)
    stall = 3.0
    late = []
    for f in (frames(vp8_clip, "v1", start_at=t0 + 1.5) + frames(opus_clip, "a1", start_at=t0 + 1.0)):
        late.append(dataclasses.replace(f, received_at=f.received_at + stall, sender_time=f.received_at))
    for f in sorted(late, key=lambda f: f.received_at):
        (video if f.kind == "video" else audio).on_frame(f)
    samples = np.random.default_rng(2).integers(-500, 500, (2, 1000))
    clock.now = t0 + 2.25 + stall  # 2 s of samples taken from 0.25 s on, held up by the stall
    good.on_chunk(0, samples, t0=t0 + 0.25)
    skewed.on_chunk(0, samples, t0=t0 + 0.25 - 600)
    clock.now = t0 + 10
    await rec.stop("dr-grey")
    files = {f["name"]: f for f in json.loads((directory / "manifest.json").read_text())["files"]}
    v, a = files["video01_pat-1.webm"], files["audio02_pat-1.webm"]
    assert v["start_offset_s"] == pytest.approx(1.5, abs=0.001) and v["details"]["anchored_by"] == "sender_report"
    assert a["start_offset_s"] == pytest.approx(1.0, abs=0.001) and a["details"]["anchored_by"] == "sender_report"
    _, v_first, _ = probe_packets(str(directory / v["name"]))
    _, a_first, _ = probe_packets(str(directory / a["name"]))
    assert v_first - a_first == pytest.approx(0.5, abs=0.002)
    w1, w2 = files["wave01_pat_1.dat"], files["wave02_pat_1.dat"]
    assert w1["start_offset_s"] == pytest.approx(0.25) and w1["details"]["anchored_by"] == "device_clock"
    assert w2["start_offset_s"] == pytest.approx(0.25 + stall) and w2["details"]["anchored_by"] == "arrival"


async def test_a_second_session_never_reuses_a_directory(tmp_path: Path) -> None:
    clock = FakeClock()
    dirs = set()
    for _ in range(3):  # same second, same room
        rec = SessionRecorder(RecorderConfig(tmp_path), room="r1", clock=clock)
        dirs.add(rec.start("x"))
        await rec.stop("x")
    assert len(dirs) == 3


async def test_bad_calls_give_clear_errors(tmp_path: Path, vp8_clip: Clip) -> None:
    rec = SessionRecorder(RecorderConfig(tmp_path), room="r1")
    with pytest.raises(RecorderStateError, match=r"stop\(\) called before start\(\)"):
        await rec.stop("x")
    with pytest.raises(RecorderStateError, match="needs a recording in progress"):
        rec.add_track("v1", "p", "video", "VP8")
    with pytest.raises(ValueError, match="room must be"):
        SessionRecorder(RecorderConfig(tmp_path), room="../etc")
    rec.start("x")
    sink = rec.add_track("v1", "p", "video", "VP8")
    with pytest.raises(ValueError, match="already being recorded"):
        rec.add_track("v1", "p", "video", "VP8")
    with pytest.raises(ValueError, match="codec must be one of"):
        rec.add_track("v2", "p", "video", "AV1")
    stray = frames(vp8_clip, "nope", start_at=0)[0]
    with pytest.raises(UnknownTrackError, match="unknown track 'nope'"):
        rec.on_frame(stray)
    with pytest.raises(UnknownTrackError, match="given to the sink of track 'v1'"):
        sink.on_frame(stray)
    with pytest.raises(UnknownTrackError, match="'nope'"):
        rec.on_track_ended("nope")
    wave = rec.add_waveform_stream("m", "p", ECG)
    with pytest.raises(ValueError, match=r"shape \(2, n\)"):
        wave.on_chunk(0, np.zeros((3, 10), np.int16))
    with pytest.raises(ValueError, match="WFDB annotation symbol"):
        wave.on_beat(0, "beat")
    await rec.stop("x")
    with pytest.raises(RecorderStateError, match="start"):
        rec.start("x")
    sink.on_frame(frames(vp8_clip, "v1", start_at=0)[0])  # late frame after stop: ignored
    assert rec.frames_ignored == 1


async def test_overload_is_reported_and_hard_limit_stops_loudly(tmp_path: Path, vp8_clip: Clip) -> None:
    events: list[object] = []
    size = len(vp8_clip.payloads[0])
    config = RecorderConfig(tmp_path, high_water_bytes=size * 4, hard_limit_bytes=size * 1000)
    rec = SessionRecorder(config, room="r1", on_event=events.append)
    rec.start("x")
    sink = rec.add_track("v1", "p", "video", "VP8")
    for f in frames(vp8_clip, "v1", start_at=0):  # faster than any disk: no await in between
        sink.on_frame(f)
    assert isinstance(events[0], RecorderOverloaded)
    assert events[0].pending_bytes > config.high_water_bytes
    manifest = await rec.stop("x")
    assert manifest.files[0].frame_count == 90  # reported, but nothing was dropped

    events.clear()
    config = RecorderConfig(tmp_path, high_water_bytes=size, hard_limit_bytes=size * 3)
    rec = SessionRecorder(config, room="r1", on_event=events.append)
    rec.start("x")
    sink = rec.add_track("v1", "p", "video", "VP8")
    for f in frames(vp8_clip, "v1", start_at=0):
        sink.on_frame(f)  # never raises into the relay
    manifest = await rec.stop("x")
    assert manifest.stop_reason == "overloaded"
    assert [type(e) for e in events] == [RecorderOverloaded, RecordingStopped]
    assert events[-1].reason is StopReason.OVERLOADED  # type: ignore[union-attr]


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 256 KiB tmpfs: a real ENOSPC."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


async def test_disk_full_stops_recording_with_an_event(tiny_disk: Path, vp8_clip: Clip) -> None:
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[RecordingStopped] = loop.create_future()

    def on_event(event: object) -> None:
        assert asyncio.get_running_loop() is loop  # delivered on the host's loop
        if isinstance(event, RecordingStopped) and not stopped.done():
            stopped.set_result(event)

    rec = SessionRecorder(RecorderConfig(tiny_disk, cluster_time_limit_ms=200), room="r1",
                          on_event=on_event)
    directory = rec.start("x")
    sink = rec.add_track("v1", "p", "video", "VP8")
    n_fed = 0
    for rep in range(200):  # 1.2 MB of real VP8 frames: more than fits
        if stopped.done():
            break
        for f in frames(vp8_clip, "v1", start_at=rep * 3.0, rtp_start=rep * 270_000):
            sink.on_frame(f)  # never raises, even once the disk is full
            n_fed += 1
        await asyncio.sleep(0.01)
    event = await asyncio.wait_for(stopped, timeout_s(10))
    assert event.reason is StopReason.DISK_FULL and "space" in event.detail.lower()
    assert rec.state == "stopped"
    manifest = await rec.stop("x")
    assert manifest.stop_reason == "disk_full"
    # The reserve made room: the manifest ON DISK is final and says why the recording ended.
    on_disk = read_manifest(directory)
    assert on_disk.stop_reason == "disk_full" and on_disk.stopped_at is not None
    assert on_disk.stop_detail and any(f.sha256 for f in on_disk.files)
    assert not (directory / ".manifest-reserve").exists()
    sink.on_frame(frames(vp8_clip, "v1", start_at=0)[0])  # still never raises
    # What made it to disk before the disk filled up is readable.
    n, _, _ = probe_packets(str(directory / "video01_p.webm"))
    assert 0 < n < n_fed


def test_sigkill_leaves_playable_files_and_restart_uses_a_new_directory(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.recorder.recording_child", str(tmp_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        directory = Path(child.stdout.readline().strip())
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout_s(10))
    assert child.returncode == -signal.SIGKILL
    manifest = read_manifest(directory)
    assert manifest.stopped_at is None  # marks the session incomplete
    # Video: 5 s fed; clusters of <= 0.5 s are on disk except the last open one.
    video = directory / "video01_patient-1.webm"
    n, _, _ = probe_packets(str(video))
    assert 150 - 30 <= n < 150
    with av.open(str(video)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == n
    probe = subprocess.run(["ffprobe", "-v", "error", str(video)], capture_output=True, check=False)
    assert probe.returncode == 0 and probe.stderr == b""
    # Waveform: everything before the checkpoint is a valid record.
    back = wfdb.rdrecord(str(directory / "wave01_patient_1"), physical=False)
    assert np.array_equal(back.d_signal[:, 0], np.arange(2500) % 1000)
    # A restarted recorder never touches the killed session.
    before = sorted(os.listdir(directory))
    rec = SessionRecorder(RecorderConfig(tmp_path), room="ward7")
    assert rec.start("dr-house") != directory
    rec.stop_blocking("dr-house")
    assert sorted(os.listdir(directory)) == before
