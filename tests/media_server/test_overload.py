"""Consent freshness under the lenient rule: a subscriber that vanishes still expires, and the
SFU reports it (PeerFailed) instead of keeping a dead peer (aiortc closes such a connection
itself: "closed", not "failed"). Consent timing is shortened through the module attributes.
"""

from __future__ import annotations

from typing import Any

import aioice.ice
import pytest

from media_server import ice
from media_server.events import PeerFailed
from tests.conftest import timeout_s
from tests.support.rtc_peer import ClientPeer, SfuHarness

pytestmark = pytest.mark.webrtc

VIDEO = frozenset({"video"})
TIMEOUT_S = 3.0  # above the client's RTCP interval (0.5-1.5 s) on a busy machine


@pytest.fixture
def short_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ice, "CONSENT_INTERVAL_S", 0.2)
    monkeypatch.setattr(ice, "CONSENT_TIMEOUT_S", TIMEOUT_S)
    monkeypatch.setattr(ice, "CONSENT_RETRANSMISSIONS", 0)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.25)  # aioice's rule: 6 misses, ~4.5 s


def _connection(client: ClientPeer) -> Any:
    return client.pc.getTransceivers()[0].receiver.transport.transport._connection


async def _subscribed(harness: SfuHarness) -> tuple[ClientPeer, str]:
    await harness.join(ClientPeer("alice", video_codec="VP8", fps=15, video_size=(160, 96)))
    bob = await harness.join(ClientPeer("bob"))
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    await harness.sfu.subscribe("bob", [ids["video"]])
    video = await bob.wait_track(ids["video"], timeout_s(10))
    try:
        await video.wait_frames(3, timeout_s(10))
    except TimeoutError:
        t, p = harness.sfu.forward_track("bob", ids["video"]), harness.sfu.producer(ids["video"])
        raise AssertionError(f"setup: producer got {p.packets_received} packets, bob's forwarder "
                             f"sent {t and t.packets_forwarded}, waits {t and t.waiting_for_keyframe}, "
                             f"PLIs {p.keyframe_requests_sent}") from None
    return bob, ids["video"]


async def test_a_subscriber_that_sends_nothing_expires(harness: SfuHarness, short_consent: None) -> None:
    bob, _ = await _subscribed(harness)
    connection = _connection(bob)
    for pair in connection._nominated.values():
        pair.protocol.transport.close()  # bob vanishes: no answers, no RTCP, no goodbye
    await harness.wait_event(lambda e: isinstance(e, PeerFailed) and e.peer_id == "bob",
                             timeout_s(10) + 2 * TIMEOUT_S)
