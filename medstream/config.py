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
from signaling.turn import TurnRest

log = logging.getLogger("medstream.config")


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
    webhook_urls: tuple[str, ...] = ()  # where room/recording/alarm events are POSTed (medstream.webhooks)
    webhook_secret: str | None = None  # HMAC key of their signatures
    webhook_queue_dir: Path = Path("var/webhooks")  # the on-disk queue (survives receiver outages and restarts)
    drain_timeout_s: float = 60.0  # SIGTERM: how long participants may finish before they are closed
    min_free_disk_mb: int = 1024  # /readyz: the recordings disk and webhook spool need this much free
    tls_cert: Path | None = None  # PEM certificate (chain) and key: HTTPS + WSS on the same port
    tls_key: Path | None = None
    webhook_retry_max_s: float = 60.0  # longest wait between two attempts (backoff doubles from 1 s)
    extra: dict[str, Any] = field(default_factory=dict)


def add_secret_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret", help="token signing secret (or MEDSTREAM_SECRET, or `secret` in --config)")
    parser.add_argument("--config", type=Path, help="TOML config file (or MEDSTREAM_CONFIG)")


def _file_config(args: argparse.Namespace) -> dict[str, Any]:
    path = getattr(args, "config", None) or os.environ.get("MEDSTREAM_CONFIG")
    if not path:
        return {}
    with open(path, "rb") as f:
        return tomllib.load(f)


def resolve_secret(args: argparse.Namespace, *, generate: bool = False) -> str:
    """The signing secret from flag, environment or file; a random one only if `generate`."""
    secret = getattr(args, "secret", None) or os.environ.get("MEDSTREAM_SECRET") or _file_config(args).get("secret")
    if secret:
        return str(secret)
    if generate:
        log.warning("no secret configured: using a random one (tokens from other processes won't verify)")
        return secrets.token_urlsafe(32)
    raise SystemExit("medstream: no secret: pass --secret, set MEDSTREAM_SECRET or put `secret` in --config")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port for websockets and HTTP (default 8765)")
    add_secret_argument(parser)
    parser.add_argument("--audit-log", help="audit JSON-lines file (default var/audit.jsonl; '' or 'none' to disable)")
    parser.add_argument("--recordings-dir", type=Path, help="where recordings go (default var/recordings)")
    parser.add_argument("--room", action="append", default=[], metavar="ID:KIND",
                        help="open a room at start and keep it (repeatable), e.g. ward-3:monitoring")
    parser.add_argument("--ice-host", action="append", default=[], metavar="ADDR",
                        help="host address offered in ICE candidates (repeatable; e.g. the public address behind NAT)")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URLS[;username=U;credential=C]",
                        help="STUN/TURN server handed to clients and used by the server (repeatable), e.g. "
                             "'turn:turn.example:3478,turn:turn.example:3478?transport=tcp;username=u;credential=p'")
    parser.add_argument("--turn-url", action="append", default=[], metavar="URL",
                        help="TURN server taking time-limited credentials from --turn-secret (repeatable), e.g. "
                             "turn:turn.example:3478?transport=udp, turns:turn.example:443?transport=tcp")
    parser.add_argument("--turn-secret", help="coturn's static-auth-secret (or MEDSTREAM_TURN_SECRET): each "
                                              "participant gets its own TURN credentials in `joined`")
    parser.add_argument("--turn-ttl", type=float, help="how long TURN credentials last, seconds (default 43200)")
    parser.add_argument("--no-media", action="store_true", help="signaling and waveforms only")
    parser.add_argument("--record", action="append", default=[], metavar="KIND",
                        choices=ROOM_KINDS,
                        help="record every room of this kind from its creation (policy; repeatable)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="text (default) or json: one JSON object per line, for journald/Loki/ELK")
    parser.add_argument("--drain-timeout", type=float, help="on SIGTERM, seconds participants may finish (default 60)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve HTTPS and WSS on --port")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="POST signed room/recording/alarm events here (repeatable; secret: "
                             "MEDSTREAM_WEBHOOK_SECRET or webhooks.secret in --config)")


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
    hooks = file.get("webhooks", {})
    ice_servers = tuple(parse_ice_server(spec) for spec in (args.ice_server or file.get("ice_servers", [])))
    turn_file = file.get("turn", {})
    turn_urls = tuple(args.turn_url or turn_file.get("urls", []))
    turn_secret = args.turn_secret or env.get("MEDSTREAM_TURN_SECRET") or turn_file.get("secret")
    turn = None
    if turn_urls or turn_secret:
        if not (turn_urls and turn_secret):
            raise SystemExit("medstream: TURN credentials need both --turn-url and --turn-secret")
        try:
            turn = TurnRest(turn_urls, str(turn_secret), float(args.turn_ttl or turn_file.get("ttl_s", 43200)))
        except ValueError as exc:
            raise SystemExit(f"medstream: {exc}") from None
    signaling = SignalingConfig(
        secret=resolve_secret(args, generate=True),
        ice_servers=ice_servers,
        record_kinds=tuple(args.record or file.get("record_kinds", [])),
        turn=turn,
        **{k: v for k, v in limits.items() if k in SignalingConfig.__dataclass_fields__ and k != "secret"},
    )
    rooms = []
    for spec in args.room or file.get("rooms", []):
        room_id, _, kind = str(spec).partition(":")
        rooms.append((room_id, kind or "consultation"))
    audit = pick(args.audit_log, "MEDSTREAM_AUDIT_LOG", "audit_log", "var/audit.jsonl")
    if bool(getattr(args, "tls_cert", None) or file.get("tls_cert") or env.get("MEDSTREAM_TLS_CERT")) != bool(
            getattr(args, "tls_key", None) or file.get("tls_key") or env.get("MEDSTREAM_TLS_KEY")):
        raise SystemExit("medstream: TLS needs both a certificate and its key (--tls-cert and --tls-key)")
    if (args.webhook or hooks.get("urls")) and not (env.get("MEDSTREAM_WEBHOOK_SECRET") or hooks.get("secret")):
        raise SystemExit("medstream: webhooks need a signing secret: MEDSTREAM_WEBHOOK_SECRET or "
                         "[webhooks] secret in --config")
    return ServerConfig(
        signaling=signaling,
        host=str(pick(args.host, "MEDSTREAM_HOST", "host", "127.0.0.1")),
        port=int(pick(args.port, "MEDSTREAM_PORT", "port", 8765)),
        audit_log=Path(audit) if audit and str(audit).lower() != "none" else None,
        recordings_dir=Path(pick(args.recordings_dir, "MEDSTREAM_RECORDINGS_DIR", "recordings_dir", "var/recordings")),
        recordings_retention_days=file.get("recordings_retention_days"),
        rooms=tuple(rooms),
        ice_host_addresses=tuple(args.ice_host or file.get("ice_host_addresses", [])),
        media=not args.no_media and file.get("media", True),
        api_key=env.get("MEDSTREAM_API_KEY") or file.get("api_key") or None,
        webhook_urls=tuple(args.webhook or hooks.get("urls", [])),
        webhook_secret=env.get("MEDSTREAM_WEBHOOK_SECRET") or hooks.get("secret") or None,
        webhook_queue_dir=Path(hooks.get("queue_dir", "var/webhooks")),
        webhook_retry_max_s=float(hooks.get("retry_max_s", 60.0)),
        drain_timeout_s=float(pick(args.drain_timeout, "MEDSTREAM_DRAIN_TIMEOUT", "drain_timeout_s", 60.0)),
        min_free_disk_mb=int(file.get("min_free_disk_mb", 1024)),
        tls_cert=_path(pick(args.tls_cert, "MEDSTREAM_TLS_CERT", "tls_cert", None)),
        tls_key=_path(pick(args.tls_key, "MEDSTREAM_TLS_KEY", "tls_key", None)),
    )


def parse_ice_server(spec: Any) -> IceServerInfo:
    """`URL[,URL...][;username=U;credential=C]` (flag), or a {urls, username, credential} table (file)."""
    if isinstance(spec, dict):
        urls = spec.get("urls", ())
        return IceServerInfo(tuple([urls] if isinstance(urls, str) else urls), spec.get("username"), spec.get("credential"))
    urls_part, *options = str(spec).split(";")
    fields = dict(o.split("=", 1) for o in options if "=" in o)
    unknown = set(fields) - {"username", "credential"}
    bad = [u for u in urls_part.split(",") if not u.startswith(("stun:", "stuns:", "turn:", "turns:"))]
    if unknown or bad or not urls_part:
        raise SystemExit(f"medstream: --ice-server must be URLS[;username=U;credential=C] with stun:/turn: URLs, "
                         f"got {spec!r}")
    return IceServerInfo(tuple(urls_part.split(",")), fields.get("username"), fields.get("credential"))


def _path(value: Any) -> Path | None:
    return Path(value) if value else None


def admin_endpoint(args: argparse.Namespace) -> tuple[str, str | None]:
    """(node URL, API key) for the admin CLI: flag > environment > config file > default."""
    file = _file_config(args)
    url = args.url or os.environ.get("MEDSTREAM_URL") or file.get("url") or "http://127.0.0.1:8765"
    key = args.api_key or os.environ.get("MEDSTREAM_API_KEY") or file.get("api_key")
    return str(url), str(key) if key else None


def configure_logging(level: str | None, log_format: str | None = None) -> None:
    """Root logging: `log_format` "json" (or MEDSTREAM_LOG_FORMAT=json): one JSON object a line."""
    handler = logging.StreamHandler()
    if (log_format or os.environ.get("MEDSTREAM_LOG_FORMAT", "text")) == "json":
        from medstream.ops import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, (level or "INFO").upper(), logging.INFO), handlers=[handler],
                        force=True)
