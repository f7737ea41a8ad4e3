"""Signed access tokens (JWT, HS256): who may join which room, as what, and when.

A token names the room, the identity, the display name, the role and a validity window
(`nbf`/`exp`), so a consultation booked for 14:00-15:00 cannot be joined at 16:00.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

from protocol.signaling import ROOM_KINDS, Reason, WireError
from signaling.roles import TOKEN_ROLES, Role

ALGORITHM = "HS256"
DEFAULT_LEEWAY_S = 30.0  # clock skew between the booking system and this server
MAX_TOKEN_LENGTH = 4096


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


def issue_token(
    secret: str,
    *,
    room: str,
    identity: str,
    role: Role | str,
    name: str | None = None,
    valid_from: float | None = None,
    valid_for_s: float = 3600.0,
    room_kind: str | None = None,
) -> str:
    """Sign a token for `identity` to join `room` as `role` from `valid_from` for `valid_for_s`."""
    role = Role(role)
    if role not in TOKEN_ROLES:
        raise ValueError(f"role must be one of {sorted(r.value for r in TOKEN_ROLES)}, got {role.value!r}")
    if room_kind is not None and room_kind not in ROOM_KINDS:
        raise ValueError(f"room kind must be one of {ROOM_KINDS}, got {room_kind!r}")
    if valid_for_s <= 0:
        raise ValueError(f"valid_for_s must be > 0, got {valid_for_s}")
    start = time.time() if valid_from is None else valid_from
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
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(
    secret: str, token: str, now: float, leeway_s: float = DEFAULT_LEEWAY_S
) -> Grant:
    """Check signature, validity window and claims; raise WireError with the precise reason."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise WireError(Reason.INVALID_TOKEN, f"token longer than {MAX_TOKEN_LENGTH} characters")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"verify_exp": False, "verify_nbf": False, "require": ["sub", "room", "role", "nbf", "exp"]},
        )
    except jwt.InvalidSignatureError:
        raise WireError(Reason.INVALID_TOKEN, "token signature is not valid") from None
    except jwt.PyJWTError as exc:
        raise WireError(Reason.INVALID_TOKEN, f"token is not valid: {exc}") from None
    nbf, exp = claims["nbf"], claims["exp"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (nbf, exp)):
        raise WireError(Reason.INVALID_TOKEN, "token nbf/exp must be numbers")
    if now < nbf - leeway_s:
        raise WireError(
            Reason.TOKEN_NOT_YET_VALID,
            f"token is valid from {_iso(nbf)}, it is now {_iso(now)}",
        )
    if now > exp + leeway_s:
        raise WireError(Reason.TOKEN_EXPIRED, f"token expired at {_iso(exp)}, it is now {_iso(now)}")
    for key in ("sub", "room", "role"):
        if not isinstance(claims[key], str) or not claims[key] or len(claims[key]) > 128:
            raise WireError(Reason.INVALID_TOKEN, f"token claim {key!r} must be a non-empty string")
    try:
        role = Role(claims["role"])
    except ValueError:
        role = Role.SPEAKER  # not a token role: refused just below
    if role not in TOKEN_ROLES:
        raise WireError(Reason.INVALID_TOKEN, f"token role {claims['role']!r} is not a known role")
    kind = claims.get("kind")
    if kind is not None and kind not in ROOM_KINDS:
        raise WireError(Reason.INVALID_TOKEN, f"token room kind must be one of {ROOM_KINDS}, got {kind!r}")
    name = claims.get("name") if isinstance(claims.get("name"), str) else claims["sub"]
    return Grant(
        room=claims["room"],
        identity=claims["sub"],
        name=str(name)[:128],
        role=role,
        not_before=float(nbf),
        expires=float(exp),
        room_kind=kind,
    )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
