"""Remote 12-lead reading in headless Chromium through a real node.

A township clinic's page uploads a WFDB record; the ECG centre's page shows it in the queue
behind a suspected STEMI; the reader opens it and the 12-lead view is measured on the canvas
pixels (a 1 mV calibration pulse is 10 mm tall and 200 ms is 5 mm wide, 5 mm between major grid
lines, R waves of a 75 bpm synthetic ECG 20 mm apart: 25 mm/s and 10 mm/mV against the page's
px/mm); calipers read 800 ms; the signed report reaches the clinic's page live. Then one click
on each side opens the request's live consultation with the ECG drawn on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from dsp.ecg12.synthetic import SyntheticParams, synthesize
from readings.wfdb_format import encode_record
from tests.clients.browser import closing, launch, make_fake_media, open_page, page_errors, screenshot, wait_for
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser]

CENTRE = "county-ecg"
HR_BPM = 75.0  # RR 800 ms = 20 mm at 25 mm/s


def synthetic_record(directory: Path) -> list[str]:
    """A regular 75 bpm 12-lead ECG (no wander, no jitter) as WFDB files; returns their paths."""
    ecg, _ = synthesize(SyntheticParams(heart_rate_bpm=HR_BPM, rr_jitter=0.0, wander_mv=0.0, noise_uv=2.0,
                                        mains_uv=0.0), np.random.default_rng(7))
    paths = []
    for name, data in encode_record(ecg, "syn75", ("sex: M", "age: 50")).items():
        (directory / name).write_bytes(data)
        paths.append(str(directory / name))
    return sorted(paths)


def desk(org: str, who: str, role: str, name: str) -> str:
    return token(f"readings.{org}", who, role, name=name, valid_for_s=3600)


async def upload_stemi(base: str, ecg_data_dir: Path, clinic_token: str) -> str:
    rec = ecg_data_dir / "12lead" / "cpsc2018" / "A0021"
    form = aiohttp.FormData()
    for k, v in (("referral_id", "ZY-STEMI"), ("patient_id", "P-STE"), ("sex", "M"), ("age", "67")):
        form.add_field(k, v)
    for ext in (".hea", ".mat"):
        form.add_field("file", rec.with_suffix(ext).read_bytes(), filename=rec.name + ext)
    async with aiohttp.ClientSession() as http, http.post(
            f"{base}/readings", data=form, headers={"Authorization": f"Bearer {clinic_token}"}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["request"]["request_id"])


# Per device-pixel column of one canvas band, the top- and bottom-most dark (trace) pixel
# (-1 where none), and per column in one pixel row whether it has the major grid colour.
MEASURE_JS = """() => {
  const v = window.medstream.view, g = v.geometry(), c = v.canvas;
  const k = g.devicePxPerMm, ctx = c.getContext('2d');
  const img = ctx.getImageData(0, 0, c.width, c.height).data;
  const dark = (x, y) => { const i = (y * c.width + x) * 4; return img[i] < 90 && img[i+1] < 90 && img[i+2] < 90; };
  const band = (x0mm, x1mm, y0mm, y1mm) => {
    const x0 = Math.round(x0mm * k), x1 = Math.round(x1mm * k), y0 = Math.round(y0mm * k), y1 = Math.round(y1mm * k);
    const top = [], bottom = [];
    for (let x = x0; x < x1; x++) {
      let t = -1, b = -1;
      for (let y = y0; y < y1; y++) if (dark(x, y)) { if (t < 0) t = y; b = y; }
      top.push(t); bottom.push(b);
    }
    return { x0, top, bottom };
  };
  const row = g.rows[3];
  const grid = [];
  const gy = Math.round((row.topMm + 1.5) * k) + 1;  // between two horizontal lines, above any trace
  for (let x = 0; x < c.width; x++) {
    const i = (gy * c.width + x) * 4;
    grid.push(Math.abs(img[i] - 228) < 12 && Math.abs(img[i+1] - 138) < 20 && Math.abs(img[i+2] - 138) < 20 ? 1 : 0);
  }
  const rect = c.getBoundingClientRect();
  return {
    geometry: g, cssWidth: rect.width, canvasWidth: c.width,
    pulse: band(g.calibration.x0Mm - 0.6, g.calibration.x0Mm + g.calibration.widthMm + 0.6, row.topMm, row.topMm + g.rowHeightMm),
    rhythm: band(g.rhythm.x0Mm, g.rhythm.x0Mm + g.rhythm.durationS * g.speedMmPerS, row.topMm, row.topMm + g.rowHeightMm),
    grid,
  };
}"""


def check_calibration(m: dict[str, Any]) -> dict[str, float]:
    """10 mm/mV and 25 mm/s measured on the pixels, in mm of the page's own scale."""
    g = m["geometry"]
    k = g["devicePxPerMm"]
    assert abs(m["cssWidth"] / g["widthMm"] - g["pxPerMm"]) < 0.01, (m["cssWidth"], g)  # the canvas is at its px/mm
    assert abs(m["canvasWidth"] / m["cssWidth"] * g["pxPerMm"] - k) < 0.01
    top = np.array(m["pulse"]["top"])
    bottom = np.array(m["pulse"]["bottom"])
    cols = np.flatnonzero(top >= 0)
    pulse_h_mm = (bottom[cols].max() - top[cols].min()) / k
    high = cols[top[cols] <= top[cols].min() + 1]  # columns of the pulse's 1 mV plateau
    pulse_w_mm = (high.max() - high.min()) / k
    assert abs(pulse_h_mm - 10.0) < 0.4, pulse_h_mm  # 1 mV = 10 mm
    assert abs(pulse_w_mm - 5.0) < 0.4, pulse_w_mm  # 200 ms = 5 mm: 25 mm/s
    grid = np.flatnonzero(np.array(m["grid"]))
    runs = grid[np.r_[True, np.diff(grid) > 1]]  # first column of each major line
    major_mm = float(np.median(np.diff(runs))) / k
    assert abs(major_mm - 5.0) < 0.2, (major_mm, runs[:10])
    rt = np.array(m["rhythm"]["top"], dtype=float)
    rt[rt < 0] = np.inf
    peak_level = rt.min()
    near = np.flatnonzero(rt <= peak_level + 1.5 * k)  # R-wave tips: within 1.5 mm of the tallest
    groups = np.split(near, np.flatnonzero(np.diff(near) > 2 * k) + 1)
    centres = np.array([grp[np.argmin(rt[grp])] for grp in groups if grp.size])
    rr_mm = float(np.median(np.diff(centres))) / k
    assert len(centres) >= 10, centres  # 12 beats in 10 s
    assert abs(rr_mm - 60.0 / HR_BPM * 25.0) < 0.5, rr_mm  # 800 ms = 20 mm at 25 mm/s
    return {"pulse_h_mm": pulse_h_mm, "pulse_w_mm": pulse_w_mm, "major_mm": major_mm, "rr_mm": rr_mm}


async def test_clinic_upload_queue_calibrated_view_and_live_report(tmp_path: Path, ecg_data_dir: Path) -> None:
    from playwright.async_api import async_playwright

    files = synthetic_record(tmp_path)
    async with running_app(readings_dir=tmp_path / "readings", readings_centre=CENTRE) as app, \
            async_playwright() as pw, closing(await launch(pw)) as browser:
        clinic_token = desk("clinic-a", "dr-wang", "host", "王医生")
        clinic, log_c = await open_page(browser, f"{app.url}/ecg-clinic.html#token={clinic_token}", "clinic",
                                        locale="zh-CN")
        await wait_for(clinic, "() => window.medstream.live", what="the clinic's live events")
        assert await clinic.title() == "远程心电 · 基层上传"  # Chinese first
        await clinic.set_input_files("#files", files)
        await clinic.fill("#referral", "ZY-2026-0001")
        await clinic.fill("#patient", "P-001")
        await clinic.fill("#pname", "张三")
        await clinic.select_option("#sex", "M")
        await clinic.fill("#age", "50")
        await clinic.click("#send")
        rid = await wait_for(clinic, "() => [...window.medstream.requests.keys()][0]", what="the upload queued")
        await wait_for(clinic, "(id) => document.querySelector(`li[data-request='${id}'] [data-state='queued']`)",
                       arg=rid, what="the request listed as queued")
        stemi = await upload_stemi(app.url, ecg_data_dir, clinic_token)

        reader, log_r = await open_page(browser, f"{app.url}/ecg-reading.html#token="
                                        + desk(CENTRE, "dr-li", "expert", "李主任"), "reader", locale="en-US")
        order = await wait_for(reader, "() => { const q = [...document.querySelectorAll('#queue li')];"
                               " return q.length === 2 && q.map(li => [li.dataset.request, li.dataset.priority]); }",
                               what="both requests in the queue")
        assert order[0] == [stemi, "stat"] and order[1][0] == rid, order  # suspected STEMI first
        assert "waiting" in await reader.inner_text("#queue"), await reader.inner_text("#queue")
        await reader.click(f"li[data-request='{rid}']")
        await wait_for(reader, "(id) => window.medstream.drawn >= 1 && window.medstream.current.request_id === id"
                       " && window.medstream.current.state === 'claimed'", arg=rid, what="claimed and drawn")
        figures = check_calibration(await reader.evaluate(MEASURE_JS))
        print("canvas calibration:", figures)
        await screenshot(reader, "ecg12-reading")
        hr = await reader.inner_text("td[data-m='ecg12.m.hr']")
        assert hr == "75 bpm", hr
        # calipers: two clicks 20 mm apart on the rhythm strip read 800 ms, 75 bpm
        box = await reader.locator("#ecg").bounding_box()
        assert box is not None
        geo = figures_geo = await reader.evaluate("window.medstream.view.geometry()")
        k = geo["pxPerMm"]
        y = box["y"] + geo["rows"][3]["baselineMm"] * k
        x0 = box["x"] + (geo["rhythm"]["x0Mm"] + 30) * k
        await reader.mouse.click(x0, y)
        await reader.mouse.click(x0 + 20 * k, y)
        caliper = await wait_for(reader, "() => window.medstream.caliper", what="a caliper reading")
        assert caliper["ms"] == 800 and caliper["bpm"] == 75, (caliper, figures_geo["pxPerMm"])

        await reader.fill("#rhythm", "窦性心律")
        await reader.fill("#findings", "心电图未见明显异常")
        await reader.fill("#conclusion", "正常心电图")
        await reader.click("#sign")
        await wait_for(reader, "() => window.medstream.current.state === 'signed'", what="signed")
        text = await wait_for(clinic, "(id) => { const r = document.querySelector(`.ecg12-report[data-request='${id}']`);"
                              " return r && r.innerText; }", arg=rid, timeout=15, what="the report on the clinic page")
        assert "正常心电图" in text and "窦性心律" in text and "dr-li" in text, text
        assert "signed" in await clinic.evaluate("window.medstream.events"), "the report came by push"
        await screenshot(clinic, "ecg12-clinic")
        # a township tablet or phone: nothing scrolls sideways (the 12-lead view scrolls in its own box)
        wide = "() => document.documentElement.scrollWidth - window.innerWidth"
        await clinic.set_viewport_size({"width": 390, "height": 844})
        await reader.set_viewport_size({"width": 1024, "height": 768})
        assert await clinic.evaluate(wide) <= 0 and await reader.evaluate(wide) <= 0
        assert not page_errors(log_c, log_r)


async def test_one_click_opens_a_consultation_with_the_ecg_on_both_sides(tmp_path: Path, ecg_data_dir: Path) -> None:
    from playwright.async_api import async_playwright

    media = make_fake_media(tmp_path, "cam", (40, 160, 60), 660.0)
    async with running_app(readings_dir=tmp_path / "readings", readings_centre=CENTRE, media=True,
                           ice_host_addresses=("127.0.0.1",)) as app, \
            async_playwright() as pw, closing(await launch(pw, media)) as browser:
        clinic_token = desk("clinic-a", "dr-wang", "host", "王医生")
        rid = await upload_stemi(app.url, ecg_data_dir, clinic_token)
        clinic, log_c = await open_page(browser, f"{app.url}/ecg-clinic.html#token={clinic_token}", "clinic")
        await wait_for(clinic, "() => window.medstream.live", what="the clinic's live events")
        reader, log_r = await open_page(browser, f"{app.url}/ecg-reading.html#token="
                                        + desk(CENTRE, "dr-li", "expert", "李主任"), "reader")
        await wait_for(reader, "(id) => document.querySelector(`li[data-request='${id}']`)", arg=rid, what="queued")
        await reader.click(f"li[data-request='{rid}']")
        await wait_for(reader, "() => window.medstream.drawn >= 1", what="the reader's view")
        async with reader.context.expect_page() as popup:
            await reader.click("#consult")
        expert = await popup.value
        async with clinic.context.expect_page() as popup_c:
            await clinic.click(".join-consultation", timeout=15000)  # the button the push put there
        host_page = await popup_c.value
        host = await wait_for(clinic, "() => window.medstream.lastConsultation", what="the clinic's consultation link")
        assert host["room"] == f"ecg-{rid}"
        pages = [host_page]
        for page in (expert, host_page):
            await wait_for(page, "() => window.medstream && window.medstream.state === 'joined' && window.medstream.ecg12"
                           " && window.medstream.ecg12.drawn >= 1", timeout=20, what="joined with the ECG drawn")
        await wait_for(expert, "() => window.medstream.participants.some(p => p.identity === 'dr-wang')", timeout=20,
                       what="the clinic's doctor in the expert's room")
        await wait_for(pages[0], "() => window.medstream.participants.some(p => p.identity === 'dr-li')", timeout=20,
                       what="the reader in the clinic's room")
        roles = await expert.evaluate("() => window.medstream.participants.map(p => [p.identity, p.role])")
        assert ["dr-wang", "host"] in roles, roles  # the inviting clinic hosts; the reader is the expert
        assert not page_errors(log_c, log_r)
