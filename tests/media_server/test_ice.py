"""The ICE host-address override: exactly the configured addresses, only where asked."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from media_server import ice


def test_override_applies_only_inside_the_block() -> None:
    ice.install()
    ice.install()  # idempotent
    outside = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    assert "127.0.0.1" not in outside  # aioice's own rule, untouched outside the block
    with ice.host_addresses(("127.0.0.1", "::1")):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == outside


def test_install_refuses_a_foreign_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda **_: [])
    with pytest.raises(RuntimeError, match="replaced by someone else"):
        ice.install()


def test_gather_uses_aioice_hook() -> None:
    # the seam we rely on: aioice's gatherer calls the module-level function by name
    import inspect

    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in source


@pytest.mark.webrtc
async def test_offer_carries_exactly_the_configured_address() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        offer = await pc.createOffer()
        with ice.host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(offer)
        candidates = [
            line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
        ]
        assert candidates, pc.localDescription.sdp
        assert all(" 127.0.0.1 " in line for line in candidates), candidates
    finally:
        await pc.close()


def test_loopback_only_server_ignores_lan_and_mdns_candidates():
    from media_server.ice import serves_candidate

    assert serves_candidate("127.0.0.1", ("127.0.0.1",))
    assert serves_candidate("::1", ("127.0.0.1",))
    assert not serves_candidate("192.168.1.20", ("127.0.0.1",))
    assert not serves_candidate("4f1c2b7e-1111-2222-3333-444455556666.local", ("127.0.0.1",))
    # a server with a real address keeps every candidate (the client may be anywhere)
    assert serves_candidate("192.168.1.20", ("203.0.113.7",))
    assert serves_candidate("10.0.0.5", ())


def _stun_protocol() -> tuple[aioice.ice.Connection, aioice.ice.StunProtocol]:
    from aioice.candidate import Candidate

    connection = aioice.ice.Connection(ice_controlling=True)
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = Candidate(foundation="1", component=1, transport="udp", priority=1,
                                         host="127.0.0.1", port=9, type="host")
    return connection, protocol


async def test_rtp_datagrams_are_never_parsed_as_stun() -> None:
    """aioice parsed every datagram as STUN and lost an SRTP packet whose sequence number equals
    its length - 20 (PCMA, payload type 8: a CREATE-PERMISSION "request" to its parser)."""
    ice.install()
    connection, protocol = _stun_protocol()
    rtp = bytes([0x80, 0x08]) + (200 - 20).to_bytes(2, "big") + bytes(196)
    dtls = bytes([22, 0xFE, 0xFD]) + bytes(60)
    protocol.datagram_received(rtp, ("127.0.0.1", 5000))
    protocol.datagram_received(dtls, ("127.0.0.1", 5000))
    assert [connection._queue.get_nowait() for _ in range(2)] == [(rtp, 1), (dtls, 1)]


async def test_stun_datagrams_still_take_aioices_path() -> None:
    from aioice import stun

    ice.install()
    connection, protocol = _stun_protocol()
    response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
    seen: list[object] = []

    class _Transaction:
        def response_received(self, message: object, addr: object) -> None:
            seen.append(message)

    protocol.transactions[response.transaction_id] = _Transaction()  # type: ignore[assignment]
    protocol.datagram_received(bytes(response), ("127.0.0.1", 5000))
    assert len(seen) == 1 and connection._queue.empty()


def test_aioice_datagram_path_the_demux_replaces() -> None:
    import inspect

    source = inspect.getsource(ice._ORIGINAL_DATAGRAM_RECEIVED)
    assert "stun.parse_message(data)" in source
    assert "self.receiver.data_received(data, self.local_candidate.component)" in source


def test_the_lazy_mdns_stand_in_answers_as_aioice_mdns_and_loads_it_on_use() -> None:
    """aioice.mdns (and dnspython behind it, 3.5 MiB of the idle node) is loaded only when used;
    tests/medstream/test_lean_node.py checks a fresh node does not load it."""
    import sys

    from media_server import lazy_mdns

    current = sys.modules["aioice.mdns"]  # the stand-in if media_server came before aioice here
    installed = isinstance(current, lazy_mdns._LazyMdns)
    real = current.load() if isinstance(current, lazy_mdns._LazyMdns) else current
    assert lazy_mdns.install() == installed  # never replaces a module aioice already imported
    assert lazy_mdns.MDNS_HOSTNAME_RE.pattern == real.MDNS_HOSTNAME_RE.pattern
    stand_in = lazy_mdns._LazyMdns(lazy_mdns.Path(real.__file__))
    for name in ("0c4a5b8e-1f2d-4a3b-9c7d-5e6f7a8b9c0d.local", "host.local", "10.1.2.3", "a.b.local",
                 "x" * 64 + ".local", "host.local.", "Host-1.local"):
        assert stand_in.is_mdns_hostname(name) == real.is_mdns_hostname(name), name
    assert stand_in._medstream_real is None
    assert stand_in.MDnsProtocol is lazy_mdns._NotLoaded  # what aioice's annotation reads at import
    assert stand_in.is_mdns_hostname(stand_in.create_mdns_hostname())  # first real use: loaded
    assert stand_in._medstream_real is not None
    assert stand_in.MDnsProtocol.__name__ == "MDnsProtocol" and stand_in.MDnsProtocol is not lazy_mdns._NotLoaded
    assert stand_in.MDNS_PORT == real.MDNS_PORT == 5353
