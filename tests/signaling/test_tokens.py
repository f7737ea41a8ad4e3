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


def test_key_ring_accepts_current_and_previous_kid_and_refuses_short_secrets():
    from signaling.tokens import KeyRing, SigningKey

    old, new = SigningKey("2026-11", "o" * 40), SigningKey("2026-12", "n" * 40)
    ring = KeyRing(new, old)
    for key in (old, new):
        tok = issue_token(KeyRing(key), room="r", identity="a", role="host")
        grant = verify_token(ring, tok, time.time())
        assert grant.kid == key.kid and len(grant.token_id) == 32
    stranger = issue_token(KeyRing(SigningKey("2026-12", "x" * 40)), room="r", identity="a", role="host")
    with pytest.raises(WireError):
        verify_token(ring, stranger, time.time())
    with pytest.raises(ValueError):
        SigningKey("k", "short")


def test_every_claim_is_range_checked():
    now = time.time()
    base = {"sub": "a", "room": "r", "role": "host"}
    for bad in ({"nbf": 1e300, "exp": 1e301}, {"nbf": now, "exp": float("inf")}, {"nbf": -1, "exp": now + 9},
                {"nbf": now, "exp": now - 100}, {"nbf": now, "exp": now + 9, "jti": 5},
                {"nbf": now, "exp": now + 9, "sub": "x" * 129}, {"nbf": now, "exp": now + 9, "kind": ["x"]}):
        tok = jwt.encode({**base, **bad}, SECRET, algorithm="HS256")
        with pytest.raises(WireError) as exc:
            verify_token(SECRET, tok, now)
        assert exc.value.reason is Reason.INVALID_TOKEN, bad


def _pyjwt_accepts(tok: str) -> bool:
    try:
        jwt.decode(tok, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False,
                                                              "require": ["sub", "room", "nbf", "exp"]})
    except (jwt.PyJWTError, ValueError, TypeError):
        return False
    return True


def test_lean_verifier_refuses_every_token_pyjwt_refuses():
    """signaling.tokens verifies HS256 itself (a fifth of PyJWT's CPU per join): the same
    tokens pass, the same malformed, re-spelt or foreign ones are refused, each with a reason."""
    claims = {"sub": "a", "room": "r", "role": "host", "nbf": 0, "exp": 2e9}
    good = jwt.encode(claims, SECRET, algorithm="HS256")
    head, body, sig = good.split(".")
    flip = "A" if sig[-1] != "A" else "B"
    cases = {
        "good": good,
        "junk in signature": f"{head}.{body}.{sig[:5]}!{sig[5:]}",
        "re-spelt signature": f"{head}.{body}.{sig[:-1]}{_respelt(sig[-1])}",
        "last signature char flipped": f"{head}.{body}.{sig[:-1]}{flip}",
        "padded signature": f"{head}.{body}.{sig}=",
        "dot in payload": f"{head}.{body}.x.{sig}",
        "two segments": f"{head}.{body}",
        "HS512": jwt.encode(claims, SECRET * 2, algorithm="HS512"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "audience": jwt.encode({**claims, "aud": "other-service"}, SECRET, algorithm="HS256"),
        "missing exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, algorithm="HS256"),
        "numeric sub": jwt.encode({**claims, "sub": 7}, SECRET, algorithm="HS256"),
        "numeric kid": _by_hand({"alg": "HS256", "kid": 5}, claims),
        "crit header": _by_hand({"alg": "HS256", "crit": ["exp"], "exp": 1}, claims),
        "no alg": _by_hand({"typ": "JWT"}, claims),
        "by hand": _by_hand({"alg": "HS256"}, claims),
        "payload not an object": jwt.api_jws.encode(b"[1, 2]", SECRET, algorithm="HS256"),
    }
    for name, tok in cases.items():
        try:
            verify_token(SECRET, tok, 1_000_000.0)
            ours = True
        except WireError as exc:
            assert exc.reason is Reason.INVALID_TOKEN and exc.message, name
            ours = False
        assert ours == _pyjwt_accepts(tok), name
    assert _pyjwt_accepts(good)


def _respelt(last: str) -> str:
    """The same last 4 bits of an HS256 signature (43 chars: 2 unused low bits) in another letter."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = alphabet.index(last)
    return alphabet[i ^ 1]


def _by_hand(header: dict[str, object], claims: dict[str, object]) -> str:
    """A token signed without PyJWT (which refuses to write some of these headers)."""
    import base64
    import hashlib
    import hmac
    import json

    def seg(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{seg(json.dumps(header).encode())}.{seg(json.dumps(claims).encode())}"
    return f"{signing_input}.{seg(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"
