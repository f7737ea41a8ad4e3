"""The signaling server over real websockets on 127.0.0.1."""

import asyncio
import json
import time
import urllib.request

import pytest
import websockets

from signaling.roles import PERMISSIONS, Action, Role
from tests.helpers import WsClient, running_app, token


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_health_metrics_and_token_join(tmp_path):
    audit = tmp_path / "audit.jsonl"
    async with running_app(audit_log=audit) as app:
        status, body = await asyncio.to_thread(http_get, app.url + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        host = await WsClient.connect(app.ws_url)
        joined = await host.join(token("c1", "dr-wang", "host", kind="consultation", name="Dr Wang"))
        assert joined["type"] == "joined" and joined["room"] == {"id": "c1", "kind": "consultation", "recording": False}
        assert joined["participant"]["name"] == "Dr Wang"
        status, body = await asyncio.to_thread(http_get, app.url + "/metrics")
        assert status == 200
        assert "medstream_rooms 1" in body and "medstream_participants 1" in body
        assert 'medstream_messages_total{type="join"} 1' in body
        status, _ = await asyncio.to_thread(http_get, app.url + "/nope")
        assert status == 404
        await host.send({"type": "leave"})
        assert (await host.closed())[0] == 1000
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(x["event"], x["identity"]) for x in lines[:3]] == [
        ("room_created", "dr-wang"), ("join", "dr-wang"), ("leave", "dr-wang")]
    assert all({"time", "room", "role"} <= set(x) for x in lines)


async def test_token_window_and_forgery_over_sockets():
    async with running_app() as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("c1", "h", "host", kind="consultation"))
        cases = {
            "token_expired": token("c1", "late", "expert", valid_from=time.time() - 7200, valid_for_s=3600),
            "token_not_yet_valid": token("c1", "early", "expert", valid_from=time.time() + 3600),
            "invalid_token": token("c1", "x", "expert")[:-4] + "AAAA",
            "unknown_room": token("c9", "x", "expert"),
        }
        for reason, tok in cases.items():
            c = await WsClient.connect(app.ws_url)
            reply = await c.join(tok)
            assert (reply["type"], reply["reason"]) == ("error", reason)
            # the connection is still usable: a valid token joins on the same socket
            ok = await c.join(token("c1", f"retry-{reason}", "expert"))
            assert ok["type"] == "joined"
            await c.close()
        pong = await host.request("ping")
        assert pong["type"] == "pong"


async def test_permission_matrix_over_sockets():
    requests = {
        Action.PUBLISH_AUDIO: {"type": "publish", "audio": True},
        Action.PUBLISH_VIDEO: {"type": "publish", "video": True},
        Action.RAISE_HAND: {"type": "raise_hand", "raised": True},
        Action.MODERATE: {"type": "mute", "kind": "audio", "muted": True},
        Action.RECORD: {"type": "stop_recording"},
        Action.SUBSCRIBE: {"type": "set_video_paused", "paused": False},
    }
    async with running_app() as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("b1", "host", "host", kind="broadcast"))
        for role in (r for r in Role if r is not Role.SPEAKER):
            c = await WsClient.connect(app.ws_url)
            await c.join(token("b1", f"u-{role.value}", role.value))
            for action, msg in requests.items():
                fields = {k: v for k, v in msg.items() if k != "type"}
                if msg["type"] == "mute":
                    fields["participant_id"] = host.participant_id
                reply = await c.request(msg["type"], **fields)
                if action in PERMISSIONS[role]:
                    # allowed: either done, or refused for a reason other than permission
                    assert reply.get("reason") != "forbidden", (role, action, reply)
                else:
                    assert (reply["type"], reply["reason"]) == ("error", "forbidden"), (role, action, reply)
            await c.close()


async def test_resume_within_grace_and_timeout_after():
    async with running_app(resume_grace_s=1.0, idle_timeout_s=60) as app:
        app.server.tick_interval_s = 0.05
        host = await WsClient.connect(app.ws_url)
        await host.join(token("c1", "h", "host", kind="consultation"))
        tok = token("c1", "dr-li", "expert")
        expert = await WsClient.connect(app.ws_url)
        joined = await expert.join(tok)
        pid = joined["participant"]["participant_id"]
        expert.ws.transport.abort()  # drop the link, no close handshake
        upd = await host.wait_type("participant_updated", participant__participant_id=pid)
        assert upd["participant"]["connected"] is False
        back = await WsClient.connect(app.ws_url)
        again = await back.join(tok, resume=joined["resume"])
        assert again["resumed"] is True and again["participant"]["participant_id"] == pid
        assert [p["identity"] for p in again["participants"]] == ["h"]
        upd = await host.wait_type("participant_updated", participant__participant_id=pid)
        assert upd["participant"]["connected"] is True
        # now drop for good: after the grace period everyone sees a leave
        back.ws.transport.abort()
        left = await host.wait_type("participant_left", timeout=5)
        assert left == {"type": "participant_left", "participant_id": pid, "reason": "timeout"}
        late = await WsClient.connect(app.ws_url)
        reply = await late.join(tok, resume=again["resume"])
        assert reply["reason"] == "resume_failed"
        assert len(app.hub.store.get("c1").participants) == 1


async def test_200_participants_across_rooms():
    async with running_app() as app:
        hosts = []
        for r in range(10):
            h = await WsClient.connect(app.ws_url)
            await h.join(token(f"room-{r}", f"host-{r}", "host", kind="broadcast"))
            hosts.append(h)

        async def viewer(i):
            c = await WsClient.connect(app.ws_url)
            reply = await c.join(token(f"room-{i % 10}", f"viewer-{i}", "viewer"))
            assert reply["type"] == "joined"
            return c

        viewers = await asyncio.gather(*(viewer(i) for i in range(190)))
        assert app.hub.participant_count() == 200
        # each host sees its 19 viewers arrive
        for h in hosts:
            for _ in range(19):
                await h.wait_type("participant_joined", timeout=10)
        # a raised hand reaches exactly the 20 members of that room
        await viewers[3].request("raise_hand", raised=True)
        await hosts[3].wait_type("participant_updated", participant__hand_raised=True)
        assert not any(m["type"] == "participant_updated" for m in hosts[4].inbox)
        await asyncio.gather(*(v.close() for v in viewers))


async def test_bad_input_battery_leaves_everyone_else_served():
    async with running_app(max_message_bytes=4096, max_frame_bytes=65536, rate_per_s=50, rate_burst=50,
                           flood_close_after=100) as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("c1", "h", "host", kind="consultation"))
        expert = await WsClient.connect(app.ws_url)
        await expert.join(token("c1", "e", "expert"))
        bad = await WsClient.connect(app.ws_url)
        await bad.join(token("c1", "mallory", "expert"))
        battery = [
            "{{{", "[]", "null", '"str"', '{"type": 1}', '{"type":"sing"}', '{"type":"raise_hand"}',
            '{"type":"raise_hand","raised":"yes"}', '{"type":"subscribe","track_ids":[1,2]}',
            '{"type":"subscribe","track_ids":["nope"]}', '{"type":"promote","participant_id":"ghost"}',
            '{"type":"sdp","sdp_type":"answer","sdp":"garbage"}', '{"type":"sdp","sdp_type":"offer","sdp":"v=0"}',
            '{"type":"join","v":1,"token":"x"}', json.dumps({"type": "ping", "pad": "x" * 5000}),
            "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
        ]
        for frame in battery:
            await bad.send(frame)
        errors = [await bad.wait_type("error") for _ in battery]
        reasons = {e["reason"] for e in errors}
        assert {"bad_message", "unknown_track", "forbidden", "already_joined", "media_not_started",
                "message_too_large"} <= reasons, reasons
        # binary frames without waveforms enabled / as a non-monitor
        await bad.ws.send(b"\x00\x01")
        assert (await bad.wait_type("error"))["reason"] == "forbidden"
        # a flood: dropped with one rate-limit error a second, then the socket is closed
        for _ in range(400):
            await bad.send('{"type":"ping"}')
        code, _ = await bad.closed(timeout=10)
        assert code == 1008
        # an oversize frame closes that socket only (1009)
        big = await WsClient.connect(app.ws_url, max_size=None)
        await big.join(token("c1", "big", "expert"))
        await big.ws.send("x" * 70000)
        code, _ = await big.closed()
        assert code == 1009
        # everyone else is still served
        r = await expert.request("raise_hand", raised=True)
        assert r["type"] == "ok"
        await host.wait_type("participant_updated", participant__identity="e")
        assert (await host.request("ping"))["type"] == "pong"
        newcomer = await WsClient.connect(app.ws_url)
        assert (await newcomer.join(token("c1", "n", "expert")))["type"] == "joined"


async def test_non_ws_path_and_handshake_timeout():
    async with running_app(handshake_timeout_s=0.3) as app:
        app.server.tick_interval_s = 0.05
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(app.ws_url.replace("/ws", "/other"))
        lurker = await WsClient.connect(app.ws_url)
        code, reason = await lurker.closed(timeout=5)
        assert (code, reason) == (1008, "join timeout")


async def test_end_room_tells_everyone_why_before_saying_bye():
    async with running_app() as app:
        host, expert = await WsClient.connect(app.ws_url), await WsClient.connect(app.ws_url)
        await host.join(token("c9", "h", "host", kind="consultation"))
        await expert.join(token("c9", "e", "expert"))
        await host.send({"type": "end_room", "id": "end"})
        for c in (host, expert):  # the reason comes first, then the bye
            first = await c.wait(lambda m: m["type"] in ("room_ended", "bye"), timeout=5)
            assert first == {"type": "room_ended", "reason": "ended_by_host"}, first
        bye = await expert.wait(lambda m: m["type"] == "bye", timeout=5)
        assert bye["reason"] == "room_ended" and bye["resume"] is False
        await host.close()
        await expert.close()
