"""Media server settings: which addresses ICE offers, which STUN/TURN servers, how forwarding behaves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as in the WebRTC `RTCIceServer` dictionary.

    Used by the server's own ICE agents and handed unchanged to clients in `joined`.
    """

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("IceServer.urls must name at least one stun:/turn: URL, got ()")
        for url in self.urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"IceServer url must start with stun:/turn:, got {url!r}")


@dataclass(frozen=True)
class MediaConfig:
    """Settings of the SFU; frozen, built once by `medstream.config`.

    - `ice_host_addresses`: the host candidate addresses the server offers (tests:
      `("127.0.0.1",)`); `()` keeps aioice's own discovery (which leaves out loopback).
    - `ice_servers`: STUN/TURN servers for the server's agents and for clients. Empty means no
      server is ever contacted.
    - `keyframe_request_min_interval_s`: at most one keyframe request per publisher per interval;
      requests inside it are coalesced into one sent at its end.
    - `video_codecs` / `audio_codecs`: mime subtypes a publisher may send, in preference order.
    - `video_queue_frames` / `audio_queue_frames`: unused since packets are forwarded as they
      arrive, without a queue per subscriber (issue 17); kept so existing configurations load.
    - `quality_interval_s`: period of `QualityReport` events per peer; 0 disables the reports
      (`Sfu.quality()` then stays None).
    - `adaptation_interval_s`: how often each subscriber's tracks are fitted to its bandwidth
      estimate (`adaptation.py`); 0 disables adaptation (everything is forwarded).
    - `ice_udp_port`: one UDP port shared by every peer's ICE host candidate on each of
      `ice_host_addresses` (`udp_mux.py`); None: a socket of its own per peer (aioice's way).
    """

    ice_host_addresses: tuple[str, ...] = ()
    ice_servers: tuple[IceServer, ...] = ()
    keyframe_request_min_interval_s: float = 1.0
    video_codecs: tuple[str, ...] = ("VP8", "H264")
    audio_codecs: tuple[str, ...] = ("opus",)
    video_queue_frames: int = 30
    audio_queue_frames: int = 50
    quality_interval_s: float = 2.0
    adaptation_interval_s: float = 0.5
    ice_udp_port: int | None = None

    def __post_init__(self) -> None:
        if self.keyframe_request_min_interval_s < 0:
            raise ValueError(
                "keyframe_request_min_interval_s must be >= 0, "
                f"got {self.keyframe_request_min_interval_s}"
            )
        if self.video_queue_frames < 1 or self.audio_queue_frames < 1:
            raise ValueError(
                "queue bounds must be >= 1 frame, got "
                f"video={self.video_queue_frames} audio={self.audio_queue_frames}"
            )
        if self.adaptation_interval_s < 0:
            raise ValueError(f"adaptation_interval_s must be >= 0, got {self.adaptation_interval_s}")
        if self.quality_interval_s < 0:
            raise ValueError(f"quality_interval_s must be >= 0, got {self.quality_interval_s}")
        if self.ice_udp_port is not None:
            if not 0 <= self.ice_udp_port <= 65535:
                raise ValueError(f"ice_udp_port must be 0..65535, got {self.ice_udp_port}")
            if not self.ice_host_addresses:
                raise ValueError("ice_udp_port needs ice_host_addresses (the addresses to bind it on)")
        known_video = {"VP8", "H264"}
        for codec in self.video_codecs:
            if codec not in known_video:
                raise ValueError(f"video codec must be one of {sorted(known_video)}, got {codec!r}")
        for codec in self.audio_codecs:
            if codec != "opus":
                raise ValueError(f"audio codec must be 'opus', got {codec!r}")
