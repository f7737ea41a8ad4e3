"""MediaConfig and IceServer validation names what was expected and what was given."""

from __future__ import annotations

import pytest

from media_server.config import IceServer, MediaConfig


def test_defaults_contact_no_ice_server() -> None:
    config = MediaConfig()
    assert config.ice_servers == ()
    assert config.keyframe_request_min_interval_s == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keyframe_request_min_interval_s": -1.0}, "got -1.0"),
        ({"video_queue_frames": 0}, "video=0"),
        ({"video_codecs": ("AV1",)}, "got 'AV1'"),
        ({"audio_codecs": ("PCMU",)}, "got 'PCMU'"),
        ({"quality_interval_s": -2.0}, "got -2.0"),
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MediaConfig(**kwargs)  # type: ignore[arg-type]


def test_ice_server_urls_are_checked() -> None:
    assert IceServer(urls=("stun:127.0.0.1:3478",)).urls == ("stun:127.0.0.1:3478",)
    with pytest.raises(ValueError, match="got 'http://x'"):
        IceServer(urls=("http://x",))
    with pytest.raises(ValueError, match=r"got \(\)"):
        IceServer(urls=())
