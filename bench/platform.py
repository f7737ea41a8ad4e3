"""Platform benchmark: what the hospital's systems see of one node, measured in one process.

- admin API: `POST /api/v1/rooms` and `GET /api/v1/rooms` round trips (median, p95 ms, per s)
  with `--rooms` rooms open;
- webhooks: a burst of `--events` events queued at once, delivered in order to a local receiver:
  events per second end to end (spooled on disk, signed, one request in flight), and the worst
  event-loop stall meanwhile;
- join latency: `--joins` websocket joins, from the node's own histogram
  (`medstream_join_latency_seconds`).

    python -m bench.platform --rooms 200 --events 2000 --joins 200 --json bench/results/platform.json

Run it inside a loopback-only namespace (`unshare --net`); it prints and writes JSON, never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.proc import free_port
from medstream.app import MedstreamApp
from medstream.config import ServerConfig
from signaling.hub import SignalingConfig
from signaling.tokens import issue_token

SECRET = "bench-secret-0123456789-0123456789-abcdef"
API_KEY = "bench-api-key-0123456789abcdef"
HOOK_SECRET = "bench-hook-secret-0123456789"


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"median_ms": round(statistics.median(values) * 1000, 2),
            "p95_ms": round(values[int(0.95 * (len(values) - 1))] * 1000, 2)}


async def _stalls(stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        out.append(time.perf_counter() - t - 0.005)


async def run(rooms: int, events: int, joins: int) -> dict[str, Any]:
    received: list[str] = []
    got_all = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(request.headers["Medstream-Event-Id"])
        await request.read()
        if len(received) >= events:
            got_all.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    with tempfile.TemporaryDirectory() as tmp:
        app = MedstreamApp(ServerConfig(
            signaling=SignalingConfig(secret=SECRET, rate_per_s=1e6, rate_burst=10**6), port=0, audit_log=None,
            media=False, waveforms=False, recorder=False, api_key=API_KEY,
            webhook_urls=(f"http://127.0.0.1:{hook_port}/hook",), webhook_secret=HOOK_SECRET,
            webhook_queue_dir=Path(tmp), webhook_retry_max_s=1.0))
        await app.start()
        out: dict[str, Any] = {}
        try:
            auth = {"Authorization": f"Bearer {API_KEY}"}
            async with aiohttp.ClientSession() as s:
                creates, lists = [], []
                for i in range(rooms):
                    t = time.perf_counter()
                    async with s.post(f"{app.url}/api/v1/rooms", json={"room_id": f"r{i}"}, headers=auth) as r:
                        assert r.status == 201
                    creates.append(time.perf_counter() - t)
                for _ in range(50):
                    t = time.perf_counter()
                    async with s.get(f"{app.url}/api/v1/rooms", headers=auth) as r:
                        await r.read()
                    lists.append(time.perf_counter() - t)
                out["admin_api"] = {"create_room": _ms(creates), "list_rooms_with_n": rooms, "list_rooms": _ms(lists)}
            # webhooks: wait for the room_started events of the creates, then a burst
            await asyncio.wait_for(_until(lambda: len(received) >= rooms), 60)
            received.clear()
            stalls: list[float] = []
            stop = asyncio.Event()
            ticker = asyncio.ensure_future(_stalls(stop, stalls))
            assert app.webhooks is not None
            t = time.perf_counter()
            for i in range(events):
                app.webhooks.publish("participant_joined", "r0", {"n": i})
            enqueue_s = time.perf_counter() - t
            await asyncio.wait_for(got_all.wait(), 600)
            elapsed = time.perf_counter() - t
            stop.set()
            await ticker
            out["webhooks"] = {"events": events, "enqueue_ms_total": round(enqueue_s * 1000, 1),
                               "delivered_per_s": round(events / elapsed, 1), "seconds": round(elapsed, 2),
                               "max_loop_stall_ms": round(max(stalls) * 1000, 2)}
            # joins through real websockets, from the node's own histogram
            import websockets

            socks = []
            for i in range(joins):
                ws = await websockets.connect(app.ws_url)
                tok = issue_token(SECRET, room="r1", identity=f"u{i}", role="viewer")
                await ws.send(json.dumps({"type": "join", "v": 1, "id": 1, "token": tok}))
                await ws.recv()
                socks.append(ws)
            h = app.prometheus.join_latency
            samples = {s.name + str(s.labels.get("le", "")): s.value for m in h.collect() for s in m.samples}
            count = samples["medstream_join_latency_seconds_count"]
            out["join_latency"] = {"joins": int(count), "mean_ms": round(
                samples["medstream_join_latency_seconds_sum"] / count * 1000, 2),
                "under_10ms": samples["medstream_join_latency_seconds_bucket0.01"] / count,
                "under_50ms": samples["medstream_join_latency_seconds_bucket0.05"] / count}
            for ws in socks:
                await ws.close()
        finally:
            await app.stop()
            await runner.cleanup()
    return out


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rooms", type=int, default=200)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--joins", type=int, default=200)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    result = asyncio.run(run(args.rooms, args.events, args.joins))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
