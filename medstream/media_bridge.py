"""Media <-> signaling: the hub's media effects carried out on the SFU, the SFU's events turned
into room updates and wire messages.

Signaling decides, media forwards: neither package imports the other, this bridge speaks to both.
Commands of one participant run strictly in order (`SerialRunner`), so an answer never overtakes
the offer it answers; a failing command becomes an error reply to that participant only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol, TypeVar

from media_server import events as me
from media_server.frames import FrameSink
from protocol import signaling as wire
from signaling import effects as fx
from signaling.hub import Hub
from signaling.server import SignalingServer

log = logging.getLogger("medstream.media")

T = TypeVar("T")

# The media layer's reasons in the protocol's words: explicit, so a new media reason is a decision.
MEDIA_REASONS: dict[me.MediaErrorReason, wire.Reason] = {
    me.MediaErrorReason.INVALID_SDP: wire.Reason.INVALID_SDP,
    me.MediaErrorReason.UNSUPPORTED_CODEC: wire.Reason.UNSUPPORTED_CODEC,
    me.MediaErrorReason.UNKNOWN_TRACK: wire.Reason.UNKNOWN_TRACK,
    me.MediaErrorReason.UNKNOWN_PEER: wire.Reason.UNKNOWN_PARTICIPANT,
    me.MediaErrorReason.INVALID_STATE: wire.Reason.INTERNAL,
}

_VIDEO_STATES: dict[str, Literal["full", "reduced", "paused"]] = {
    "full": "full", "reduced": "reduced", "paused": "paused"}

MEDIA_EFFECTS: tuple[type, ...] = (
    fx.OpenPeer, fx.ClosePeer, fx.RequestPublish, fx.StopPublishing, fx.SubscribeTracks,
    fx.UnsubscribeTracks, fx.PauseVideo, fx.RemoteAnswer, fx.RemoteCandidate, fx.MuteTrack,
)


class MediaBackend(Protocol):
    """What the node needs of `media_server.sfu.Sfu`."""

    async def open_peer(self, peer_id: str) -> None: ...
    async def close_peer(self, peer_id: str) -> None: ...
    async def request_publish(self, peer_id: str, kinds: frozenset[str]) -> None: ...
    async def unpublish(self, peer_id: str, kind: str) -> None: ...
    async def subscribe(self, peer_id: str, track_ids: Sequence[str]) -> None: ...
    async def unsubscribe(self, peer_id: str, track_ids: Sequence[str]) -> None: ...
    async def set_video_paused(self, peer_id: str, paused: bool) -> None: ...
    def set_muted(self, track_id: str, muted: bool) -> None: ...
    async def on_answer(self, peer_id: str, sdp: str) -> None: ...
    async def answer_publish(self, peer_id: str, offer_sdp: str) -> str: ...
    async def answer_subscribe(self, peer_id: str, offer_sdp: str, track_ids: Sequence[str]) -> str: ...
    async def on_candidate(self, peer_id: str, candidate: str, sdp_mid: str | None,
                           sdp_mline_index: int | None) -> None: ...
    def add_frame_sink(self, track_id: str, sink: FrameSink) -> None: ...
    def remove_frame_sink(self, track_id: str, sink: FrameSink) -> None: ...
    def request_keyframe(self, track_id: str) -> None: ...
    def quality(self, peer_id: str) -> me.PeerQuality | None: ...
    def adaptation_counts(self) -> dict[str, int]: ...
    def tracks(self) -> list[me.TrackInfo]: ...
    def peer_ids(self) -> list[str]: ...
    async def close(self) -> None: ...


class SerialRunner:
    """Runs coroutines for one key strictly in order (media commands of one participant)."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Task[None]] = {}

    def submit(self, key: str, make: Callable[[], Awaitable[None]], on_error: Callable[[BaseException], None]) -> None:
        previous = self._tails.get(key)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await make()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reported to the participant, never kills the server
                on_error(exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tails[key] = task

        def forget(t: asyncio.Task[None]) -> None:
            if self._tails.get(key) is t:
                del self._tails[key]

        task.add_done_callback(forget)

    async def drain(self) -> None:
        while self._tails:
            await asyncio.wait(list(self._tails.values()))


class MediaBridge:
    """Registers the media effect handlers on the driver; `on_media_event` is the SFU's callback."""

    def __init__(self, driver: SignalingServer, hub: Hub) -> None:
        self.driver = driver
        self.hub = hub
        self.media: MediaBackend | None = None
        self.on_peer_failed: list[Callable[[str], None]] = []  # (participant id): WHIP/WHEP sessions end
        self._runner = SerialRunner()
        for effect_type in MEDIA_EFFECTS:
            driver.handle(effect_type, self._on_effect)

    def attach(self, media: MediaBackend) -> None:
        self.media = media

    async def close(self) -> None:
        await self._runner.drain()
        if self.media is not None:
            await self.media.close()

    async def call(self, pid: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run one media command for `pid` in its order and return its result (WHIP/WHEP
        answers); its exception is raised here."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            result = await make()
            if not done.done():
                done.set_result(result)

        def failed(exc: BaseException) -> None:
            if not done.done():
                done.set_exception(exc)

        self._runner.submit(pid, run, failed)
        return await done

    def submit(self, pid: str, make: Callable[[], Awaitable[None]]) -> None:
        """Queue a media command for `pid` whose failure is only logged (closing a session)."""
        self._runner.submit(pid, make, lambda exc: log.warning("media command for %s failed: %r", pid, exc))

    # ------------------------------------------------------------------ hub -> SFU

    def _on_effect(self, e: fx.MediaEffect) -> None:
        media = self.media
        if media is None:
            if isinstance(e, fx.OpenPeer | fx.RequestPublish | fx.SubscribeTracks):
                self._error(e.participant_id, wire.Reason.INTERNAL, "media is not enabled on this server")
            return
        make: Callable[[], Awaitable[None]]
        request_id: wire.RequestId = None
        match e:
            case fx.MuteTrack(track_id=track_id, muted=muted):
                media.set_muted(track_id, muted)
                return
            case fx.OpenPeer(participant_id=pid):
                make = lambda: media.open_peer(pid)  # noqa: E731
            case fx.ClosePeer(participant_id=pid):
                make = lambda: media.close_peer(pid)  # noqa: E731
            case fx.RequestPublish(participant_id=pid, kinds=kinds):
                make = lambda: media.request_publish(pid, kinds)  # noqa: E731
            case fx.StopPublishing(participant_id=pid, kind=kind):
                make = lambda: media.unpublish(pid, kind)  # noqa: E731
            case fx.SubscribeTracks(participant_id=pid, track_ids=ids):
                make = lambda: media.subscribe(pid, ids)  # noqa: E731
            case fx.UnsubscribeTracks(participant_id=pid, track_ids=ids):
                make = lambda: media.unsubscribe(pid, ids)  # noqa: E731
            case fx.PauseVideo(participant_id=pid, paused=paused):
                make = lambda: media.set_video_paused(pid, paused)  # noqa: E731
            case fx.RemoteAnswer(participant_id=pid, sdp=sdp, request_id=request_id):
                make = lambda: media.on_answer(pid, sdp)  # noqa: E731
            case fx.RemoteCandidate(participant_id=pid, candidate=c, sdp_mid=mid, sdp_mline_index=idx):
                make = lambda: media.on_candidate(pid, c, mid, idx)  # noqa: E731

        def on_error(exc: BaseException) -> None:
            if isinstance(exc, me.MediaRequestError):
                reason = MEDIA_REASONS[exc.reason]
                if reason is wire.Reason.INTERNAL and isinstance(e, fx.RemoteAnswer):
                    reason = wire.Reason.INVALID_SDP  # an answer the SFU did not expect: the client's doing
            else:
                reason = wire.Reason.INTERNAL
            if reason is wire.Reason.INTERNAL:
                log.error("media command %s for %s failed: %r", type(e).__name__, pid, exc)
            self._error(pid, reason, str(exc) or type(exc).__name__, request_id)

        self._runner.submit(pid, make, on_error)

    def _error(self, pid: str, reason: wire.Reason, message: str, request_id: wire.RequestId = None) -> None:
        self.driver.apply(self.hub.to_participant(pid, wire.Error(reason, message, request_id)))

    # ------------------------------------------------------------------ SFU -> hub

    def on_media_event(self, event: me.MediaEvent) -> None:
        """The SFU's callback: room updates and messages for the participant concerned."""
        hub, apply = self.hub, self.driver.apply
        match event:
            case me.OfferReady(peer_id=pid, sdp=sdp):
                apply(hub.to_participant(pid, wire.ServerSdp("offer", sdp)))
            case me.CandidateReady(peer_id=pid, candidate=c, sdp_mid=mid, sdp_mline_index=idx):
                apply(hub.to_participant(pid, wire.ServerCandidate(c, mid, idx)))
            case me.TrackPublished(peer_id=pid, track_id=track_id, kind=kind, codec=codec, source=source):
                apply(hub.track_published(pid, track_id, kind, codec, source))
            case me.TrackEnded(peer_id=pid, track_id=track_id):
                apply(hub.track_ended(pid, track_id))
            case me.PeerFailed(peer_id=pid):
                hub.media_closed(pid)
                for callback in self.on_peer_failed:
                    callback(pid)
            case me.MediaError(peer_id=pid, reason=reason, message=message):
                self._error(pid, MEDIA_REASONS[reason], message)
            case me.QualityReport(peer_id=pid, quality=q):
                apply(hub.quality(pid, wire.Quality(pid, q.bitrate_kbps, q.loss_pct, q.rtt_ms, q.jitter_ms,
                                                    q.estimate_kbps)))
            case me.TrackAdapted(peer_id=pid, track_id=track_id, state=state, fps_fraction=fps):
                apply(hub.to_participant(pid, wire.VideoAdapted(track_id, _VIDEO_STATES[state], fps)))
