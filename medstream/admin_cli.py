"""`medstream room ...` and `medstream participant ...`: the admin API from a shell (like `lk room`).

    medstream room create consult-1400 --kind consultation --from 2026-12-01T14:00+08:00 \\
        --until 2026-12-01T15:00+08:00 --max 4 --recording auto --meta referral=ZJ-2026-0412
    medstream room list
    medstream room end consult-1400
    medstream participant list consult-1400
    medstream participant remove consult-1400 p0123456789ab
    medstream participant mute consult-1400 p0123456789ab --kind audio

Each command is one HTTP request to the node (`--url`, MEDSTREAM_URL; `--api-key`,
MEDSTREAM_API_KEY: the node's API key or an admin-grant token from `medstream token --grant
admin`). Exit status: 0 done, 1 the API refused (its message on stderr), 2 bad usage
or the node unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from medstream.config import admin_endpoint


class ApiRefused(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error', '')}: {body.get('message', '')}")
        self.status = status
        self.body = body


def call(url: str, api_key: str, method: str, path: str, body: Any = None, timeout_s: float = 10.0) -> Any:
    """One API request; returns the JSON reply or raises ApiRefused / OSError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers={
        "Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            payload = json.loads(err.read() or b"{}")
        except ValueError:
            payload = {"error": "http", "message": err.reason}
        raise ApiRefused(err.code, payload) from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the node, e.g. https://medstream.example:8765 (or MEDSTREAM_URL)")
    parser.add_argument("--api-key", help="the node's API key or an admin-grant token (medstream token --grant "
                                          "admin; or MEDSTREAM_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON reply")


def _room_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medstream room", description="Create, list and end rooms through the admin API.")
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("create", help="create a standing room")
    c.add_argument("room_id")
    c.add_argument("--kind", default="consultation")
    c.add_argument("--from", dest="booked_from", help="booked window start (ISO 8601 with offset, or epoch s)")
    c.add_argument("--until", dest="booked_until", help="booked window end: the room ends then")
    c.add_argument("--early-join", type=float, dest="early_join_s", help="seconds before --from joins are admitted")
    c.add_argument("--max", type=int, dest="max_participants")
    c.add_argument("--recording", choices=("default", "auto", "manual", "off"))
    c.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)")
    _common(c)
    _common(sub.add_parser("list", help="list open rooms"))
    e = sub.add_parser("end", help="end a room for everyone")
    e.add_argument("room_id")
    _common(e)
    return p


def _participant_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medstream participant", description="List, remove and mute participants.")
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="who is in a room")
    ls.add_argument("room_id")
    _common(ls)
    rm = sub.add_parser("remove", help="remove a participant")
    rm.add_argument("room_id")
    rm.add_argument("participant_id")
    _common(rm)
    mu = sub.add_parser("mute", help="mute (or --unmute) a participant's audio or video")
    mu.add_argument("room_id")
    mu.add_argument("participant_id")
    mu.add_argument("--kind", choices=("audio", "video"), required=True)
    mu.add_argument("--unmute", action="store_true")
    _common(mu)
    return p


def _number_or_text(v: str | None) -> float | str | None:
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def _request(args: argparse.Namespace) -> tuple[str, str, Any]:
    match (args.command, args.action):
        case ("room", "create"):
            meta = dict(m.partition("=")[::2] for m in args.meta)
            body = {"room_id": args.room_id, "kind": args.kind, "booked_from": _number_or_text(args.booked_from),
                    "booked_until": _number_or_text(args.booked_until), "early_join_s": args.early_join_s,
                    "max_participants": args.max_participants, "recording": args.recording,
                    "metadata": meta or None}
            return "POST", "/api/v1/rooms", {k: v for k, v in body.items() if v is not None}
        case ("room", "list"):
            return "GET", "/api/v1/rooms", None
        case ("room", "end"):
            return "DELETE", f"/api/v1/rooms/{args.room_id}", None
        case ("participant", "list"):
            return "GET", f"/api/v1/rooms/{args.room_id}/participants", None
        case ("participant", "remove"):
            return "DELETE", f"/api/v1/rooms/{args.room_id}/participants/{args.participant_id}", None
        case ("participant", "mute"):
            return ("POST", f"/api/v1/rooms/{args.room_id}/participants/{args.participant_id}/mute",
                    {"kind": args.kind, "muted": not args.unmute})
    raise AssertionError(f"no request for {args.command} {args.action}")


def _print(args: argparse.Namespace, reply: Any) -> None:
    if args.json or args.action not in ("list",):
        print(json.dumps(reply, indent=2, ensure_ascii=False))
    elif args.command == "room":
        print(f"{'ROOM':<24} {'KIND':<13} {'PEOPLE':>6} {'REC':<4} BOOKED")
        for r in reply["rooms"]:
            booked = f"{r['booked_from']:.0f}-{r['booked_until']:.0f}" if r["booked_from"] else "-"
            print(f"{r['room_id']:<24} {r['kind']:<13} {r['participants']:>6} {'yes' if r['recording'] else 'no':<4} {booked}")
    else:
        print(f"{'PARTICIPANT':<16} {'ROLE':<10} {'ONLINE':<6} {'IDENTITY':<20} NAME")
        for p in reply["participants"]:
            print(f"{p['participant_id']:<16} {p['role']:<10} {'yes' if p['connected'] else 'no':<6} "
                  f"{p['identity']:<20} {p['name']}")


def _main(command: str, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    args = parser.parse_args(argv)
    args.command = command
    url, api_key = admin_endpoint(args)
    if not api_key:
        print(f"medstream {command}: no API key: pass --api-key or set MEDSTREAM_API_KEY", file=sys.stderr)
        return 2
    method, path, body = _request(args)
    try:
        reply = call(url, api_key, method, path, body)
    except ApiRefused as err:
        print(f"medstream {command} {args.action}: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"medstream {command} {args.action}: cannot reach {url}: {err}", file=sys.stderr)
        return 2
    _print(args, reply)
    return 0


def room_main(argv: list[str]) -> int:
    """`medstream room create|list|end`."""
    return _main("room", _room_parser(), argv)


def participant_main(argv: list[str]) -> int:
    """`medstream participant list|remove|mute`."""
    return _main("participant", _participant_parser(), argv)
