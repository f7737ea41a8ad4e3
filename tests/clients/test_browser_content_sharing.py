"""Content sharing between two real Chromium browsers: the inviting doctor shares a screen (CT,
ultrasound, pathology) as a second video track; the expert sees it large, at its own resolution,
forwarded as is, beside the doctor's camera."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients.browser import closing, launch, make_fake_media, open_page, page_errors, screenshot, wait_for
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]


async def test_a_shared_screen_reaches_the_expert_large_and_stops_cleanly(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    media_a = make_fake_media(tmp_path, "a", (220, 40, 40), 440.0)
    media_b = make_fake_media(tmp_path, "b", (40, 60, 220), 880.0)
    async with running_app(media=True, ice_host_addresses=("127.0.0.1",)) as app, async_playwright() as pw, \
            closing(await launch(pw, media_a)) as ba, closing(await launch(pw, media_b)) as bb:
            base = f"{app.url}/consultation.html?token="
            pa, la = await open_page(ba, base + token("consult-img", "dr-a", "host", kind="consultation",
                                                      name="Dr Adams"), "host")
            await wait_for(pa, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                           what="host publishing")
            pb, lb = await open_page(bb, base + token("consult-img", "dr-b", "expert", name="Dr Baker"), "expert")
            await wait_for(pb, "() => window.medstream.state === 'joined'", what="expert joined")

            await pa.locator("#share").click()
            await wait_for(pa, "() => window.medstream.sharing", what="host sharing")
            screen = await wait_for(
                pb, "() => { const t = window.medstream.room.tracks.find(t => t.source === 'screen'); return t || null; }",
                what="a screen track announced")
            assert screen["kind"] == "video" and "/screen/" in screen["track_id"]
            content = await wait_for(pb, "() => { const c = window.medstream.content; return c && c.width > 0 ? c : null; }",
                                     what="the expert shows the shared screen")
            host_id = await pa.evaluate("window.medstream.participant.participant_id")
            assert content["participantId"] == host_id
            assert content["width"] >= 640, content  # the screen's own size, not the camera's 640x480 cap
            # the camera stays in the doctor's own tile: two video tracks from one participant
            cams = await pb.evaluate("(pid) => window.medstream.room.tracks.filter(t => t.participant_id === pid && t.kind === 'video').map(t => t.source)", host_id)
            assert sorted(cams) == ["camera", "screen"]
            assert await pb.locator("#content").is_visible()
            assert "Dr Adams" in await pb.locator("#content .content-label").inner_text()
            await screenshot(pb, "consultation_shared_screen")

            await pa.locator("#share").click()  # stop sharing
            await wait_for(pb, "() => !window.medstream.room.tracks.some(t => t.source === 'screen') && !window.medstream.content",
                           what="the shared screen is gone for the expert")
            assert await pb.locator("#content").is_hidden()
            assert page_errors(la, lb) == []
