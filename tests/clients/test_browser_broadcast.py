"""A presenter and three viewers in a broadcast, in real Chromium: raise hand, promote, be heard."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients.browser import (
    closing,
    hue_of,
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

# what a page that should publish says about itself when it does not
PUBLISH_STATE = """() => ({role: window.medstream.participant.role, publishing: window.medstream.publishing,
    errors: window.medstream.errors, media: window.medstream.conference.media.lastError,
    offers: window.medstream.conference.media.offers, state: window.medstream.state})"""


async def test_viewers_watch_and_a_promoted_viewer_is_heard_by_all(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    presenter_media = make_fake_media(tmp_path, "presenter", (220, 40, 40), 440.0)
    audience_media = make_fake_media(tmp_path, "audience", (40, 60, 220), 880.0)
    async with running_app(media=True, waveforms=True, ice_host_addresses=("127.0.0.1",)) as app, \
            async_playwright() as pw, closing(await launch(pw, presenter_media)) as bp, \
                closing(await launch(pw, audience_media)) as bv:
        url = f"{app.url}/broadcast.html?token="
        host, host_log = await open_page(bp, url + token("grand-rounds", "prof", "host", kind="broadcast",
                                                         name="Prof Presenter"), "presenter")
        await wait_for(host, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                       what="presenter publishing")
        host_id = await host.evaluate("window.medstream.participant.participant_id")
        viewers = []
        for i in range(3):
            page, log = await open_page(bv, url + token("grand-rounds", f"student-{i}", "viewer",
                                                        name=f"Student {i}"), f"viewer{i}")
            viewers.append((page, log))
        for page, _ in viewers:
            await wait_receiving(page, host_id, app=app)
            out = (await page.evaluate("async () => (await window.medstream.stats()).outbound"))
            assert all(o["bytesSent"] == 0 for o in out), out  # viewers only receive

        # a question from the hall reaches the presenter, not the other viewers; the answer reaches all
        asker, other = viewers[2][0], viewers[1][0]
        await asker.locator("#chat .chat-input").fill("Is the ST elevation in V2 or V3?")
        await asker.locator("#chat .chat-send").click()
        await wait_for(host, "() => window.medstream.chat.some(m => m.to_moderators && m.name === 'Student 2')",
                       what="presenter got the question")
        assert "question" in await host.locator("#chat .chat-item.question").first.inner_text()
        await host.locator("#chat .chat-input").fill("V2 and V3 both.")
        await host.locator("#chat .chat-send").click()
        for page in (asker, other):
            await wait_for(page, "() => window.medstream.chat.some(m => m.text === 'V2 and V3 both.')",
                           what="viewer got the answer")
        assert [m["text"] for m in await other.evaluate("window.medstream.chat")] == ["V2 and V3 both."]

        speaker, _ = viewers[0]
        speaker_id = await speaker.evaluate("window.medstream.participant.participant_id")
        await speaker.get_by_role("button", name="Raise hand").click()
        hand = host.locator(f'#hands li[data-participant="{speaker_id}"]')
        await hand.wait_for(timeout=10_000)
        await screenshot(host, "broadcast_presenter_raised_hand")
        # held across one of the page's re-renders (every second, and on each room change), as a
        # finger on a tablet may: before, the list was rebuilt under the press and the click lost
        await hand.get_by_role("button", name="Let speak").hover()
        renders = await host.evaluate("window.medstream.renders")
        await host.mouse.down()
        await wait_for(host, "(n) => window.medstream.renders > n", arg=renders, what="a re-render during the press")
        await host.mouse.up()

        await wait_for(speaker, "() => window.medstream.participant.role === 'speaker' && window.medstream.publishing",
                       what="viewer promoted and publishing", explain=PUBLISH_STATE)
        # the presenter and the other viewers hear (and see) the new speaker
        for page, _ in [(host, host_log), *viewers[1:]]:
            got = await wait_receiving(page, speaker_id, app=app)
            assert got["audio"]["totalAudioEnergy"] > 0
        # ... and each picture sits in its owner's tile: the presenter red, the speaker blue
        for page, _ in viewers[1:]:
            presenter_colour = await wait_for(page, "(pid) => window.medstream.videoColor(pid)", arg=host_id)
            speaker_colour = await wait_for(page, "(pid) => window.medstream.videoColor(pid)", arg=speaker_id)
            assert hue_of(presenter_colour) < 20 or hue_of(presenter_colour) > 340, presenter_colour
            assert 200 < hue_of(speaker_colour) < 250, speaker_colour
        await screenshot(viewers[1][0], "broadcast_viewer")
        await screenshot(speaker, "broadcast_speaker")

        # demoted: back to the audience, its tracks leave everyone's list
        await host.locator(f'#speaker-list li[data-participant="{speaker_id}"]').get_by_role(
            "button", name="Back to audience").click()
        await wait_for(viewers[1][0], "(pid) => !window.medstream.room.tracks.some(t => t.participant_id === pid)",
                       arg=speaker_id, what="speaker's tracks unpublished")
        await wait_for(speaker, "() => window.medstream.participant.role === 'viewer' && !window.medstream.publishing",
                       what="speaker back to viewer")

        assert page_errors(host_log, *(log for _, log in viewers)) == []
