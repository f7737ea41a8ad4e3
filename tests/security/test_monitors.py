"""Findings 3, 4, 5 and 6 of issue 15, through the real server: a monitor's stream belongs to its
device, a restarted monitor starts a new segment, departed monitors' streams are closed, and a
standing ward survives `end_room`."""

from __future__ import annotations

from protocol import signaling as wire
from protocol.waveforms import Ack, StreamAnnounce, StreamEnded, ViewerChunk, WaveformError
from tests.helpers import WsClient, running_app, token
from tests.security.conftest import announce, chunk, next_binary, send_frame

WARD = (("ward", "monitoring"),)


async def _monitor(app, identity: str) -> WsClient:  # type: ignore[no-untyped-def]
    m = await WsClient.connect(app.ws_url)
    reply = await m.join(token("ward", identity, "monitor"))
    assert reply["type"] == "joined", reply
    return m


async def _ack(m: WsClient, stream: str) -> Ack | WaveformError:
    reply = await next_binary(m, lambda x: isinstance(x, (Ack, WaveformError)) and x.stream_id in (stream, None))
    assert isinstance(reply, (Ack, WaveformError))
    return reply


async def test_finding_3_another_monitor_cannot_take_over_a_briefly_disconnected_stream() -> None:
    async with running_app(waveforms=True, rooms=WARD) as app:
        wall = await WsClient.connect(app.ws_url)
        await wall.join(token("ward", "nurse-station", "supervisor"))
        bed1 = await _monitor(app, "device-bed-1")
        await send_frame(bed1, announce("bed-1"))
        assert await _ack(bed1, "bed-1") == Ack("bed-1", 0)
        await send_frame(bed1, chunk("bed-1", 0))
        assert await _ack(bed1, "bed-1") == Ack("bed-1", 250)
        await bed1.ws.close()  # the link drops (no `leave`)
        await wall.wait_type("participant_updated", participant__connected=False)

        intruder = await _monitor(app, "device-bed-2")
        await send_frame(intruder, announce("bed-1"))
        refused = await _ack(intruder, "bed-1")
        assert isinstance(refused, WaveformError) and refused.reason == "stream_taken", refused
        await send_frame(intruder, chunk("bed-1", 250, value=1000))
        refused = await _ack(intruder, "bed-1")
        assert isinstance(refused, WaveformError) and refused.reason == "stream_taken", refused

        back = await _monitor(app, "device-bed-1")  # a fresh join (resume key lost)
        await send_frame(back, announce("bed-1"))
        assert await _ack(back, "bed-1") == Ack("bed-1", 250)
        await send_frame(back, chunk("bed-1", 250))
        assert await _ack(back, "bed-1") == Ack("bed-1", 500)
        shown = await next_binary(wall, lambda x: isinstance(x, StreamAnnounce) and x.publisher_id == back.participant_id)
        assert shown.announce.stream_id == "bed-1"  # type: ignore[union-attr]
        for c in (wall, intruder, back):
            await c.close()


async def test_finding_4_a_restarted_monitor_starts_a_new_segment_and_loses_nothing() -> None:
    async with running_app(waveforms=True, rooms=WARD) as app:
        wall = await WsClient.connect(app.ws_url)
        await wall.join(token("ward", "nurse-station", "supervisor"))
        first = await _monitor(app, "device-bed-1")
        await send_frame(first, announce("bed-1", session="run-1"))
        for seq in range(0, 4000, 250):  # 8 s at 500 Hz
            await send_frame(first, chunk("bed-1", seq))
        assert (await next_binary(first, lambda x: isinstance(x, Ack) and x.next_seq == 4000)) == Ack("bed-1", 4000)
        await first.send(wire.Leave())
        await first.closed()
        second = await _monitor(app, "device-bed-1")  # the monitor restarted: counter at 0
        await send_frame(second, announce("bed-1", session="run-2"))
        assert await _ack(second, "bed-1") == Ack("bed-1", 0)
        await send_frame(second, chunk("bed-1", 0, value=500))
        assert await _ack(second, "bed-1") == Ack("bed-1", 250)
        ended = await next_binary(wall, lambda x: isinstance(x, StreamEnded))
        assert ended == StreamEnded("bed-1", "new_segment")
        segment = await next_binary(wall, lambda x: isinstance(x, StreamAnnounce) and x.announce.segment == 1)
        assert segment.publisher_id == second.participant_id  # type: ignore[union-attr]
        shown = await next_binary(wall, lambda x: isinstance(x, ViewerChunk) and x.chunk.seq == 0 and x.live)
        assert int(shown.chunk.samples[0, 0]) == 500  # type: ignore[union-attr]
        for c in (wall, second):
            await c.close()


async def test_finding_5_departed_monitors_streams_close_and_free_their_slots() -> None:
    async with running_app(waveforms=True, rooms=WARD, waveform_retention_s=0.0) as app:
        wall = await WsClient.connect(app.ws_url)
        await wall.join(token("ward", "nurse-station", "supervisor"))
        for i in range(70):  # the limit is 64 streams a room
            m = await _monitor(app, f"device-{i}")
            await send_frame(m, announce(f"bed-{i}"))
            reply = await _ack(m, f"bed-{i}")
            assert reply == Ack(f"bed-{i}", 0), (i, reply)
            await m.send(wire.Leave())
            await m.closed()
        ended = await next_binary(wall, lambda x: isinstance(x, StreamEnded) and x.stream_id == "bed-69", timeout=10)
        assert ended == StreamEnded("bed-69", "publisher_gone")
        assert app.waveforms is not None and app.waveforms.stats().streams == 0
        await wall.close()


async def test_finding_6_a_standing_room_survives_end_room() -> None:
    async with running_app(waveforms=True, rooms=WARD) as app:
        host = await WsClient.connect(app.ws_url)
        await host.join(token("ward", "dr-host", "host"))
        mon = await _monitor(app, "device-bed-1")
        await host.send(wire.EndRoom())
        assert (await mon.wait_type("bye"))["reason"] == "room_ended"
        again = await _monitor(app, "device-bed-1")  # not `unknown_room`
        await send_frame(again, announce("bed-1"))
        assert await _ack(again, "bed-1") == Ack("bed-1", 0)
        await host.wait_type("room_ended")  # everyone is told before their `bye`
        host2 = await WsClient.connect(app.ws_url)
        assert (await host2.join(token("ward", "dr-host", "host")))["type"] == "joined"
        for c in (host, mon, again, host2):
            await c.close()
