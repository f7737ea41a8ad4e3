"""`medstream token`: print a signed access token (the booking system's job, done by hand).

`--grant admin` prints an admin-grant token instead: the admin API (`/api/v1`, `medstream room|
participant --api-key TOKEN`) for `--room` only, or for every room without `--room`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time

from medstream.config import ConfigError, add_secret_argument, resolve_keys
from protocol.signaling import ROOM_KINDS
from signaling.roles import TOKEN_ROLES
from signaling.tokens import KeyRing, issue_admin_token, issue_library_token, issue_token

UNITS_S = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
           "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `90m`, `2h`, `1day`, `1.5 hours`, `3600` (plain seconds). Raises ValueError."""
    m = _DURATION_RE.match(text.lower())
    if m is None or (m.group(2) and m.group(2) not in UNITS_S):
        raise ValueError(f"duration must look like 90m, 2h or 1d, got {text!r}")
    seconds = float(m.group(1)) * UNITS_S.get(m.group(2), 1)
    if seconds <= 0:
        raise ValueError(f"duration must be more than 0, got {text!r}")
    return seconds


def parse_start(text: str | None, now: float) -> float:
    """Epoch seconds from `now`, `+15m` (from now), an ISO 8601 time or epoch seconds."""
    if text is None or text == "now":
        return now
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--valid-from must be now, +DURATION, an ISO 8601 time or epoch seconds, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as the person typing it means
    return moment.timestamp()


def main(argv: list[str]) -> int:
    """`medstream token`: print a signed access token."""
    parser = argparse.ArgumentParser(prog="medstream token", description="Issue an access token.")
    parser.add_argument("--room", help="the room (required for a join token; an admin grant without it: every room)")
    parser.add_argument("--identity", required=True, help="who (stable id, e.g. staff number)")
    parser.add_argument("--name", help="display name (default: identity)")
    parser.add_argument("--role", choices=sorted([r.value for r in TOKEN_ROLES] + ["library"]),
                        help="required for a join token; library: watch the recordings of --room "
                             "(comma-separated, or '*' for all), nothing live")
    parser.add_argument("--grant", choices=("admin",), help="admin: an admin-grant token for the API, not a join token")
    parser.add_argument("--kind", choices=ROOM_KINDS, help="host tokens: create the room as this kind")
    parser.add_argument("--valid-from", help="now (default), +15m, 2026-12-01T14:00 (local time) or epoch seconds")
    parser.add_argument("--valid-for", default="1h", help="duration, e.g. 90m, 2h, 1d (default 1h)")
    add_secret_argument(parser)
    args = parser.parse_args(argv)
    if args.grant is None and (args.room is None or args.role is None):
        parser.error("a join token needs --room and --role (or --grant admin for an admin-grant token)")
    if args.grant is not None and (args.role is not None or args.kind is not None):
        parser.error("--grant admin takes no --role or --kind: an admin grant joins no room")
    try:
        keys = resolve_keys(args)
        if args.role == "library":
            print(issue_library_token(KeyRing.of(keys["secret"], keys["secret_kid"]), identity=args.identity,
                                      name=args.name, rooms=tuple(r for r in args.room.split(",") if r),
                                      valid_from=parse_start(args.valid_from, time.time()),
                                      valid_for_s=parse_duration(args.valid_for)))
            return 0
        if args.grant == "admin":
            print(issue_admin_token(KeyRing.of(keys["secret"], keys["secret_kid"]), identity=args.identity,
                                    room=args.room, valid_from=parse_start(args.valid_from, time.time()),
                                    valid_for_s=parse_duration(args.valid_for)))
            return 0
        token = issue_token(
            KeyRing.of(keys["secret"], keys["secret_kid"]),
            room=args.room,
            identity=args.identity,
            name=args.name,
            role=args.role,
            valid_from=parse_start(args.valid_from, time.time()),
            valid_for_s=parse_duration(args.valid_for),
            room_kind=args.kind,
        )
    except (ValueError, ConfigError) as exc:
        print(f"medstream token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
