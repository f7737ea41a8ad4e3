"""Playwright harness for the browser-client tests: Debian's headless Chromium, loopback only.

One Chromium process per distinct fake camera/microphone (the fake-capture flags apply to a whole
process), so a test can tell peers apart by colour and tone. Pages are read through what they
expose on `window.medstream` (see docs/clients.md). Never runs `playwright install`.
"""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import math
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Browser, ConsoleMessage, Page, Playwright

from tests.conftest import REPO_ROOT, timeout_s

CHROMIUM = "/usr/lib/chromium/chromium"
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
)
VIDEO_SIZE = (320, 240)
VIDEO_FPS = 15


@dataclass(frozen=True)
class FakeMedia:
    """A fake camera (y4m: solid colour with a moving white square) and microphone (wav tone)."""

    rgb: tuple[int, int, int]
    tone_hz: float
    video_path: Path
    audio_path: Path


def _yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return (round(16 + 219 * y / 255), round(128 + 224 * (b - y) / 255 / 1.772),
            round(128 + 224 * (r - y) / 255 / 1.402))


def make_fake_media(directory: Path, name: str, rgb: tuple[int, int, int], tone_hz: float) -> FakeMedia:
    """Write `name`.y4m (2 s, 320x240, 15 fps) and `name`.wav (1 s, 48 kHz) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    w, h = VIDEO_SIZE
    y0, u0, v0 = _yuv(rgb)
    video = directory / f"{name}.y4m"
    with open(video, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{VIDEO_FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(2 * VIDEO_FPS):
            y = np.full((h, w), y0, np.uint8)
            x = (i * 8) % (w - 40)
            y[100:140, x:x + 40] = 235  # a moving square keeps the encoder honest
            f.write(b"FRAME\n" + y.tobytes() + np.full((h // 2, w // 2), u0, np.uint8).tobytes()
                    + np.full((h // 2, w // 2), v0, np.uint8).tobytes())
    audio = directory / f"{name}.wav"
    rate = 48000
    t = np.arange(rate) / rate
    pcm = (0.5 * 32767 * np.sin(2 * math.pi * tone_hz * t)).astype("<i2")
    with wave.open(str(audio), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(pcm.tobytes())
    return FakeMedia(rgb, tone_hz, video, audio)


async def launch(pw: Playwright, media: FakeMedia | None = None, *, autoplay: bool = True) -> Browser:
    """Start one headless Chromium (with its own fake camera and microphone if `media`).

    `autoplay=False` keeps Chromium's default autoplay policy (sound only after a click), as a
    freshly opened wall PC has it.
    """
    args = [a for a in CHROMIUM_ARGS if autoplay or not a.startswith("--autoplay-policy")]
    if media is not None:
        args += [f"--use-file-for-fake-video-capture={media.video_path}",
                 f"--use-file-for-fake-audio-capture={media.audio_path}"]
    return await pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)


class PageLog:
    """Console errors and uncaught exceptions of a page (tests assert there are none)."""

    def __init__(self, page: Page, label: str) -> None:
        self.label = label
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"{label}: pageerror: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"{self.label}: console: {msg.text}")


async def open_page(browser: Browser, url: str, label: str,
                    viewport: tuple[int, int] = (1280, 800), locale: str = "en-US",
                    timezone: str | None = None) -> tuple[Page, PageLog]:
    """A new context + page at `url` (its own cookies/storage: one participant per context).

    `locale` is the browser's language (navigator.languages), which picks the page's language
    when none was chosen before: "zh-CN" gives Chinese, "en-US" (the default here, so tests can
    name English buttons) English. `timezone` (IANA name) is the viewer's time zone.
    """
    context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, locale=locale,
                                        timezone_id=timezone)
    page = await context.new_page()
    log = PageLog(page, label)
    await page.goto(url)
    return page, log


async def wait_for(page: Page, expression: str, timeout: float = 10.0, arg: Any = None,
                   what: str | None = None, explain: str | None = None) -> Any:
    """Poll `expression` (a JS function of `arg`, sync or async) until it returns something truthy.

    Raises AssertionError naming `what` and the last value seen on timeout (scaled by timeout_s);
    `explain`, a JS function of `arg` too, adds what the page says about its state then.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s(timeout)
    last: Any = None
    while True:
        # a page whose script is stuck never answers: fail with a message instead of hanging
        try:
            last = await asyncio.wait_for(page.evaluate(expression, arg), timeout_s(max(timeout, 10.0)))
        except TimeoutError:
            raise AssertionError(f"the page did not answer within {timeout_s(max(timeout, 10.0)):.0f} s while "
                                 f"waiting for {what or expression} (its script stuck, or the browser starved); "
                                 f"last value {last!r}") from None
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            state = ""
            if explain is not None:
                try:
                    state = f"; page state: {await asyncio.wait_for(page.evaluate(explain, arg), 10)!r}"
                except Exception as inner:
                    state = f"; page state unavailable: {inner!r}"
            raise AssertionError(f"timed out waiting for {what or expression}; last value {last!r}{state}")
        await asyncio.sleep(0.2)


async def screenshot(page: Page, name: str) -> Path:
    """Save a PNG of the page to tests/artifacts/`name`.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


@contextlib.asynccontextmanager
async def closing(browser: Browser) -> AsyncIterator[Browser]:
    """Close the browser however the block ends."""
    try:
        yield browser
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(browser.close(), timeout_s(20))


def hue_of(rgb: tuple[float, float, float]) -> float:
    """Hue (0-360 degrees) of an RGB colour, to compare a decoded picture with a fake camera."""
    r, g, b = (c / 255 for c in rgb)
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def page_errors(*logs: PageLog) -> list[str]:
    """All console errors and uncaught exceptions of the given pages."""
    return [e for log in logs for e in log.errors]


STATS_JS = "async () => await window.medstream.stats()"


async def wait_receiving(page: Page, from_participant: str, timeout: float = 20.0,
                         min_frames: int = 10, app: Any = None) -> dict[str, Any]:
    """Wait until `page` decodes video frames and hears audio energy from `from_participant`.

    Returns the inbound stats of that participant, {"video": {...}, "audio": {...}}. With `app`
    (the node the page is on), a failure also says what the relay had for each of the tracks.
    """
    try:
        return await wait_for(page, """async (pid) => {
            const s = await window.medstream.stats();
            const v = s.inbound.find(i => i.kind === 'video' && i.participantId === pid);
            const a = s.inbound.find(i => i.kind === 'audio' && i.participantId === pid);
            return v && a && v.framesDecoded >= %d && a.totalAudioEnergy > 0 ? {video: v, audio: a} : null;
        }""" % min_frames, timeout, from_participant,  # noqa: UP031 (a JS template full of braces)
            what=f"video frames and audio energy from {from_participant}")
    except AssertionError as exc:  # say which of the two was missing, and how far each got
        try:
            seen = await asyncio.wait_for(inbound_of(page, from_participant), 10)
        except Exception as inner:  # the page itself may be what is stuck
            seen = {"stats unavailable": repr(inner)}
        relay = "" if app is None else f"; relay: {relay_view(app, from_participant)}"
        raise AssertionError(f"{exc}; inbound from it: {seen}{relay}") from None


def relay_view(app: Any, publisher: str) -> list[dict[str, Any]]:
    """What the relay holds for each track of `publisher`: packets in, and per subscriber
    whether its forwarding is bound to its transport and what it sent (for failure messages;
    read from the node, so it works when the page itself is stuck)."""
    out = []
    for t in app.media.tracks():
        if t.peer_id != publisher:
            continue
        subs = {}
        for sub in app.media.subscribers(t.track_id):
            fwd = app.media.forward_track(sub, t.track_id)
            if fwd is not None:
                subs[sub] = dict(configured=fwd._writer is not None, bound=fwd._sendto is not None,
                                 forwarded=fwd.packets_forwarded, dropped=fwd.packets_dropped,
                                 paused=fwd.paused, waiting_for_keyframe=fwd.waiting_for_keyframe)
        out.append({"track": t.track_id, "received": app.media.producer(t.track_id).packets_received,
                    "to": subs})
    return out


async def inbound_of(page: Page, pid: str) -> dict[str, Any]:
    """Current inbound stats from `pid`, by kind."""
    s = await page.evaluate(STATS_JS)
    return {i["kind"]: i for i in s["inbound"] if i["participantId"] == pid}
