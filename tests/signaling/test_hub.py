"""The signaling core without sockets: frames and time in, effects out."""

import json

import pytest

from protocol.signaling import CLOSE_POLICY
from signaling import effects as fx
from signaling.hub import Hub, SignalingConfig
from signaling.roles import PERMISSIONS, Action, Role
from signaling.tokens import issue_token

SECRET = "k" * 40
T0 = 1_800_000_000.0


def make_hub(**kw):
    return Hub(SignalingConfig(secret=SECRET, **kw))


def tok(room, identity, role, kind=None, start=T0 - 60, valid_for_s=7200):
    return issue_token(SECRET, room=room, identity=identity, role=role, room_kind=kind, valid_from=start, valid_for_s=valid_for_s)


def sent(effects, conn_or_pid=None, type_=None):
    """Messages in `effects` (as dicts), optionally for one recipient / of one type."""
    out = []
    for e in effects:
        if (isinstance(e, fx.Send) and (conn_or_pid is None or conn_or_pid in e.to)) or (isinstance(e, fx.SendConn) and (conn_or_pid is None or conn_or_pid == e.conn_id)):
            out.append(json.loads(_enc(e.message)))
    return [m for m in out if type_ is None or m["type"] == type_]


def _enc(m):
    from protocol.signaling import encode
    return encode(m)


def join(hub, token, now=T0, media=False):
    conn = hub.connect(now)
    effects = hub.receive_text(conn, json.dumps({"type": "join", "v": 1, "id": 1, "token": token, "media": media}), now)
    return conn, effects


def request(hub, conn, now=T0, **msg):
    return hub.receive_text(conn, json.dumps({"id": "q", **msg}), now)


@pytest.fixture
def consult():
    hub = make_hub()
    host, e = join(hub, tok("c1", "dr-wang", "host", "consultation"))
    assert sent(e, type_="joined")
    return hub, host


def test_host_creates_room_others_cannot(consult):
    hub2 = make_hub()
    conn, effects = join(hub2, tok("nowhere", "dr-li", "expert"))
    [err] = sent(effects, conn)
    assert err["reason"] == "unknown_room" and err["id"] == 1
    # a host token without a kind does not create a room either
    conn, effects = join(hub2, tok("nowhere", "dr-li", "host"))
    assert sent(effects, conn)[0]["reason"] == "unknown_room"
    assert hub2.participant_of(conn) is None


def test_presence_join_list_and_leave(consult):
    hub, host = consult
    expert, e = join(hub, tok("c1", "dr-li", "expert"))
    joined = sent(e, type_="joined")[0]
    assert [p["identity"] for p in joined["participants"]] == ["dr-wang"]
    host_pid = hub.participant_of(host)
    assert sent(e, host_pid, "participant_joined")[0]["participant"]["identity"] == "dr-li"
    e = request(hub, expert, type="leave")
    assert sent(e, host_pid, "participant_left")[0]["reason"] == "left"
    assert any(isinstance(x, fx.CloseConn) and x.code == 1000 for x in e)
    assert any(isinstance(x, fx.Audit) and x.event == "leave" for x in e)


# Every role against every action: allowed ones succeed, the rest get `forbidden`.
ACTION_REQUESTS = {
    Action.PUBLISH_AUDIO: {"type": "publish", "audio": True},
    Action.PUBLISH_VIDEO: {"type": "publish", "video": True},
    Action.RAISE_HAND: {"type": "raise_hand", "raised": True},
    Action.MODERATE: {"type": "promote", "participant_id": "TARGET"},
    Action.RECORD: {"type": "start_recording"},
    Action.SUBSCRIBE: {"type": "set_video_paused", "paused": True},
}


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.SPEAKER])
@pytest.mark.parametrize("action", list(ACTION_REQUESTS))
def test_permission_matrix(role, action):
    hub = make_hub()
    join(hub, tok("b1", "host", "host", "broadcast"))
    target, _ = join(hub, tok("b1", "student", "viewer"))
    conn, _ = join(hub, tok("b1", f"who-{role.value}", role.value))
    msg = dict(ACTION_REQUESTS[action])
    if msg.get("participant_id") == "TARGET":
        msg["participant_id"] = hub.participant_of(target)
    effects = request(hub, conn, **msg)
    errors = sent(effects, hub.participant_of(conn), "error") + sent(effects, conn, "error")
    if action in PERMISSIONS[role]:
        assert not errors, errors
        assert sent(effects, hub.participant_of(conn), "ok")
    else:
        assert [e["reason"] for e in errors] == ["forbidden"], (role, action, errors)
        assert role.value in errors[0]["message"]


def test_waveform_publishing_is_for_monitors_and_hosts():
    hub = make_hub()
    join(hub, tok("w1", "nurse", "host", "monitoring"))
    mon, _ = join(hub, tok("w1", "bed-1", "monitor"))
    viewer, _ = join(hub, tok("w1", "dr", "expert"))
    effects, route = hub.receive_binary(mon, 100, T0)
    assert route == ("w1", hub.participant_of(mon)) and not effects
    effects, route = hub.receive_binary(viewer, 100, T0)
    assert route is None and sent(effects, viewer)[0]["reason"] == "forbidden"
    stranger = hub.connect(T0)
    effects, route = hub.receive_binary(stranger, 100, T0)
    assert route is None and sent(effects, stranger)[0]["reason"] == "not_joined"


def test_promote_demote_cycle_changes_role_and_stops_publishing():
    hub = make_hub()
    host, _ = join(hub, tok("b1", "prof", "host", "broadcast"))
    student, _ = join(hub, tok("b1", "stu", "viewer"))
    spid = hub.participant_of(student)
    e = request(hub, student, type="raise_hand", raised=True)
    assert sent(e, hub.participant_of(host), "participant_updated")[0]["participant"]["hand_raised"] is True
    e = request(hub, host, type="promote", participant_id=spid)
    upd = sent(e, spid, "participant_updated")[0]["participant"]
    assert upd["role"] == "speaker" and upd["hand_raised"] is False
    assert any(isinstance(x, fx.Audit) and x.event == "role_changed" for x in e)
    e = request(hub, student, type="publish", audio=True)
    assert any(isinstance(x, fx.RequestPublish) for x in e)
    hub.track_published(spid, "t-audio", "audio", "opus")
    e = request(hub, host, type="demote", participant_id=spid)
    assert any(isinstance(x, fx.StopPublishing) and x.participant_id == spid for x in e)
    assert sent(e, spid, "participant_updated")[0]["participant"]["role"] == "viewer"
    e = request(hub, student, type="publish", audio=True)
    assert sent(e, student, "error")[0]["reason"] == "forbidden"
    e = request(hub, host, type="demote", participant_id=spid)
    assert sent(e, host, "error")[0]["reason"] == "forbidden"


def test_tracks_auto_subscribe_receivers_and_mute():
    hub = make_hub()
    host, _ = join(hub, tok("c1", "a", "host", "consultation"), media=True)
    expert, _ = join(hub, tok("c1", "b", "expert"), media=True)
    sup, _ = join(hub, tok("c1", "c", "supervisor"), media=False)
    hpid, epid = hub.participant_of(host), hub.participant_of(expert)
    e = hub.track_published(hpid, "tv", "video", "VP8")
    subs = [x for x in e if isinstance(x, fx.SubscribeTracks)]
    assert [(s.participant_id, s.track_ids) for s in subs] == [(epid, ("tv",))]
    assert sent(e, hub.participant_of(sup), "track_published")
    e = request(hub, host, type="mute", participant_id=hpid, kind="video", muted=True)
    assert fx.MuteTrack("tv", True) in e
    assert sent(e, epid, "track_updated")[0]["track"]["muted"] is True
    e = request(hub, host, type="mute", participant_id=epid, kind="audio", muted=True)
    assert sent(e, host, "error")[0]["reason"] == "unknown_track"


def test_resume_within_grace_keeps_identity_no_ghost():
    hub = make_hub(resume_grace_s=20)
    host, _ = join(hub, tok("c1", "a", "host", "consultation"))
    t = tok("c1", "b", "expert")
    expert, e = join(hub, t)
    joined = sent(e, type_="joined")[0]
    pid, key = joined["participant"]["participant_id"], joined["resume"]
    e = hub.disconnect(expert, T0 + 1)
    assert sent(e, hub.participant_of(host), "participant_updated")[0]["participant"]["connected"] is False
    assert not sent(hub.tick(T0 + 15), type_="participant_left")
    conn = hub.connect(T0 + 15)
    e = hub.receive_text(conn, json.dumps({"type": "join", "v": 1, "token": t, "resume": key}), T0 + 15)
    rejoined = sent(e, type_="joined")[0]
    assert rejoined["resumed"] is True and rejoined["participant"]["participant_id"] == pid
    assert rejoined["resume"] != key
    room = hub.store.get("c1")
    assert len(room.participants) == 2 and room.participants[pid].connected
    assert not sent(hub.tick(T0 + 100), type_="participant_left")  # connected again: nothing expires


def test_grace_expiry_removes_and_resume_fails_after():
    hub = make_hub(resume_grace_s=20, idle_timeout_s=1000)
    host, _ = join(hub, tok("c1", "a", "host", "consultation"))
    t = tok("c1", "b", "expert")
    expert, e = join(hub, t)
    key = sent(e, type_="joined")[0]["resume"]
    pid = hub.participant_of(expert)
    hub.disconnect(expert, T0)
    e = hub.tick(T0 + 21)
    assert sent(e, hub.participant_of(host), "participant_left")[0] == {"type": "participant_left", "participant_id": pid, "reason": "timeout"}
    conn = hub.connect(T0 + 22)
    e = hub.receive_text(conn, json.dumps({"type": "join", "v": 1, "token": t, "resume": key}), T0 + 22)
    assert sent(e, conn)[0]["reason"] == "resume_failed"


def test_empty_room_ends_and_configured_room_stays():
    hub = make_hub(resume_grace_s=5, idle_timeout_s=1000)
    hub.create_room("ward", "monitoring", T0, persistent=True)
    a, _ = join(hub, tok("c1", "a", "host", "consultation"))
    w, _ = join(hub, tok("ward", "bed", "monitor"))
    request(hub, a, type="leave")
    hub.disconnect(a, T0)
    hub.disconnect(w, T0)
    e = hub.tick(T0 + 10)
    assert any(isinstance(x, fx.Audit) and x.event == "room_ended" and x.room_id == "c1" for x in e)
    assert hub.store.get("c1") is None and hub.store.get("ward") is not None


def test_end_room_kicks_everyone_and_stops_recording():
    hub = make_hub()
    host, _ = join(hub, tok("c1", "a", "host", "consultation"))
    other, _ = join(hub, tok("c1", "b", "expert"))
    request(hub, host, type="start_recording")
    e = request(hub, host, type="end_room")
    assert any(isinstance(x, fx.StopRecorder) for x in e)
    byes = [x for x in e if isinstance(x, fx.SendConn) and x.message.TYPE == "bye"]
    assert {b.conn_id for b in byes} == {host, other}
    assert hub.store.get("c1") is None
    conn, e = join(hub, tok("c1", "b", "expert"))
    assert sent(e, conn)[0]["reason"] == "unknown_room"


def test_recording_state_errors():
    hub = make_hub()
    host, _ = join(hub, tok("c1", "a", "host", "consultation"))
    assert sent(request(hub, host, type="stop_recording"), type_="error")[0]["reason"] == "recording_inactive"
    e = request(hub, host, type="start_recording")
    assert sent(e, type_="recording")[0]["active"] is True
    assert sent(request(hub, host, type="start_recording"), type_="error")[0]["reason"] == "recording_active"


def test_limits_size_rate_flood_and_timeouts():
    hub = make_hub(max_message_bytes=1000, rate_per_s=10, rate_burst=10, flood_close_after=50,
                   handshake_timeout_s=5, idle_timeout_s=30)
    conn, _ = join(hub, tok("c1", "a", "host", "consultation"))
    e = hub.receive_text(conn, json.dumps({"type": "ping", "pad": "x" * 2000}), T0)
    assert sent(e, conn)[0]["reason"] == "message_too_large"
    replies = [hub.receive_text(conn, '{"type":"ping"}', T0 + 0.001) for _ in range(30)]
    errors = [m for r in replies for m in sent(r, type_="error")]
    assert [m["reason"] for m in errors] == ["rate_limited"]  # one error, not thirty
    closes = [x for r in (hub.receive_text(conn, '{"type":"ping"}', T0 + 0.002) for _ in range(60)) for x in r
              if isinstance(x, fx.CloseConn)]
    assert closes and closes[0].code == CLOSE_POLICY
    lurker = hub.connect(T0)
    e = hub.tick(T0 + 6)
    assert fx.CloseConn(lurker, CLOSE_POLICY, "join timeout") in e


def test_room_capacity():
    hub = make_hub(max_participants_per_room=2)
    join(hub, tok("c1", "a", "host", "consultation"))
    join(hub, tok("c1", "b", "expert"))
    conn, e = join(hub, tok("c1", "c", "expert"))
    assert sent(e, conn)[0]["reason"] == "room_full"


def test_second_join_on_same_connection_refused(consult):
    hub, host = consult
    e = hub.receive_text(host, json.dumps({"type": "join", "v": 1, "token": tok("c1", "x", "expert")}), T0)
    assert sent(e, type_="error")[0]["reason"] == "already_joined"


def test_requests_before_join_refused():
    hub = make_hub()
    conn = hub.connect(T0)
    e = hub.receive_text(conn, '{"type":"publish","audio":true,"id":9}', T0)
    assert sent(e, conn) == [{"type": "error", "reason": "not_joined", "message": "join before sending publish", "id": 9}]


def test_broadcast_audience_presence_goes_to_moderators_only():
    hub = make_hub()
    host, _ = join(hub, tok("b1", "prof", "host", "broadcast"))
    co, _ = join(hub, tok("b1", "co", "expert"))
    a, _ = join(hub, tok("b1", "stu-a", "viewer"))
    b, e = join(hub, tok("b1", "stu-b", "viewer"))
    hpid, cpid, apid, bpid = (hub.participant_of(c) for c in (host, co, a, b))
    # the host hears of the new viewer; the co-presenter and the other viewer do not
    assert sent(e, hpid, "participant_joined") and not sent(e, cpid) and not sent(e, apid, "participant_joined")
    # a viewer's participant list holds the presenters only; the host's holds everyone
    assert {p["identity"] for p in sent(e, bpid, "joined")[0]["participants"]} == {"prof", "co"}
    _, e = join(hub, tok("b1", "sup", "supervisor"))
    assert sent(e, hpid, "participant_joined") and not sent(e, cpid, "participant_joined")
    # a promoted viewer becomes visible to all
    e = request(hub, host, type="promote", participant_id=apid)
    assert sent(e, bpid, "participant_updated")[0]["participant"]["role"] == "speaker"
    # raised hands reach the moderators (and the raiser), not the rest of the hall
    e = request(hub, b, type="raise_hand", raised=True)
    assert sent(e, hpid, "participant_updated") and sent(e, bpid, "participant_updated")
    assert not sent(e, cpid, "participant_updated") and not sent(e, apid, "participant_updated")


def test_consultation_members_all_see_each_other_but_supervisor_is_discreet():
    hub = make_hub()
    host, _ = join(hub, tok("c1", "a", "host", "consultation"))
    ex, _ = join(hub, tok("c1", "b", "expert"))
    _, e = join(hub, tok("c1", "c", "supervisor"))
    assert sent(e, hub.participant_of(host), "participant_joined")
    assert not sent(e, hub.participant_of(ex), "participant_joined")
    _, e = join(hub, tok("c1", "d", "expert"))
    assert sent(e, hub.participant_of(ex), "participant_joined")


def test_recording_by_policy_starts_with_the_room_and_everyone_knows():
    hub = make_hub(record_kinds=("consultation",))
    host, e = join(hub, tok("c1", "a", "host", "consultation"))
    assert any(isinstance(x, fx.StartRecorder) and x.by == "policy" for x in e)
    assert sent(e, type_="joined")[0]["room"]["recording"] is True
    _, e = join(hub, tok("c1", "b", "expert"))
    assert sent(e, type_="joined")[0]["room"]["recording"] is True
    _, e = join(hub, tok("b1", "c", "host", "broadcast"))
    assert not any(isinstance(x, fx.StartRecorder) for x in e)
    # a host may still stop it; the stop is audited
    e = request(hub, host, type="stop_recording")
    assert any(isinstance(x, fx.StopRecorder) for x in e)


def test_quality_reports_reach_everyone_in_a_consultation_but_only_moderators_in_a_hall():
    from protocol.signaling import Quality

    hub = make_hub()
    host, _ = join(hub, tok("b1", "prof", "host", "broadcast"))
    a, _ = join(hub, tok("b1", "a", "viewer"))
    join(hub, tok("b1", "b", "viewer"))
    apid = hub.participant_of(a)
    [e] = hub.quality(apid, Quality(apid, 300.0, 1.0, 40.0, 5.0))
    assert set(e.to) == {apid, hub.participant_of(host)}
    h2, _ = join(hub, tok("c1", "doc", "host", "consultation"))
    ex, _ = join(hub, tok("c1", "exp", "expert"))
    epid = hub.participant_of(ex)
    [e] = hub.quality(epid, Quality(epid, 300.0, 1.0, 40.0, 5.0))
    assert set(e.to) == {epid, hub.participant_of(h2)}
