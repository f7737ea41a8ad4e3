"""Make an ICE agent offer exactly the configured host addresses (aioice skips 127.0.0.1).

aioice gathers host candidates from the module-level `aioice.ice.get_host_addresses()`, which
leaves out loopback. We wrap that one function, once per process, so that inside
`host_addresses(...)` it returns the configured addresses and outside it behaves as before.
The override travels in a `ContextVar`, so it applies only to gathering started by the task
that entered the block (asyncio copies the context into the tasks it spawns) and never to other
peer connections in the same process. Pinned to aioice 0.13 (aiortc 1.16); `tests/media_server/
test_ice.py` checks the seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections.abc import Iterator
from typing import Any

import aioice.ice
import aioice.turn
from aioice import stun

logger = logging.getLogger(__name__)

# Consent freshness (RFC 7675), judged leniently (issue 17): a check every CONSENT_INTERVAL_S
# (+-20 %), each with CONSENT_RETRANSMISSIONS retransmissions; consent expires only when for
# CONSENT_TIMEOUT_S neither a check was answered nor any datagram came from the peer. aioice's own
# rule (6 unanswered single-shot checks) closed 84 connections of a saturated hall at 1:120
# although their RTCP kept arriving. Module attributes so a test can shorten them.
CONSENT_INTERVAL_S = 5.0
CONSENT_TIMEOUT_S = 30.0
CONSENT_RETRANSMISSIONS = 2
# UDP receive buffer of every ICE socket: a keyframe from a few publishers arriving while the
# loop fans out the previous one overflows aioice's 256 KiB (bench/sfu_experiments.py).
UDP_RECEIVE_BUFFER_BYTES = 4 << 20
_ORIGINAL_CONSENT = aioice.ice.Connection.query_consent
_ORIGINAL_DATA_RECEIVED = aioice.ice.Connection.data_received
_ORIGINAL_DATAGRAM_RECEIVED = aioice.ice.StunProtocol.datagram_received

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "medstream_ice_host_addresses", default=None
)
_ORIGINAL = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    override = _HOST_ADDRESSES.get()
    if override is None:
        return _ORIGINAL(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [a for a in override if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def _data_received(self: Any, data: bytes, component: int) -> None:
    self._medstream_rx = getattr(self, "_medstream_rx", 0) + 1
    _ORIGINAL_DATA_RECEIVED(self, data, component)


def _datagram_received(self: Any, data: bytes, addr: Any) -> None:
    """aioice's StunProtocol.datagram_received with RFC 7983 demultiplexing in front.

    aioice tries `stun.parse_message` on every datagram and treats a ValueError as "media":
    for SRTP/SRTCP (first byte 128-191) and DTLS (20-63), which are nearly every datagram of a
    call, that is an exception raised and caught per packet, and aioice's parser checks
    neither the first two bits nor the magic cookie, so an SRTP packet whose sequence number
    happens to equal its length - 20 can be taken for a STUN message and lost. Those ranges go
    straight to the connection; everything else (STUN 0-3, TURN channels) takes aioice's path.
    """
    first = data[0] if data else 0
    if 128 <= first < 192 or 20 <= first < 64:
        self.receiver.data_received(data, self.local_candidate.component)
        return
    _ORIGINAL_DATAGRAM_RECEIVED(self, data, addr)


async def _query_consent(self: Any) -> None:
    """aioice's consent loop with the lenient rule above (replaces Connection.query_consent)."""
    assert self.remote_password is not None
    loop = asyncio.get_running_loop()
    fresh_s = loop.time()
    seen = getattr(self, "_medstream_rx", 0)
    while True:
        await asyncio.sleep(CONSENT_INTERVAL_S * (0.8 + 0.4 * random.random()))
        for pair in list(self._nominated.values()):
            request = self.build_request(pair, nominate=False)
            try:
                await pair.protocol.request(request, pair.remote_addr,
                                            integrity_key=self.remote_password.encode("utf8"),
                                            retransmissions=CONSENT_RETRANSMISSIONS)
                fresh_s = loop.time()
            except stun.TransactionError:
                pass
        received = getattr(self, "_medstream_rx", 0)
        if received != seen:
            seen, fresh_s = received, loop.time()
        if loop.time() - fresh_s >= CONSENT_TIMEOUT_S:
            logger.info("ICE consent expired: nothing from the peer for %.0f s", CONSENT_TIMEOUT_S)
            self._query_consent_task = None
            return await self.close()  # type: ignore[no-any-return]


def install() -> None:
    """Install the wrappers (idempotent). Raises RuntimeError if aioice no longer has the hooks.

    Host addresses (above), lenient consent freshness, RFC 7983 demultiplexing before STUN
    parsing and larger UDP receive buffers: process wide, for every aioice connection.
    """
    if aioice.ice.Connection.query_consent is _ORIGINAL_CONSENT:
        aioice.ice.Connection.query_consent = _query_consent  # type: ignore[method-assign]
        aioice.ice.Connection.data_received = _data_received  # type: ignore[method-assign]
    if aioice.ice.StunProtocol.datagram_received is _ORIGINAL_DATAGRAM_RECEIVED:
        aioice.ice.StunProtocol.datagram_received = _datagram_received  # type: ignore[method-assign,assignment]
    if getattr(aioice.turn, "UDP_SOCKET_BUFFER_SIZE", 0) < UDP_RECEIVE_BUFFER_BYTES:
        aioice.turn.UDP_SOCKET_BUFFER_SIZE = UDP_RECEIVE_BUFFER_BYTES  # type: ignore[attr-defined]
    current: Any = getattr(aioice.ice, "get_host_addresses", None)
    if current is _get_host_addresses:
        return
    if current is not _ORIGINAL:
        raise RuntimeError(
            "aioice.ice.get_host_addresses was replaced by someone else; expected aioice's own "
            f"function, got {current!r}"
        )
    aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def host_addresses(addresses: tuple[str, ...]) -> Iterator[None]:
    """Within this block, ICE gathering offers exactly `addresses` (empty tuple: aioice default).

    Enter it around `setLocalDescription()`, where aiortc gathers.
    """
    install()
    token = _HOST_ADDRESSES.set(tuple(addresses) if addresses else None)
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


def serves_candidate(candidate_host: str, configured: tuple[str, ...]) -> bool:
    """Whether a client's candidate address can reach us given the host addresses we offer.

    A server that offers only loopback addresses (tests, a single-machine demo) cannot be
    reached from a client's LAN or mDNS (`*.local`) candidates: connectivity checks from them
    only cost time, so they are ignored. With any other configuration every candidate is kept.
    """
    if not configured or not all(_is_loopback(a) for a in configured):
        return True
    return _is_loopback(candidate_host)


def _is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"
