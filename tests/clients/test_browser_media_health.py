"""A media connection that cannot come up, or drops, is said in plain words, in real Chromium.

The server offers an ICE address no browser can reach (192.0.2.10, TEST-NET-1, not on this
machine): signaling works, media never does - a clinic behind a firewall, a wrong `--ice-host`.
Within 10 s the page must say so (what failed, what to check), the status pill and quality badge
must say "no media" (never "good"), and the page must retry with a fresh session by itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.clients.browser import (
    closing,
    launch,
    make_fake_media,
    open_page,
    page_errors,
    screenshot,
    wait_for,
    wait_receiving,
)
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

UNREACHABLE = "192.0.2.10"


async def test_unreachable_media_server_is_reported_within_10_s_and_retried(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    media = make_fake_media(tmp_path, "a", (220, 40, 40), 440.0)
    async with running_app(media=True, ice_host_addresses=(UNREACHABLE,)) as app, async_playwright() as pw, \
            closing(await launch(pw, media)) as browser:
        url = f"{app.url}/consultation.html?token=" + token("consult-ice", "dr-li", "host", kind="consultation",
                                                            name="李医生")
        loop = asyncio.get_running_loop()
        opened_at = loop.time()
        page, log = await open_page(browser, url, "host", locale="zh-CN")
        await wait_for(page, "() => window.medstream && window.medstream.state === 'joined'", what="joined")
        shown = await wait_for(page, """() => { const b = document.getElementById('mediabanner');
            return !b.hidden && b.textContent ? b.textContent : null; }""", timeout=10,
                               what="the cannot-reach-media message")
        assert loop.time() - opened_at < 10 + 2, "message later than 10 s after the page opened"
        assert "无法连接媒体服务器" in shown and "防火墙" in shown and "TURN" in shown, shown
        # (the first fresh-session attempt may be under way: the pill says "reconnecting" then)
        state = await wait_for(page, """() => { const s = { media: window.medstream.media,
            pill: document.getElementById('state').textContent,
            badges: [...document.querySelectorAll('.tile .quality')].map(q => [q.dataset.grade, q.textContent]) };
            return window.medstream.state === 'joined' && s.badges.length ? s : null; }""",
                               what="joined again after the first attempt")
        assert state["media"]["state"] == "unreachable", state
        assert state["media"]["connectionState"] != "connected", state
        assert state["pill"] == "已连接 · 无音视频", state
        assert state["badges"] and all(g == "no_media" and "良好" not in text for g, text in state["badges"]), state
        await screenshot(page, "media_unreachable_zh")
        # it retries by itself (a fresh session: new participant, new server peer, new ICE) and
        # keeps saying so while media stays down
        await wait_for(page, "() => window.medstream.media.restarts >= 2 && window.medstream.state === 'joined'",
                       timeout=30, what="a second attempt")
        again = await page.evaluate("() => ({b: document.getElementById('mediabanner').textContent, m: window.medstream.media})")
        assert "无法连接媒体服务器" in again["b"] and again["m"]["state"] == "unreachable", again
        # one participant in the room: the old sessions left, no ghosts of ourselves
        others = await page.evaluate("() => window.medstream.participants.filter(p => p.identity === 'dr-li').length")
        assert others == 0, others
        # English on request, same message in English
        await page.select_option("#lang", "en")
        text = await page.locator("#mediabanner").inner_text()
        assert "Cannot reach the media server" in text and "firewall" in text, text
        assert (await page.locator(".tile .quality").first.inner_text()) == "no media"
        assert page_errors(log) == []


async def test_dropped_media_is_reported_and_comes_back_by_itself(tmp_path: Path) -> None:
    """Media works, then the server's end of the expert's peer connection goes away (as when a
    clinic's NAT mapping or firewall state is lost): the expert's page says media dropped, starts
    a fresh session by itself, and both doctors see and hear each other again."""
    from playwright.async_api import async_playwright

    media = make_fake_media(tmp_path, "b", (40, 60, 220), 880.0)
    async with running_app(media=True, ice_host_addresses=("127.0.0.1",)) as app, async_playwright() as pw, \
            closing(await launch(pw, media)) as browser:
        url = f"{app.url}/consultation.html?token="
        host, host_log = await open_page(browser, url + token("consult-drop", "dr-a", "host", kind="consultation",
                                                              name="Dr A"), "host")
        await wait_for(host, "() => window.medstream.state === 'joined' && window.medstream.publishing", what="host")
        expert, expert_log = await open_page(browser, url + token("consult-drop", "dr-b", "expert", name="Dr B"),
                                             "expert")
        await wait_for(expert, "() => window.medstream.state === 'joined' && window.medstream.publishing", what="expert")
        host_id = await host.evaluate("window.medstream.participant.participant_id")
        old_expert = await expert.evaluate("window.medstream.participant.participant_id")
        await wait_receiving(expert, host_id, app=app)
        assert await expert.evaluate("window.medstream.media.state") == "connected"

        await app.media.close_peer(old_expert)  # the server's side of the media path is gone
        dropped = await wait_for(expert, """() => window.medstream.media.history.find(
            h => h.state === 'dropped' && h.message)""", timeout=25, what="the media-dropped message")
        assert "dropped" in dropped["message"] and "firewall" in dropped["message"], dropped
        await wait_for(expert, "() => window.medstream.media.state === 'connected'", timeout=20,
                       what="media back by itself")
        new_expert = await expert.evaluate("window.medstream.participant.participant_id")
        assert new_expert != old_expert  # a fresh session
        await wait_receiving(expert, host_id, app=app)
        await wait_receiving(host, new_expert, app=app)
        await wait_for(expert, "() => document.getElementById('mediabanner').hidden", what="message gone")
        # the host sees one Dr B, not a ghost of the old session
        others = await wait_for(host, """() => { const ps = window.medstream.participants.filter(p => p.identity === 'dr-b');
            return ps.length === 1 ? ps : null; }""", what="one Dr B on the host's page")
        assert others[0]["participant_id"] == new_expert
        assert page_errors(host_log, expert_log) == []
