"""Configuration: frozen dataclasses, read from CLI flags, a TOML file and the environment here only.

Precedence: command-line flag > environment (MEDSTREAM_*) > config file (`--config` or
MEDSTREAM_CONFIG) > defaults. Nothing else in medstream reads the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.signaling import ROOM_KINDS, IceServerInfo
from signaling.hub import SignalingConfig

log = logging.getLogger("medstream.config")


class ConfigError(ValueError):
    """An everyday mistake in flags, environment or config file: one line to the user, exit 2."""


def port_number(text: str) -> int:
    """argparse type for a TCP port: 0 (any free port) or 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number 0-65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


@dataclass(frozen=True)
class ServerConfig:
    """Everything `medstream serve` needs."""

    signaling: SignalingConfig
    host: str = "127.0.0.1"
    port: int = 8765
    audit_log: Path | None = Path("var/audit.jsonl")
    recordings_dir: Path = Path("var/recordings")
    recordings_retention_days: float | None = None
    rooms: tuple[tuple[str, str], ...] = ()  # (room id, kind) opened at start and kept open
    ice_host_addresses: tuple[str, ...] = ()
    media: bool = True
    waveforms: bool = True
    recorder: bool = True
    api_key: str | None = None  # bearer key of the admin API (/api/v1); None: the API is off
    extra: dict[str, Any] = field(default_factory=dict)


def add_secret_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret", help="token signing secret (or MEDSTREAM_SECRET, or `secret` in --config)")
    parser.add_argument("--config", type=Path, help="TOML config file (or MEDSTREAM_CONFIG)")


def _file_config(args: argparse.Namespace) -> dict[str, Any]:
    path = getattr(args, "config", None) or os.environ.get("MEDSTREAM_CONFIG")
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None


def resolve_secret(args: argparse.Namespace, *, generate: bool = False) -> str:
    """The signing secret from flag, environment or file; a random one only if `generate`."""
    secret = getattr(args, "secret", None) or os.environ.get("MEDSTREAM_SECRET") or _file_config(args).get("secret")
    if secret:
        return str(secret)
    if generate:
        log.warning("--dev: using a random secret for this run; tokens from `medstream token` in other "
                    "processes will not verify")
        return secrets.token_urlsafe(32)
    raise ConfigError("no secret: pass --secret, set MEDSTREAM_SECRET or put `secret` in --config "
                      "(or --dev for a throwaway one)")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, help="port for websockets and HTTP (default 8765)")
    add_secret_argument(parser)
    parser.add_argument("--audit-log", help="audit JSON-lines file (default var/audit.jsonl; '' or 'none' to disable)")
    parser.add_argument("--recordings-dir", type=Path, help="where recordings go (default var/recordings)")
    parser.add_argument("--room", action="append", default=[], metavar="ID:KIND",
                        help="open a room at start and keep it (repeatable), e.g. ward-3:monitoring")
    parser.add_argument("--ice-host", action="append", default=[], metavar="ADDR",
                        help="host address offered in ICE candidates (repeatable; e.g. the public address behind NAT)")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        help="STUN/TURN URL handed to clients and used by the server (repeatable)")
    parser.add_argument("--no-media", action="store_true", help="signaling and waveforms only")
    parser.add_argument("--record", action="append", default=[], metavar="KIND",
                        choices=ROOM_KINDS,
                        help="record every room of this kind from its creation (policy; repeatable)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--dev", action="store_true",
                        help="development: without a secret, use a random one (tokens from other processes won't verify)")


def server_config(args: argparse.Namespace) -> ServerConfig:
    """Build the server's config from parsed flags, the environment and the config file."""
    file = _file_config(args)
    env = os.environ

    def pick(flag: Any, env_key: str, file_key: str, default: Any) -> Any:
        if flag is not None and flag != [] and flag is not False:
            return flag
        if env_key in env:
            return env[env_key]
        return file.get(file_key, default)

    limits = file.get("limits", {})
    ice_servers = tuple(
        IceServerInfo(urls=(url,)) for url in (args.ice_server or file.get("ice_servers", []))
    )
    signaling = SignalingConfig(
        secret=resolve_secret(args, generate=bool(getattr(args, "dev", False))),
        ice_servers=ice_servers,
        record_kinds=tuple(args.record or file.get("record_kinds", [])),
        **{k: v for k, v in limits.items() if k in SignalingConfig.__dataclass_fields__ and k != "secret"},
    )
    rooms = []
    for spec in args.room or file.get("rooms", []):
        room_id, _, kind = str(spec).partition(":")
        kind = kind or "consultation"
        if not room_id or kind not in ROOM_KINDS:
            raise ConfigError(f"room must be ID or ID:KIND with KIND one of {', '.join(ROOM_KINDS)}, got {spec!r}")
        rooms.append((room_id, kind))
    port = pick(args.port, "MEDSTREAM_PORT", "port", 8765)
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigError(f"port must be a number 0-65535, got {port!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0-65535, got {port}")
    audit = pick(args.audit_log, "MEDSTREAM_AUDIT_LOG", "audit_log", "var/audit.jsonl")
    host = str(pick(args.host, "MEDSTREAM_HOST", "host", "127.0.0.1"))
    ice_hosts = tuple(args.ice_host or file.get("ice_host_addresses", []))
    if not ice_hosts and host in ("127.0.0.1", "localhost"):
        # serving this machine only: offer the loopback address (aioice never offers it by itself)
        ice_hosts = ("127.0.0.1",)
    return ServerConfig(
        signaling=signaling,
        host=host,
        port=port,
        audit_log=Path(audit) if audit and str(audit).lower() != "none" else None,
        recordings_dir=Path(pick(args.recordings_dir, "MEDSTREAM_RECORDINGS_DIR", "recordings_dir", "var/recordings")),
        recordings_retention_days=file.get("recordings_retention_days"),
        rooms=tuple(rooms),
        ice_host_addresses=ice_hosts,
        media=not args.no_media and file.get("media", True),
        api_key=env.get("MEDSTREAM_API_KEY") or file.get("api_key") or None,
    )


def configure_logging(level: str | None) -> None:
    logging.basicConfig(
        level=getattr(logging, (level or "INFO").upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
