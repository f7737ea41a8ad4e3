import time

import jwt
import pytest

from protocol.signaling import Reason, WireError
from signaling.roles import Role
from signaling.tokens import issue_token, verify_token

SECRET = "s" * 40


def test_valid_token_grants_room_role_and_name():
    now = time.time()
    tok = issue_token(SECRET, room="r", identity="dr-li", name="Dr Li", role="expert", valid_from=now)
    grant = verify_token(SECRET, tok, now + 10)
    assert (grant.room, grant.identity, grant.name, grant.role) == ("r", "dr-li", "Dr Li", Role.EXPERT)


def test_booked_window_is_enforced():
    start = 1_800_000_000.0  # a consultation booked 14:00-15:00
    tok = issue_token(SECRET, room="r", identity="a", role="host", valid_from=start, valid_for_s=3600)
    verify_token(SECRET, tok, start + 1800)
    with pytest.raises(WireError) as early:
        verify_token(SECRET, tok, start - 3600)
    assert early.value.reason is Reason.TOKEN_NOT_YET_VALID
    with pytest.raises(WireError) as late:
        verify_token(SECRET, tok, start + 2 * 3600)  # 16:00
    assert late.value.reason is Reason.TOKEN_EXPIRED


def test_forged_and_garbage_tokens_are_invalid():
    tok = issue_token("other-secret" * 4, room="r", identity="a", role="host")
    with pytest.raises(WireError) as forged:
        verify_token(SECRET, tok, time.time())
    assert forged.value.reason is Reason.INVALID_TOKEN and "signature" in forged.value.message
    for bad in ("", "a.b.c", "x" * 5000):
        with pytest.raises(WireError) as exc:
            verify_token(SECRET, bad, time.time())
        assert exc.value.reason is Reason.INVALID_TOKEN


def test_alg_none_and_unknown_role_refused():
    unsigned = jwt.encode({"sub": "a", "room": "r", "role": "host", "nbf": 0, "exp": 2e9}, None, algorithm="none")
    with pytest.raises(WireError):
        verify_token(SECRET, unsigned, time.time())
    forged_role = jwt.encode({"sub": "a", "room": "r", "role": "speaker", "nbf": 0, "exp": 2e9}, SECRET, algorithm="HS256")
    with pytest.raises(WireError) as exc:
        verify_token(SECRET, forged_role, time.time())
    assert "not a known role" in exc.value.message


def test_issue_refuses_bad_arguments():
    with pytest.raises(ValueError, match="role must be one of"):
        issue_token(SECRET, room="r", identity="a", role="speaker")
    with pytest.raises(ValueError, match="room kind"):
        issue_token(SECRET, room="r", identity="a", role="host", room_kind="party")
