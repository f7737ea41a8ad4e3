"""`medstream token`: print a signed access token (the booking system's job, done by hand)."""

from __future__ import annotations

import argparse
import sys

from medstream.config import add_secret_argument, resolve_secret
from protocol.signaling import ROOM_KINDS
from signaling.roles import TOKEN_ROLES
from signaling.tokens import issue_token


def _parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def main(argv: list[str]) -> int:
    """`medstream token`: print a signed access token."""
    parser = argparse.ArgumentParser(prog="medstream token", description="Issue an access token.")
    parser.add_argument("--room", required=True)
    parser.add_argument("--identity", required=True, help="who (stable id, e.g. staff number)")
    parser.add_argument("--name", help="display name (default: identity)")
    parser.add_argument("--role", required=True, choices=sorted(r.value for r in TOKEN_ROLES))
    parser.add_argument("--kind", choices=ROOM_KINDS, help="host tokens: create the room as this kind")
    parser.add_argument("--valid-from", type=float, help="epoch seconds (default: now)")
    parser.add_argument("--valid-for", default="1h", help="duration, e.g. 90m, 2h (default 1h)")
    add_secret_argument(parser)
    args = parser.parse_args(argv)
    try:
        token = issue_token(
            resolve_secret(args),
            room=args.room,
            identity=args.identity,
            name=args.name,
            role=args.role,
            valid_from=args.valid_from,
            valid_for_s=_parse_duration(args.valid_for),
            room_kind=args.kind,
        )
    except ValueError as exc:
        print(f"medstream token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
