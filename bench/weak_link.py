"""Township links, measured: what a clinic behind an impaired link gets of two experts' media.

`python -m bench.weak_link [--json bench/results/weak_link.json] [--case NAME ...]` (root: it
creates a network namespace; run inside `unshare --net` like the tests). Cases:

- `200k`: 200 kbit/s towards the clinic (queue 5 kB), two experts with L1T3 video, 20 s, then
  the link is restored.
- `1m`: 1 Mbit/s, two experts, 20 s.
- `loss`: 5 % loss and 150 ms one way (+-10 ms jitter) both ways, one expert, 20 s.
- `drop`: 1 Mbit/s, then 100 kbit/s for 20 s, then 1 Mbit/s again for 10 s, two experts.

Printed and written per case, for the whole run from media start and per phase: what became of
the audio packets the relay sent to the clinic, counted packet by packet at the link (through its
queue, dropped at random, lost before it, received of those it delivered), the audio end to end by
RTP timestamps, the frames the clinic's receiver passed on over frames sent, the longest audio gap, video frames per second at the clinic per phase
(and per expert what its encoder made, with the share of those frames that reached the clinic),
the longest video freeze, when the relay first adapted and how long the video took to come back
after the link did, and the CPU seconds of this process (server and experts; the clinic runs in
its own process). Figures taken on a busy machine are not speed claims: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Any

from tests.helpers import running_app
from tests.media_server.test_weak_network import (
    HOST_ADDR,
    Clinic,
    VideoAgainstPublisher,
    audio_fates,
    experts,
    in_window,
    max_gap,
    received_share,
    township,
    video_against_publisher,
)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _phase(sources: list[Any], seconds: float) -> tuple[float, float, int]:
    start = time.monotonic()
    before = sum(len(s.sent) for s in sources)
    await asyncio.sleep(seconds)
    return start, time.monotonic(), sum(len(s.sent) for s in sources) - before


def _made(track: dict[str, Any], sources: list[Any], start: float, end: float) -> VideoAgainstPublisher | None:
    """`track` against the expert whose frames it carries (matched by their bytes)."""
    best = None
    for source in sources:
        v = video_against_publisher(track, source, start, end)
        if v.received and (best is None or v.received > best.received):
            best = v
    return best


def _summary(result: dict[str, Any], phases: dict[str, tuple[float, float, int]], video_sources: list[Any],
             link_log: dict[str, Any]) -> dict[str, Any]:
    audio = [t for t in result["tracks"].values() if t["kind"] == "audio"]
    video = [t for t in result["tracks"].values() if t["kind"] == "video"]
    offset = time.time() - time.monotonic()  # sent_at is time.time(); windows are monotonic
    out: dict[str, Any] = {}
    for name, (start, end, sent) in phases.items():
        got = sum(len(in_window(t["arrivals"], start + 0.2, end + 0.2)) for t in audio)
        frames = [in_window(t["arrivals"], start + 0.2, end + 0.2) for t in video]
        fates = [audio_fates(link_log, t, start, end) for t in audio]
        entered = sum(f.entered for f in fates)
        delivered = sum(f.delivered for f in fates)
        out[name] = {
            "seconds": round(end - start, 2),
            # per packet, at the link (see tests/media_server/test_weak_network.py AudioFates)
            "audio_through_link_pct": round(100.0 * (1 - sum(f.queue for f in fates) / entered), 2) if entered else None,
            "audio_random_drop_pct": round(100.0 * sum(f.random for f in fates) / entered, 2) if entered else None,
            "audio_lost_before_link": sum(f.before_link for f in fates),
            "audio_received_of_delivered_pct": (
                round(100.0 * (1 - sum(f.after_link for f in fates) / delivered), 2) if delivered else None),
            "audio_end_to_end_rtp_pct": [round(100.0 * received_share(t, start, end, 960), 1) for t in audio],
            # frames the clinic's receiver passed on in the window (+0.2 s) over frames sent
            "audio_received_pct": round(100.0 * got / sent, 1) if sent else None,
            "audio_max_gap_s": round(max((max_gap(in_window(t["arrivals"], start, end)) for t in audio), default=0.0), 3),
            "video_fps_per_track": [round(len(f) / (end - start), 1) for f in frames],
            "video_max_freeze_s": [round(max_gap(f), 2) for f in frames],
            # what the experts' encoders made in the window (on a busy machine far below the
            # nominal 15 fps: the clinic's fps alone then blames the relay for the publisher),
            # and the share of those frames the clinic got (matched by their bytes)
            "publisher_video_fps": [round(sum(start <= t - offset < end for t in s.sent_at) / (end - start), 1)
                                    for s in video_sources],
            "video_share_of_made": [round(v.share, 3) if v else None for v in (_made(t, video_sources, start, end)
                                                                         for t in video)],
        }
    out["adaptations"] = [(a["state"], round(a["fps_fraction"], 3)) for a in result["adapted"]]
    return out


async def run_case(name: str) -> dict[str, Any]:
    """One case; returns its figures."""
    n = 1 if name == "loss" else 2
    cpu0 = _cpu_s()
    async with township() as town, running_app(media=True, host=HOST_ADDR, ice_host_addresses=(HOST_ADDR,)) as app:
        first = {"200k": "down rate=200000 queue=5000", "1m": "down rate=1000000 queue=20000",
                 "loss": "both loss=0.05 delay=0.15 jitter=0.01", "drop": "down rate=1000000 queue=20000"}[name]
        await town.shape(first)
        team = await experts(app, n, video_size=(320, 240), fps=15, video_bitrate_bps=300_000, temporal_layers=True)
        sources = [e.peer.audio_source for e in team]
        t0 = time.monotonic()
        clinic = await Clinic.start(town, app.ws_url, experts=n)
        media_at = time.monotonic()
        phases: dict[str, tuple[float, float, int]] = {}
        recovered_at = None
        try:
            if name == "200k":
                phases["narrow"] = await _phase(sources, 20.0)
                await town.shape("down rate=0")
                recovered_at = time.monotonic()
                phases["restored"] = await _phase(sources, 10.0)
            elif name == "drop":
                phases["1mbit"] = await _phase(sources, 10.0)
                await town.shape("down rate=100000 queue=4000")
                phases["100kbit"] = await _phase(sources, 20.0)
                await town.shape("down rate=1000000 queue=20000")
                recovered_at = time.monotonic()
                phases["restored"] = await _phase(sources, 10.0)
            else:
                phases["steady"] = await _phase(sources, 20.0)
            link_log = (await town.query("log"))["down"]
        finally:
            result = await clinic.stop()
            for e in team:
                await e.close()
    whole = (media_at, max(p[1] for p in phases.values()), sum(p[2] for p in phases.values()))
    summary = _summary(result, {"from_media_start": whole, **phases}, [e.peer.video_source for e in team], link_log)
    adapted = [a["at"] for a in result["adapted"] if a["state"] != "full"]
    summary["first_adaptation_after_media_s"] = round(min(adapted) - media_at, 2) if adapted else None
    if recovered_at is not None:
        back = [a["at"] for a in result["adapted"] if a["state"] == "full" and a["at"] > recovered_at]
        summary["video_full_after_recovery_s"] = round(min(back) - recovered_at, 2) if back else None
        # per track: its first frame at the clinic after the link recovered (the goal: within 5
        # s), and its first "full" after it (every layer again)
        video = [t for t in result["tracks"].values() if t["kind"] == "video"]
        firsts = [next((x for x in t["arrivals"] if x >= recovered_at), None) for t in video]
        summary["video_back_after_recovery_s"] = [None if f is None else round(f - recovered_at, 2) for f in firsts]
        full_per_track = []
        for tid, t in result["tracks"].items():
            if t["kind"] == "video":
                fulls = [a["at"] for a in result["adapted"] if a["track_id"] == tid and a["state"] == "full"
                         and a["at"] > recovered_at]
                full_per_track.append(round(min(fulls) - recovered_at, 2) if fulls else None)
        summary["video_full_per_track_after_recovery_s"] = full_per_track
    summary["join_to_media_s"] = round(media_at - t0, 2)
    summary["cpu_s_this_process"] = round(_cpu_s() - cpu0, 1)
    return {"case": name, **summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.weak_link", description=__doc__.split("\n")[0])
    p.add_argument("--case", action="append", choices=["200k", "1m", "loss", "drop"])
    p.add_argument("--json", type=Path, default=Path("bench/results/weak_link.json"))
    args = p.parse_args(argv)
    results = []
    for case in args.case or ["200k", "1m", "loss", "drop"]:
        r = asyncio.run(run_case(case))
        print(json.dumps(r), flush=True)
        results.append(r)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
