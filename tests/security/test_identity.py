"""Findings 1, 2, 7 (per token) and 10 of issue 15, through the real server: removal bars an
identity, one live connection per identity (takeover, no reload ghost), expiry during the session
with a warning, refresh over signaling."""

from __future__ import annotations

import asyncio
import time

from tests.helpers import WsClient, running_app, token


async def test_finding_1_removed_participant_cannot_rejoin_until_readmitted() -> None:
    async with running_app() as app:
        host = await WsClient.connect(app.ws_url)
        assert (await host.join(token("c1", "dr-host", "host", kind="consultation")))["type"] == "joined"
        expert_token = token("c1", "dr-x", "expert")
        expert = await WsClient.connect(app.ws_url)
        await expert.join(expert_token)
        reply = await host.request("remove", participant_id=expert.participant_id)
        assert reply["type"] == "ok"
        assert (await expert.wait_type("bye"))["reason"] == "removed"
        again = await WsClient.connect(app.ws_url)
        refused = await again.join(expert_token)
        assert refused["type"] == "error" and refused["reason"] == "removed", refused
        # the removed identity's resume key is dead too
        resumed = await again.join(expert_token, resume=expert.joined["resume"])  # type: ignore[index]
        assert resumed["type"] == "error" and resumed["reason"] == "removed"
        assert (await host.request("readmit", identity="dr-x"))["type"] == "ok"
        assert (await again.join(expert_token))["type"] == "joined"
        for c in (host, expert, again):
            await c.close()


async def test_finding_1_one_token_is_never_in_a_room_twice() -> None:
    async with running_app() as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("c1", "dr-host", "host", kind="consultation"))
        tok = token("c1", "dr-x", "expert")
        first, second = await WsClient.connect(app.ws_url), await WsClient.connect(app.ws_url)
        await first.join(tok)
        await second.join(tok)
        bye = await first.wait_type("bye")
        assert bye == {"type": "bye", "reason": "replaced", "resume": False}
        assert (await first.closed())[0] == 1000
        room = app.hub.store.get("c1")
        assert room is not None
        assert [p.identity for p in room.participants.values()].count("dr-x") == 1
        await host.close()
        await second.close()


async def test_finding_10_a_reload_leaves_no_ghost() -> None:
    """A page reload is a new connection without the resume key: the doctor is in the room once,
    connected, at once; nobody (the doctor included) sees a `connected: false` copy."""
    async with running_app(resume_grace_s=20.0) as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("c1", "dr-host", "host", kind="consultation"))
        tok = token("c1", "dr-x", "expert")
        before = await WsClient.connect(app.ws_url)
        await before.join(tok)
        old_pid = before.participant_id
        await before.ws.close()  # the page goes away without `leave`
        await host.wait_type("participant_updated", participant__participant_id=old_pid, participant__connected=False)
        after = await WsClient.connect(app.ws_url)
        joined = await after.join(tok)
        assert all(p["identity"] != "dr-x" for p in joined["participants"]), joined["participants"]
        left = await host.wait_type("participant_left", participant_id=old_pid)
        assert left["reason"] == "replaced"
        await host.wait_type("participant_joined", participant__participant_id=after.participant_id)
        room = app.hub.store.get("c1")
        assert room is not None
        assert [(p.identity, p.connected) for p in room.participants.values() if p.identity == "dr-x"] == [("dr-x", True)]
        await host.close()
        await after.close()


async def test_finding_7_one_viewer_token_cannot_fill_a_consultation() -> None:
    async with running_app(max_participants_per_room=4) as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("c1", "dr-host", "host", kind="consultation"))
        tok = token("c1", "student", "viewer")
        copies = []
        for _ in range(6):
            c = await WsClient.connect(app.ws_url)
            assert (await c.join(tok))["type"] == "joined"
            copies.append(c)
        experts = []
        for i in range(2):
            e = await WsClient.connect(app.ws_url)
            reply = await e.join(token("c1", f"dr-{i}", "expert"))
            assert reply["type"] == "joined", reply
            experts.append(e)
        for c in [host, *copies, *experts]:
            await c.close()


async def test_finding_7_a_token_that_joins_in_a_loop_is_rate_limited() -> None:
    async with running_app(token_join_burst=3, token_join_rate_per_s=0.01) as app:
        tok = token("c1", "dr-host", "host", kind="consultation")
        replies = []
        for _ in range(5):
            c = await WsClient.connect(app.ws_url)
            replies.append((await c.join(tok))["type"])
            await c.close()
        assert replies[:3] == ["joined"] * 3 and replies[3:] == ["error", "error"]


async def _ping_until(client: WsClient, wall_time: float) -> None:
    """Keep a connection busy (and prove it is alive) until `wall_time` has passed."""
    while time.time() < wall_time:
        assert (await client.request("ping"))["type"] == "pong"
        await asyncio.sleep(0.1)


async def test_finding_2_expiry_is_enforced_during_the_session_with_a_warning() -> None:
    """A supervisor whose token runs out while watching gets `token_expiring`, then `bye` with
    `token_expired` and is closed: it stops receiving the ward's data."""
    async with running_app(token_leeway_s=1.0, token_warning_s=2.0, rooms=(("ward", "monitoring"),)) as app:
        app.server.tick_interval_s = 0.1
        now = time.time()
        sup = await WsClient.connect(app.ws_url)
        joined = await sup.join(token("ward", "qc-1", "supervisor", valid_from=now - 60, valid_for_s=62.5))
        assert joined["type"] == "joined"
        warning = await sup.wait_type("token_expiring", timeout=10)
        assert warning["seconds_left"] <= 2.0 + 0.5
        bye = await sup.wait_type("bye", timeout=10)
        assert bye["reason"] == "token_expired" and bye["resume"] is False
        assert (await sup.closed())[0] == 1000
        assert app.hub.store.get("ward").participants == {}  # type: ignore[union-attr]


async def test_refresh_over_signaling_keeps_an_overrunning_consultation() -> None:
    async with running_app(token_leeway_s=0.5, token_warning_s=2.0) as app:
        app.server.tick_interval_s = 0.1
        now = time.time()
        host = await WsClient.connect(app.ws_url)
        await host.join(token("c1", "dr-host", "host", kind="consultation", valid_from=now - 60, valid_for_s=62))
        warning = await host.wait_type("token_expiring", timeout=10)
        # a token for someone else (or another role) does not extend this session
        wrong = await host.request("refresh_token", token=token("c1", "dr-other", "host"))
        assert wrong["type"] == "error" and wrong["reason"] == "invalid_token"
        extended = await host.request("refresh_token", token=token("c1", "dr-host", "host", valid_for_s=3600))
        assert extended["type"] == "token_refreshed" and extended["expires_at"] > now + 3000
        await _ping_until(host, warning["expires_at"] + 1.0)  # past the old end: still in
        assert not any(m["type"] == "bye" for m in host.inbox)
        await host.close()


async def test_tokens_of_the_previous_key_still_join_after_a_rotation() -> None:
    from signaling.tokens import KeyRing, SigningKey, issue_token
    from tests.helpers import SECRET

    new_secret = "rotated-secret-" + "n" * 40
    async with running_app(secret=new_secret, secret_kid="2026-12", previous_secret=SECRET, previous_kid="2026-11") as app:
        old = issue_token(KeyRing(SigningKey("2026-11", SECRET)), room="c1", identity="a", role="host", room_kind="consultation")
        new = issue_token(KeyRing(SigningKey("2026-12", new_secret)), room="c1", identity="b", role="expert")
        unknown = issue_token(KeyRing(SigningKey("1999-01", "z" * 40)), room="c1", identity="c", role="expert")
        for tok, expected in ((old, "joined"), (new, "joined"), (unknown, "error")):
            c = await WsClient.connect(app.ws_url)
            assert (await c.join(tok))["type"] == expected
            await c.close()
