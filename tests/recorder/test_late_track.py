"""A track published into a room that is already recording is recorded from its first frame.

The recorder learns of the track from the room's `TrackPublished` event and attaches before the
first frame can pass (it used to poll the room every 0.5 s and lose the start: with a file that
has a keyframe every second, up to a second of each late participant was missing). The file is
published without re-encoding, so a keyframe request cannot help: only attaching in time can.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.publish import iter_packets, plan_streams, publish_file
from recorder.manifest import read_manifest
from tests.clients.test_publish import FPS, write_clip
from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token
from tests.recorder.rtc import wait_until
from tests.recorder.test_service_media import read_packets

ROOM = "consult-late"


@pytest.mark.webrtc
async def test_track_published_while_recording_is_recorded_from_its_first_keyframe(tmp_path: Path) -> None:
    clip = tmp_path / "clip.webm"
    write_clip(clip, "libvpx", "libopus", gop=FPS)  # a keyframe every second, as a camera sends
    plans = plan_streams(clip)
    video_file = [p.data for p in iter_packets(clip, plans["video"])]
    audio_file = [p.data for p in iter_packets(clip, plans["audio"])]
    recordings = tmp_path / "rec"
    async with running_app(media=True, recorder=True, recordings_dir=recordings,
                           ice_host_addresses=("127.0.0.1",)) as app:
        host = await WsClient.connect(app.ws_url)
        try:
            assert (await host.join(token(ROOM, "dr-grey", "host", kind="consultation")))["type"] == "joined"
            assert (await host.request("start_recording"))["type"] == "ok"
            await wait_until(lambda: ROOM in app.recorder.rooms, 10, "the recording to start")
            publisher = await asyncio.wait_for(
                publish_file(clip, app.ws_url, token(ROOM, "dr-yang", "expert")), timeout_s(30))
            assert set(publisher.stats.track_ids) == {"audio", "video"}
            assert (await host.request("stop_recording"))["type"] == "ok"
            await wait_until(lambda: ROOM not in app.recorder.rooms, 10, "the recording to be final")
        finally:
            await host.close()

    [directory] = list((recordings / ROOM).iterdir())
    by_track = {f.track_id: f for f in read_manifest(directory).files}
    video, _ = read_packets(directory / by_track[publisher.stats.track_ids["video"]].name)
    audio, _ = read_packets(directory / by_track[publisher.stats.track_ids["audio"]].name)
    # Byte-identical, from the file's first frame (its first keyframe) on, nothing skipped.
    assert video and video == video_file[:len(video)], "video must be the file's frames from the first one"
    assert len(video) >= len(video_file) - 2, (len(video), len(video_file))
    start = audio_file.index(audio[0])
    assert start <= 2 and audio == audio_file[start:start + len(audio)], start
    assert len(audio) >= len(audio_file) - 5, (len(audio), len(audio_file))
