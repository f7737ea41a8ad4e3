"""WHIP and WHEP with real headless Chromium through a real node (clients/web/whip.html): a
browser publishes over WHIP and is seen by a signaling viewer and played by a browser over WHEP;
an aiortc WHIP encoder is played by a browser; ending the WHIP session ends the tracks."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.clients.browser import closing, launch, make_fake_media, open_page, page_errors, wait_for
from tests.helpers import MediaParticipant, running_app, token
from tests.medstream.test_whip import post_sdp
from tests.support.rtc_peer import ClientPeer

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

ROOM = "lecture-1"
MEDIA = dict(media=True, ice_host_addresses=("127.0.0.1",), rooms=((ROOM, "broadcast"),))

FRAMES = """async ([type, kind, n]) => {
    const s = await window.whip.stats();
    const r = s.find(x => x.type === type && x.kind === kind);
    return r && (type === 'inbound-rtp' ? r.framesDecoded : r.framesEncoded) >= n ? r : null;
}"""


def page_url(app_url: str, mode: str, tok: str) -> str:
    return f"{app_url}/whip.html?mode={mode}&room={ROOM}&token={quote(tok)}"


async def test_browser_whip_presenter_seen_by_a_viewer_and_played_by_a_browser_over_whep(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    media = make_fake_media(tmp_path, "presenter", (200, 40, 40), 440.0)
    async with running_app(**MEDIA) as app, async_playwright() as pw:
        viewer = await MediaParticipant.join(app, token(ROOM, "student-1", "viewer"))
        async with closing(await launch(pw, media)) as presenter_browser, closing(await launch(pw)) as player_browser:
            presenter, presenter_log = await open_page(presenter_browser, page_url(app.url, "whip", token(
                ROOM, "dr-zhou", "host")), "whip")
            await wait_for(presenter, FRAMES, 20, ["outbound-rtp", "video", 30], "the browser encoding video")
            # a signaling viewer in the room gets the browser's tracks
            published = [(await viewer.ws.wait_type("track_published", timeout=20))["track"] for _ in range(2)]
            video_id = next(t["track_id"] for t in published if t["kind"] == "video")
            received = await viewer.peer.wait_track(video_id, 20)
            await received.wait_frames(30, 20)
            # a browser plays it over WHEP
            player, player_log = await open_page(player_browser, page_url(app.url, "whep", token(
                ROOM, "hall-3", "viewer")), "whep")
            stats = await wait_for(player, FRAMES, 20, ["inbound-rtp", "video", 30], "the WHEP page decoding video")
            assert stats["framesDecoded"] >= 30
            await wait_for(player, "async () => (await window.whip.stats()).some("
                                   "x => x.type === 'inbound-rtp' && x.kind === 'audio' && x.packetsReceived > 50)",
                           20, what="audio packets")
            # the presenter ends its session: its tracks leave the room
            await presenter.evaluate("async () => await window.whip.stop()")
            gone = {(await viewer.ws.wait_type("track_unpublished", timeout=10))["track_id"] for _ in range(2)}
            assert gone == {t["track_id"] for t in published}
            assert page_errors(presenter_log, player_log) == []
        await viewer.close()


async def test_an_aiortc_whip_encoder_is_played_by_a_browser() -> None:
    from playwright.async_api import async_playwright

    async with running_app(**MEDIA) as app, async_playwright() as pw:
        obs = ClientPeer("obs", video_codec="VP8", audio=True, fps=20)
        try:
            status, _, answer = await post_sdp(f"{app.url}/whip/{ROOM}", await obs.offer(),
                                               token(ROOM, "dr-zhou", "host"))
            assert status == 201, answer
            await obs.accept(answer)
            async with closing(await launch(pw)) as browser:
                page, log = await open_page(browser, page_url(app.url, "whep", token(ROOM, "hall-3", "viewer")), "whep")
                await wait_for(page, FRAMES, 20, ["inbound-rtp", "video", 30], "the WHEP page decoding the encoder")
                assert page_errors(log) == []
        finally:
            await obs.close()
