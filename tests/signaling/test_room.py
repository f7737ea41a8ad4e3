"""One room as a plain state machine: requests in, effects and room events out (no hub, no sockets)."""

from __future__ import annotations

import pytest

from protocol import signaling as wire
from signaling import effects as fx
from signaling import events as ev
from signaling.roles import Role
from signaling.room import Room


def room(kind: str = "consultation") -> Room:
    return Room("c1", kind, max_participants=4, created_at=0.0)


def of(effects: list[fx.Effect], cls: type) -> list:
    return [e for e in effects if isinstance(e, cls)]


def join(r: Room, pid: str, role: Role, media: bool = False) -> list[fx.Effect]:
    return r.join(pid, f"id-{pid}", f"Dr {pid}", role, media=media, request_id=1)


def test_join_emits_one_participant_joined_event_with_who_and_role() -> None:
    r = room()
    effects = join(r, "p1", Role.HOST)
    assert of(effects, ev.ParticipantJoined) == [ev.ParticipantJoined("c1", "p1", "id-p1", "Dr p1", "host")]
    [joined] = [e.message for e in of(effects, fx.Send) if isinstance(e.message, wire.Joined)]
    assert "moderate" in joined.permissions and joined.room.kind == "consultation"


def test_unknown_kind_is_refused_and_kind_is_the_enum() -> None:
    with pytest.raises(ValueError, match="room kind must be one of"):
        Room("x", "party", max_participants=2, created_at=0.0)
    assert room("broadcast").kind is wire.RoomKind.BROADCAST


def test_full_and_ended_rooms_refuse_joins_with_reasons() -> None:
    r = room()
    for i in range(4):
        join(r, f"p{i}", Role.EXPERT)
    with pytest.raises(wire.WireError) as full:
        join(r, "p9", Role.EXPERT)
    assert full.value.reason is wire.Reason.ROOM_FULL
    r.end("ended_by_host", None)
    with pytest.raises(wire.WireError) as ended:
        join(r, "p10", Role.EXPERT)
    assert ended.value.reason is wire.Reason.ROOM_ENDED


def test_start_recording_carries_the_room_as_it_is_and_emits_recording_started() -> None:
    r = room()
    join(r, "host", Role.HOST)
    join(r, "exp", Role.EXPERT)
    r.track_published("exp", "exp/video/1", "video", "VP8")
    effects = r.handle("host", wire.StartRecording(id="s"))
    [start] = of(effects, fx.StartRecorder)
    assert start.kind == "consultation" and start.by == "host"
    assert {p.participant_id for p in start.participants} == {"host", "exp"}
    assert start.tracks == (ev.TrackPublished("c1", "exp/video/1", "exp", "video", "VP8"),)
    assert of(effects, ev.RecordingStarted) == [ev.RecordingStarted("c1", "host")]
    with pytest.raises(wire.WireError) as again:
        r.handle("host", wire.StartRecording(id="t"))
    assert again.value.reason is wire.Reason.RECORDING_ACTIVE


def test_an_expert_may_not_record() -> None:
    r = room()
    join(r, "host", Role.HOST)
    join(r, "exp", Role.EXPERT)
    with pytest.raises(wire.WireError) as refused:
        r.handle("exp", wire.EndRoom(id="e"))
    assert refused.value.reason is wire.Reason.FORBIDDEN


def test_track_events_follow_publish_and_end() -> None:
    r = room()
    join(r, "host", Role.HOST, media=True)
    join(r, "exp", Role.EXPERT, media=True)
    published = r.track_published("exp", "t1", "audio", "opus")
    assert of(published, ev.TrackPublished) == [ev.TrackPublished("c1", "t1", "exp", "audio", "opus")]
    assert [e.participant_id for e in of(published, fx.SubscribeTracks)] == ["host"]  # not the publisher
    assert of(r.track_ended("t1"), ev.TrackUnpublished) == [ev.TrackUnpublished("c1", "t1")]
    assert r.track_ended("t1") == []  # idempotent


def test_removal_unpublishes_tracks_and_emits_left() -> None:
    r = room()
    join(r, "host", Role.HOST)
    join(r, "exp", Role.EXPERT)
    r.track_published("exp", "t1", "video", "VP8")
    effects = r.handle("host", wire.Remove("exp", id="r"))
    assert of(effects, ev.TrackUnpublished) == [ev.TrackUnpublished("c1", "t1")]
    assert of(effects, ev.ParticipantLeft) == [ev.ParticipantLeft("c1", "exp", "id-exp", "removed")]
    assert [k.reason for k in of(effects, fx.Kick)] == ["removed"]


def test_promotion_emits_role_changed() -> None:
    r = room("broadcast")
    join(r, "host", Role.HOST)
    join(r, "v", Role.VIEWER)
    effects = r.handle("host", wire.Promote("v", id="p"))
    assert of(effects, ev.RoleChanged) == [ev.RoleChanged("c1", "v", "id-v", "Dr v", "speaker")]


def test_end_stops_recording_then_closes_everything_once() -> None:
    r = room()
    join(r, "host", Role.HOST)
    r.handle("host", wire.StartRecording(id="s"))
    effects = r.end("ended_by_host", r.participants["host"])
    assert of(effects, ev.RecordingStopped) == [ev.RecordingStopped("c1", "host")]
    assert of(effects, ev.RoomEnded) == [ev.RoomEnded("c1", "ended_by_host")]
    assert len(of(effects, fx.RoomClosed)) == 1 and of(effects, fx.WaveformGroupClosed)
    assert r.end("again", None) == []


def test_viewers_in_a_broadcast_are_seen_by_moderators_only() -> None:
    r = room("broadcast")
    join(r, "host", Role.HOST)
    join(r, "spk", Role.EXPERT)
    effects = join(r, "v1", Role.VIEWER)
    [notice] = [e for e in of(effects, fx.Send) if isinstance(e.message, wire.ParticipantJoined)]
    assert notice.to == ("host",)


def test_recording_failure_is_told_to_all_and_alarms_moderators_only() -> None:
    r = room()
    join(r, "host", Role.HOST)
    join(r, "exp", Role.EXPERT)
    r.handle("host", wire.StartRecording(id="s"))
    effects = r.recording_failed("the recordings disk is full")
    errors = [e for e in of(effects, fx.Send) if isinstance(e.message, wire.Error)]
    assert [e.to for e in errors] == [("host",)] and errors[0].message.reason is wire.Reason.RECORDING_FAILED
    assert of(effects, ev.RecordingStopped) == [ev.RecordingStopped("c1", None, "failed")]
    assert r.recording_failed("again") == []


def test_chat_in_a_consultation_reaches_everyone_and_the_audit_keeps_no_text() -> None:
    r = room()
    join(r, "host", Role.HOST)
    join(r, "exp", Role.EXPERT)
    effects = r.chat("exp", wire.Chat("阿司匹林 100 mg", id="c"), 1000.0)
    [send] = [e for e in of(effects, fx.Send) if isinstance(e.message, wire.ChatMessage)]
    assert set(send.to) == {"host", "exp"}
    assert send.message == wire.ChatMessage("m1", "exp", "Dr exp", "expert", "阿司匹林 100 mg", 1000.0, False)
    [audit] = of(effects, fx.Audit)
    assert audit.event == "message_sent" and "阿司匹林" not in repr(audit.details)
    assert of(effects, ev.ChatSent)[0].text == "阿司匹林 100 mg"


def test_chat_from_the_audience_of_a_broadcast_goes_to_moderators_only() -> None:
    r = room("broadcast")
    join(r, "host", Role.HOST)
    join(r, "spk", Role.EXPERT)
    join(r, "v1", Role.VIEWER)
    join(r, "v2", Role.VIEWER)
    question = r.chat("v1", wire.Chat("Which lead shows it?"), 1.0)
    [send] = [e for e in of(question, fx.Send) if isinstance(e.message, wire.ChatMessage)]
    assert set(send.to) == {"host", "v1"} and send.message.to_moderators
    answer = r.chat("host", wire.Chat("Lead V2."), 2.0)
    [send] = [e for e in of(answer, fx.Send) if isinstance(e.message, wire.ChatMessage)]
    assert set(send.to) == {"host", "spk", "v1", "v2"} and not send.message.to_moderators


def test_supervisors_and_monitors_may_not_chat() -> None:
    r = room("monitoring")
    join(r, "host", Role.HOST)
    join(r, "sup", Role.SUPERVISOR)
    join(r, "bed", Role.MONITOR)
    for pid in ("sup", "bed"):
        with pytest.raises(wire.WireError) as refused:
            r.chat(pid, wire.Chat("hello"), 1.0)
        assert refused.value.reason is wire.Reason.FORBIDDEN
    sent = r.chat("host", wire.Chat("rounds at 9"), 1.0)
    [send] = [e for e in of(sent, fx.Send) if isinstance(e.message, wire.ChatMessage)]
    assert "bed" not in send.to  # devices get no chat
