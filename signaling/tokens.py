"""Signed access tokens (JWT, HS256): who may join which room, as what, and when.

A token names the room, the identity, the display name, the role and a validity window
(`nbf`/`exp`), so a consultation booked for 14:00-15:00 cannot be joined at 16:00. Each token has
an id (`jti`) and names the key that signed it (`kid` in the header): the server accepts the
current and the previous key (`KeyRing`), so secrets rotate without cutting anyone off.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from protocol.signaling import ROOM_KINDS, Reason, WireError
from signaling.roles import TOKEN_ROLES, Role

ALGORITHM = "HS256"
DEFAULT_LEEWAY_S = 30.0  # clock skew between the booking system and this server
MAX_TOKEN_LENGTH = 4096
MIN_SECRET_BYTES = 32  # HS256 keys shorter than the hash are guessable offline (RFC 7518 3.2)
MAX_CLAIM_CHARS = 128
MAX_TIME_S = 253_402_300_799.0  # 9999-12-31T23:59:59Z: nbf/exp beyond are refused, not overflowed


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One HS256 secret and its key id (`kid` in the token header)."""

    kid: str
    secret: str

    def __post_init__(self) -> None:
        if len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"a signing secret must be at least {MIN_SECRET_BYTES} bytes, "
                             f"got {len(self.secret.encode())}")
        if not self.kid or len(self.kid) > 64:
            raise ValueError(f"a key id must be 1-64 characters, got {len(self.kid)}")


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys tokens may be signed with: the current one (new tokens) and the previous one
    (tokens issued before a rotation, accepted until they expire)."""

    current: SigningKey
    previous: SigningKey | None = None

    @classmethod
    def of(cls, secret: str | KeyRing, kid: str = "k1") -> KeyRing:
        """A ring from a plain secret (tests, tools) or the ring itself."""
        return secret if isinstance(secret, KeyRing) else cls(SigningKey(kid, secret))

    def candidates(self, kid: object) -> list[SigningKey]:
        """The keys to try for a token whose header names `kid` (None: current, then previous)."""
        keys = [k for k in (self.current, self.previous) if k is not None]
        if kid is None:
            return keys
        return [k for k in keys if k.kid == kid]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    room: str
    identity: str
    name: str
    role: Role
    not_before: float
    expires: float
    room_kind: str | None = None  # set: a host may create the room with this kind
    token_id: str = ""  # `jti`, or a digest of the token when it has none
    kid: str | None = None  # the key that signed it



def _jwt_encode(claims: dict[str, Any], key: str, algorithm: str, headers: dict[str, Any] | None = None) -> str:
    """PyJWT mints (off the join path; it is checked by our own verify), imported on
    first use: a node that only verifies tokens never loads it (1.1 MiB of idle RSS)."""
    import jwt

    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)

def issue_token(
    secret: str | KeyRing,
    *,
    room: str,
    identity: str,
    role: Role | str,
    name: str | None = None,
    valid_from: float | None = None,
    valid_for_s: float = 3600.0,
    room_kind: str | None = None,
    kid: str | None = None,
) -> str:
    """Sign a token for `identity` to join `room` as `role` from `valid_from` for `valid_for_s`.

    `secret`: a plain secret (signed without a `kid` header unless `kid` is given) or a
    `KeyRing` (signed with its current key, `kid` in the header)."""
    role = Role(role)
    if role not in TOKEN_ROLES:
        raise ValueError(f"role must be one of {sorted(r.value for r in TOKEN_ROLES)}, got {role.value!r}")
    if room_kind is not None and room_kind not in ROOM_KINDS:
        raise ValueError(f"room kind must be one of {ROOM_KINDS}, got {room_kind!r}")
    if valid_for_s <= 0:
        raise ValueError(f"valid_for_s must be > 0, got {valid_for_s}")
    start = time.time() if valid_from is None else valid_from
    _check_window(start, valid_for_s)
    claims: dict[str, object] = {
        "sub": identity,
        "name": name or identity,
        "room": room,
        "role": role.value,
        "nbf": int(start),
        "exp": int(start + valid_for_s),
        "jti": uuid.uuid4().hex,
    }
    if room_kind is not None:
        claims["kind"] = room_kind
    if isinstance(secret, KeyRing):
        return _jwt_encode(claims, secret.current.secret, algorithm=ALGORITHM,
                          headers={"kid": kid or secret.current.kid})
    headers = {"kid": kid} if kid else None
    return _jwt_encode(claims, secret, algorithm=ALGORITHM, headers=headers)


def unverified_room(token: object) -> str | None:
    """The `room` claim of a token, NOT checked: for routing a join to the node that will verify
    it (a cluster), never to authorise anything. None if it cannot be read."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        return None
    room = claims.get("room") if isinstance(claims, dict) else None
    return room if isinstance(room, str) else None


def verify_token(
    secret: str | KeyRing, token: str, now: float, leeway_s: float = DEFAULT_LEEWAY_S
) -> Grant:
    """Check signature, validity window and claims; raise WireError with the precise reason.

    Every claim is range-checked (`nbf`/`exp` finite and before year 10000, strings at most 128
    characters): nothing in a token can raise anything but a `WireError`. An admin-grant token
    (`issue_admin_token`) joins nothing."""
    claims, kid, nbf, exp = _verified_claims(secret, token, now, leeway_s, ("sub", "room", "nbf", "exp"))
    if "grant" in claims:
        raise WireError(Reason.INVALID_TOKEN, "an admin-grant token cannot join a room")
    if "role" not in claims:
        raise WireError(Reason.INVALID_TOKEN, 'token is not valid: Token is missing the "role" claim')
    for key in ("sub", "room", "role"):
        value = claims[key]
        if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_CHARS:
            raise WireError(Reason.INVALID_TOKEN, f"token claim {key!r} must be a string of 1-{MAX_CLAIM_CHARS} characters")
    sub, room_id, role_name = str(claims["sub"]), str(claims["room"]), str(claims["role"])
    try:
        role = Role(role_name)
    except ValueError:
        role = Role.SPEAKER  # not a token role: refused just below
    if role not in TOKEN_ROLES:
        raise WireError(Reason.INVALID_TOKEN, f"token role {role_name[:32]!r} is not a known role")
    kind = claims.get("kind")
    if kind is not None and (not isinstance(kind, str) or kind not in ROOM_KINDS):
        raise WireError(Reason.INVALID_TOKEN, f"token room kind must be one of {ROOM_KINDS}")
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or not jti or len(jti) > MAX_CLAIM_CHARS):
        raise WireError(Reason.INVALID_TOKEN, f"token jti must be a string of 1-{MAX_CLAIM_CHARS} characters")
    token_id = jti if isinstance(jti, str) else "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    raw_name = claims.get("name")
    name = raw_name if isinstance(raw_name, str) and raw_name else sub
    return Grant(
        room=room_id,
        identity=sub,
        name=name[:MAX_CLAIM_CHARS],
        role=role,
        not_before=nbf,
        expires=exp,
        room_kind=kind,
        token_id=token_id,
        kid=kid,
    )




class _Invalid(Exception):
    """A token that is not a well-formed, correctly signed HS256 JWT (the message says why)."""


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64url(segment: str, name: str, canonical: bool = False) -> bytes:
    """One base64url segment, strictly: the alphabet only (trailing '=' padding tolerated, as
    PyJWT does). `canonical`: it must re-encode to itself (the signature: so that a token has
    one spelling; header and payload are covered by the MAC as written)."""
    stripped = segment.rstrip("=")
    pad = len(segment) - len(stripped)
    if pad > 2 or (pad and len(segment) % 4) or len(stripped) % 4 == 1 or not _B64URL.fullmatch(stripped):
        raise _Invalid(f"Invalid {name} padding")
    raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    if canonical and base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != stripped:
        raise _Invalid(f"Invalid {name} padding")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, object]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Invalid(f"Invalid {what} string: {exc}") from None
    if not isinstance(value, dict):
        raise _Invalid(f"Invalid {what} string: must be a json object")
    return value


def _split(token: str) -> tuple[str, dict[str, object], bytes, bytes]:
    """(signing input, header, payload, signature) of a compact JWS; alg pinned to HS256."""
    signing_input, dot, sig_segment = token.rpartition(".")
    header_segment, dot2, payload_segment = signing_input.partition(".")
    if not dot or not dot2:
        raise _Invalid("Not enough segments")
    header = _json_object(_b64url(header_segment, "header"), "header")
    if "kid" in header and not isinstance(header["kid"], str):
        raise _Invalid("Key ID header parameter must be a string")
    if "crit" in header or header.get("b64", True) is not True:
        raise _Invalid("Unsupported critical extension or detached payload")
    payload = _b64url(payload_segment, "payload")  # checked before any signature work, parsed after it
    signature = _b64url(sig_segment, "crypto", canonical=True)
    alg = header.get("alg")
    if alg is None:
        raise _Invalid("Algorithm not specified")
    if alg != ALGORITHM:
        raise _Invalid("The specified alg value is not allowed")
    return signing_input, header, payload, signature


def _claims(payload: bytes, require: tuple[str, ...]) -> dict[str, object]:
    """The payload of a token whose signature verified, with PyJWT's claim checks: required
    claims present, no audience (ours name none: a token for another service is refused),
    `sub` and `jti` strings."""
    claims = _json_object(payload, "payload")
    for claim in require:
        if claims.get(claim) is None:
            raise _Invalid(f'Token is missing the "{claim}" claim')
    if claims.get("aud"):
        raise _Invalid("Invalid audience")
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise _Invalid("Subject must be a string")
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise _Invalid("JWT ID must be a string")
    return claims


def _verified_claims(secret: str | KeyRing, token: str, now: float, leeway_s: float,
                     require: tuple[str, ...]) -> tuple[dict[str, object], str | None, float, float]:
    """Signature, `require`d claims and validity window: (claims, kid, nbf, exp), or WireError.

    A lean HS256 verifier (hmac.compare_digest, base64, json) rather than PyJWT's decode: the
    checks are PyJWT's (alg pinned, strict base64url, required claims, no `aud`) at a fifth of
    its CPU (30 vs 164 µs a join token: PyJWT tests every base64 character in Python). PyJWT still signs
    tokens: minting is off the hot path, and tests forge tokens with it, an independent encoder."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise WireError(Reason.INVALID_TOKEN, f"token must be a string of at most {MAX_TOKEN_LENGTH} characters")
    ring = KeyRing.of(secret) if isinstance(secret, KeyRing) else None
    try:
        signing_input, header, payload, signature = _split(token)
    except _Invalid as exc:
        raise WireError(Reason.INVALID_TOKEN, f"token is not valid: {exc}") from None
    kid = header.get("kid")
    assert kid is None or isinstance(kid, str)
    if ring is None:
        keys = [str(secret)]
    else:
        keys = [k.secret for k in ring.candidates(kid)]
        if not keys:
            raise WireError(Reason.INVALID_TOKEN, f"token is signed with an unknown key {str(kid)[:64]!r}")
    message = signing_input.encode()
    if not any(hmac.compare_digest(hmac.new(k.encode(), message, hashlib.sha256).digest(), signature) for k in keys):
        raise WireError(Reason.INVALID_TOKEN, "token signature is not valid")
    try:
        claims = _claims(payload, require)
    except _Invalid as exc:
        raise WireError(Reason.INVALID_TOKEN, f"token is not valid: {exc}") from None
    nbf, exp = claims["nbf"], claims["exp"]
    for name, v in (("nbf", nbf), ("exp", exp)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                or not 0 <= v <= MAX_TIME_S:
            raise WireError(Reason.INVALID_TOKEN,
                            f"token {name} must be epoch seconds from 0 to {MAX_TIME_S:.0f}, got {str(v)[:32]}")
    assert isinstance(nbf, (int, float)) and isinstance(exp, (int, float))
    if exp < nbf:
        raise WireError(Reason.INVALID_TOKEN, f"token exp must not be before nbf, got {exp} < {nbf}")
    if now < nbf - leeway_s:
        raise WireError(
            Reason.TOKEN_NOT_YET_VALID,
            f"token is valid from {_iso(nbf)}, it is now {_iso(now)}",
        )
    if now > exp + leeway_s:
        raise WireError(Reason.TOKEN_EXPIRED, f"token expired at {_iso(exp)}, it is now {_iso(now)}")
    return claims, kid, float(nbf), float(exp)



LIBRARY_SCOPE = "library"
ALL_ROOMS = "*"


@dataclass(frozen=True, slots=True)
class LibraryGrant:
    """What a verified library token allows: watching the recordings of `rooms` ("*": all), nothing live.

    A library token has no `room`/`role` claims, so it can never join a room."""

    identity: str
    name: str
    rooms: tuple[str, ...]
    expires: float
    token_id: str = ""

    def covers(self, room_id: str) -> bool:
        """Whether the recordings of `room_id` may be watched with this grant."""
        return ALL_ROOMS in self.rooms or room_id in self.rooms


def issue_library_token(secret: str | KeyRing, *, identity: str, rooms: tuple[str, ...] = (ALL_ROOMS,),
                        name: str | None = None, valid_for_s: float = 3600.0,
                        valid_from: float | None = None) -> str:
    """Sign a token that lets `identity` watch (play back, download) recordings of `rooms`."""
    if not rooms or any(not isinstance(r, str) or not r or len(r) > MAX_CLAIM_CHARS for r in rooms):
        raise ValueError(f"rooms must be 1 or more room ids (or '*'), got {rooms!r}")
    if valid_for_s <= 0:
        raise ValueError(f"valid_for_s must be > 0, got {valid_for_s}")
    start = time.time() if valid_from is None else valid_from
    claims: dict[str, object] = {"sub": identity, "name": name or identity, "scope": LIBRARY_SCOPE,
                                 "rooms": list(rooms), "nbf": int(start), "exp": int(start + valid_for_s),
                                 "jti": uuid.uuid4().hex}
    if isinstance(secret, KeyRing):
        return _jwt_encode(claims, secret.current.secret, algorithm=ALGORITHM,
                          headers={"kid": secret.current.kid})
    return _jwt_encode(claims, secret, algorithm=ALGORITHM)


def verify_library_token(secret: str | KeyRing, token: str, now: float,
                         leeway_s: float = DEFAULT_LEEWAY_S) -> LibraryGrant:
    """Check a library token like `verify_token` does a room token; WireError with the reason."""
    claims, _kid, _nbf, exp_f = _verified_claims(secret, token, now, leeway_s, ("sub", "scope", "rooms", "nbf", "exp"))
    if claims.get("scope") != LIBRARY_SCOPE:
        raise WireError(Reason.INVALID_TOKEN, f"token scope must be {LIBRARY_SCOPE!r}")
    sub, rooms = claims["sub"], claims["rooms"]
    if not isinstance(sub, str) or not sub or len(sub) > MAX_CLAIM_CHARS:
        raise WireError(Reason.INVALID_TOKEN, f"token claim 'sub' must be a string of 1-{MAX_CLAIM_CHARS} characters")
    if not isinstance(rooms, list) or not 1 <= len(rooms) <= 256 or any(
            not isinstance(r, str) or not r or len(r) > MAX_CLAIM_CHARS for r in rooms):
        raise WireError(Reason.INVALID_TOKEN, "token claim 'rooms' must be a list of 1-256 room ids")
    jti = claims.get("jti")
    token_id = jti if isinstance(jti, str) and jti else "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    raw_name = claims.get("name")
    name = raw_name if isinstance(raw_name, str) and raw_name else sub
    return LibraryGrant(sub, name[:MAX_CLAIM_CHARS], tuple(rooms), exp_f, token_id[:MAX_CLAIM_CHARS])




@dataclass(frozen=True, slots=True)
class AdminGrant:
    """What a verified admin-grant token allows: the admin API for `room` (None: every room)."""

    identity: str
    room: str | None
    not_before: float
    expires: float
    token_id: str

    def covers(self, room_id: str) -> bool:
        """Whether the grant reaches this room."""
        return self.room is None or self.room == room_id



def issue_admin_token(secret: str | KeyRing, *, identity: str, room: str | None = None,
                      valid_from: float | None = None, valid_for_s: float = 3600.0) -> str:
    """Sign an admin-grant token: the admin API for `room`, or every room when None. It has no
    `role` claim and a `grant` claim, so `verify_token` never lets it join, and a join token is
    never an admin grant. Raises ValueError for a bad room, identity or validity."""
    for name, value in (("identity", identity), ("room", room if room is not None else ALL_ROOMS)):
        if not value or len(value) > MAX_CLAIM_CHARS:
            raise ValueError(f"{name} must be 1-{MAX_CLAIM_CHARS} characters, got {len(value)}")
    if room == ALL_ROOMS:
        raise ValueError(f"room {ALL_ROOMS!r} is reserved: pass None for every room")
    if valid_for_s <= 0:
        raise ValueError(f"valid_for_s must be > 0, got {valid_for_s}")
    start = time.time() if valid_from is None else valid_from
    _check_window(start, valid_for_s)
    claims: dict[str, object] = {"sub": identity, "grant": "admin", "room": room or ALL_ROOMS,
                                 "nbf": int(start), "exp": int(start + valid_for_s), "jti": uuid.uuid4().hex}
    if isinstance(secret, KeyRing):
        return _jwt_encode(claims, secret.current.secret, algorithm=ALGORITHM, headers={"kid": secret.current.kid})
    return _jwt_encode(claims, secret, algorithm=ALGORITHM)


def verify_admin_token(secret: str | KeyRing, token: str, now: float,
                       leeway_s: float = DEFAULT_LEEWAY_S) -> AdminGrant:
    """Check an admin-grant token as `verify_token` checks a join token; raise WireError
    (INVALID_TOKEN, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID) with the precise reason."""
    claims, _, nbf, exp = _verified_claims(secret, token, now, leeway_s, ("sub", "grant", "room", "nbf", "exp"))
    if claims.get("grant") != "admin" or "role" in claims:
        raise WireError(Reason.INVALID_TOKEN, "token is not an admin grant")
    for key in ("sub", "room"):
        value = claims[key]
        if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_CHARS:
            raise WireError(Reason.INVALID_TOKEN, f"token claim {key!r} must be a string of 1-{MAX_CLAIM_CHARS} characters")
    jti = claims.get("jti")
    token_id = jti if isinstance(jti, str) and 0 < len(jti) <= MAX_CLAIM_CHARS else \
        "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    room = str(claims["room"])
    return AdminGrant(str(claims["sub"]), None if room == ALL_ROOMS else room, nbf, exp, token_id)


def _check_window(start: float, valid_for_s: float) -> None:
    """A token's nbf/exp must be what `verify_token` accepts: never sign one it would refuse."""
    if not (math.isfinite(start) and start >= 0 and start + valid_for_s <= MAX_TIME_S):
        raise ValueError(f"validity must lie within epoch 0 .. {MAX_TIME_S:.0f} s, got {start} + {valid_for_s} s")


def _iso(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f}"
