"""Recorder test fixtures: real VP8/Opus clips, encoded once per test session."""

from __future__ import annotations

import pytest

from tests.recorder.media import Clip, encode_opus, encode_vp8


@pytest.fixture(scope="session")
def vp8_clip() -> Clip:
    """90 VP8 frames (3 s at 30 fps, 160x120), keyframes every 30 frames."""
    return encode_vp8(90)


@pytest.fixture(scope="session")
def opus_clip() -> Clip:
    """150 Opus packets (3 s of 20 ms)."""
    return encode_opus(150)
