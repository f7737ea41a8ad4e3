"""WHIP ingest and WHEP playback through a real node with real aiortc peers on loopback: what an
encoder publishes reaches a signaling viewer byte for byte (no transcoding), a WHEP player gets
a signaling presenter's frames byte for byte, DELETE ends sessions, and refusals are HTTP-correct."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from signaling.turn import TurnRest, credential
from tests.conftest import timeout_s
from tests.helpers import MediaParticipant, running_app, token
from tests.support.rtc_peer import ClientPeer, frame_digest

pytestmark = pytest.mark.webrtc

ROOM = "lecture-1"
MEDIA = dict(media=True, ice_host_addresses=("127.0.0.1",), rooms=((ROOM, "broadcast"),))


async def post_sdp(url: str, sdp: str, tok: str | None, content_type: str = "application/sdp",
                   method: str = "POST") -> tuple[int, CIMultiDict[str], str]:
    headers = {"Content-Type": content_type}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    async with aiohttp.ClientSession() as s, s.request(method, url, data=sdp.encode(), headers=headers) as r:
        return r.status, r.headers.copy(), await r.text()


def digests(frames: list[Any]) -> list[str]:
    return [frame_digest(f.data) for f in frames]


TURN = TurnRest(("turn:127.0.0.1:3478?transport=udp", "turns:127.0.0.1:443?transport=tcp"),
                "turn-shared-secret-for-tests-0123456789")


async def test_whip_publish_reaches_a_viewer_byte_for_byte_and_delete_ends_it() -> None:
    async with running_app(**MEDIA) as app:
        viewer = await MediaParticipant.join(app, token(ROOM, "student-1", "viewer"))
        obs = ClientPeer("obs", video_codec="VP8", audio=True, fps=20)
        try:
            status, headers, answer = await post_sdp(f"{app.url}/whip/{ROOM}", await obs.offer(),
                                                     token(ROOM, "dr-zhou", "host", name="周教授"))
            assert status == 201, answer
            assert headers["Content-Type"] == "application/sdp" and headers["Location"].startswith(f"/whip/{ROOM}/")
            assert "Link" not in headers  # no ICE servers configured
            await obs.accept(answer)
            joined = await viewer.ws.wait_type("participant_joined", timeout=10)
            assert joined["participant"]["name"] == "周教授 (WHIP)" and joined["participant"]["role"] == "host"
            published = [(await viewer.ws.wait_type("track_published", timeout=10))["track"] for _ in range(2)]
            assert sorted((t["kind"], t["codec"]) for t in published) == [("audio", "opus"), ("video", "VP8")]
            video_id = next(t["track_id"] for t in published if t["kind"] == "video")
            received = await viewer.peer.wait_track(video_id, timeout_s(10))
            await received.wait_frames(40, timeout_s(20))
            assert obs.video_source is not None
            sent = set(digests(obs.video_source.sent))
            got = digests(received.frames)
            assert set(got) <= sent and len(set(got)) >= 40  # forwarded as encoded, never re-encoded
            # DELETE: the encoder's tracks and the participant are gone for the room
            url = app.url + headers["Location"]
            async with aiohttp.ClientSession() as s:
                async with s.delete(url) as r:
                    assert r.status == 200
                async with s.delete(url) as r:
                    assert r.status == 404
                async with s.patch(url, data=b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host") as r:
                    assert r.status == 405  # no trickle: RFC 9725 4.3.1
            gone = {(await viewer.ws.wait_type("track_unpublished", timeout=10))["track_id"] for _ in range(2)}
            assert gone == {t["track_id"] for t in published}
            assert (await viewer.ws.wait_type("participant_left", timeout=10))["reason"] == "left"
            assert app.media is not None
            assert app.whip is not None and not app.whip.active
        finally:
            await obs.close()
            await viewer.close()


async def test_whep_plays_a_signaling_presenter_byte_for_byte() -> None:
    async with running_app(**MEDIA) as app:
        presenter = await MediaParticipant.join(app, token(ROOM, "dr-zhou", "host"), video_codec="VP8",
                                                audio=True, fps=20)
        player = ClientPeer("projector")
        try:
            tracks = await presenter.publish(audio=True, video=True)
            status, headers, answer = await post_sdp(f"{app.url}/whep/{ROOM}",
                                                     await player.offer(receive=frozenset({"audio", "video"})),
                                                     token(ROOM, "hall-3-projector", "viewer"))
            assert status == 201, answer
            await player.accept(answer)
            by_kind = {t["kind"]: t["track_id"] for t in tracks}
            video = await player.wait_track(by_kind["video"], timeout_s(10))
            audio = await player.wait_track(by_kind["audio"], timeout_s(10))
            await video.wait_frames(40, timeout_s(20))
            await audio.wait_frames(40, timeout_s(20))
            assert video.codec == "VP8" and audio.codec == "opus"
            assert presenter.peer.video_source is not None
            assert set(digests(video.frames)) <= set(digests(presenter.peer.video_source.sent))
            peers_before = len(app.media.peer_ids()) if app.media else 0
            async with aiohttp.ClientSession() as s, s.delete(app.url + headers["Location"]) as r:
                assert r.status == 200
            deadline = time.monotonic() + timeout_s(10)
            while app.media is None or len(app.media.peer_ids()) != peers_before - 1:
                assert time.monotonic() < deadline, "the WHEP peer was not closed"
                await asyncio.sleep(0.05)
            # a second player; the presenter stops publishing: its WHEP session ends with the tracks
            second = ClientPeer("projector-2")
            try:
                status, headers, answer = await post_sdp(
                    f"{app.url}/whep/{ROOM}", await second.offer(receive=frozenset({"audio", "video"})),
                    token(ROOM, "hall-4-projector", "viewer"))
                assert status == 201, answer
                await second.accept(answer)
                await (await second.wait_track(by_kind["video"], timeout_s(10))).wait_frames(5, timeout_s(20))
                assert app.whip is not None and len(app.whip.active) == 1
                for kind in ("audio", "video"):
                    assert (await presenter.ws.request("unpublish", kind=kind))["type"] == "ok"
                deadline = time.monotonic() + timeout_s(10)
                while app.whip.active:
                    assert time.monotonic() < deadline, "the WHEP session outlived its tracks"
                    await asyncio.sleep(0.05)
                async with aiohttp.ClientSession() as s, s.delete(app.url + headers["Location"]) as r:
                    assert r.status == 404  # ended already
            finally:
                await second.close()
        finally:
            await player.close()
            await presenter.close()


async def test_whip_and_whep_refusals() -> None:
    async with running_app(**MEDIA, api_key="k" * 32, turn=TURN) as app:
        offer_peer = ClientPeer("obs", video_codec="VP8")
        try:
            offer = await offer_peer.offer()
            whip, whep = f"{app.url}/whip/{ROOM}", f"{app.url}/whep/{ROOM}"
            host = token(ROOM, "dr-zhou", "host")
            assert (await post_sdp(whip, offer, None))[0] == 401
            assert (await post_sdp(whip, offer, "not-a-token"))[0] == 401
            assert (await post_sdp(whip, offer, host, content_type="application/json"))[0] == 415
            assert (await post_sdp(whip, offer, token(ROOM, "student", "viewer")))[0] == 403  # may not publish
            assert (await post_sdp(whip, offer, token("other-room", "dr-zhou", "host")))[0] == 403
            assert (await post_sdp(f"{app.url}/whip/nowhere", offer, token("nowhere", "x", "host")))[0] == 404
            assert (await post_sdp(whip, "v=0\r\nnonsense", host))[0] == 400
            status, headers, _ = await post_sdp(whep, offer.replace("sendonly", "recvonly"), token(ROOM, "s", "viewer"))
            assert status == 409 and headers["Retry-After"]  # nothing published yet
            assert (await post_sdp(whep, offer, token(ROOM, "m", "monitor")))[0] == 403  # may not subscribe
            # nobody was left behind in the room by the refusals
            room = app.hub.store.get(ROOM)
            assert room is not None and not room.participants
            assert app.media is not None and app.media.peer_ids() == []
            # accepted: RFC 9725 4.4, the TURN servers with this session's time-limited credentials
            status, headers, _ = await post_sdp(whip, offer, host)
            assert status == 201
            links = headers.getall("Link")
            assert [link.split(">")[0][1:] for link in links] == list(TURN.urls)
            params = dict(p.strip().split("=", 1) for p in links[1].split(";")[1:])
            username, secret = params["username"].strip('"'), params["credential"].strip('"')
            assert params["rel"] == '"ice-server"' and params["credential-type"] == '"password"'
            assert secret == credential(TURN.secret, username)  # what coturn's use-auth-secret checks
            assert int(username.split(":")[0]) > time.time() + 3600
            async with aiohttp.ClientSession() as s:
                async with s.patch(app.url + headers["Location"], data=b"a=end-of-candidates") as r:
                    assert r.status == 405 and "DELETE" in r.headers["Allow"]  # no trickle, no ICE restart
                async with s.delete(app.url + headers["Location"]) as r:
                    assert r.status == 200
        finally:
            await offer_peer.close()
