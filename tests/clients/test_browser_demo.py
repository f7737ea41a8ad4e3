"""`medstream demo` end to end: the command starts, prints working links, the pages show its
simulated monitors (four beds on the wall, the patient monitor in the consultation)."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from tests.clients.browser import closing, launch, open_page, page_errors, screenshot, wait_for
from tests.conftest import REPO_ROOT, timeout_s

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]


async def test_demo_prints_links_that_work() -> None:
    from playwright.async_api import async_playwright

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "medstream.cli", "demo", "--port", "0", "--duration", "30",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        while not any(line.startswith("Ctrl-C") for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout_s(20))
            assert raw, f"demo exited early: {lines}"
            lines.append(raw.decode().strip())
        links = dict(re.findall(r"^(\w+):\s+(http://127\.0\.0\.1:\d+/\S+)$", "\n".join(lines), re.M))
        assert set(links) == {"host", "expert", "presenter", "viewer", "wall"}, lines
        base = links["wall"].split("/wall.html")[0]

        async with async_playwright() as pw, closing(await launch(pw)) as browser:
            landing, landing_log = await open_page(browser, base + "/", "index")
            assert "Monitoring wall" in await landing.inner_text("body")
            await screenshot(landing, "index")
            wall, wall_log = await open_page(browser, links["wall"], "wall", viewport=(1400, 900))
            await wait_for(wall, """() => { const s = Object.values(window.medstream.streams);
                return s.length === 4 && s.every(x => x.heartRateBpm !== null); }""", timeout=30,
                           what="four beds with a heart rate")
            # the token came in the fragment (never sent to the server) and left the address bar
            assert "#token=" in links["wall"]
            assert "token" not in await wall.evaluate("() => window.location.href")
            await asyncio.sleep(3)  # let the sweep draw a few seconds for the screenshot
            await screenshot(wall, "demo_wall")
            consult, consult_log = await open_page(browser, links["host"], "consultation")
            await wait_for(consult, "() => window.medstream.streams.patient && window.medstream.streams.patient.heartRateBpm",
                           timeout=20, what="patient monitor in the consultation")
            assert await consult.locator("#ecg").is_visible()
            await asyncio.sleep(2)
            await screenshot(consult, "demo_consultation")
            assert page_errors(landing_log, wall_log, consult_log) == []
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
