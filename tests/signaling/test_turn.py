"""TURN REST credentials: the shape coturn's use-auth-secret checks, per participant, renewed on
resume, and refused configurations (coturn itself accepts them: tests/medstream/test_turn.py)."""

import base64
import hashlib
import hmac
import json

import pytest

from signaling.turn import TurnRest
from tests.signaling.test_hub import T0, join, make_hub, sent, tok

URLS = ("turn:turn.example:3478?transport=udp", "turns:turn.example:443?transport=tcp")


def test_credentials_are_hmac_sha1_of_expiry_and_participant():
    server = TurnRest(URLS, "s3cret", ttl_s=3600).ice_server("p123", T0)
    assert server.urls == URLS and server.username == f"{int(T0 + 3600)}:p123"
    expected = base64.b64encode(hmac.new(b"s3cret", server.username.encode(), hashlib.sha1).digest()).decode()
    assert server.credential == expected


def test_each_participant_gets_its_own_in_joined_and_fresh_ones_on_resume():
    hub = make_hub(turn=TurnRest(URLS, "s3cret", ttl_s=600))
    _, e = join(hub, tok("c1", "dr-a", "host", "consultation"))
    [a] = sent(e, type_="joined")
    _, e = join(hub, tok("c1", "dr-b", "expert"), now=T0 + 5)
    [b] = sent(e, type_="joined")
    ta, tb = a["ice_servers"][-1], b["ice_servers"][-1]
    assert ta["username"] == f"{int(T0 + 600)}:{a['participant']['participant_id']}"
    assert tb["username"] == f"{int(T0 + 605)}:{b['participant']['participant_id']}"
    assert ta["credential"] != tb["credential"]
    # resume later: new expiry, same participant
    conn = hub.connect(T0 + 100)
    hub.disconnect(hub.conn_of[a["participant"]["participant_id"]], T0 + 99)
    e = hub.receive_text(conn, json.dumps({"type": "join", "v": 1, "id": 2, "resume": a["resume"],
                                            "token": tok("c1", "dr-a", "host", "consultation")}), T0 + 100)
    [again] = sent(e, type_="joined")
    assert again["resumed"] and again["ice_servers"][-1]["username"] == f"{int(T0 + 700)}:{a['participant']['participant_id']}"


@pytest.mark.parametrize("urls, secret, ttl", [((), "s", 60), (("stun:x:3478",), "s", 60), (URLS, "", 60), (URLS, "s", 0)])
def test_refused_configurations(urls, secret, ttl):
    with pytest.raises(ValueError):
        TurnRest(urls, secret, ttl)
