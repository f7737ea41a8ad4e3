"""Fixtures for the SFU tests: a Sfu with its in-process signaling stand-in, on loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from media_server.config import MediaConfig
from tests.support.rtc_peer import SfuHarness

LOOPBACK = ("127.0.0.1",)


def loopback_config(**overrides: object) -> MediaConfig:
    """MediaConfig for tests: loopback host candidates, no STUN, no periodic quality reports."""
    settings: dict[str, object] = {"ice_host_addresses": LOOPBACK, "quality_interval_s": 0.0}
    if os.environ.get("MEDSTREAM_TEST_UDP_MUX"):  # run the SFU tests with every peer on one port
        settings["ice_udp_port"] = 0
    settings.update(overrides)
    return MediaConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def harness() -> AsyncIterator[SfuHarness]:
    h = SfuHarness(loopback_config())
    try:
        yield h
    finally:
        await h.close()
