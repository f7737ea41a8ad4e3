"""Two real Chromium browsers in one consultation through a real medstream node.

Each browser has its own fake camera colour and tone, so receiving the *other's* media is
proven by colour, not only by counters.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients.browser import (
    closing,
    hue_of,
    inbound_of,
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

RED = (220, 40, 40)
BLUE = (40, 60, 220)


async def test_two_browsers_see_and_hear_each_other_and_survive_a_drop(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    media_a = make_fake_media(tmp_path, "a", RED, 440.0)
    media_b = make_fake_media(tmp_path, "b", BLUE, 880.0)
    async with running_app(media=True, waveforms=True, ice_host_addresses=("127.0.0.1",)) as app, \
            async_playwright() as pw:  # noqa: SIM117
        async with closing(await launch(pw, media_a)) as ba, closing(await launch(pw, media_b)) as bb:
            host_url = f"{app.url}/consultation.html?token=" + token(
                "consult-1", "dr-a", "host", kind="consultation", name="Dr Adams")
            expert_url = f"{app.url}/consultation.html?token=" + token(
                "consult-1", "dr-b", "expert", name="Dr Baker")
            pa, la = await open_page(ba, host_url, "host")
            await wait_for(pa, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                           what="host joined and publishing")
            pb, lb = await open_page(bb, expert_url, "expert")
            await wait_for(pb, "() => window.medstream.state === 'joined'", what="expert joined")
            id_a = await pa.evaluate("window.medstream.participant.participant_id")
            id_b = await pb.evaluate("window.medstream.participant.participant_id")

            got_b = await wait_receiving(pa, id_b, app=app)
            got_a = await wait_receiving(pb, id_a, app=app)
            # frames keep coming: decoding grows
            await wait_for(pa, "async (a) => (await window.medstream.stats()).inbound.find(i => i.kind === 'video' && i.participantId === a[0]).framesDecoded > a[1] + 10",
                           arg=[id_b, got_b["video"]["framesDecoded"]], what="A's decoded frames growing")
            await wait_for(pb, "async (a) => (await window.medstream.stats()).inbound.find(i => i.kind === 'video' && i.participantId === a[0]).framesDecoded > a[1] + 10",
                           arg=[id_a, got_a["video"]["framesDecoded"]], what="B's decoded frames growing")
            assert got_a["video"]["packetsLost"] == 0 and got_b["video"]["packetsLost"] == 0

            # chat: the host types a drug name in Chinese, the expert's page shows it with the sender
            await pa.locator("#chat .chat-input").fill("阿托伐他汀 20 mg 每晚一次")
            await pa.locator("#chat .chat-send").click()
            await wait_for(pb, "() => window.medstream.chat.some(m => m.text === '阿托伐他汀 20 mg 每晚一次')",
                           what="expert received the host's chat message")
            item = pb.locator("#chat .chat-item").last
            assert "阿托伐他汀 20 mg 每晚一次" in await item.inner_text() and "Dr Adams" in await item.inner_text()
            assert await pa.locator("#chat .chat-input").input_value() == ""  # sent, box cleared
            await pb.locator("#chat .chat-input").fill("收到")
            await pb.locator("#chat .chat-input").press("Enter")
            await wait_for(pa, "() => window.medstream.chat.some(m => m.text === '收到' && m.name === 'Dr Baker')",
                           what="host received the expert's reply")

            # each sees the other's colour (not its own echo)
            colour_in_a = await wait_for(pa, "(pid) => window.medstream.videoColor(pid)", arg=id_b)
            colour_in_b = await wait_for(pb, "(pid) => window.medstream.videoColor(pid)", arg=id_a)
            assert abs(hue_of(colour_in_a) - hue_of(BLUE)) < 20, colour_in_a
            assert abs(hue_of(colour_in_b) - hue_of(RED)) < 20 or hue_of(colour_in_b) > 340, colour_in_b

            # the speaking indicator follows the other's tone
            await wait_for(pa, "(pid) => window.medstream.speaking[pid] > 0.02", arg=id_b,
                           what="B speaking on A's page")
            assert "speaking" in (await pa.locator(f'.tile[data-participant="{id_b}"]').get_attribute("class") or "")
            await screenshot(pa, "consultation_host")
            await screenshot(pb, "consultation_expert")

            # host mutes the expert's microphone: both pages show it
            await pa.locator(f'.tile[data-participant="{id_b}"] .mod button', has_text="mute").first.click()
            await wait_for(pb, "(pid) => window.medstream.room.tracks.some(t => t.participant_id === pid && t.kind === 'audio' && t.muted)",
                           arg=id_b, what="expert sees own audio muted by host")
            assert "muted by host" in await pb.locator(f'.tile[data-participant="{id_b}"] .flags').inner_text()

            # network drop of the expert's socket: it resumes as the same participant, media flows
            sockets = dict(app.server.sockets)
            conn_b = app.hub.conn_of[id_b]
            sockets[conn_b].transport.abort()
            await wait_for(pb, "() => window.medstream.reconnects >= 1 && window.medstream.state === 'joined'",
                           what="expert reconnected")
            assert await pb.evaluate("window.medstream.participant.participant_id") == id_b
            before = (await inbound_of(pb, id_a))["video"]["framesDecoded"]
            await wait_for(pb, "async (a) => (await window.medstream.stats()).inbound.find(i => i.kind === 'video' && i.participantId === a[0]).framesDecoded > a[1] + 10",
                           arg=[id_a, before], what="video still flowing after resume")
            assert await pa.evaluate("(pid) => window.medstream.participants.find(p => p.participant_id === pid).connected", id_b)

            assert page_errors(la, lb) == []
