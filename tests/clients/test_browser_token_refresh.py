"""The pages refresh their token before it runs out: a wall PC opened from a link that names the
booking system's refresh address (`#token=...&refresh=...`) gets `token_expiring`, fetches a newer
token there (with its current one as bearer) and hands it to the server, whose session end moves;
the session then outlives the first token."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from aiohttp import web

from tests.clients.browser import closing, launch, open_page, page_errors, wait_for
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser]

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "Authorization",
        "Access-Control-Allow-Methods": "POST"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_wall_refreshes_its_token_from_the_booking_system_before_it_expires() -> None:
    from playwright.async_api import async_playwright

    asked_with: list[str] = []
    fresh = token("ward-9", "nurse-9", "viewer", valid_for_s=3600)

    async def refresh(request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=CORS)
        asked_with.append(request.headers.get("Authorization", ""))
        return web.json_response({"token": fresh}, headers=CORS)

    booking = web.Application()
    booking.router.add_route("*", "/tokens/refresh", refresh)
    runner = web.AppRunner(booking)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    first = token("ward-9", "nurse-9", "viewer", valid_for_s=120)  # warned at join: 120 s + 1 s < 200 s
    try:
        async with running_app(rooms=(("ward-9", "monitoring"),), waveforms=True, token_leeway_s=1.0,
                               token_warning_s=200.0) as app, async_playwright() as pw, \
                closing(await launch(pw)) as browser:
            page, log = await open_page(
                browser, f"{app.url}/wall.html#token={first}&refresh=http://127.0.0.1:{port}/tokens/refresh", "wall")
            expires: Any = await wait_for(page, "() => window.medstream.tokenExpiresAt > Date.now() / 1000 + 600"
                                          " && window.medstream.tokenExpiresAt", timeout=60,
                                          what="the session's end moved by the refreshed token")
            assert asked_with == [f"Bearer {first}"]
            [p] = [p for room in app.hub.store.rooms() for p in room.participants.values()]
            assert abs(p.session_ends_at - expires) < 1e-6 and p.session_ends_at > time.time() + 3000
            assert await page.evaluate("() => window.medstream.state") == "joined"
            # a reload rejoins with the newer token, kept for this tab (the first would still work now)
            assert await page.evaluate("() => sessionStorage.getItem('medstream.token:/wall.html')") == fresh
            assert "refresh=" not in page.url and "token=" not in page.url
            assert not page_errors(log)
    finally:
        await runner.cleanup()
