import json

import pytest

from protocol import signaling as wire
from protocol.signaling import Reason, WireError


def test_decodes_each_client_message_type():
    assert isinstance(wire.decode_client_message('{"type":"join","v":1,"token":"t"}'), wire.Join)
    msg = wire.decode_client_message('{"type":"subscribe","id":7,"track_ids":["a","b"]}')
    assert msg == wire.Subscribe(track_ids=("a", "b"), id=7)
    msg = wire.decode_client_message('{"type":"mute","participant_id":"p1","kind":"audio","muted":true}')
    assert msg == wire.Mute("p1", "audio", True)
    msg = wire.decode_client_message('{"type":"candidate","candidate":"x","sdp_mid":null}')
    assert msg == wire.Candidate("x", None, None)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("not json", "not valid JSON"),
        ("[1,2]", "must be a JSON object, got array"),
        ('{"type": 5}', "type must be a string, got number"),
        ('{"type": "teleport"}', "unknown message type 'teleport'"),
        ('{"type": "join", "v": 1}', "missing field 'token'"),
        ('{"type": "join", "v": 1, "token": 5}', "field 'token' must be a string, got number"),
        ('{"type": "raise_hand", "raised": "yes"}', "field 'raised' must be a boolean, got string"),
        ('{"type": "mute", "participant_id": "p", "kind": "smell", "muted": true}', "one of 'audio', 'video'"),
        ('{"type": "subscribe", "track_ids": "abc"}', "must be a list"),
        ('{"type": "subscribe", "track_ids": [1]}', "a list of a string"),
        ('{"type": "ping", "id": {"x": 1}}', "id must be a string"),
        ('{"type": "ping", "id": true}', "id must be a string"),
    ],
)
def test_bad_messages_name_expected_and_got(text, fragment):
    with pytest.raises(WireError) as exc:
        wire.decode_client_message(text)
    assert exc.value.reason is Reason.BAD_MESSAGE
    assert fragment in exc.value.message


def test_request_id_survives_into_errors():
    with pytest.raises(WireError) as exc:
        wire.decode_client_message('{"type":"raise_hand","id":"abc","raised":1}')
    assert exc.value.request_id == "abc"


def test_wrong_protocol_version():
    with pytest.raises(WireError) as exc:
        wire.decode_client_message('{"type":"join","v":2,"token":"t"}')
    assert exc.value.reason is Reason.UNSUPPORTED_VERSION


def test_oversize_sdp_refused():
    text = json.dumps({"type": "sdp", "sdp_type": "answer", "sdp": "v=0" + "x" * wire.MAX_SDP_LENGTH})
    with pytest.raises(WireError) as exc:
        wire.decode_client_message(text)
    assert exc.value.reason is Reason.MESSAGE_TOO_LARGE


def test_encode_round_trips_nested_dataclasses_and_enums():
    msg = wire.Error(Reason.FORBIDDEN, "no", id=3)
    assert json.loads(wire.encode(msg)) == {"type": "error", "reason": "forbidden", "message": "no", "id": 3}
    p = wire.ParticipantInfo("p1", "dr-li", "Dr Li", "host")
    body = json.loads(wire.encode(wire.ParticipantJoined(p)))
    assert body["participant"]["name"] == "Dr Li" and body["type"] == "participant_joined"


def test_chat_text_is_bounded_and_not_empty() -> None:
    from protocol import signaling as w

    assert w.decode_client_message('{"type":"chat","text":"ok","id":1}') == w.Chat("ok", id=1)
    for text, reason in (("   ", w.Reason.BAD_MESSAGE), ("x" * (w.MAX_CHAT_CHARS + 1), w.Reason.MESSAGE_TOO_LARGE)):
        try:
            w.decode_client_message(w.encode(w.Chat(text, id=2)))
        except w.WireError as err:
            assert err.reason is reason and err.request_id == 2
        else:
            raise AssertionError(f"{text[:10]!r} accepted")
