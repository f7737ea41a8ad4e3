"""The platform's requests on rooms without sockets: specs validated, booked windows kept,
recording policies obeyed, removals and mutes as a moderator would do them."""

import pytest

from signaling import effects as fx
from signaling import events as ev
from signaling.admin import Admin, AdminError, AdminReason, RoomSpec
from tests.signaling.test_hub import T0, join, make_hub, request, sent, tok

LIMIT = 1000


def spec(**body):
    return RoomSpec.parse({"room_id": "consult-1400", **body}, max_participants_limit=LIMIT)


@pytest.mark.parametrize("body, field", [
    ({"room_id": "../etc"}, "room_id"),
    ({"kind": "party"}, "kind"),
    ({"booked_from": T0, "booked_until": T0 - 1}, "booked_until"),
    ({"booked_from": "tomorrow", "booked_until": T0}, "booked_from"),
    ({"booked_from": "2026-12-01T14:00:00", "booked_until": T0}, "booked_from"),  # no UTC offset: ambiguous
    ({"max_participants": 0}, "max_participants"),
    ({"max_participants": LIMIT + 1}, "max_participants"),
    ({"recording": "sometimes"}, "recording"),
    ({"metadata": {"referral": 42}}, "metadata"),
    ({"colour": "red"}, "colour"),
])
def test_spec_refusals_name_the_field_and_what_was_got(body, field):
    with pytest.raises(AdminError) as err:
        spec(**body)
    assert err.value.reason is AdminReason.BAD_REQUEST and field in err.value.message


def test_iso_times_with_offsets_are_read_as_instants():
    s = spec(booked_from="2026-12-01T14:00:00+08:00", booked_until="2026-12-01T07:00:00Z")
    assert s.booking is not None and s.booking.closes_at - s.booking.opens_at == 3600


def test_booked_window_admits_early_joins_refuses_outside_and_ends_the_room():
    hub = make_hub()
    admin = Admin(hub)
    opens, closes = T0 + 3600, T0 + 7200
    _room, effects = admin.create_room(spec(booked_from=opens, booked_until=closes, early_join_s=600,
                                           metadata={"referral": "ZJ-2026-0412"}), T0)
    assert [e for e in effects if isinstance(e, ev.RoomStarted)] == [
        ev.RoomStarted("consult-1400", "consultation", {"referral": "ZJ-2026-0412"})]
    token = tok("consult-1400", "dr-li", "expert", start=T0, valid_for_s=3 * 3600)
    conn, e = join(hub, token, now=opens - 601)
    assert sent(e, conn)[0]["reason"] == "room_not_open"
    conn, e = join(hub, token, now=opens - 599)
    assert sent(e, type_="joined")
    assert not [x for x in hub.tick(closes - 1) if isinstance(x, ev.RoomEnded)]
    ended = hub.tick(closes)
    assert ev.RoomEnded("consult-1400", "booking_over") in ended
    assert any(isinstance(x, fx.CloseConn) and x.conn_id == conn for x in ended)
    # the participant hears why before its bye (sends are addressed to its connection once it is unbound)
    assert [m["type"] for m in sent(ended, conn)] == ["room_ended", "bye"]
    assert hub.store.get("consult-1400") is None


def test_a_room_whose_window_is_over_cannot_be_created_nor_one_twice():
    admin = Admin(make_hub())
    with pytest.raises(AdminError) as err:
        admin.create_room(spec(booked_from=T0 - 7200, booked_until=T0 - 3600), T0)
    assert err.value.reason is AdminReason.BAD_REQUEST
    admin.create_room(spec(), T0)
    with pytest.raises(AdminError) as err:
        admin.create_room(spec(), T0)
    assert err.value.reason is AdminReason.EXISTS


def test_max_participants_of_the_spec_is_the_rooms_limit():
    hub = make_hub()
    Admin(hub).create_room(spec(max_participants=1), T0)
    _, e = join(hub, tok("consult-1400", "dr-a", "expert"))
    assert sent(e, type_="joined")
    conn, e = join(hub, tok("consult-1400", "dr-b", "expert"))
    assert sent(e, conn)[0]["reason"] == "room_full"


def test_recording_policies_auto_off_and_api_start_stop():
    hub = make_hub()
    admin = Admin(hub)
    _, effects = admin.create_room(spec(room_id="auto-1", recording="auto"), T0)
    assert next(e for e in effects if isinstance(e, fx.StartRecorder)).by == "policy"
    admin.create_room(spec(room_id="off-1", recording="off"), T0)
    with pytest.raises(AdminError) as err:
        admin.start_recording("off-1")
    assert err.value.reason is AdminReason.CONFLICT
    host, _ = join(hub, tok("off-1", "dr-wang", "host"))
    assert sent(request(hub, host, type="start_recording"), host)[0]["reason"] == "forbidden"
    # manual: nothing at creation; the API starts and stops it, and says who
    _, effects = admin.create_room(spec(room_id="man-1", recording="manual"), T0)
    assert not any(isinstance(e, fx.StartRecorder) for e in effects)
    started = admin.start_recording("man-1")
    assert ev.RecordingStarted("man-1", "api") in started and any(isinstance(e, fx.StartRecorder) for e in started)
    with pytest.raises(AdminError):
        admin.start_recording("man-1")
    stopped = admin.stop_recording("man-1")
    assert fx.StopRecorder("man-1", "api") in stopped and ev.RecordingStopped("man-1", "api") in stopped
    with pytest.raises(AdminError):
        admin.stop_recording("man-1")


def test_default_policy_follows_the_nodes_record_kinds():
    hub = make_hub(record_kinds=("consultation",))
    _, effects = Admin(hub).create_room(spec(), T0)
    assert any(isinstance(e, fx.StartRecorder) for e in effects)


def test_remove_and_mute_as_a_moderator_would():
    hub = make_hub()
    admin = Admin(hub)
    admin.create_room(spec(), T0)
    _host, e = join(hub, tok("consult-1400", "dr-wang", "host"))
    host_pid = sent(e, type_="joined")[0]["participant"]["participant_id"]
    expert, e = join(hub, tok("consult-1400", "dr-li", "expert"))
    expert_pid = sent(e, type_="joined")[0]["participant"]["participant_id"]
    with pytest.raises(AdminError) as err:
        admin.mute("consult-1400", expert_pid, "audio", True)
    assert err.value.reason is AdminReason.CONFLICT  # publishes nothing yet
    hub.track_published(expert_pid, "t-audio", "audio", "opus")
    muted = admin.mute("consult-1400", expert_pid, "audio", True)
    assert fx.MuteTrack("t-audio", True) in muted
    assert sent(muted, host_pid, "track_updated")[0]["track"]["muted"] is True
    with pytest.raises(AdminError) as err:
        admin.remove("consult-1400", "p-nobody")
    assert err.value.reason is AdminReason.NOT_FOUND
    removed = admin.remove("consult-1400", expert_pid)
    assert sent(removed, expert)[0] == {"type": "bye", "reason": "removed", "resume": False}
    assert sent(removed, host_pid, "participant_left")[0]["reason"] == "removed"
    assert ev.ParticipantLeft("consult-1400", expert_pid, "dr-li", "removed") in removed
    assert expert_pid not in hub.store.get("consult-1400").participants
    with pytest.raises(AdminError) as err:
        admin.end_room("nowhere")
    assert err.value.reason is AdminReason.NOT_FOUND
