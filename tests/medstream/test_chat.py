"""Chat through the real server: who receives what, the rate limit, and the record of a recorded room."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import timeout_s
from tests.helpers import WsClient, running_app, token
from tests.recorder.rtc import wait_until


async def test_chat_reaches_the_room_is_rate_limited_and_kept_only_when_recorded(tmp_path: Path) -> None:
    async with running_app(recorder=True, recordings_dir=tmp_path) as app:
        host, expert = await WsClient.connect(app.ws_url), await WsClient.connect(app.ws_url)
        await host.join(token("c1", "dr-wang", "host", kind="consultation", name="王医生"))
        await expert.join(token("c1", "dr-li", "expert", name="李医生"))
        assert (await expert.request("chat", text="before recording"))["type"] == "ok"
        got = await host.wait(lambda m: m["type"] == "chat_message", timeout=timeout_s(5))
        assert (got["name"], got["text"], got["role"]) == ("李医生", "before recording", "expert")
        assert (await host.request("start_recording"))["type"] == "ok"
        await wait_until(lambda: "c1" in app.recorder.rooms, 10, "the recording to start")
        assert (await host.request("chat", text="请把导联V2放大"))["type"] == "ok"
        # a burst beyond the limit is refused, the connection stays
        replies = [await expert.request("chat", text=f"n{i}") for i in range(8)]
        assert [r["type"] for r in replies].count("ok") <= 5
        assert any(r.get("reason") == "rate_limited" for r in replies)
        assert (await expert.request("ping"))["type"] == "pong"
        assert (await host.request("stop_recording"))["type"] == "ok"
        await wait_until(lambda: "c1" not in app.recorder.rooms, 10, "the recording to be final")
        await host.close()
        await expert.close()
    [session] = list((tmp_path / "c1").iterdir())
    lines = [json.loads(line) for line in (session / "chat.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [m["text"] for m in lines]
    assert texts[0] == "请把导联V2放大" and "before recording" not in texts
    assert all(t.startswith("n") for t in texts[1:])


async def test_a_question_from_the_hall_reaches_the_moderator_not_the_other_viewers() -> None:
    async with running_app() as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("hall", "presenter", "host", kind="broadcast"))
        v1, v2 = await WsClient.connect(app.ws_url), await WsClient.connect(app.ws_url)
        await v1.join(token("hall", "clinic-1", "viewer"))
        await v2.join(token("hall", "clinic-2", "viewer"))
        assert (await v1.request("chat", text="Is the recording shared?"))["type"] == "ok"
        q = await host.wait(lambda m: m["type"] == "chat_message", timeout=timeout_s(5))
        assert q["to_moderators"] is True and q["text"] == "Is the recording shared?"
        assert (await host.request("chat", text="Yes, after the lecture."))["type"] == "ok"
        answer = await v2.wait(lambda m: m["type"] == "chat_message", timeout=timeout_s(5))
        assert answer["text"] == "Yes, after the lecture."  # the first one v2 sees is the answer
        for c in (host, v1, v2):
            await c.close()
