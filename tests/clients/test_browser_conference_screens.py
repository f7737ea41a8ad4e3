"""Consultation and broadcast pages on desktop, tablet and phone, in both languages, in Chromium;
and the end of a consultation really ends everything on the expert's screen.

- buttons in Chinese for a Chinese browser, in English for an English one;
- at 1366x768, 1024x768, 768x1024 and 390x844 nothing scrolls sideways and the controls are on
  screen; the broadcast's side panel sits beside the stage in landscape and below it in portrait;
- while media flows the badge is a real grade and no media warning shows;
- "End consultation": the expert's videos, audio, peer connection, camera and ECG stop and clear
  (no frozen frame, no live-looking ECG behind the banner).
Screenshots: tests/artifacts/consultation_*.png, broadcast_*.png.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from clients.monitor_sim import MonitorSimConfig, MonitorSimulator, RecordSource
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
from tests.conftest import timeout_s
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

SIZES = [(1366, 768), (1024, 768), (768, 1024), (390, 844)]

OVERFLOW_JS = """() => {
  const box = (e) => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, w: r.width}; };
  const visible = (e) => e.offsetParent !== null;
  const controls = [...document.querySelectorAll('.bar button, .bar select, header select')].filter(visible).map(box);
  const tiles = [...document.querySelectorAll('.tile')].filter(visible).map(box);
  const main = document.querySelector('.stage-main'), side = document.querySelector('aside.side');
  return { w: innerWidth, h: innerHeight, scrollWidth: document.documentElement.scrollWidth, controls, tiles,
           stage: main ? box(main) : null, side: side ? box(side) : null };
}"""


def assert_no_sideways(geo: dict[str, Any], what: str) -> None:
    assert geo["scrollWidth"] <= geo["w"], f"{what}: scrolls sideways ({geo['scrollWidth']} > {geo['w']})"
    for b in geo["controls"] + geo["tiles"]:
        assert b["left"] >= -0.5 and b["right"] <= geo["w"] + 0.5, f"{what}: off screen sideways: {b}"


async def texts(page: Page, ids: list[str]) -> dict[str, str]:
    return await page.evaluate("(ids) => Object.fromEntries(ids.map(i => [i, document.getElementById(i).textContent.trim()]))", ids)


async def at_size(page: Page, w: int, h: int) -> dict[str, Any]:
    await page.set_viewport_size({"width": w, "height": h})
    return await wait_for(page, f"() => {{ const g = ({OVERFLOW_JS})(); return g.w === {w} ? g : null; }}",
                          what=f"viewport {w}x{h}")


async def test_consultation_screens_languages_and_the_end(tmp_path: Path, ecg_data_dir: Path) -> None:
    from playwright.async_api import async_playwright

    media = make_fake_media(tmp_path, "cam", (40, 60, 220), 660.0)
    async with running_app(media=True, waveforms=True, ice_host_addresses=("127.0.0.1",)) as app, \
            async_playwright() as pw, closing(await launch(pw, media)) as browser:
        url = f"{app.url}/consultation.html?token="
        host, host_log = await open_page(browser, url + token("consult-7", "dr-wang", "host", kind="consultation",
                                                              name="王医生"), "host", locale="zh-CN")
        host.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await wait_for(host, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                       what="host publishing")
        monitor = MonitorSimulator(RecordSource(ecg_data_dir / "mitdb" / "100", loop=True), MonitorSimConfig(
            url=app.ws_url, token=token("consult-7", "monitor-7", "monitor"), stream_id="patient"))
        sim = asyncio.create_task(monitor.run())
        try:
            expert, expert_log = await open_page(browser, url + token("consult-7", "dr-smith", "expert",
                                                                      name="Dr Smith"), "expert", locale="en-US")
            await wait_for(expert, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                           what="expert publishing")
            host_id = await host.evaluate("window.medstream.participant.participant_id")
            await wait_receiving(expert, host_id, app=app)
            await wait_for(expert, "() => window.medstream.streams.patient && window.medstream.streams.patient.heartRateBpm",
                           timeout=20, what="patient ECG on the expert's page")

            # words: Chinese for the host, English for the expert
            assert await host.evaluate("document.documentElement.lang") == "zh-CN"
            assert await texts(host, ["mic", "cam", "audioonly", "record", "end", "leave"]) == {
                "mic": "静音", "cam": "关闭摄像头", "audioonly": "仅音频", "record": "开始录制",
                "end": "结束会诊", "leave": "离开"}
            assert await expert.evaluate("document.documentElement.lang") == "en-GB"
            assert await texts(expert, ["mic", "cam", "audioonly", "leave"]) == {
                "mic": "Mute", "cam": "Camera off", "audioonly": "Audio only", "leave": "Leave"}
            assert await expert.locator("#hostctl").is_hidden()  # permissions from the server: no moderation
            assert "主持人" in await host.locator("#room").inner_text()
            # media flows: a real grade, no warning
            badge = await wait_for(expert, """(pid) => { const q = document.querySelector(`.tile[data-participant="${pid}"] .quality`);
                return q && ['good', 'fair', 'poor'].includes(q.dataset.grade) ? q.textContent : null; }""",
                                   arg=host_id, timeout=15, what="a quality grade for the host's tile")
            assert "no media" not in badge
            assert await expert.locator("#mediabanner").is_hidden() and await host.locator("#mediabanner").is_hidden()
            assert await expert.evaluate("window.medstream.media.state") == "connected"

            for w, h in SIZES:
                for page, who in ((host, "host"), (expert, "expert")):
                    geo = await at_size(page, w, h)
                    assert_no_sideways(geo, f"consultation {who} {w}x{h}")
                await screenshot(host, f"consultation_zh_{w}x{h}")
            await screenshot(expert, "consultation_en_390x844")
            await expert.set_viewport_size({"width": 1024, "height": 768})
            await host.set_viewport_size({"width": 1024, "height": 768})

            # the host ends the consultation: everything on the expert's page stops and clears
            await host.locator("#end").click()
            await wait_for(expert, "() => window.medstream.ended", what="expert sees the end")
            end = await wait_for(expert, """() => new Promise(r => setTimeout(() => {
                const c = window.medstream.conference;
                const ink = [...document.querySelectorAll('#ecg canvas.trace')].map(cv => {
                    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
                    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; });
                r({ media: [...document.querySelectorAll('video, audio')].map(m => ({src: m.srcObject !== null, paused: m.paused})),
                    pc: window.medstream.pc === null, local: c.localStream === null, publishing: window.medstream.publishing,
                    ink, hr: [...document.querySelectorAll('#ecg [data-testid="hr"]')].map(e => e.textContent),
                    banner: document.getElementById('banner').textContent, state: window.medstream.state,
                    badges: [...document.querySelectorAll('.tile .quality')].map(q => q.textContent) });
            }, 500))""", what="the expert's page after the end")
            assert end["media"] and all(not m["src"] for m in end["media"]), f"media still attached: {end['media']}"
            assert end["pc"] and end["local"] and not end["publishing"], end
            assert end["ink"] and all(n == 0 for n in end["ink"]), f"ECG trace left behind the banner: {end['ink']}"
            assert all(not any(ch.isdigit() for ch in text) for text in end["hr"]), end["hr"]
            assert "ended" in end["banner"] and end["state"] == "ended", end
            assert all(b == "no media" for b in end["badges"]), end["badges"]
            later = await expert.evaluate("""() => new Promise(r => setTimeout(() => r(
                [...document.querySelectorAll('#ecg canvas.trace')].map(cv => {
                    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
                    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })), 1000))""")
            assert all(n == 0 for n in later), later
            await screenshot(expert, "consultation_ended_expert")
            await wait_for(host, "() => window.medstream.ended && window.medstream.pc === null", what="host ended too")
            assert "结束" in await host.locator("#banner").inner_text()
            assert page_errors(host_log, expert_log) == []
        finally:
            sim.cancel()
            await asyncio.wait_for(asyncio.gather(sim, return_exceptions=True), timeout_s(20))


async def test_broadcast_stacks_in_portrait_and_speaks_both_languages(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    media = make_fake_media(tmp_path, "presenter", (220, 40, 40), 440.0)
    async with running_app(media=True, ice_host_addresses=("127.0.0.1",)) as app, async_playwright() as pw, \
            closing(await launch(pw, media)) as browser:
        url = f"{app.url}/broadcast.html?token="
        host, host_log = await open_page(browser, url + token("rounds-3", "prof-zhao", "host", kind="broadcast",
                                                              name="赵教授"), "presenter", locale="zh-CN")
        await wait_for(host, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                       what="presenter publishing")
        viewer, viewer_log = await open_page(browser, url + token("rounds-3", "student-1", "viewer", name="Student 1"),
                                             "viewer", locale="en-US")
        host_id = await host.evaluate("window.medstream.participant.participant_id")
        await wait_receiving(viewer, host_id, app=app)
        assert (await viewer.locator("#hand").inner_text()).strip() == "Raise hand"
        assert await host.locator("#hand").is_hidden()  # the host may not raise a hand (server's permissions)
        assert await texts(host, ["record", "end", "leave", "audioonly"]) == {
            "record": "开始录制", "end": "结束直播", "leave": "离开", "audioonly": "仅音频"}
        await viewer.locator("#hand").click()
        hand = host.locator("#hands li")
        await hand.wait_for(timeout=timeout_s(10) * 1000)
        assert "请他发言" in await hand.inner_text() and "举手" in await hand.inner_text()

        for w, h in SIZES:
            for page, who in ((host, "presenter"), (viewer, "viewer")):
                geo = await at_size(page, w, h)
                assert_no_sideways(geo, f"broadcast {who} {w}x{h}")
                stage, side = geo["stage"], geo["side"]
                if w > h:  # landscape: the side panel beside the stage
                    assert side["left"] >= stage["right"] - 0.5, f"{who} {w}x{h}: side panel not beside the stage"
                else:  # portrait: stacked, full width, no fixed 300 px column
                    assert side["top"] >= stage["bottom"] - 0.5, f"{who} {w}x{h}: side panel not below the stage"
                    assert side["w"] >= 0.9 * stage["w"], f"{who} {w}x{h}: side panel not full width"
            await screenshot(host, f"broadcast_zh_{w}x{h}")
            await screenshot(viewer, f"broadcast_en_{w}x{h}")
        assert page_errors(host_log, viewer_log) == []
