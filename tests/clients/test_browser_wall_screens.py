"""The monitoring wall on the screens it is used on, in both languages, in real Chromium.

A 4-bed ward (three MIT-BIH records and a synthetic bed whose heart stops) through a real node:
- at 1366x768, 1024x768 (the clinics' PAD tablets), 768x1024 and 390x844 every bed is on screen
  without scrolling, nothing scrolls sideways, every heart rate is inside its bed and the screen;
- rotating the tablet (1024x768 -> 768x1024) keeps the ECG sweep drawn;
- Chinese by default for a Chinese browser (button, alarm, numerics labels, <html lang>), English
  after the switch, remembered over a reload;
- a wall PC with the browser's normal autoplay policy asks for the click that enables the alarm
  sound, and says when sound is off;
- when the session ends every sweep stops and blanks, numbers and alarms clear.
Screenshots: tests/artifacts/wall_*.png.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from clients.monitor_sim import (
    MonitorSimConfig,
    MonitorSimulator,
    RecordSource,
    SyntheticSource,
    parse_events,
)
from tests.clients.browser import closing, launch, open_page, page_errors, screenshot, wait_for
from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token

pytestmark = [pytest.mark.browser]

SIZES = [(1366, 768), (1024, 768), (768, 1024), (390, 844)]
BEDS = ("bed-1", "bed-2", "bed-3", "bed-4")

# Geometry of the page, read in one evaluate: boxes of every bed and heart rate, overflow.
GEOMETRY_JS = """() => {
  const box = (e) => { const r = e.getBoundingClientRect();
                       return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; };
  const beds = [...document.querySelectorAll('.bed')].map(b => ({
      stream: b.dataset.stream, bed: box(b), hr: box(b.querySelector('[data-testid="hr"]')),
      hrText: b.querySelector('[data-testid="hr"]').textContent }));
  const main = document.querySelector('main');
  return { w: innerWidth, h: innerHeight, scrollWidth: document.documentElement.scrollWidth,
           scrollHeight: document.documentElement.scrollHeight,
           mainScrolls: main.scrollHeight > main.clientHeight + 1, beds,
           ack: box(document.getElementById('ack')) };
}"""

INK_JS = "() => window.medstream.traceInk()"


def inside(inner: dict[str, float], outer: dict[str, float], slack: float = 0.5) -> bool:
    return (inner["left"] >= outer["left"] - slack and inner["top"] >= outer["top"] - slack
            and inner["right"] <= outer["right"] + slack and inner["bottom"] <= outer["bottom"] + slack)


def assert_fits(geo: dict[str, Any], size: tuple[int, int]) -> None:
    screen = {"left": 0, "top": 0, "right": geo["w"], "bottom": geo["h"]}
    assert (geo["w"], geo["h"]) == size, geo
    assert geo["scrollWidth"] <= geo["w"], f"{size}: scrolls sideways ({geo['scrollWidth']} > {geo['w']})"
    assert geo["scrollHeight"] <= geo["h"] and not geo["mainScrolls"], f"{size}: the beds need scrolling"
    assert sorted(b["stream"] for b in geo["beds"]) == list(BEDS), geo["beds"]
    for b in geo["beds"]:
        assert inside(b["bed"], screen), f"{size}: {b['stream']} not on screen: {b['bed']}"
        assert inside(b["hr"], b["bed"]) and inside(b["hr"], screen), f"{size}: {b['stream']} HR cut off: {b}"
    assert inside(geo["ack"], screen), f"{size}: acknowledge button off screen"


async def test_wall_on_four_screens_in_two_languages_then_ended(ecg_data_dir: Path) -> None:
    from playwright.async_api import async_playwright

    async with running_app(waveforms=True, rooms=(("ward-5", "monitoring"),)) as app, async_playwright() as pw:
        def sim(source: object, bed: str) -> MonitorSimulator:
            return MonitorSimulator(source, MonitorSimConfig(  # type: ignore[arg-type]
                url=app.ws_url, token=token("ward-5", f"monitor-{bed}", "monitor"), stream_id=bed,
                reconnect_min_s=0.1, reconnect_max_s=0.5))

        mitdb = ecg_data_dir / "mitdb"
        sims = [sim(RecordSource(mitdb / rec, loop=True), bed)
                for rec, bed in (("100", "bed-1"), ("112", "bed-2"), ("208", "bed-3"))]
        sims.append(sim(SyntheticSource(72.0, parse_events("asystole@3+600"), seed=4), "bed-4"))
        tasks = [asyncio.create_task(s.run()) for s in sims]
        try:
            async with closing(await launch(pw)) as browser, closing(await launch(pw, autoplay=False)) as quiet:
                url = f"{app.url}/wall.html?token=" + token("ward-5", "nurse-5", "supervisor", name="护士站")
                page, log = await open_page(browser, url, "wall", viewport=SIZES[0], locale="zh-CN")
                await wait_for(page, """() => { const s = Object.values(window.medstream.streams);
                    return s.length === 4 && s.filter(x => x.heartRateBpm !== null).length >= 3; }""",
                               timeout=30, what="four beds, three with a heart rate")

                # Chinese for a Chinese browser
                assert await page.evaluate("document.documentElement.lang") == "zh-CN"
                assert (await page.locator("#ack").inner_text()).strip() == "确认 / 消音"
                assert "心率" in await page.locator('.bed[data-stream="bed-1"] .num.hr .num-label').inner_text()
                alarm = page.locator('.alarm[data-stream="bed-4"][data-kind="asystole"]')
                await alarm.wait_for(timeout=timeout_s(30) * 1000)
                assert "心脏停搏" in await alarm.inner_text()
                assert "心脏停搏" in await page.locator('.bed[data-stream="bed-4"] .bed-alarm').inner_text()
                # sound allowed by this browser's flags: no request for a click, "on"
                assert await page.locator("#sound").is_hidden()
                assert await page.evaluate("window.medstream.alarms.sound") == "on"

                for w, h in SIZES:
                    await page.set_viewport_size({"width": w, "height": h})
                    geo = await wait_for(page, f"""() => {{ const g = ({GEOMETRY_JS})();
                        return g.w === {w} && g.h === {h} && g.scrollWidth <= g.w && !g.mainScrolls
                            && g.scrollHeight <= g.h ? g : null; }}""", what=f"layout settled at {w}x{h}")
                    assert_fits(geo, (w, h))
                    await wait_for(page, "() => [...document.querySelectorAll('[data-testid=\"hr\"]')]"
                                         ".filter(e => /^\\d+$/.test(e.textContent)).length >= 3",
                                   what=f"heart rates shown at {w}x{h}")
                    await screenshot(page, f"wall_zh_{w}x{h}")

                # rotating the tablet keeps the sweep: a full screen drawn, then turned
                await page.set_viewport_size({"width": 1024, "height": 768})
                # (enough trace for the wider portrait sweep: 598 px of wave at 768 px)
                await wait_for(page, f"() => {{ const i = ({INK_JS})(); return Object.values(i).filter(x => x.columns > 0.85 && x.drawnPx > 650).length >= 3; }}",
                               timeout=20, what="a full sweep drawn on three beds")
                await page.set_viewport_size({"width": 768, "height": 1024})
                ink = await wait_for(page, f"""() => new Promise(r => requestAnimationFrame(() => {{
                    const i = ({INK_JS})(); r(innerWidth === 768 && Object.values(i).every(x => x.width > 0) ? i : null); }}))""",
                                     what="rotated")
                kept = {k: v["columns"] for k, v in ink.items() if k != "bed-4"}
                assert all(c > 0.6 for c in kept.values()), f"sweep cleared by the rotation: {ink}"
                assert all(v["redraws"] > 0 for k, v in ink.items() if k != "bed-4"), ink

                # English on request, remembered over a reload
                await page.select_option("#lang", "en")
                assert await page.evaluate("document.documentElement.lang") == "en-GB"
                assert (await page.locator("#ack").inner_text()).strip() == "Acknowledge / silence"
                await wait_for(page, """() => document.querySelector('.alarm[data-stream="bed-4"]')
                    && document.querySelector('.alarm[data-stream="bed-4"]').textContent.includes('Asystole')""",
                               what="alarm text in English")
                assert "HR" in await page.locator('.bed[data-stream="bed-1"] .num.hr .num-label').inner_text()
                await screenshot(page, "wall_en_768x1024")
                await page.reload()
                await wait_for(page, "() => window.medstream && window.medstream.state === 'joined'", what="joined after reload")
                assert await page.evaluate("document.documentElement.lang") == "en-GB"
                assert (await page.locator("#ack").inner_text()).strip() == "Acknowledge / silence"
                assert await page.evaluate("localStorage.getItem('medstream.lang')") == "en"

                # a wall PC whose browser needs a click before it may sound: a second screen has
                # its own link (one live connection per identity: the same link would take over)
                qurl = f"{app.url}/wall.html?token=" + token("ward-5", "nurse-5-pc2", "supervisor", name="护士站 2")
                qpage, qlog = await open_page(quiet, qurl, "quiet wall", viewport=(1024, 768), locale="zh-CN")
                await wait_for(qpage, "() => window.medstream && window.medstream.state === 'joined'", what="quiet wall joined")
                # what the page showed before anyone touched it (Playwright's own calls count as
                # user activation, so the page's log of what it showed is read, not only the DOM)
                first = (await qpage.evaluate("window.medstream.soundLog"))[0]
                assert first["state"] == "off" and first["button"] and first["userActivated"] is False, first
                assert first["buttonText"] == "点击启用报警声音" and first["pill"] == "报警声音未开启", first
                sound = qpage.locator("#sound")
                await qpage.locator('.alarm[data-stream="bed-4"]').wait_for(timeout=timeout_s(30) * 1000)
                await wait_for(qpage, "() => window.medstream.alarms.silentBursts > 0", what="an alarm that could not be heard")
                assert await sound.is_visible()  # an alarm that cannot sound keeps asking for the click
                assert (await qpage.locator("#soundstate").inner_text()).strip() == "报警声音未开启"
                assert await qpage.evaluate("window.medstream.alarms.sound") == "off"
                await screenshot(qpage, "wall_sound_off_1024x768")
                await sound.click()
                await wait_for(qpage, "() => window.medstream.alarms.sound === 'on'", what="sound on after the click")
                await wait_for(qpage, "() => document.getElementById('sound').hidden", what="the request for a click gone")
                assert (await qpage.locator("#soundstate").inner_text()).strip() == "报警声音已开启"

                # the session ends: sweeps stop and blank, numbers and alarms clear
                host = await WsClient.connect(app.ws_url)
                try:
                    joined = await host.join(token("ward-5", "charge-nurse", "host", kind="monitoring"))
                    assert joined["type"] == "joined", joined
                    await host.send({"type": "end_room", "id": "end"})  # the socket closes with `bye`
                    await host.closed(timeout=timeout_s(10))
                finally:
                    await host.close()
                await wait_for(page, "() => window.medstream.ended", what="wall ended")
                ended = await wait_for(page, f"""() => new Promise(r => setTimeout(() => {{
                    const i = ({INK_JS})();
                    r({{ink: i, hr: [...document.querySelectorAll('[data-testid="hr"]')].map(e => e.textContent),
                        alarms: window.medstream.alarms.active.length, sounding: window.medstream.alarms.sounding,
                        banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,
                        newest: Object.values(window.medstream.streams).map(s => s.newestSample)}}); }}, 500))""",
                                       what="state after the end")
                assert all(v["columns"] == 0 for v in ended["ink"].values()), f"trace left on screen: {ended['ink']}"
                assert all(not any(ch.isdigit() for ch in text) for text in ended["hr"]), ended["hr"]
                assert ended["alarms"] == 0 and ended["sounding"] is None, ended
                assert ended["banner"] and "ended" in ended["banner"].lower(), ended["banner"]
                assert "protocol" not in ended["banner"] and "_" not in ended["banner"], ended["banner"]
                later = await wait_for(page, f"""() => new Promise(r => setTimeout(() => r(({INK_JS})()), 1000))""",
                                       what="still blank a second later")
                assert all(v["columns"] == 0 for v in later.values()), later
                await screenshot(page, "wall_ended")
                qended = await wait_for(qpage, "() => window.medstream.ended && document.getElementById('banner').textContent",
                                        what="quiet wall ended")
                assert "结束" in qended and "_" not in qended, qended
                assert page_errors(log, qlog) == []
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s(20))
