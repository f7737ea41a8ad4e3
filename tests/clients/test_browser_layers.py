"""Chromium receiving L1T3 VP8 through the relay while the relay leaves out its upper layers,
pauses it and resumes it, as adaptation does for a weak link (media_server/vp8.py).

The aiortc stand-ins of the weak-link tests pass on any complete frame; a browser's VP8 reference
finder does not: a frame whose PictureID, TL0PICIDX or reference the relay got wrong is held
back, and the browser asks for a keyframe. So what is checked here is the browser's own count:
with the upper layers cut it decodes the frames it is given without asking for keyframes, and
after a pause it decodes again from the relay's resume keyframe.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clients.browser import closing, launch, make_fake_media, open_page, page_errors, wait_for, wait_receiving
from tests.conftest import timeout_s
from tests.helpers import running_app, token

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

VIDEO_STATS = """async (pid) => {
  const t = window.medstream.tracks.find(x => x.kind === 'video' && x.participantId === pid);
  if (!t) return null;
  const report = await window.medstream.pc.getStats();
  let out = null;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.mid === t.mid) out = {
      decoded: s.framesDecoded || 0, keys: s.keyFramesDecoded || 0, plis: s.pliCount || 0,
      firs: s.firCount || 0, dropped: s.framesDropped || 0, received: s.framesReceived || 0};
  });
  return out;
}"""


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def test_chromium_decodes_l1t3_with_layers_cut_and_after_a_pause(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    media_a = make_fake_media(tmp_path, "a", (220, 40, 40), 440.0)
    media_b = make_fake_media(tmp_path, "b", (40, 60, 220), 880.0)
    async with running_app(media=True, ice_host_addresses=("127.0.0.1",)) as app, async_playwright() as pw:  # noqa: SIM117
        async with closing(await launch(pw, media_a)) as ba, closing(await launch(pw, media_b)) as bb:
            pa, la = await open_page(ba, f"{app.url}/consultation.html?token=" + token(
                "layers", "dr-a", "host", kind="consultation", name="A"), "a")
            await wait_for(pa, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                           what="A joined and publishing")
            pb, lb = await open_page(bb, f"{app.url}/consultation.html?token=" + token(
                "layers", "dr-b", "expert", name="B"), "b")
            id_a = await pa.evaluate("window.medstream.participant.participant_id")
            await wait_receiving(pb, id_a, timeout=timeout_s(30))
            sfu = app.media
            # the test drives B's cut itself: the adaptation loop would lift it (a loopback link)
            if sfu._adapt_task is not None:
                sfu._adapt_task.cancel()
            track = next(i.track_id for i in sfu.tracks() if i.kind == "video" and i.peer_id == id_a)
            producer = sfu.producer(track)
            await until(lambda: len(producer.layer_rates.cumulative_bps(time.monotonic())) == 3, timeout_s(15),
                        "the relay reads three temporal layers from Chromium's descriptors (L1T3)")
            fwd = sfu.forward_track(id_b := await pb.evaluate("window.medstream.participant.participant_id"), track)
            assert fwd is not None and fwd.packet_filter is not None, id_b

            async def stats() -> dict[str, int]:
                return dict(await pb.evaluate(VIDEO_STATS, id_a))

            async def given(frames: int, what: str) -> tuple[int, dict[str, int]]:
                """Wait until B was sent `frames` more frames and has decoded them (or the
                deadline says it will not): frames sent, B's counters at the end."""
                start_frames, start = fwd.frames_forwarded, await stats()
                await until(lambda: fwd.frames_forwarded >= start_frames + frames, timeout_s(20), what)
                sent = fwd.frames_forwarded - start_frames
                deadline = time.monotonic() + timeout_s(5)
                while (now := await stats())["decoded"] < start["decoded"] + 0.9 * sent and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                return sent, {k: now[k] - start[k] for k in now}

            sent, full = await given(30, "30 frames of every layer")
            fwd.packet_filter.set_max_layer(0)  # type: ignore[attr-defined]  # base layer: a quarter
            skipped = fwd.packet_filter.frames_skipped  # type: ignore[attr-defined]
            sent_cut, cut = await given(15, "15 base-layer frames")
            assert fwd.packet_filter.frames_skipped > skipped + sent_cut  # type: ignore[attr-defined]
            # every frame given is decoded, none needed a keyframe (PictureID/TL0PICIDX consistent)
            assert cut["decoded"] >= 0.9 * sent_cut and cut["keys"] == 0 and cut["plis"] + cut["firs"] == 0, (sent_cut, cut)
            fwd.packet_filter.set_max_layer(None)  # type: ignore[attr-defined]
            fwd.set_paused(True, "weak_link")
            received = producer.frames_received
            await until(lambda: producer.frames_received >= received + 30, timeout_s(20), "A sends on meanwhile")
            fwd.set_paused(False, "weak_link")  # resumes at a keyframe the relay asks A for
            sent_back, back = await given(30, "30 frames after the pause")
            assert back["decoded"] >= 0.9 * sent_back and back["keys"] >= 1, (sent_back, back)
            # a keyframe request of B's own would say a frame after the resume was undecodable
            assert back["plis"] + back["firs"] <= 1, back
            print(f"chromium L1T3: all layers {sent} sent {full}; base layer {sent_cut} sent {cut}; "
                  f"after a pause {sent_back} sent {back}")
            assert page_errors(la, lb) == []
