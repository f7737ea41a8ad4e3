"""Issue 10, failures: a node SIGKILLed (its rooms re-placed, monitors back-fill, nothing lost),
Redis killed and restarted (rooms keep being served, cross-node work refused, then re-asserted)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from clients.monitor_sim import MonitorSimConfig, MonitorSimulator, RecordSource
from protocol import waveforms as wf
from tests.cluster.conftest import Cluster, ctoken, join_via, room_state, until
from tests.conftest import timeout_s
from tests.helpers import WsClient

pytestmark = pytest.mark.slow


def metric(node_url: str, name: str) -> float:
    text = urllib.request.urlopen(node_url + "/metrics", timeout=5).read().decode()
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def chunks_of(wall: WsClient) -> list[wf.ViewerChunk]:
    out = []
    for frame in wall.binary:
        msg = wf.decode_server_frame(frame)
        if isinstance(msg, wf.ViewerChunk):
            out.append(msg)
    return out


def lost_gaps(wall: WsClient) -> list[wf.Gap]:
    return [m for f in wall.binary if isinstance(m := wf.decode_server_frame(f), wf.Gap) and m.lost]


async def test_a_wall_sees_a_monitor_across_nodes_and_both_survive_a_sigkill(cluster: Cluster,
                                                                               ecg_data_dir: Path) -> None:
    a, b = cluster.start_nodes(("a", "b"))
    cluster.wait_nodes(a, 2)
    # the platform books the ward through node a's admin API: a hosts it, and what was booked
    # (window, recording policy, metadata) goes with the ward when it is taken over
    now = time.time()
    booked = {"room_id": "ward-7", "kind": "monitoring", "booked_from": now - 60, "booked_until": now + 3600,
              "recording": "off", "metadata": {"ward": "cardiology-7"}, "max_participants": 40}
    a.post("/api/v1/rooms", booked)
    station = ctoken("ward-7", "central-station", "host", kind="monitoring")
    await until(lambda: (s := room_state(b, "ward-7")) and s["node_id"] == "a", 10, "the booked ward in the directory")
    wall, joined, hops = await join_via(b.ws_url, station)  # the wall comes in through node b
    assert joined["type"] == "joined" and hops == [a.ws_url]
    home, other = a, b
    # the monitor comes in through the node that does not host the ward (what a load balancer or
    # DNS gave it): it is redirected to the ward's node, and comes back there after the kill
    sim = MonitorSimulator(RecordSource(ecg_data_dir / "mitdb" / "100"), MonitorSimConfig(
        url=other.ws_url, token=ctoken("ward-7", "monitor-bed-1", "monitor"), stream_id="bed-1",
        speed=4.0, reconnect_min_s=0.05, reconnect_max_s=0.5))
    run = asyncio.create_task(sim.run(duration_s=40.0))
    try:
        await until(lambda: len(chunks_of(wall)) >= 40, 20, "the wall to see the monitor's chunks")
        assert sim._node_url == home.ws_url, "the monitor was redirected to the ward's node"
        seen_before = {c.chunk.seq for c in chunks_of(wall)}

        home.kill()  # SIGKILL: no drain, no goodbye
        killed_at = time.monotonic()
        await wall.close()
        # the station reconnects to the address it was given; the cluster re-places the ward
        wall, joined, _ = await until(lambda: _try_join(other.ws_url, station), 10, "the ward back on a live node")
        await until(lambda: any(c.chunk.seq not in seen_before for c in chunks_of(wall)), 10,
                    "the monitor's samples on the new node")
        resumed_s = time.monotonic() - killed_at
        assert resumed_s < timeout_s(10), f"took {resumed_s:.1f} s to resume"

        stats = await asyncio.wait_for(run, timeout_s(90))  # every sample generated is acked
        total = sim.next_seq
        assert stats.acked_seq == total
        assert stats.chunks_backfilled > 0  # what the dead node had not stored came again
        # the new node's record of the stream: every sample exactly once, none declared lost
        assert await asyncio.to_thread(metric, other.url, "medstream_waveform_samples_in_total") == total
        assert await asyncio.to_thread(metric, other.url, "medstream_waveform_lost_samples_total") == 0
        assert not lost_gaps(wall)
        state = await until(lambda: (s := room_state(other, "ward-7")) and len(s["participants"]) == 2 and s,
                            10, "the ward's state on its new node")
        assert state["node_id"] == other.name
        ward = other.get("/api/v1/rooms/ward-7")
        assert (ward["booked_from"], ward["booked_until"]) == (booked["booked_from"], booked["booked_until"])
        assert (ward["recording_policy"], ward["metadata"], ward["max_participants"]) == ("off", booked["metadata"], 40)
        assert {p["identity"] for p in state["participants"]} == {"central-station", "monitor-bed-1"}
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await wall.close()


async def _try_join(url: str, tok: str):  # type: ignore[no-untyped-def]
    try:
        ws, reply, hops = await join_via(url, tok)
    except OSError:
        return None
    if reply["type"] != "joined":
        await ws.close()
        return None
    return ws, reply, hops


async def test_redis_restart_loses_no_room_and_a_node_without_redis_serves_its_own(cluster: Cluster) -> None:
    a, b = cluster.start_nodes(("a", "b"))
    cluster.wait_nodes(a, 2)
    host, _, _ = await join_via(a.ws_url, ctoken("c9", "doctor", "host", kind="consultation"))
    home_name = (await until(lambda: room_state(a, "c9"), 10, "c9's state"))["node_id"]
    home, other = (a, b) if home_name == "a" else (b, a)
    expert, _, _ = await join_via(other.ws_url, ctoken("c9", "expert", "expert"))

    cluster.redis.kill()
    # the room's node keeps serving it: its people still talk, and someone new joins there directly
    assert (await host.request("chat", text="still here?"))["type"] == "ok"
    await expert.wait_type("chat_message", text="still here?")
    nurse, reply, _ = await join_via(home.ws_url, ctoken("c9", "nurse", "expert"))
    assert reply["type"] == "joined"
    # the other node cannot know where c9 lives: a clear refusal, not a wrong room (once it has
    # noticed; until then it may still redirect from the directory it read a heartbeat ago)
    await until(lambda: not other.get("/cluster/v1/nodes")["available"], 10, "the other node to notice")
    probe, refused, _ = await join_via(other.ws_url, ctoken("c9", "late", "expert"))
    assert refused["type"] == "error" and refused["reason"] == "cluster_unavailable", refused
    await probe.close()

    cluster.redis.start()  # empty: no persistence
    # the nodes re-register and re-assert their rooms and state: c9 is found again, from anywhere
    await until(lambda: room_state(other, "c9"), 15, "c9 re-asserted in the directory")
    await until(lambda: other.get("/cluster/v1/nodes")["available"], 15, "the other node back in the cluster")
    state = await until(lambda: (s := room_state(other, "c9")) and len(s["participants"]) == 3 and s, 10,
                        "c9's state rewritten")
    assert state["node_id"] == home.name
    assert {p["identity"] for p in state["participants"]} == {"doctor", "expert", "nurse"}
    # (a node that came back before c9's node re-registered answers cluster_unavailable, never
    # takes c9 over: the late expert retries, as clients do, and is sent to c9's node)
    late, reply, hops = await until(lambda: _try_join(other.ws_url, ctoken("c9", "late", "expert")), 15,
                                    "the late expert in c9")
    assert reply["type"] == "joined" and reply["room"]["id"] == "c9" and hops, reply
    for ws in (host, expert, nurse, late):
        await ws.close()

