"""Media through the real signaling server: websocket signaling + aiortc peers on 127.0.0.1."""

import asyncio
import urllib.request

import pytest

from tests.conftest import timeout_s
from tests.helpers import MediaParticipant, running_app, token
from tests.support.rtc_peer import ToneAudioSource

pytestmark = pytest.mark.webrtc

MEDIA = dict(media=True, ice_host_addresses=("127.0.0.1",))


def assert_forwarded_verbatim(sent_frames, received_frames):
    """Every frame the subscriber got is, byte for byte and in order, one the publisher encoded."""
    sent = [f.data for f in sent_frames]
    got = [f.data for f in received_frames]
    assert got, "nothing received"
    start = sent.index(got[0])
    assert got == sent[start:start + len(got)], "frames differ from the publisher's encoder output"


async def test_consultation_two_way_media_is_forwarded_not_transcoded():
    async with running_app(**MEDIA) as app:
        doctor = await MediaParticipant.join(app, token("c1", "township-doc", "host", kind="consultation"),
                                             name="doctor", video_codec="VP8", audio=True, decode=True)
        expert = await MediaParticipant.join(app, token("c1", "cardiologist", "expert"),
                                             name="expert", video_codec="VP8", audio=True, decode=True)
        d_tracks = await doctor.publish(audio=True, video=True)
        e_tracks = await expert.publish(audio=True, video=True)
        d_video = next(t["track_id"] for t in d_tracks if t["kind"] == "video")
        e_video = next(t["track_id"] for t in e_tracks if t["kind"] == "video")
        d_audio = next(t["track_id"] for t in d_tracks if t["kind"] == "audio")
        got_at_expert = await expert.peer.wait_track(d_video, timeout_s(10))
        got_at_doctor = await doctor.peer.wait_track(e_video, timeout_s(10))
        await got_at_expert.wait_frames(15, timeout_s(10))
        await got_at_doctor.wait_frames(15, timeout_s(10))
        audio_at_expert = await expert.peer.wait_track(d_audio, timeout_s(10))
        await audio_at_expert.wait_frames(20, timeout_s(10))
        assert got_at_expert.frames[0].keyframe, "a new subscriber must start on a keyframe"
        assert_forwarded_verbatim(doctor.peer.video_source.sent, got_at_expert.frames)
        assert_forwarded_verbatim(expert.peer.video_source.sent, got_at_doctor.frames)
        # decoded counters arrive in order, none repeated
        await got_at_expert.wait_counter(lambda c: len(c) >= 10, timeout_s(10))
        c = got_at_expert.counters
        assert c == sorted(c) and len(set(c)) == len(c)
        # connection quality reaches the room and /metrics, so the doctor can see whose link is bad
        q = await doctor.ws.wait(lambda m: m["type"] == "quality" and m["participant_id"] == expert.participant_id
                                 and m["bitrate_kbps"] > 0, timeout=15)
        assert q["loss_pct"] is not None and q["jitter_ms"] is not None
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(app.url + "/metrics").read().decode())
        assert 'medstream_peer_bitrate_kbps{stat="max"}' in body  # aggregated: /metrics names nobody
        assert expert.participant_id not in body
        assert "medstream_media_tracks 4" in body
        # the expert leaves: the doctor is told and the track goes away
        await expert.close()
        await doctor.ws.wait_type("track_unpublished", timeout=10, track_id=e_video)
        await doctor.close()


async def test_broadcast_presenter_to_viewers_with_promotion():
    async with running_app(**MEDIA) as app:
        prof = await MediaParticipant.join(app, token("lecture", "prof", "host", kind="broadcast"),
                                           name="prof", video_codec="VP8", audio=True)
        [p_video] = [t for t in await prof.publish(audio=True, video=True) if t["kind"] == "video"]
        viewers = [await MediaParticipant.join(app, token("lecture", f"student-{i}", "viewer"), name=f"s{i}")
                   for i in range(6)]
        for v in viewers:
            track = await v.peer.wait_track(p_video["track_id"], timeout_s(15))
            await track.wait_frames(5, timeout_s(15))
            assert track.frames[0].keyframe
        # a viewer may not publish until promoted
        refused = await viewers[0].ws.request("publish", audio=True)
        assert refused["reason"] == "forbidden"
        await viewers[0].ws.request("raise_hand", raised=True)
        await prof.ws.wait_type("participant_updated", participant__hand_raised=True)
        assert (await prof.ws.request("promote", participant_id=viewers[0].participant_id))["type"] == "ok"
        viewers[0].peer.audio_source = ToneAudioSource(660)
        [q_audio] = await viewers[0].publish(audio=True)
        for listener in [prof, *viewers[1:3]]:
            heard = await listener.peer.wait_track(q_audio["track_id"], timeout_s(15))
            await heard.wait_frames(10, timeout_s(15))
        assert (await prof.ws.request("demote", participant_id=viewers[0].participant_id))["type"] == "ok"
        await prof.ws.wait_type("track_unpublished", timeout=10, track_id=q_audio["track_id"])
        for p in [prof, *viewers]:
            await p.close()


async def test_moderator_mute_and_audio_only_mode():
    async with running_app(**MEDIA) as app:
        host = await MediaParticipant.join(app, token("c2", "host", "host", kind="consultation"), name="host")
        expert = await MediaParticipant.join(app, token("c2", "exp", "expert"), name="exp",
                                             video_codec="VP8", audio=True)
        tracks = {t["kind"]: t["track_id"] for t in await expert.publish(audio=True, video=True)}
        video = await host.peer.wait_track(tracks["video"], timeout_s(10))
        audio = await host.peer.wait_track(tracks["audio"], timeout_s(10))
        await video.wait_frames(5, timeout_s(10))
        # moderator mute: everyone is told, forwarding stops
        r = await host.ws.request("mute", participant_id=expert.participant_id, kind="video", muted=True)
        assert r["type"] == "ok"
        upd = await expert.ws.wait_type("track_updated", track__track_id=tracks["video"])
        assert upd["track"]["muted"] is True
        await asyncio.sleep(0.3)
        n = len(video.frames)
        await audio.wait_frames(len(audio.frames) + 15, timeout_s(10))
        assert len(video.frames) <= n + 1, "muted video kept flowing"
        await host.ws.request("mute", participant_id=expert.participant_id, kind="video", muted=False)
        await video.wait_frames(n + 5, timeout_s(10))
        # the township link is weak: audio only
        r = await host.ws.request("set_video_paused", paused=True)
        assert r["type"] == "ok"
        await asyncio.sleep(0.3)
        n = len(video.frames)
        await audio.wait_frames(len(audio.frames) + 15, timeout_s(10))
        assert len(video.frames) <= n + 1, "video kept flowing in audio-only mode"
        await host.ws.request("set_video_paused", paused=False)
        await video.wait_frames(n + 5, timeout_s(10))
        await host.close()
        await expert.close()


async def test_codec_mismatch_and_bad_sdp_get_clear_errors():
    async with running_app(**MEDIA) as app:
        pub = await MediaParticipant.join(app, token("c3", "a", "host", kind="consultation"), name="a",
                                          video_codec="H264")
        tracks = await pub.publish(video=True)
        vp8_only = await MediaParticipant.join(app, token("c3", "b", "expert"), name="b",
                                               receive_codecs=frozenset({"VP8", "opus"}))
        err = await vp8_only.ws.wait_type("error", timeout=10)
        assert err["reason"] == "unsupported_codec" and "h264" in err["message"].lower()
        raw = await pub.ws.request("sdp", sdp_type="answer", sdp="v=0 garbage")
        assert raw["type"] == "error" and raw["reason"] in ("invalid_sdp",)
        # both connections still work
        assert (await pub.ws.request("ping"))["type"] == "pong"
        assert tracks[0]["codec"] == "H264"
        await pub.close()
        await vp8_only.close()
