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

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import aioice.ice

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "medstream_ice_host_addresses", default=None
)
_ORIGINAL = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    override = _HOST_ADDRESSES.get()
    if override is None:
        return _ORIGINAL(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [a for a in override if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def install() -> None:
    """Install the wrapper (idempotent). Raises RuntimeError if aioice no longer has the hook."""
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
