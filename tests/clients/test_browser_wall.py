"""The monitoring wall in real Chromium, fed by monitor-sim through a real medstream node.

bed-1 streams MIT-BIH record 100 (regular sinus rhythm); the heart rate the wall shows must be
within 2 bpm of the rate computed from the cardiologists' annotations the way the monitor computes
it (EC13 meter: mean of the smallest even number of latest RR intervals spanning >= 3 s). bed-2 is
synthetic ECG whose heart stops; bed-3 loses its network for a while and back-fills. bed-4 is
cudb cu01: sinus rhythm, ventricular fibrillation, sinus again, then a burst of noise: the VF
alarm latches after its condition ends until acknowledged, the noise technical alarm shows, and
the bed keeps an alarm history.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import wfdb

from clients.monitor_sim import (
    ArraySource,
    MonitorSimConfig,
    MonitorSimulator,
    RecordSource,
    SyntheticSource,
    parse_events,
)
from protocol.waveforms import ChannelInfo
from tests.clients.browser import closing, launch, open_page, page_errors, screenshot, wait_for
from tests.conftest import timeout_s
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser]

BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")
SPEED = 2.0  # simulated seconds per wall second


def reference_rates_bpm(record: Path, upto_sample: int, windows: int = 2) -> list[float]:
    """Monitor-style heart rate from reference annotations, for the windows ending at each of the
    last `windows` annotated beats at or before `upto_sample` (the display refreshes once a
    second, so it may lag the newest beat by one)."""
    ann = wfdb.rdann(str(record), "atr")
    beats = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS])
    fs = float(wfdb.rdheader(str(record)).fs)
    last = int(np.searchsorted(beats, upto_sample + int(0.15 * fs), side="right"))
    rates = []
    for end in range(last, last - windows, -1):
        rr_ms = np.diff(beats[max(0, end - 9):end]) * 1000.0 / fs
        n = 2
        while n + 2 <= rr_ms.size and rr_ms[-n:].sum() < 3000.0:
            n += 2
        rates.append(60000.0 / float(rr_ms[-n:].mean()))
    return rates


def vf_then_noise_source(ecg_data_dir: Path) -> ArraySource:
    """cu01 (250 Hz): 10 s sinus, 8 s VF (onset 214.2 s), 24 s sinus, 8 s sinus + 0.5 mV rms
    white noise, 30 s sinus; as 200 adu/mV integers."""
    rec = wfdb.rdrecord(str(ecg_data_dir / "cudb" / "cu01"), channels=[0])
    x = np.nan_to_num(rec.p_signal[:, 0])
    fs = int(rec.fs)
    part = lambda a, b: x[int(a * fs):int(b * fs)]  # noqa: E731
    noisy = part(140, 148) + 0.5 * np.random.default_rng(7).standard_normal(8 * fs)
    mv = np.concatenate([part(204, 222), part(100, 124), noisy, part(150, 180)])
    adu = np.round(mv * 200.0).astype(np.int16)[None, :]
    return ArraySource(adu, fs, (ChannelInfo("ECG", "mV", 200.0, 0),))


async def test_wall_heart_rate_alarms_and_catch_up(ecg_data_dir: Path) -> None:
    from playwright.async_api import async_playwright

    record = ecg_data_dir / "mitdb" / "100"
    async with running_app(waveforms=True, rooms=(("ward-3", "monitoring"),)) as app, async_playwright() as pw:
        def sim(source: object, bed: str, speed: float = SPEED) -> MonitorSimulator:
            return MonitorSimulator(source, MonitorSimConfig(  # type: ignore[arg-type]
                url=app.ws_url, token=token("ward-3", f"monitor-{bed}", "monitor"), stream_id=bed,
                speed=speed, reconnect_min_s=0.1, reconnect_max_s=0.5))

        beds = {
            "bed-1": sim(RecordSource(record), "bed-1"),
            "bed-2": sim(SyntheticSource(72.0, parse_events("asystole@8+60"), seed=1), "bed-2"),
            "bed-3": sim(SyntheticSource(60.0, seed=2), "bed-3"),
            "bed-4": sim(vf_then_noise_source(ecg_data_dir), "bed-4", speed=3.0),
        }
        tasks = [asyncio.create_task(s.run()) for s in beds.values()]
        try:
            async with closing(await launch(pw)) as browser:
                url = f"{app.url}/wall.html?token=" + token("ward-3", "nurse-1", "viewer", name="Nurse station")
                page, log = await open_page(browser, url, "wall", viewport=(1400, 900))
                await wait_for(page, "() => Object.keys(window.medstream.streams).length === 4",
                               what="four beds announced")

                # bed-1: heart rate against the annotations
                # state and screen read in one go: the rate refreshes every second
                snap = await wait_for(page, """() => { const s = window.medstream.streams['bed-1'];
                    const shown = document.querySelector('.bed[data-stream="bed-1"] [data-testid="hr"]');
                    return s.heartRateBpm !== null && s.beats >= 12 && shown
                        ? {...s, shownText: shown.textContent} : null; }""", timeout=30,
                                      what="bed-1 heart rate")
                refs = reference_rates_bpm(record, snap["lastBeatSample"])
                shown = snap["heartRateBpm"]
                assert min(abs(shown - r) for r in refs) <= 2.0, (shown, refs)
                assert abs(int(snap["shownText"]) - shown) <= 1, (snap["shownText"], shown)

                # bed-3: a network drop; back-filled samples arrive as `live: false` with a note
                beds["bed-3"].set_offline(True)
                await asyncio.sleep(1.5)
                beds["bed-3"].set_offline(False)
                # state and screen read in one go: the note is transient and clears once caught up
                caught_up = await wait_for(page, """() => { const s = window.medstream.streams['bed-3'];
                    const shown = document.querySelector('.bed[data-stream="bed-3"] .bed-notes');
                    return s.backfillChunks > 0 && s.notes.some(n => n.startsWith('catching up'))
                        && shown && shown.textContent.includes('catching up') ? s : null; }""",
                                           timeout=15, what="bed-3 catching-up note on screen")
                assert caught_up["lostSamples"] == 0

                # bed-2: asystole is a high-priority, flashing, sounding alarm until acknowledged
                alarm = await wait_for(page, """() => window.medstream.alarms.active.find(
                    a => a.stream === 'bed-2' && a.kind === 'asystole')""", timeout=30, what="asystole alarm")
                assert alarm["priority"] == "high" and not alarm["acknowledged"]
                assert await page.locator('.alarm.high.unacked[data-stream="bed-2"]').count() == 1
                assert "alarm-high" in (await page.locator('.bed[data-stream="bed-2"]').get_attribute("class") or "")
                await wait_for(page, "() => window.medstream.alarms.sounding === 'high' && window.medstream.alarms.bursts > 0",
                               what="alarm tone")
                assert await page.evaluate("window.medstream.streams['bed-2'].heartRateBpm") is None
                await screenshot(page, "wall_asystole")
                # what the click acknowledged, read in the same task as the click: an alarm raised
                # after it (a loaded machine delays a bed's samples) is rightly unacknowledged
                await page.get_by_role("button", name="Acknowledge / silence").wait_for()
                acked = await page.evaluate("""() => { const ack = document.getElementById('ack');
                    if (ack.disabled) return null; ack.click(); return window.medstream.alarms; }""")
                assert acked is not None and acked["sounding"] is None, acked
                assert [a["acknowledged"] for a in acked["active"] if a["kind"] == "asystole"] == [True]
                # the other beds stay quiet (bed-4 has VF by design)
                assert not [a for a in acked["active"] if a["stream"] not in ("bed-2", "bed-4")
                            and a["priority"] == "high"]

                # bed-4: VF is a high alarm on the wall; it latches after the VF ends
                vf = await wait_for(page, """() => window.medstream.alarms.active.find(
                    a => a.stream === 'bed-4' && a.kind === 'ventricular_fibrillation' && !a.acknowledged)""",
                                    timeout=30, what="VF alarm")
                assert vf["priority"] == "high"
                assert "VF / flutter" in await page.locator(
                    '.alarm.high.unacked[data-stream="bed-4"][data-kind="ventricular_fibrillation"]').inner_text()
                await wait_for(page, """() => window.medstream.latched.some(
                    a => a.key === 'bed-4/ventricular_fibrillation')
                    && !window.medstream.streams['bed-4'].alarms.some(a => a.kind === 'ventricular_fibrillation')""",
                               timeout=30, what="VF condition over, alarm latched")
                still = await page.evaluate("window.medstream.alarms.active.filter(a => a.stream === 'bed-4')")
                assert [a["acknowledged"] for a in still if a["kind"] == "ventricular_fibrillation"] == [False]
                assert "not acknowledged" in await page.locator(
                    '#alarms .alarm[data-stream="bed-4"][data-kind="ventricular_fibrillation"]').inner_text()  # the bar says it is latched
                # the noise burst: a technical alarm, shown with its wall text
                noise = await wait_for(page, """() => window.medstream.alarms.active.find(
                    a => a.stream === 'bed-4' && a.kind === 'noise')""", timeout=30, what="noise alarm")
                assert noise["priority"] == "medium"
                assert "ECG noise: cannot analyse" in await page.locator(
                    '.alarm[data-stream="bed-4"][data-kind="noise"]').inner_text()
                await screenshot(page, "wall_vf_latched_noise")
                await page.get_by_role("button", name="Acknowledge / silence").click()
                after = await page.evaluate("""() => ({latched: window.medstream.latched,
                    active: window.medstream.alarms.active.filter(a => a.stream === 'bed-4'),
                    history: window.medstream.alarmHistory('bed-4')})""")
                assert after["latched"] == []
                assert "ventricular_fibrillation" not in [a["kind"] for a in after["active"]]
                kinds = [e["kind"] for e in after["history"]]
                assert "ventricular_fibrillation" in kinds and "noise" in kinds
                vf_entry = next(e for e in after["history"] if e["kind"] == "ventricular_fibrillation")
                assert vf_entry["cleared"] is not None and vf_entry["priority"] == "high"
                assert await page.locator('.bed[data-stream="bed-4"] .bed-history li').count() >= 2
                assert page_errors(log) == []
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s(20))
