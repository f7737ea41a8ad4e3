"""The SFU with real aiortc peers over 127.0.0.1 (run inside a loopback-only namespace)."""

from __future__ import annotations

import asyncio

import pytest

from media_server.events import (
    MediaError,
    MediaErrorReason,
    MediaRequestError,
    OfferReady,
    QualityReport,
    TrackEnded,
)
from tests.conftest import timeout_s
from tests.support.rtc_peer import ClientPeer, ReceivedFrame, SfuHarness, nal_units

pytestmark = pytest.mark.webrtc

BOTH = frozenset({"audio", "video"})
VIDEO = frozenset({"video"})


def _key(client: ClientPeer, data: bytes) -> object:
    assert client.video_source is not None
    return nal_units(data) if client.video_source.codec_name == "H264" else data


def sent_index(client: ClientPeer) -> dict[object, int]:
    """Position of each frame the publisher's encoder produced (H.264: by NAL units)."""
    assert client.video_source is not None
    return {_key(client, f.data): i for i, f in enumerate(client.video_source.sent)}


def positions_of(publisher: ClientPeer, frames: list[bytes]) -> list[int | None]:
    index = sent_index(publisher)
    return [index.get(_key(publisher, data)) for data in frames]


def assert_forwarded_as_encoded(publisher: ClientPeer, frames: list[bytes]) -> None:
    """Every received frame is byte-identical to one the publisher's encoder produced, in order.

    (H.264 is compared NAL unit by NAL unit: RTP carries NAL units, not start codes.)
    """
    positions = positions_of(publisher, frames)
    assert None not in positions, f"a received frame differs from every encoder output: {positions}"
    assert positions == sorted(positions) and len(set(positions)) == len(positions), positions


def first_new_frame(publisher: ClientPeer, frames: list[ReceivedFrame], before: int) -> ReceivedFrame:
    """The first frame after index `before` that was not already in flight at the pause.

    aiortc's jitter buffer releases a frame when the next one starts, so the last frame sent
    before a pause surfaces only when forwarding resumes.
    """
    positions = positions_of(publisher, [f.data for f in frames])
    last = positions[before - 1]
    assert last is not None
    for frame, position in zip(frames[before:], positions[before:], strict=True):
        if position is not None and position > last + 1:
            return frame
    raise AssertionError("no frame forwarded after resuming")


async def wait_until(predicate: object, timeout: float) -> None:
    async def poll() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_forwards_vp8_and_opus_byte_identical(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="VP8", audio=True))
    bob = await harness.join(ClientPeer("bob", decode=True))
    ids = await harness.publish("alice", BOTH, timeout_s(5))
    assert {t.codec for t in harness.sfu.tracks()} == {"VP8", "opus"}
    await harness.sfu.subscribe("bob", [ids["video"], ids["audio"]])
    video = await bob.wait_track(ids["video"], timeout_s(5))
    audio = await bob.wait_track(ids["audio"], timeout_s(5))
    await video.wait_frames(15, timeout_s(8))
    await audio.wait_frames(40, timeout_s(8))

    assert video.frames[0].keyframe
    assert_forwarded_as_encoded(alice, [f.data for f in video.frames])
    assert alice.audio_source is not None
    opus_sent = alice.audio_source.sent
    received = [f.data for f in audio.frames]
    start = opus_sent.index(received[0])
    assert received == opus_sent[start : start + len(received)]
    # decoded pictures carry consecutive counters: nothing lost, nothing reordered
    counters = video.counters
    assert counters == list(range(counters[0], counters[0] + len(counters)))
    assert video.decode_errors == 0


async def test_a_late_subscriber_hears_a_publisher_whose_sequence_numbers_passed_half_the_range(
        harness: SfuHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Audio reaches a subscriber whatever the publisher's RTP sequence numbers are by then.

    Browsers and aiortc start below 32768, so this is any publisher some minutes in (at 50
    packets/s, 11 minutes at the latest). Before, such a subscriber got none of the audio until
    the numbers wrapped (seen in CI: a viewer heard nothing of the presenter for 40 s)."""
    import aiortc.rtcrtpsender

    monkeypatch.setattr(aiortc.rtcrtpsender, "random_sequence_number", lambda: 40_000)
    alice = await harness.join(ClientPeer("alice", audio=True))
    bob = await harness.join(ClientPeer("bob"))
    ids = await harness.publish("alice", frozenset({"audio"}), timeout_s(5))
    await harness.sfu.subscribe("bob", [ids["audio"]])
    audio = await bob.wait_track(ids["audio"], timeout_s(5))
    await audio.wait_frames(20, timeout_s(8))
    assert alice.audio_source is not None
    received = [f.data for f in audio.frames]
    start = alice.audio_source.sent.index(received[0])
    assert received == alice.audio_source.sent[start : start + len(received)]


async def test_forwards_h264_byte_identical(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="H264"))
    bob = await harness.join(ClientPeer("bob", decode=True))
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    assert harness.sfu.producer(ids["video"]).codec == "H264"
    await harness.sfu.subscribe("bob", [ids["video"]])
    video = await bob.wait_track(ids["video"], timeout_s(5))
    assert video.codec == "H264"
    await video.wait_frames(12, timeout_s(8))
    assert video.frames[0].keyframe
    assert_forwarded_as_encoded(alice, [f.data for f in video.frames])
    assert video.counters == list(range(video.counters[0], video.counters[0] + len(video.counters)))


async def test_late_joiner_gets_a_keyframe_quickly(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="VP8", fps=15))
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    assert alice.video_source is not None
    await wait_until(lambda: len(alice.video_source.sent) >= 20, timeout_s(5))
    forced_before = alice.video_source.keyframes_forced
    carol = await harness.join(ClientPeer("carol", decode=True))
    loop = asyncio.get_running_loop()
    joined_at = loop.time()
    await harness.sfu.subscribe("carol", [ids["video"]])
    video = await carol.wait_track(ids["video"], timeout_s(5))
    await video.wait_frames(1, timeout_s(3))
    first_frame_s = loop.time() - joined_at
    assert video.frames[0].keyframe, "a late joiner must start at a keyframe"
    assert alice.video_source.keyframes_forced > forced_before, "PLI must reach the publisher"
    assert first_frame_s < timeout_s(2.0)
    await video.wait_frames(5, timeout_s(3))
    assert_forwarded_as_encoded(alice, [f.data for f in video.frames])


async def test_many_joiners_cost_the_publisher_few_keyframes(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="VP8", fps=10))
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    assert alice.video_source is not None
    await wait_until(lambda: len(alice.video_source.sent) >= 5, timeout_s(5))
    forced_before = alice.video_source.keyframes_forced
    viewers = [await harness.join(ClientPeer(f"v{i}")) for i in range(8)]
    await asyncio.gather(*(harness.sfu.subscribe(v.name, [ids["video"]]) for v in viewers))
    for v in viewers:
        track = await v.wait_track(ids["video"], timeout_s(5))
        await track.wait_frames(3, timeout_s(5))
        assert track.frames[0].keyframe
    # 8 joiners within about a second: at most one immediate PLI and one coalesced one
    assert alice.video_source.keyframes_forced - forced_before <= 2
    assert harness.sfu.producer(ids["video"]).keyframe_requests_sent <= 2


async def test_two_publishers_video_on_one_connection(harness: SfuHarness) -> None:
    """Two remote video m-lines in one connection (aiortc's bundle pitfall) stay apart."""
    alice = await harness.join(ClientPeer("alice", video_codec="VP8"))
    dave = await harness.join(ClientPeer("dave", video_codec="VP8"))
    bob = await harness.join(ClientPeer("bob"))
    a = (await harness.publish("alice", VIDEO, timeout_s(5)))["video"]
    await harness.sfu.subscribe("bob", [a])
    d = (await harness.publish("dave", VIDEO, timeout_s(5)))["video"]
    await harness.sfu.subscribe("bob", [d])  # second subscription: renegotiation
    for track_id, publisher in ((a, alice), (d, dave)):
        track = await bob.wait_track(track_id, timeout_s(5))
        await track.wait_frames(8, timeout_s(6))
        assert_forwarded_as_encoded(publisher, [f.data for f in track.frames])
    assert bob.answers >= 2


async def test_publisher_leaving_ends_its_tracks(harness: SfuHarness) -> None:
    await harness.join(ClientPeer("alice", video_codec="VP8", audio=True))
    bob = await harness.join(ClientPeer("bob"))
    ids = await harness.publish("alice", BOTH, timeout_s(5))
    await harness.sfu.subscribe("bob", list(ids.values()))
    track = await bob.wait_track(ids["video"], timeout_s(5))
    await track.wait_frames(3, timeout_s(5))
    answers = bob.answers

    await harness.leave("alice")
    ended = {e.track_id for e in harness.events if isinstance(e, TrackEnded)}
    assert ended == set(ids.values())
    assert harness.sfu.tracks() == []
    assert harness.sfu.forward_track("bob", ids["video"]) is None
    await wait_until(lambda: bob.answers > answers, timeout_s(5))  # bob renegotiated
    await harness.settle(timeout_s(5))
    offer = [e for e in harness.events if isinstance(e, OfferReady) and e.peer_id == "bob"][-1]
    assert "a=sendonly" not in offer.sdp  # nothing left to send bob
    with pytest.raises(MediaRequestError) as info:
        await harness.sfu.subscribe("bob", [ids["video"]])
    assert info.value.reason is MediaErrorReason.UNKNOWN_TRACK


async def test_unpublish_and_republish(harness: SfuHarness) -> None:
    await harness.join(ClientPeer("alice", video_codec="VP8", audio=True))
    bob = await harness.join(ClientPeer("bob"))
    ids = await harness.publish("alice", BOTH, timeout_s(5))
    await harness.sfu.subscribe("bob", list(ids.values()))
    await harness.sfu.unpublish("alice", "video")
    await harness.sfu.unpublish("alice", "video")  # idempotent
    assert [t.track_id for t in harness.sfu.tracks()] == [ids["audio"]]
    again = await harness.publish("alice", VIDEO, timeout_s(5))
    assert again["video"] != ids["video"]
    await harness.sfu.subscribe("bob", [again["video"]])
    track = await bob.wait_track(again["video"], timeout_s(5))
    await track.wait_frames(5, timeout_s(5))
    assert track.frames[0].keyframe


async def test_audio_only_mode_pauses_video_keeps_audio(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="VP8", audio=True, fps=15))
    bob = await harness.join(ClientPeer("bob"))
    ids = await harness.publish("alice", BOTH, timeout_s(5))
    await harness.sfu.subscribe("bob", list(ids.values()))
    video = await bob.wait_track(ids["video"], timeout_s(5))
    audio = await bob.wait_track(ids["audio"], timeout_s(5))
    await video.wait_frames(3, timeout_s(5))

    await harness.sfu.set_video_paused("bob", True)
    await asyncio.sleep(0.2)  # let frames already in flight land
    video_count, audio_count = len(video.frames), len(audio.frames)
    await audio.wait_frames(audio_count + 25, timeout_s(5))
    assert len(video.frames) == video_count, "video kept flowing in audio-only mode"

    await harness.sfu.set_video_paused("bob", False)
    await video.wait_frames(video_count + 4, timeout_s(5))
    assert first_new_frame(alice, video.frames, video_count).keyframe, "resume at a keyframe"


async def test_moderator_mute_stops_forwarding_to_everyone(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="VP8", fps=15))
    viewers = [await harness.join(ClientPeer(n)) for n in ("bob", "carol")]
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    for v in viewers:
        await harness.sfu.subscribe(v.name, [ids["video"]])
    tracks = [await v.wait_track(ids["video"], timeout_s(5)) for v in viewers]
    for t in tracks:
        await t.wait_frames(3, timeout_s(5))

    harness.sfu.set_muted(ids["video"], True)
    assert harness.sfu.tracks()[0].muted
    await asyncio.sleep(0.2)
    counts = [len(t.frames) for t in tracks]
    assert alice.video_source is not None
    sent = len(alice.video_source.sent)
    await wait_until(lambda: len(alice.video_source.sent) >= sent + 8, timeout_s(5))
    assert [len(t.frames) for t in tracks] == counts

    harness.sfu.set_muted(ids["video"], False)
    for t, count in zip(tracks, counts, strict=True):
        await t.wait_frames(count + 4, timeout_s(5))
        assert first_new_frame(alice, t.frames, count).keyframe
    with pytest.raises(MediaRequestError):
        harness.sfu.set_muted("nope", True)


async def test_lossy_subscriber_recovers_with_nack_and_pli(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="VP8", fps=15, video_size=(320, 192)))
    bob = await harness.join(ClientPeer("bob", decode=True, drop_every_nth_rtp=7))
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    await harness.sfu.subscribe("bob", [ids["video"]])
    video = await bob.wait_track(ids["video"], timeout_s(5))
    await video.wait_frames(30, timeout_s(10))
    assert bob.rtp_dropped >= 3, "the loss pattern did not apply"
    assert bob.rtx_received >= 1, "no retransmission reached the lossy subscriber"
    # with every 7th packet dropped, only retransmission can complete frames this reliably
    assert_forwarded_as_encoded(alice, [f.data for f in video.frames])
    index = sent_index(alice)
    positions = [index[f.data] for f in video.frames]
    assert positions[-1] - positions[0] + 1 - len(positions) <= 3, "frames were not recovered"
    assert video.counters[-5:] == list(range(video.counters[-5], video.counters[-5] + 5))


async def test_codec_the_subscriber_cannot_receive_is_an_error_not_black_video(
    harness: SfuHarness,
) -> None:
    await harness.join(ClientPeer("alice", video_codec="H264", audio=True))
    bob = await harness.join(ClientPeer("bob", receive_codecs=frozenset({"VP8", "opus"})))
    ids = await harness.publish("alice", BOTH, timeout_s(5))
    await harness.sfu.subscribe("bob", [ids["video"], ids["audio"]])
    event = await harness.wait_event(
        lambda e: isinstance(e, MediaError) and e.peer_id == "bob", timeout_s(5)
    )
    assert isinstance(event, MediaError)
    assert event.reason is MediaErrorReason.UNSUPPORTED_CODEC
    assert event.track_id == ids["video"] and "H264" in event.message.upper()
    assert harness.sfu.forward_track("bob", ids["video"]) is None
    audio = await bob.wait_track(ids["audio"], timeout_s(5))
    await audio.wait_frames(10, timeout_s(5))  # the rest of the subscription works
    assert ids["video"] not in bob.received or not bob.received[ids["video"]].frames


async def test_invalid_answer_is_refused_and_the_offer_stays_pending(harness: SfuHarness) -> None:
    bob = ClientPeer("bob")
    await harness.sfu.open_peer("bob")  # not registered with the harness: we answer by hand
    await harness.join(ClientPeer("alice", video_codec="VP8"))
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    await harness.sfu.subscribe("bob", [ids["video"]])
    offer = next(e for e in harness.events if isinstance(e, OfferReady) and e.peer_id == "bob")
    with pytest.raises(MediaRequestError) as info:
        await harness.sfu.on_answer("bob", "this is not sdp")
    assert info.value.reason is MediaErrorReason.INVALID_SDP
    with pytest.raises(MediaRequestError) as info:
        await harness.sfu.on_answer("bob", offer.sdp.replace("a=sendonly", "a=recvonly"))
    assert info.value.reason is MediaErrorReason.INVALID_SDP  # an offer is not an answer
    try:
        await harness.sfu.on_answer("bob", await bob.answer(offer.sdp))
        track = bob.track(ids["video"])
        await track.wait_frames(3, timeout_s(5))
        with pytest.raises(MediaRequestError) as info:
            await harness.sfu.on_answer("bob", await bob.answer(offer.sdp))
        assert info.value.reason is MediaErrorReason.INVALID_STATE
    finally:
        await bob.close()


async def test_requests_name_unknown_peers_and_tracks(harness: SfuHarness) -> None:
    with pytest.raises(MediaRequestError) as info:
        await harness.sfu.subscribe("ghost", [])
    assert info.value.reason is MediaErrorReason.UNKNOWN_PEER
    await harness.join(ClientPeer("bob"))
    with pytest.raises(MediaRequestError, match="nope") as info:
        await harness.sfu.subscribe("bob", ["nope"])
    assert info.value.reason is MediaErrorReason.UNKNOWN_TRACK
    with pytest.raises(MediaRequestError, match="already open"):
        await harness.sfu.open_peer("bob")
    await harness.sfu.close_peer("bob")
    await harness.sfu.close_peer("bob")  # idempotent
    await harness.sfu.close_peer("ghost")


async def test_quality_is_measured_from_rtcp() -> None:
    from tests.media_server.conftest import loopback_config

    h = SfuHarness(loopback_config(quality_interval_s=0.5))
    try:
        await h.join(ClientPeer("alice", video_codec="VP8", audio=True))
        bob = await h.join(ClientPeer("bob"))
        ids = await h.publish("alice", BOTH, timeout_s(5))
        await h.sfu.subscribe("bob", list(ids.values()))
        await (await bob.wait_track(ids["video"], timeout_s(5))).wait_frames(3, timeout_s(5))
        await wait_until(
            lambda: (q := h.sfu.quality("bob")) is not None and q.rtt_ms is not None,
            timeout_s(6),
        )
        # every report while media flows, not just some: between two Sender Reports the counters
        # once stood still and half the reports said 0 kbit/s sent
        seen = len(h.events)
        await wait_until(lambda: sum(isinstance(e, QualityReport) and e.peer_id == "bob"
                                     for e in h.events[seen:]) >= 4, timeout_s(10))
        sent = [e.quality.sent_kbps for e in h.events[seen:] if isinstance(e, QualityReport) and e.peer_id == "bob"]
        assert min(sent) > 10, sent
        bob_q = h.sfu.quality("bob")
        alice_q = h.sfu.quality("alice")
        assert bob_q is not None and alice_q is not None
        assert bob_q.sent_kbps > 10 and alice_q.received_kbps > 10
        assert bob_q.rtt_ms is not None and 0 <= bob_q.rtt_ms < 500
        assert bob_q.loss_pct == 0.0
        assert h.sfu.quality("nobody") is None
    finally:
        await h.close()


class _Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended: list[str] = []

    def on_frame(self, frame: object) -> None:
        self.frames.append(frame.data)  # type: ignore[attr-defined]

    def on_track_ended(self, track_id: str) -> None:
        self.ended.append(track_id)


async def test_frame_sinks_get_encoded_frames_even_while_muted(harness: SfuHarness) -> None:
    alice = await harness.join(ClientPeer("alice", video_codec="VP8"))
    ids = await harness.publish("alice", VIDEO, timeout_s(5))
    sink = _Sink()
    harness.sfu.add_frame_sink(ids["video"], sink)
    harness.sfu.set_muted(ids["video"], True)
    await wait_until(lambda: len(sink.frames) >= 5, timeout_s(5))
    assert_forwarded_as_encoded(alice, sink.frames)
    harness.sfu.remove_frame_sink(ids["video"], sink)
    harness.sfu.add_frame_sink(ids["video"], sink)
    await harness.leave("alice")
    assert sink.ended == [ids["video"]]
