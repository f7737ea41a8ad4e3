"""The wall page in real Chromium, served by a node that does not host its ward: the browser
client follows `redirect` to the ward's node (whose Origin check lets a cluster node's page in)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.monitor_sim import MonitorSimConfig, MonitorSimulator, RecordSource
from tests.clients.browser import closing, launch, open_page, page_errors, wait_for
from tests.cluster.conftest import Cluster, ctoken, join_via, room_state, until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_a_wall_page_from_one_node_shows_a_ward_on_another(shared_cluster: Cluster, ecg_data_dir: Path) -> None:
    from playwright.async_api import async_playwright

    a, b = shared_cluster.nodes["a"], shared_cluster.nodes["b"]
    host, joined, _ = await join_via(a.ws_url, ctoken("ward-9", "charge-nurse", "host", kind="monitoring"))
    assert joined["type"] == "joined"
    state = await until(lambda: room_state(a, "ward-9"), 10, "the ward's state")
    other = b if state["node_id"] == "a" else a
    sim = MonitorSimulator(RecordSource(ecg_data_dir / "mitdb" / "100"), MonitorSimConfig(
        url=a.ws_url, token=ctoken("ward-9", "monitor-bed-1", "monitor"), stream_id="bed-1", speed=2.0))
    run = asyncio.create_task(sim.run(duration_s=120.0))
    try:
        async with async_playwright() as pw, closing(await launch(pw)) as browser:
            url = f"{other.url}/wall.html?token=" + ctoken("ward-9", "nurse-1", "viewer", name="Nurse station")
            page, log = await open_page(browser, url, "wall", viewport=(1200, 800))
            await wait_for(page, "() => window.medstream.streams['bed-1'] !== undefined", timeout=30)
            assert not page_errors(log)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await host.close()

