"""One UDP port for every peer (media_server/udp_mux.py): real aiortc peers, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

import aioice
import aioice.ice
import pytest
from aioice import stun

from media_server import udp_mux
from media_server.config import MediaConfig
from tests.conftest import timeout_s
from tests.media_server.conftest import loopback_config
from tests.media_server.test_sfu import assert_forwarded_as_encoded
from tests.support.rtc_peer import ClientPeer, SfuHarness

BOTH = frozenset({"audio", "video"})


@pytest.fixture
async def mux_harness() -> AsyncIterator[SfuHarness]:
    h = SfuHarness(loopback_config(ice_udp_port=0))
    try:
        yield h
    finally:
        await h.close()


def _server_ports(harness: SfuHarness) -> set[int]:
    """The local ports of every ICE protocol of every server peer."""
    ports = set()
    for peer in harness.sfu._peers.values():
        for transceiver in peer.pc.getTransceivers():
            transport = transceiver.receiver.transport or transceiver.sender.transport
            for protocol in transport.transport.iceGatherer._connection._protocols:
                ports.add(protocol.local_candidate.port)
    return ports


def _fds() -> int:
    """Open socket descriptors of this process (clients and server alike)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n


def test_config_needs_an_address_and_a_valid_port() -> None:
    with pytest.raises(ValueError, match="ice_host_addresses"):
        MediaConfig(ice_udp_port=40000)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        MediaConfig(ice_host_addresses=("127.0.0.1",), ice_udp_port=70000)


def test_a_port_in_use_fails_at_start_up_naming_the_option() -> None:
    from medstream.serve import listen_error

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        with pytest.raises(OSError) as caught:
            udp_mux.UdpMux("127.0.0.1", port)
        # what `medstream serve` prints before it exits with status 2
        said = listen_error(caught.value, "0.0.0.0", 8765)
        assert f"port {port} on 127.0.0.1 is already in use" in said and "--udp-port" in said, said
    finally:
        taken.close()
    with pytest.raises(OSError) as caught:
        udp_mux.UdpMux("192.0.2.10", 40000)  # TEST-NET-1: no address of this machine
    assert "--ice-host" in listen_error(caught.value, "0.0.0.0", 8765)


def test_the_aioice_seam_is_there() -> None:
    import inspect

    udp_mux.install()
    udp_mux.install()  # idempotent
    assert aioice.ice.Connection.get_component_candidates is udp_mux._get_component_candidates
    # aioice gathers through the method we wrap, and routes requests through request_received
    assert "self.get_component_candidates(" in inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "def request_received" in inspect.getsource(aioice.ice.Connection)


def test_the_seam_refuses_an_aioice_it_was_not_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice, "__version__", "0.14.0")
    with pytest.raises(RuntimeError, match="written against aioice"):
        udp_mux.install()
    monkeypatch.setattr(aioice, "__version__", "0.13.0")
    monkeypatch.setattr(aioice.ice.Connection, "get_component_candidates", lambda *a: [])
    with pytest.raises(RuntimeError, match="was replaced"):
        udp_mux.install()


@pytest.mark.webrtc
async def test_one_publisher_to_several_subscribers_over_one_port(mux_harness: SfuHarness) -> None:
    harness = mux_harness
    mux = harness.sfu.udp_muxes[0]
    fds_before = _fds()
    alice = await harness.join(ClientPeer("alice", video_codec="VP8", audio=True))
    viewers = [await harness.join(ClientPeer(f"v{i}")) for i in range(4)]
    ids = await harness.publish("alice", BOTH, timeout_s(5))
    for viewer in viewers:
        await harness.sfu.subscribe(viewer.name, [ids["video"], ids["audio"]])
    tracks = [await v.wait_track(ids["video"], timeout_s(5)) for v in viewers]
    audios = [await v.wait_track(ids["audio"], timeout_s(5)) for v in viewers]
    for video, audio in zip(tracks, audios, strict=True):
        await video.wait_frames(10, timeout_s(8))
        await audio.wait_frames(20, timeout_s(8))
        assert video.frames[0].keyframe
        assert_forwarded_as_encoded(alice, [f.data for f in video.frames])
    # every server peer's ICE host candidate is the one shared port, and no socket was opened
    # per server peer (the clients' own sockets are the only new descriptors: one each)
    assert _server_ports(harness) == {mux.port}
    assert mux.connections == 5
    print("socket descriptors opened:", _fds() - fds_before)
    assert _fds() - fds_before <= 5 + 1  # the clients' own sockets, one each (a socket per peer: 14 here)
    assert not mux.dropped, mux.dropped
    # a subscriber leaving detaches from the mux; the others keep receiving
    await harness.sfu.close_peer("v0")
    await viewers[0].close()
    assert mux.connections == 4
    before = len(tracks[1].frames)
    await tracks[1].wait_frames(before + 5, timeout_s(8))


@pytest.mark.webrtc
async def test_bad_datagrams_on_the_shared_port_are_dropped_and_hurt_no_one(
        mux_harness: SfuHarness, caplog: pytest.LogCaptureFixture) -> None:
    harness = mux_harness
    mux = harness.sfu.udp_muxes[0]
    alice = await harness.join(ClientPeer("alice", video_codec="VP8"))
    bob = await harness.join(ClientPeer("bob"))
    ids = await harness.publish("alice", frozenset({"video"}), timeout_s(5))
    await harness.sfu.subscribe("bob", [ids["video"]])
    video = await bob.wait_track(ids["video"], timeout_s(5))
    await video.wait_frames(5, timeout_s(8))

    ufrag = next(iter(mux._by_ufrag))
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    attacker_addr = attacker.getsockname()
    target = ("127.0.0.1", mux.port)
    garbage = [b"", b"\xff" * 40, b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"x" * 4,
               os.urandom(200)]
    unknown = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    unknown.attributes["USERNAME"] = "nobody:x"
    unknown.add_message_integrity(b"whatever")
    forged = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    forged.attributes["USERNAME"] = f"{ufrag}:x"  # a real ufrag, but not its password
    forged.attributes["USE-CANDIDATE"] = None
    forged.add_message_integrity(b"not-the-password")
    stray = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    # SRTP and DTLS from an address that never passed a check (a spoofed or stale source)
    srtp = bytes([0x80, 96]) + os.urandom(150)
    dtls = bytes([22, 0xFE, 0xFD]) + os.urandom(60)
    with caplog.at_level(logging.INFO, logger="media_server.udp_mux"):
        for _ in range(20):
            for data in [*garbage, bytes(unknown), bytes(forged), bytes(stray), srtp, dtls]:
                attacker.sendto(data, target)
        reasons = {"not STUN, DTLS or RTP", "malformed STUN", "STUN request for an unknown ufrag",
                   "STUN request failing MESSAGE-INTEGRITY", "STUN response to no transaction of ours",
                   "media from an address no ICE check came from"}

        async def all_dropped() -> None:
            while sum(mux.dropped.values()) < 20 * 9 or not reasons <= set(mux.dropped):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(all_dropped(), timeout_s(5))
    attacker.close()
    lines = [r for r in caplog.records if r.name == "media_server.udp_mux"]
    assert len(lines) == len(mux.dropped), [r.getMessage() for r in lines]  # one line per reason
    # the attacker's address bound nothing, and the real subscriber still receives
    assert attacker_addr not in mux._by_addr
    before = len(video.frames)
    await video.wait_frames(before + 5, timeout_s(8))
    assert_forwarded_as_encoded(alice, [f.data for f in video.frames])
    assert mux.connections == 2


@pytest.mark.webrtc
async def test_a_node_with_udp_port_serves_a_consultation_over_one_port() -> None:
    """Through the real signaling server, with `udp_port` as `medstream serve --udp-port` sets it."""
    from tests.helpers import MediaParticipant, running_app, token

    async with running_app(media=True, ice_host_addresses=("127.0.0.1",), udp_port=0) as app:
        mux = app.media.udp_muxes[0]
        doctor = await MediaParticipant.join(app, token("c-mux", "doc", "host", kind="consultation"),
                                             name="doctor", video_codec="VP8", audio=True)
        expert = await MediaParticipant.join(app, token("c-mux", "expert", "expert"),
                                             name="expert", video_codec="VP8", audio=True)
        d_video = next(t["track_id"] for t in await doctor.publish(audio=True, video=True) if t["kind"] == "video")
        e_video = next(t["track_id"] for t in await expert.publish(audio=True, video=True) if t["kind"] == "video")
        at_expert = await expert.peer.wait_track(d_video, timeout_s(10))
        at_doctor = await doctor.peer.wait_track(e_video, timeout_s(10))
        await at_expert.wait_frames(10, timeout_s(10))
        await at_doctor.wait_frames(10, timeout_s(10))
        assert_forwarded_as_encoded(doctor.peer, [f.data for f in at_expert.frames])
        assert mux.connections == 2 and not mux.dropped
        await expert.close()
        await doctor.close()


@pytest.mark.browser
@pytest.mark.webrtc
async def test_two_browsers_over_the_one_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from playwright.async_api import async_playwright

    from tests.clients.browser import closing, launch, make_fake_media, open_page, page_errors, wait_for, wait_receiving
    from tests.helpers import running_app, token

    media_a = make_fake_media(tmp_path, "a", (220, 40, 40), 440.0)
    media_b = make_fake_media(tmp_path, "b", (40, 60, 220), 880.0)
    async with running_app(media=True, ice_host_addresses=("127.0.0.1",), udp_port=0) as app, \
            async_playwright() as pw:  # noqa: SIM117
        async with closing(await launch(pw, media_a)) as ba, closing(await launch(pw, media_b)) as bb:
            mux = app.media.udp_muxes[0]
            pa, la = await open_page(ba, f"{app.url}/consultation.html?token=" + token(
                "consult-mux", "dr-a", "host", kind="consultation", name="Dr A"), "host")
            await wait_for(pa, "() => window.medstream.state === 'joined' && window.medstream.publishing",
                           what="host joined and publishing")
            pb, lb = await open_page(bb, f"{app.url}/consultation.html?token=" + token(
                "consult-mux", "dr-b", "expert", name="Dr B"), "expert")
            await wait_for(pb, "() => window.medstream.state === 'joined'", what="expert joined")
            id_a = await pa.evaluate("window.medstream.participant.participant_id")
            id_b = await pb.evaluate("window.medstream.participant.participant_id")
            got_b = await wait_receiving(pa, id_b, app=app)
            got_a = await wait_receiving(pb, id_a, app=app)
            assert got_a["video"]["packetsLost"] == 0 and got_b["video"]["packetsLost"] == 0
            assert mux.connections >= 2 and not mux.dropped, mux.dropped
            assert not page_errors(la, lb)
