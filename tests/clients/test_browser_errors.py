"""Failures the pages explain in plain words, with times in the viewer's own time zone.

A township doctor opening an expired link, a link for a session that has not started, a link
without its token, in Chinese and English: the banner says what happened and what to do next,
shows the link's expiry in local time (the machine here runs in UTC; the viewer in Beijing time),
and never a raw protocol code. The wall's clock is local time too.
"""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from tests.clients.browser import closing, launch, open_page, page_errors, wait_for
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser]

RAW_CODES = ("token_expired", "unknown_room", "invalid_token", "room_ended", "_")
BEIJING = ZoneInfo("Asia/Shanghai")


async def test_error_banners_are_sentences_with_local_times() -> None:
    from playwright.async_api import async_playwright

    async with running_app(rooms=(("ward-9", "monitoring"),), waveforms=True) as app, async_playwright() as pw, \
            closing(await launch(pw)) as browser:
        expired_at = int(time.time()) - 3600
        expired = token("consult-x", "dr-zhang", "expert", name="张医生", valid_from=expired_at - 3600,
                        valid_for_s=3600)
        page, log = await open_page(browser, f"{app.url}/consultation.html?token={expired}", "expired",
                                    locale="zh-CN", timezone="Asia/Shanghai")
        text = await wait_for(page, "() => !document.getElementById('banner').hidden && document.getElementById('banner').textContent",
                              what="the expired-link banner")
        local = dt.datetime.fromtimestamp(expired_at, BEIJING)
        assert "此链接已过期" in text and "新的链接" in text, text
        assert local.strftime("%H:%M:%S") in text, (text, local)  # Beijing time, not UTC
        assert not any(code in text for code in RAW_CODES), text
        # the same page in English after the switch
        await page.select_option("#lang", "en")
        text = await page.locator("#banner").inner_text()
        assert "This link has expired" in text and local.strftime("%H:%M:%S") in text, text

        nowhere = token("consult-not-yet", "dr-li", "expert", name="李医生")
        page2, log2 = await open_page(browser, f"{app.url}/consultation.html?token={nowhere}", "unknown room",
                                      locale="zh-CN")
        text = await wait_for(page2, "() => !document.getElementById('banner').hidden && document.getElementById('banner').textContent",
                              what="the unknown-room banner")
        assert "找不到这个会话" in text and not any(code in text for code in RAW_CODES), text

        page3, log3 = await open_page(browser, f"{app.url}/wall.html", "no token", locale="en-US")
        text = await wait_for(page3, "() => !document.getElementById('banner').hidden && document.getElementById('banner').textContent",
                              what="the no-token banner")
        assert "no access token" in text and "wall.html?token=" in text, text

        wall, log4 = await open_page(browser, f"{app.url}/wall.html?token=" + token("ward-9", "nurse-9", "viewer"),
                                     "wall", locale="zh-CN", timezone="Asia/Shanghai")
        clock = await wait_for(wall, "() => document.getElementById('clock').textContent", what="the wall clock")
        shown = dt.datetime.strptime(clock, "%H:%M:%S").time()
        now = dt.datetime.now(BEIJING)
        delta = abs((dt.datetime.combine(now.date(), shown, BEIJING) - now).total_seconds())
        assert min(delta, 86400 - delta) < 5, (clock, now)

        index, log5 = await open_page(browser, f"{app.url}/", "index", locale="zh-CN", viewport=(390, 844))
        assert await index.evaluate("document.documentElement.lang") == "zh-CN"
        assert "中央监护墙" in await index.inner_text("body")
        assert await index.evaluate("document.documentElement.scrollWidth <= innerWidth")
        # a browser in neither language gets Chinese, the default
        other, log6 = await open_page(browser, f"{app.url}/", "index fr", locale="fr-FR")
        assert await other.evaluate("[navigator.languages[0], document.documentElement.lang]") == ["fr-FR", "zh-CN"]
        assert page_errors(log, log2, log3, log4, log5, log6) == []
