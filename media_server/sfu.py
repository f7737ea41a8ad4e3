"""The SFU: one aiortc peer connection per participant, forwarding encoded media between them.

The server is the offerer for its own clients. Publishing adds `recvonly` slots, subscribing adds
`sendonly` m-lines carrying a `ForwardTrack`; every change renegotiates, one offer in flight per
peer (a change during an offer re-offers after the answer). Clients that bring their own offer
(WHIP encoders, WHEP players) are answered once (`answer_publish`, `answer_subscribe`) and never
offered to. Frames are never decoded or encoded here:
see `forwarding.py`. What closes what is written down in `docs/lifecycle.md`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from . import ice, udp_mux
from .adaptation import PAUSED, AdaptationPolicy, TrackDecision, TrackDemand, VideoState
from .bwe import BandwidthEstimate
from .config import MediaConfig
from .congestion import SubscriberLink, UpstreamRemb
from .events import (
    MediaError,
    MediaErrorReason,
    MediaEvent,
    MediaRequestError,
    OfferReady,
    PeerFailed,
    PeerQuality,
    QualityReport,
    TrackAdapted,
    TrackEnded,
    TrackInfo,
    TrackPublished,
)
from .forwarding import EarlyJitterBuffer, ForwardTrack, Producer, ReceiverTap
from .frames import FrameSink
from .quality import QualityTotals, summarize
from .vp8 import PictureIdRewriter, TemporalLayerFilter

logger = logging.getLogger(__name__)


Kind = Literal["audio", "video"]
_KINDS: tuple[Kind, ...] = ("audio", "video")
# What a publisher may send: its microphone, its camera, and a second video source (a shared
# screen or a second, high-resolution camera: CT, ultrasound, a pathology microscope).
Slot = Literal["audio", "video", "screen"]
_SLOTS: tuple[Slot, ...] = ("audio", "video", "screen")
_SLOT_KIND: dict[str, Kind] = {"audio": "audio", "video": "video", "screen": "video"}
SOURCES: dict[str, str] = {"audio": "microphone", "video": "camera", "screen": "screen"}


@dataclass
class _PublishSlot:
    """A `recvonly` m-line offered to a publisher; becomes a Producer once the answer accepts it."""

    kind: Kind
    transceiver: RTCRtpTransceiver
    producer: Producer | None = None
    slot: Slot = "video"
    buffer: EarlyJitterBuffer | None = None
    track_id: str | None = None  # an upstream's: the id the track has on the node it comes from
    upstream: UpstreamRemb = field(default_factory=UpstreamRemb)

    def on_frame(self, codec: Any, frame: Any) -> None:
        if self.producer is not None:
            self.producer.on_encoded(codec, frame)


@dataclass
class _Subscription:
    """A `sendonly` m-line forwarding one producer to this peer."""

    producer: Producer
    track: ForwardTrack
    transceiver: RTCRtpTransceiver


@dataclass
class _Peer:
    peer_id: str
    pc: RTCPeerConnection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    slots: dict[Slot, _PublishSlot] = field(default_factory=dict)
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    renegotiate_needed: bool = False
    video_paused: bool = False
    closed: bool = False
    quality: PeerQuality | None = None
    quality_totals: QualityTotals | None = None
    quality_task: asyncio.Task[None] | None = None
    answerer: bool = False  # negotiated by the client's offer (WHIP/WHEP): we never offer to it
    link: SubscriberLink = field(default_factory=lambda: SubscriberLink(time.monotonic))
    policy: AdaptationPolicy = field(default_factory=AdaptationPolicy)
    adapted: dict[str, VideoState] = field(default_factory=dict)  # what the page was told


class Sfu:
    """Owns every peer connection and the forwarding graph. Knows nothing of rooms or roles.

    `on_event` receives `MediaEvent`s (offers to send, tracks published/ended, failures,
    quality) synchronously on the event loop; it must not block. Calls that cannot be done
    raise `MediaRequestError` with a reason (unknown peer/track, invalid SDP).
    """

    def __init__(self, config: MediaConfig, on_event: Callable[[MediaEvent], None]) -> None:
        self.config = config
        self._on_event = on_event
        self._peers: dict[str, _Peer] = {}
        self._producers: dict[str, Producer] = {}
        self._track_numbers = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._adapt_task: asyncio.Task[None] | None = None
        ice.install()
        # one shared UDP port for every peer (udp_mux.py); bound now so a port in use fails start-up
        self._udp_muxes: list[udp_mux.UdpMux] = []
        if config.ice_udp_port is not None:
            port = config.ice_udp_port
            try:
                for host in config.ice_host_addresses:
                    self._udp_muxes.append(udp_mux.UdpMux(host, port))
                    port = self._udp_muxes[0].port  # port 0: the one the first address got
            except OSError:
                for mux in self._udp_muxes:
                    mux.close()
                raise

    async def _muxes(self) -> list[udp_mux.UdpMux]:
        for mux in self._udp_muxes:
            await mux.start()
        return self._udp_muxes

    @property
    def udp_muxes(self) -> list[udp_mux.UdpMux]:
        """The shared ICE sockets (empty without `MediaConfig.ice_udp_port`)."""
        return self._udp_muxes

    # ---- peers -------------------------------------------------------------------------------

    async def open_peer(self, peer_id: str) -> None:
        """Create `peer_id`'s peer connection (nothing is offered until it publishes or subscribes).

        Raises MediaRequestError(INVALID_STATE) if the peer is already open or the Sfu closed.
        """
        if self._closed:
            raise MediaRequestError(MediaErrorReason.INVALID_STATE, "the Sfu is closed")
        if peer_id in self._peers:
            raise MediaRequestError(
                MediaErrorReason.INVALID_STATE, f"peer {peer_id!r} is already open"
            )
        configuration = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in self.config.ice_servers
            ],
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )
        pc = RTCPeerConnection(configuration)
        peer = _Peer(peer_id=peer_id, pc=pc)
        self._peers[peer_id] = peer

        @pc.on("connectionstatechange")
        def on_state() -> None:
            # "closed" that we did not ask for: aiortc shuts a connection down itself when its
            # transports end (ICE consent expired, DTLS closed by the peer)
            if pc.connectionState in ("failed", "closed") and not peer.closed:
                self._spawn(self._fail_peer(peer_id, f"connection {pc.connectionState} (ICE/DTLS)"))

        if self.config.quality_interval_s > 0:
            peer.quality_task = asyncio.ensure_future(self._run_quality(peer))
        if self.config.adaptation_interval_s > 0 and self._adapt_task is None:
            self._adapt_task = asyncio.ensure_future(self._run_adaptation())

    async def close_peer(self, peer_id: str) -> None:
        """Release everything of `peer_id`: its tracks (subscribers are renegotiated), its
        subscriptions, tasks and transports. Idempotent; unknown peers are ignored."""
        peer = self._peers.pop(peer_id, None)
        if peer is None or peer.closed:
            return
        peer.closed = True
        if peer.quality_task is not None:
            peer.quality_task.cancel()
        for slot in list(peer.slots.values()):
            if slot.producer is not None:
                await self._end_producer(slot.producer)
        peer.slots.clear()
        for sub in peer.subscriptions.values():
            sub.producer.detach(sub.track)
            sub.track.stop()
        peer.subscriptions.clear()
        # shielded: aiortc may be closing it already (its transports ended), and a second
        # closer awaits aiortc's own future; cancelled there, it cancelled that future and
        # aiortc's close task failed on it ("Task exception was never retrieved ...
        # InvalidStateError" at every teardown under load)
        await asyncio.shield(peer.pc.close())
        if peer.quality_task is not None:
            await asyncio.gather(peer.quality_task, return_exceptions=True)

    async def _fail_peer(self, peer_id: str, reason: str) -> None:
        if peer_id in self._peers:
            self._emit(PeerFailed(peer_id, reason))
            await self.close_peer(peer_id)

    # ---- publishing --------------------------------------------------------------------------

    async def request_publish(self, peer_id: str, kinds: frozenset[str]) -> None:
        """Add a receive slot per entry of `kinds` ("audio", "video", "screen": a second video
        source) not yet published, and offer. The screen slot's m-line carries `a=content:slides`
        (RFC 4796) so the publisher knows where its shared screen goes.

        The track is announced by `TrackPublished` once the peer's answer accepts the slot.
        Raises MediaRequestError for an unknown peer or kind.
        """
        peer = self._peer(peer_id)
        for kind in kinds:
            if kind not in _SLOTS:
                raise MediaRequestError(
                    MediaErrorReason.INVALID_STATE, f"kind must be audio, video or screen, got {kind!r}"
                )
        async with peer.lock:
            added = False
            for name in sorted(kinds):
                slot_name = cast(Slot, name)
                if slot_name in peer.slots:
                    continue
                k = _SLOT_KIND[slot_name]
                transceiver = peer.pc.addTransceiver(k, direction="recvonly")
                transceiver.setCodecPreferences(self._publish_capabilities(k))
                slot = _PublishSlot(kind=k, transceiver=transceiver, slot=slot_name)
                ReceiverTap.install(transceiver.receiver, slot.on_frame)
                slot.buffer = EarlyJitterBuffer.install(transceiver.receiver)
                slot.upstream.install(transceiver.receiver)
                peer.slots[slot_name] = slot
                added = True
            if added:
                await self._negotiate(peer)

    async def unpublish(self, peer_id: str, kind: str) -> None:
        """Stop `peer_id`'s `kind` track: subscribers lose it (renegotiated), `TrackEnded` is
        emitted. Idempotent."""
        peer = self._peer(peer_id)
        async with peer.lock:
            slot = peer.slots.pop(cast(Slot, kind), None)
            if slot is None:
                return
            slot.transceiver.direction = "inactive"
            await slot.transceiver.receiver.stop()
        if slot.producer is not None:
            await self._end_producer(slot.producer)
        async with peer.lock:
            await self._negotiate(peer)

    async def _end_producer(self, producer: Producer) -> None:
        if self._producers.pop(producer.track_id, None) is None:
            return
        affected: list[_Peer] = []
        for other in self._peers.values():
            sub = other.subscriptions.pop(producer.track_id, None)
            if sub is not None:
                sub.transceiver.direction = "inactive"
                affected.append(other)
        producer.close()
        self._emit(TrackEnded(producer.peer_id, producer.track_id))
        if self._closed:  # shutting down: every peer is about to close, offer nothing (16 peers
            return        # took 173 s to tear down renegotiating each other, 120 offers, on 2 busy cores)
        await asyncio.gather(*(self._renegotiate_locked(p) for p in affected))

    # ---- subscribing -------------------------------------------------------------------------

    async def subscribe(self, peer_id: str, track_ids: Sequence[str]) -> None:
        """Forward each of `track_ids` to `peer_id` (already subscribed ones are kept) and offer.

        All-or-nothing: raises MediaRequestError(UNKNOWN_TRACK) before changing anything if one
        id is unknown. A codec the peer cannot receive is reported later as
        MediaError(UNSUPPORTED_CODEC) when its answer rejects it.
        """
        peer = self._peer(peer_id)
        unknown = [t for t in track_ids if t not in self._producers]
        if unknown:
            raise MediaRequestError(
                MediaErrorReason.UNKNOWN_TRACK, f"unknown track ids: {', '.join(unknown)}"
            )
        async with peer.lock:
            added = False
            for track_id in track_ids:
                producer = self._producers.get(track_id)
                if track_id in peer.subscriptions or producer is None:
                    continue
                track = ForwardTrack(producer.kind, track_id, producer.request_keyframe)
                transceiver = peer.pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(self._forward_capabilities(producer))
                track.install(transceiver.sender, producer)
                peer.link.watch(track, transceiver.sender)
                if producer.kind == "video" and producer.codec == "VP8":
                    track.packet_filter = TemporalLayerFilter()
                    track.picture_ids = PictureIdRewriter()
                if peer.video_paused and producer.kind == "video":
                    track.set_paused(True, "audio_only")
                producer.attach(track)
                peer.subscriptions[track_id] = _Subscription(producer, track, transceiver)
                added = True
            if added:
                await self._negotiate(peer)

    async def unsubscribe(self, peer_id: str, track_ids: Sequence[str]) -> None:
        """Stop forwarding `track_ids` to `peer_id` and renegotiate; unknown ids are ignored."""
        peer = self._peer(peer_id)
        async with peer.lock:
            removed = False
            for track_id in track_ids:
                sub = peer.subscriptions.pop(track_id, None)
                if sub is None:
                    continue
                sub.producer.detach(sub.track)
                sub.track.stop()
                sub.transceiver.direction = "inactive"
                removed = True
            if removed:
                await self._negotiate(peer)

    async def set_video_paused(self, peer_id: str, paused: bool) -> None:
        """Audio-only mode for `peer_id`: stop (True) or resume (False) all its video forwarding.

        No renegotiation; video resumes at a keyframe requested from each publisher.
        """
        peer = self._peer(peer_id)
        peer.video_paused = paused
        for sub in peer.subscriptions.values():
            if sub.producer.kind == "video":
                sub.track.set_paused(paused, "audio_only")

    def set_muted(self, track_id: str, muted: bool) -> None:
        """Server-side mute: stop (True) or resume (False) forwarding `track_id` to everyone.

        Frame sinks (the recorder) keep receiving. Raises MediaRequestError(UNKNOWN_TRACK).
        """
        self._producer(track_id).set_muted(muted)

    # ---- client offers (WHIP ingest, WHEP playback) --------------------------------------------

    async def answer_publish(self, peer_id: str, offer_sdp: str) -> str:
        """Answer a client's offer to publish (WHIP, RFC 9725): each audio/video m-line it sends
        becomes a receive slot, announced by `TrackPublished` like a publish the server offered.

        `peer_id` must be open and have negotiated nothing; it is never offered to later (its
        client has no channel for offers), and the answer is returned whole, our candidates
        included (no trickle). Raises MediaRequestError: INVALID_SDP (unparsable, not one
        sending audio and/or one sending video m-line), UNSUPPORTED_CODEC (none we forward),
        INVALID_STATE (the peer negotiated already).
        """
        peer = self._peer(peer_id)
        offer = self._parse_offer(offer_sdp)
        kinds = [m.kind for m in offer.media if m.kind in _KINDS]
        if not kinds or len(kinds) != len(set(kinds)):
            raise MediaRequestError(MediaErrorReason.INVALID_SDP,
                                    f"offer must have one audio and/or one video m-line, got {kinds}")
        for m in offer.media:
            if m.kind in _KINDS and m.direction not in ("sendonly", "sendrecv"):
                raise MediaRequestError(MediaErrorReason.INVALID_SDP,
                                        f"a publisher's {m.kind} m-line must be sendonly, got {m.direction}")
        async with peer.lock:
            self._claim_for_answering(peer)
            for kind in cast(list[Kind], kinds):
                transceiver = peer.pc.addTransceiver(kind, direction="recvonly")
                transceiver.setCodecPreferences(self._publish_capabilities(kind))
                slot = _PublishSlot(kind=kind, transceiver=transceiver)
                ReceiverTap.install(transceiver.receiver, slot.on_frame)
                slot.buffer = EarlyJitterBuffer.install(transceiver.receiver)
                slot.upstream.install(transceiver.receiver)
                peer.slots[kind] = slot
            answer = await self._answer(peer, offer_sdp)
            self._start_producers(peer, answer, directions=("recvonly", "sendrecv"))
            return answer

    async def answer_subscribe(self, peer_id: str, offer_sdp: str, track_ids: Sequence[str]) -> str:
        """Answer a client's offer to receive (WHEP): its audio and video m-lines carry the
        tracks of `track_ids` of their kind (forwarded, never transcoded); an m-line with no
        such track is answered inactive. Same rules as `answer_publish` otherwise.

        Raises MediaRequestError: UNKNOWN_TRACK, INVALID_SDP, UNSUPPORTED_CODEC, INVALID_STATE.
        """
        peer = self._peer(peer_id)
        offer = self._parse_offer(offer_sdp)
        producers = [self._producer(t) for t in track_ids]
        by_kind = {p.kind: p for p in producers}
        async with peer.lock:
            self._claim_for_answering(peer)
            for m in offer.media:
                producer = by_kind.pop(cast(Kind, m.kind), None) if m.kind in _KINDS else None
                if producer is None or m.direction not in ("recvonly", "sendrecv"):
                    continue
                track = ForwardTrack(producer.kind, producer.track_id, producer.request_keyframe)
                transceiver = peer.pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(self._forward_capabilities(producer))
                track.install(transceiver.sender, producer)
                peer.link.watch(track, transceiver.sender)
                if producer.kind == "video" and producer.codec == "VP8":
                    track.packet_filter = TemporalLayerFilter()
                    track.picture_ids = PictureIdRewriter()
                producer.attach(track)
                peer.subscriptions[producer.track_id] = _Subscription(producer, track, transceiver)
            return await self._answer(peer, offer_sdp)

    # ---- upstreams (another SFU's track received once, forwarded here) -----------------------

    async def open_upstream(self, peer_id: str, track_id: str, kind: str) -> str:
        """Open `peer_id` to receive one track of another SFU (a cluster node's) and return the
        offer to send it (candidates inline); `accept_upstream` applies its answer. The track is
        then a producer here under the same `track_id`, forwarded to local subscribers like a
        publisher's (never transcoded); their keyframe requests go upstream as RTCP PLI.
        The peer is never renegotiated. Raises MediaRequestError(INVALID_STATE)."""
        if kind not in _KINDS:
            raise MediaRequestError(MediaErrorReason.INVALID_STATE, f"kind must be audio or video, got {kind!r}")
        if track_id in self._producers:
            raise MediaRequestError(MediaErrorReason.INVALID_STATE, f"track {track_id!r} is here already")
        await self.open_peer(peer_id)
        peer = self._peers[peer_id]
        async with peer.lock:
            k = cast(Kind, kind)
            transceiver = peer.pc.addTransceiver(k, direction="recvonly")
            transceiver.setCodecPreferences(self._publish_capabilities(k))
            slot = _PublishSlot(kind=k, transceiver=transceiver, slot=k, track_id=track_id)
            ReceiverTap.install(transceiver.receiver, slot.on_frame)
            slot.buffer = EarlyJitterBuffer.install(transceiver.receiver)
            peer.slots[k] = slot
            peer.answerer = True  # one fixed m-line: never offered to again
            offer = await peer.pc.createOffer()
            # a socket of its own, never the shared port: the mux tells connections apart by the
            # remote address, and every upstream of this node to that node would have the same
            # one if both ends used their shared ports
            with ice.host_addresses(self.config.ice_host_addresses), udp_mux.serving(()):
                await peer.pc.setLocalDescription(offer)
            return str(peer.pc.localDescription.sdp)

    async def accept_upstream(self, peer_id: str, answer_sdp: str) -> None:
        """Apply the answer to `open_upstream`'s offer: the track becomes a producer here
        (`TrackPublished` for `peer_id`). Raises MediaRequestError(INVALID_SDP, UNKNOWN_PEER)."""
        peer = self._peer(peer_id)
        async with peer.lock:
            answer, rejected = self._check_answer(peer, answer_sdp)
            if rejected:
                raise MediaRequestError(MediaErrorReason.UNSUPPORTED_CODEC, f"upstream rejected {rejected}")
            try:
                await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            except Exception as exc:
                raise MediaRequestError(MediaErrorReason.INVALID_SDP, f"upstream answer rejected: {exc}") from exc
            self._start_producers(peer, answer_sdp)

    def _parse_offer(self, offer_sdp: str) -> Any:
        try:
            return aiortc_sdp.SessionDescription.parse(offer_sdp)
        except Exception as exc:
            raise MediaRequestError(MediaErrorReason.INVALID_SDP, f"cannot parse offer SDP: {exc}") from exc

    def _claim_for_answering(self, peer: _Peer) -> None:
        if peer.pc.getTransceivers() or peer.pc.signalingState != "stable":
            raise MediaRequestError(MediaErrorReason.INVALID_STATE,
                                    f"peer {peer.peer_id!r} has negotiated already; open a new one")
        peer.answerer = True

    async def _answer(self, peer: _Peer, offer_sdp: str) -> str:
        pc = peer.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc: ValueError, OperationError (no common codec), ...
            reason = (MediaErrorReason.UNSUPPORTED_CODEC if "parameters" in str(exc)
                      else MediaErrorReason.INVALID_SDP)
            raise MediaRequestError(reason, f"offer rejected by the peer connection: {exc}") from exc
        answer = await pc.createAnswer()
        with ice.host_addresses(self.config.ice_host_addresses), udp_mux.serving(await self._muxes()):
            await pc.setLocalDescription(answer)
        return str(pc.localDescription.sdp)

    # ---- negotiation -------------------------------------------------------------------------

    async def on_answer(self, peer_id: str, sdp: str) -> None:
        """Apply `peer_id`'s answer to the pending offer.

        Raises MediaRequestError(INVALID_SDP) if the SDP is malformed or does not match the
        offer (the offer stays pending, a corrected answer may follow), INVALID_STATE if no offer
        is pending. M-lines whose codec the peer rejected end that subscription or slot with
        MediaError(UNSUPPORTED_CODEC).
        """
        peer = self._peer(peer_id)
        async with peer.lock:
            pc = peer.pc
            if pc.signalingState != "have-local-offer":
                raise MediaRequestError(
                    MediaErrorReason.INVALID_STATE,
                    f"no offer pending for peer {peer_id!r} (state {pc.signalingState})",
                )
            answer, rejected = self._check_answer(peer, sdp)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            except Exception as exc:  # aiortc raises ValueError/OperationError/...
                raise MediaRequestError(
                    MediaErrorReason.INVALID_SDP, f"answer rejected by the peer connection: {exc}"
                ) from exc
            self._apply_rejections(peer, rejected)
            self._start_producers(peer, sdp)
            if peer.renegotiate_needed:
                await self._negotiate(peer)

    async def on_candidate(
        self, peer_id: str, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        """Add a trickled client candidate (`a=candidate` line, "" for end-of-candidates).

        Raises MediaRequestError(INVALID_SDP) if the line cannot be parsed.
        """
        peer = self._peer(peer_id)
        text = candidate.strip()
        text = text.removeprefix("a=")
        text = text.removeprefix("candidate:")
        if not text:
            await peer.pc.addIceCandidate(None)
            return
        try:
            parsed = aiortc_sdp.candidate_from_sdp(text)
        except Exception as exc:
            raise MediaRequestError(
                MediaErrorReason.INVALID_SDP, f"cannot parse candidate {candidate!r}: {exc}"
            ) from exc
        if not ice.serves_candidate(parsed.ip, self.config.ice_host_addresses):
            logger.debug("peer %s: ignoring candidate %s (we serve %s only)", peer_id, parsed.ip,
                      self.config.ice_host_addresses)
            return
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        if sdp_mid is None and sdp_mline_index is None:
            parsed.sdpMLineIndex = 0
        await peer.pc.addIceCandidate(parsed)

    async def _renegotiate_locked(self, peer: _Peer) -> None:
        async with peer.lock:
            await self._negotiate(peer)

    async def _negotiate(self, peer: _Peer) -> None:
        """Offer now, or after the pending answer if one is in flight. Caller holds peer.lock."""
        if peer.closed or self._closed:
            return
        pc = peer.pc
        if peer.answerer:  # a WHIP/WHEP client cannot take offers: removed m-lines just go quiet
            return
        if pc.signalingState != "stable":
            peer.renegotiate_needed = True
            return
        if not pc.getTransceivers():
            return
        peer.renegotiate_needed = False
        offer = await pc.createOffer()
        with ice.host_addresses(self.config.ice_host_addresses), udp_mux.serving(await self._muxes()):
            await pc.setLocalDescription(offer)
        screen_mids = {s.transceiver.mid for s in peer.slots.values() if s.slot == "screen"}
        self._emit(OfferReady(peer.peer_id, _mark_content(pc.localDescription.sdp, screen_mids)))

    def _check_answer(
        self, peer: _Peer, sdp: str
    ) -> tuple[str, list[tuple[str, str]]]:
        """Validate an answer against our offer; neutralise m-lines that rejected our codec.

        Returns the SDP to apply and the (mid, codec) pairs that were rejected.
        """
        try:
            parsed = aiortc_sdp.SessionDescription.parse(sdp)
        except Exception as exc:
            raise MediaRequestError(
                MediaErrorReason.INVALID_SDP, f"cannot parse answer SDP: {exc}"
            ) from exc
        offer = aiortc_sdp.SessionDescription.parse(peer.pc.localDescription.sdp)
        if len(parsed.media) != len(offer.media):
            raise MediaRequestError(
                MediaErrorReason.INVALID_SDP,
                f"answer must have {len(offer.media)} m-lines like the offer, "
                f"got {len(parsed.media)}",
            )
        rejected: list[tuple[str, str]] = []
        for i, (ours, theirs) in enumerate(zip(offer.media, parsed.media, strict=True)):
            if ours.kind != theirs.kind or ours.rtp.muxId != theirs.rtp.muxId:
                raise MediaRequestError(
                    MediaErrorReason.INVALID_SDP,
                    f"answer m-line {i} must be {ours.kind} mid {ours.rtp.muxId}, "
                    f"got {theirs.kind} mid {theirs.rtp.muxId}",
                )
            if ours.direction == "inactive":
                continue
            offered = {c.name.lower() for c in ours.rtp.codecs if c.name.lower() != "rtx"}
            answered = {c.name.lower() for c in theirs.rtp.codecs}
            if theirs.port == 0 or not (offered & answered):
                rejected.append((ours.rtp.muxId, "/".join(sorted(offered))))
                theirs.port = 9
                theirs.direction = "inactive"
                theirs.rtp.codecs = copy.deepcopy(ours.rtp.codecs)
                theirs.fmt = [c.payloadType for c in theirs.rtp.codecs]
        if rejected:
            return str(parsed), rejected
        return sdp, rejected

    def _apply_rejections(self, peer: _Peer, rejected: list[tuple[str, str]]) -> None:
        for mid, codec in rejected:
            for track_id, sub in list(peer.subscriptions.items()):
                if sub.transceiver.mid == mid:
                    del peer.subscriptions[track_id]
                    sub.producer.detach(sub.track)
                    sub.track.stop()
                    sub.transceiver.direction = "inactive"
                    self._emit(
                        MediaError(
                            peer.peer_id,
                            MediaErrorReason.UNSUPPORTED_CODEC,
                            f"peer cannot receive {codec} of track {track_id}",
                            track_id=track_id,
                        )
                    )
            for kind, slot in list(peer.slots.items()):
                if slot.transceiver.mid == mid:
                    del peer.slots[kind]
                    slot.transceiver.direction = "inactive"
                    self._emit(
                        MediaError(
                            peer.peer_id,
                            MediaErrorReason.UNSUPPORTED_CODEC,
                            f"peer offered none of the {kind} codecs we accept ({codec})",
                        )
                    )

    def _start_producers(self, peer: _Peer, answer_sdp: str,
                         directions: tuple[str, ...] = ("sendonly", "sendrecv")) -> None:
        """Slots whose m-line in `answer_sdp` has one of `directions` become producers (the
        client's answer: it sends; our own answer to a WHIP offer: we receive)."""
        parsed = aiortc_sdp.SessionDescription.parse(answer_sdp)
        by_mid = {m.rtp.muxId: m for m in parsed.media}
        for slot in peer.slots.values():
            if slot.producer is not None:
                continue
            media = by_mid.get(slot.transceiver.mid or "")
            if media is None or media.direction not in directions:
                continue
            codec = next(c for c in media.rtp.codecs if c.name.lower() != "rtx")
            name = "opus" if codec.name.lower() == "opus" else codec.name.upper()
            track_id = slot.track_id or f"{peer.peer_id}/{slot.slot}/{next(self._track_numbers)}"
            producer = Producer(
                track_id=track_id,
                peer_id=peer.peer_id,
                kind=slot.kind,
                codec=name,
                clock_rate=codec.clockRate,
                receiver=slot.transceiver.receiver,
                keyframe_request_min_interval_s=self.config.keyframe_request_min_interval_s,
            )
            producer.codec_parameters = dict(codec.parameters)
            if slot.slot == "screen":
                producer.priority = 2  # shared content goes first when a link is short
            if name == "VP8":
                producer.read_vp8_layers = True
            slot.producer = producer
            if slot.buffer is not None:
                slot.buffer.on_packet = producer.on_rtp
            self._producers[track_id] = producer
            self._emit(TrackPublished(peer.peer_id, track_id, slot.kind, name, SOURCES[slot.slot]))

    # ---- codecs ------------------------------------------------------------------------------

    def _publish_capabilities(self, kind: Kind) -> list[RTCRtpCodecCapability]:
        wanted = self.config.video_codecs if kind == "video" else self.config.audio_codecs
        caps = RTCRtpSender.getCapabilities(kind).codecs
        chosen = [c for w in wanted for c in caps if c.mimeType.lower() == f"{kind}/{w}".lower()]
        chosen += [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
        return chosen

    def _forward_capabilities(self, producer: Producer) -> list[RTCRtpCodecCapability]:
        caps = RTCRtpSender.getCapabilities(producer.kind).codecs
        mime = f"{producer.kind}/{producer.codec}".lower()
        same = [c for c in caps if c.mimeType.lower() == mime]
        params = producer.codec_parameters
        exact = [c for c in same if _h264_compatible(c.parameters, params)]
        chosen = exact or same
        chosen += [c for c in caps if c.mimeType.lower() == f"{producer.kind}/rtx"]
        return chosen

    # ---- recorder taps, introspection ---------------------------------------------------------

    def add_frame_sink(self, track_id: str, sink: FrameSink) -> None:
        """Give `sink` a copy of every frame of `track_id` (even while muted).

        Raises MediaRequestError(UNKNOWN_TRACK)."""
        producer = self._producer(track_id)
        if sink not in producer.sinks:
            producer.sinks.append(sink)

    def remove_frame_sink(self, track_id: str, sink: FrameSink) -> None:
        """Stop copying frames of `track_id` to `sink` (idempotent, unknown track ignored)."""
        producer = self._producers.get(track_id)
        if producer is not None and sink in producer.sinks:
            producer.sinks.remove(sink)

    def request_keyframe(self, track_id: str) -> None:
        """Ask the publisher of `track_id` for a keyframe now (rate-limited like subscribers' PLIs).

        Raises MediaRequestError(UNKNOWN_TRACK)."""
        self._producer(track_id).request_keyframe()

    def quality(self, peer_id: str) -> PeerQuality | None:
        """Last measured quality of `peer_id` (None before the first report or if unknown)."""
        peer = self._peers.get(peer_id)
        return None if peer is None else peer.quality

    def tracks(self) -> list[TrackInfo]:
        """Every published track."""
        return [
            TrackInfo(p.track_id, p.peer_id, p.kind, p.codec, p.muted, len(p.consumers))
            for p in self._producers.values()
        ]

    def subscribers(self, track_id: str) -> list[str]:
        """The peers `track_id` is forwarded to now."""
        return [p.peer_id for p in self._peers.values() if track_id in p.subscriptions]

    def producer(self, track_id: str) -> Producer:
        """The Producer of `track_id` (counters for tests and metrics).

        Raises MediaRequestError(UNKNOWN_TRACK)."""
        return self._producer(track_id)

    def forward_track(self, peer_id: str, track_id: str) -> ForwardTrack | None:
        """The queue forwarding `track_id` to `peer_id`, or None (counters for tests/metrics)."""
        peer = self._peers.get(peer_id)
        sub = None if peer is None else peer.subscriptions.get(track_id)
        return None if sub is None else sub.track

    def set_priority(self, track_id: str, priority: int) -> None:
        """How much `track_id` matters when a subscriber's link is short (2: presenter, active
        speaker, shared content; 1: the others). Raises MediaRequestError(UNKNOWN_TRACK)."""
        self._producer(track_id).priority = priority

    def bandwidth(self, peer_id: str) -> BandwidthEstimate | None:
        """`peer_id`'s downlink bandwidth estimate (None if unknown)."""
        peer = self._peers.get(peer_id)
        return None if peer is None else peer.link.estimate()

    def adaptation(self, peer_id: str, track_id: str) -> TrackDecision | None:
        """What the adaptation policy decided for `track_id` to `peer_id` (None if nothing)."""
        peer = self._peers.get(peer_id)
        return None if peer is None else peer.policy.decision(track_id)

    def adaptation_counts(self) -> dict[str, int]:
        """Forwarded video tracks by adaptation state, and REMBs capped upstream (for /metrics)."""
        counts = {s.value: 0 for s in VideoState}
        counts["remb_capped"] = 0
        for peer in self._peers.values():
            for track_id, sub in peer.subscriptions.items():
                if sub.producer.kind == "video":
                    counts[peer.adapted.get(track_id, VideoState.FULL).value] += 1
            for slot in peer.slots.values():
                counts["remb_capped"] += slot.upstream.capped
        return counts

    def upstream_remb(self, track_id: str) -> UpstreamRemb | None:
        """The REMB cap sent to the publisher of `track_id` (None if unknown)."""
        for peer in self._peers.values():
            for slot in peer.slots.values():
                if slot.producer is not None and slot.producer.track_id == track_id:
                    return slot.upstream
        return None

    def peer_ids(self) -> list[str]:
        """Ids of the open peers."""
        return list(self._peers)

    async def close(self) -> None:
        """Close every peer (idempotent). No renegotiation happens while shutting down."""
        self._closed = True
        for peer_id in list(self._peers):
            await self.close_peer(peer_id)
        if self._adapt_task is not None:
            self._adapt_task.cancel()
            await asyncio.gather(self._adapt_task, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for mux in self._udp_muxes:
            mux.close()

    # ---- internals ---------------------------------------------------------------------------

    async def _run_quality(self, peer: _Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not peer.closed:
                await asyncio.sleep(self.config.quality_interval_s)
                for sub in peer.subscriptions.values():
                    sub.track.sync_stats()
                stats = await peer.pc.getStats()
                peer.quality, peer.quality_totals = summarize(
                    stats.values(), loop.time(), peer.quality_totals
                )
                if peer.subscriptions:
                    peer.quality = dataclasses.replace(
                        peer.quality, estimate_kbps=peer.link.estimate().bitrate_bps / 1000)
                self._emit(QualityReport(peer.peer_id, peer.quality))
        except asyncio.CancelledError:
            pass

    async def _run_adaptation(self) -> None:
        try:
            while not self._closed:
                await asyncio.sleep(self.config.adaptation_interval_s)
                try:
                    self.adapt(time.monotonic())
                except Exception:  # a bug here must not stop forwarding
                    logger.exception("adaptation step failed")
        except asyncio.CancelledError:
            pass

    def adapt(self, now_s: float) -> None:
        """One adaptation step: each subscriber's tracks fitted to its estimate, then each
        publisher asked for no more than its best-placed subscriber can use."""
        usable: dict[str, float] = {}
        # what each track costs, once per step (not once per subscriber: 100 times a step for
        # a hall of 100; LayerRateMeter walks a second of frames each time)
        rates: dict[str, tuple[float, ...]] = {}
        for peer in list(self._peers.values()):
            if peer.closed or not peer.subscriptions:
                continue
            demands = []
            for track_id, sub in peer.subscriptions.items():
                if sub.producer.kind == "video" and sub.track.paused and not _weak_only(sub.track):
                    continue  # audio-only or muted: the user's choice, nothing to fit
                cost = rates.get(track_id)
                if cost is None:
                    cost = rates[track_id] = sub.producer.layer_rates.cumulative_bps(now_s)
                demands.append(TrackDemand(track_id, sub.producer.kind, cost, sub.producer.priority))
            estimate = peer.link.estimate()
            for d in peer.policy.update(estimate.bitrate_bps, demands, now_s):
                self._apply(peer, d)
            # keyframes to a subscriber whose link is the limit go out at what its budget leaves
            # for the track (forwarding.ForwardTrack._take_for_pacing); otherwise as they come
            bound = estimate.source in ("remb", "probe", "loss")
            for demand in demands:
                decision = peer.policy.decision(demand.track_id)
                if decision is not None:
                    usable[demand.track_id] = max(usable.get(demand.track_id, 0.0), decision.usable_bps)
                    paced = peer.subscriptions.get(demand.track_id)
                    if paced is not None:
                        paced.track.pace_bps = max(PACE_MIN_BPS, decision.usable_bps) if bound else None
        for p in self._peers.values():
            for slot in p.slots.values():
                if slot.producer is not None and slot.kind == "video":
                    slot.upstream.cap_bps = usable.get(slot.producer.track_id)

    def _apply(self, peer: _Peer, d: TrackDecision) -> None:
        sub = peer.subscriptions.get(d.track_id)
        if sub is None:
            return
        gate = sub.track.packet_filter
        if isinstance(gate, TemporalLayerFilter):
            gate.set_max_layer(None if d.max_layer >= d.layers - 1 else max(0, d.max_layer))
        sub.track.set_paused(d.max_layer == PAUSED, "weak_link")
        if peer.adapted.get(d.track_id, VideoState.FULL) is not d.state:
            peer.adapted[d.track_id] = d.state
            fps = 0.0 if d.max_layer == PAUSED else 0.5 ** (d.layers - 1 - d.max_layer)
            self._emit(TrackAdapted(peer.peer_id, d.track_id, d.state.value, fps))

    def _peer(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            raise MediaRequestError(MediaErrorReason.UNKNOWN_PEER, f"unknown peer {peer_id!r}")
        return peer

    def _producer(self, track_id: str) -> Producer:
        producer = self._producers.get(track_id)
        if producer is None:
            raise MediaRequestError(MediaErrorReason.UNKNOWN_TRACK, f"unknown track {track_id!r}")
        return producer

    def _emit(self, event: MediaEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            logger.exception("on_event callback failed for %r", event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


PACE_MIN_BPS = 50_000.0  # a keyframe is never paced slower (a 12 kB one then takes 2 s)


def _weak_only(track: ForwardTrack) -> bool:
    return track.pause_reasons == {"weak_link"}


def _h264_compatible(candidate: dict[str, Any], negotiated: dict[str, Any]) -> bool:
    """Same packetization mode and profile (first two bytes of profile-level-id), if H.264."""
    if not negotiated:
        return True
    for key in ("packetization-mode",):
        if str(candidate.get(key, "0")) != str(negotiated.get(key, "0")):
            return False
    a = str(candidate.get("profile-level-id", ""))[:4].lower()
    b = str(negotiated.get("profile-level-id", ""))[:4].lower()
    return not a or not b or a == b


__all__ = ["Sfu"]


def _mark_content(sdp: str, mids: set[str | None]) -> str:
    """Add `a=content:slides` (RFC 4796) to the m-sections of `mids`: the screen slot."""
    if not mids:
        return sdp
    sections = sdp.split("\r\nm=")
    for i, section in enumerate(sections[1:], 1):
        mid = next((line[6:] for line in section.split("\r\n") if line.startswith("a=mid:")), None)
        if mid in mids and "a=content:" not in section:
            sections[i] = section.replace(f"a=mid:{mid}", f"a=mid:{mid}\r\na=content:slides", 1)
    return "\r\nm=".join(sections)
