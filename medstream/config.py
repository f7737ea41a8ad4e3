"""Configuration: frozen dataclasses, read from CLI flags, a TOML file and the environment here only.

Precedence: command-line flag > environment (MEDSTREAM_*) > config file (`--config` or
MEDSTREAM_CONFIG) > defaults. Nothing else in medstream reads the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.config import ClusterConfig
from protocol.signaling import ROOM_KINDS, IceServerInfo
from recorder.crypto import ENV_KEY, MasterKey
from signaling.hub import SignalingConfig
from signaling.tokens import MIN_SECRET_BYTES
from signaling.turn import TurnRest

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
    recordings_key: MasterKey | None = None  # set: recordings encrypted at rest (recorder.crypto)
    recordings_encryption: str = "aes-256-gcm"  # or "sm4-gcm"
    recordings_fsync: str = "none"  # "second" or "cluster": see recorder.session.RecorderConfig
    recordings_remux: bool = True  # one file per participant (and EDF+) when a session stops
    rooms: tuple[tuple[str, str], ...] = ()  # (room id, kind) opened at start and kept open
    ice_host_addresses: tuple[str, ...] = ()
    udp_port: int | None = None  # one UDP port for every peer's ICE/media (media_server.udp_mux); None: one each
    media: bool = True
    waveforms: bool = True
    recorder: bool = True
    api_key: str | None = None  # bearer key of the admin API (/api/v1); None: admin-grant tokens only
    allowed_origins: tuple[str, ...] = ()  # websocket Origins allowed besides the server's own; "*": any
    metrics_token: str | None = None  # bearer token /metrics requires; None: open (no identities in it)
    waveform_retention_s: float = 600.0  # a departed monitor's stream is kept this long for it
    audit_hash: str = "sha256"  # or "sm3"
    webhook_urls: tuple[str, ...] = ()  # where room/recording/alarm events are POSTed (medstream.webhooks)
    webhook_secret: str | None = None  # HMAC key of their signatures
    webhook_queue_dir: Path = Path("var/webhooks")  # the on-disk queue (survives receiver outages and restarts)
    drain_timeout_s: float = 60.0  # SIGTERM: how long participants may finish before they are closed
    min_free_disk_mb: int = 1024  # /readyz: the recordings disk and webhook spool need this much free
    tls_cert: Path | None = None  # PEM certificate (chain) and key: HTTPS + WSS on the same port
    tls_key: Path | None = None
    webhook_retry_max_s: float = 60.0  # longest wait between two attempts (backoff doubles from 1 s)
    cluster: ClusterConfig | None = None  # --redis: a node of a cluster (docs/cluster.md); None: alone
    reuse_port: bool = False  # --workers: the worker processes share `port` (SO_REUSEPORT)
    own_port: int | None = None  # a worker's own port (what the cluster redirects to)
    workers: int = 1
    readings_dir: Path | None = None  # remote 12-lead ECG reading (docs/ecg12.md): its store; None: off
    readings_centre: str = "ecg-centre"  # the ECG centre whose readers use this node's reading desk
    extra: dict[str, Any] = field(default_factory=dict)


SECRET_ON_COMMAND_LINE = (
    "refusing --secret: a command line is readable by every local user "
    "(/proc/<pid>/cmdline, ps); set MEDSTREAM_SECRET or use --secret-file / MEDSTREAM_SECRET_FILE"
)


def add_secret_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret", help=argparse.SUPPRESS)  # refused with an explanation
    parser.add_argument("--secret-file", type=Path,
                        help=f"file holding the token signing secret, >= {MIN_SECRET_BYTES} bytes "
                             "(or MEDSTREAM_SECRET_FILE, or MEDSTREAM_SECRET)")
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


def _read_secret_file(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def _secret_from(args: argparse.Namespace, file: dict[str, Any], prefix: str, key: str) -> str | None:
    """A secret from `--secret-file`, MEDSTREAM_<prefix>_FILE, MEDSTREAM_<prefix> or the config file
    (`<key>_file` or `<key>`), in that order; never from the command line itself."""
    env = os.environ
    flag_file = getattr(args, "secret_file", None) if prefix == "SECRET" else None
    for path in (flag_file, env.get(f"MEDSTREAM_{prefix}_FILE")):
        if path:
            return _read_secret_file(path, key.replace("_", " "))
    if env.get(f"MEDSTREAM_{prefix}"):
        return env[f"MEDSTREAM_{prefix}"]
    if file.get(f"{key}_file"):
        return _read_secret_file(file[f"{key}_file"], key.replace("_", " "))
    value = file.get(key)
    return str(value) if value else None


def _check_length(secret: str, what: str) -> str:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"the {what} must be at least {MIN_SECRET_BYTES} bytes, "
                         f"got {len(secret.encode())} (e.g. `openssl rand -base64 48`)")
    return secret


def resolve_secret(args: argparse.Namespace, *, generate: bool = False) -> str:
    """The signing secret from a file or the environment; a random one only if `generate`."""
    if getattr(args, "secret", None):
        raise ConfigError(SECRET_ON_COMMAND_LINE)
    secret = _secret_from(args, _file_config(args), "SECRET", "secret")
    if secret:
        return _check_length(secret, "secret")
    if generate:
        log.warning("--dev: using a random secret for this run; tokens from `medstream token` in other "
                    "processes will not verify")
        return secrets.token_urlsafe(32)
    raise ConfigError("no secret: set MEDSTREAM_SECRET, or use --secret-file / MEDSTREAM_SECRET_FILE, "
                      "or `secret_file` in --config (or --dev for a throwaway one)")


def resolve_keys(args: argparse.Namespace, *, generate: bool = False) -> dict[str, Any]:
    """The signing keys for `SignalingConfig`: current secret and kid, previous secret and kid."""
    file = _file_config(args)
    env = os.environ
    out: dict[str, Any] = {
        "secret": resolve_secret(args, generate=generate),
        "secret_kid": env.get("MEDSTREAM_SECRET_KID") or file.get("secret_kid") or "k1",
    }
    previous = _secret_from(args, file, "PREVIOUS_SECRET", "previous_secret")
    if previous:
        out["previous_secret"] = _check_length(previous, "previous secret")
        out["previous_kid"] = env.get("MEDSTREAM_PREVIOUS_SECRET_KID") or file.get("previous_secret_kid") or "k0"
    return out


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, help="port for websockets and HTTP (default 8765)")
    add_secret_argument(parser)
    parser.add_argument("--audit-log", help="audit JSON-lines file (default var/audit.jsonl; '' or 'none' to disable)")
    parser.add_argument("--recordings-dir", type=Path, help="where recordings go (default var/recordings)")
    parser.add_argument("--readings-dir", type=Path,
                        help="12-lead ECG reading store (default var/readings; 'none' turns the reading desk off)")
    parser.add_argument("--readings-centre", help="the ECG centre's organisation id (default ecg-centre)")
    parser.add_argument("--recordings-encryption", choices=("aes-256-gcm", "sm4-gcm"),
                        help="encrypt recordings at rest (key: --recordings-key-file or $MEDSTREAM_RECORDINGS_KEY)")
    parser.add_argument("--recordings-key-file", type=Path, help="the recordings master key (32 bytes, hex or base64)")
    parser.add_argument("--recordings-fsync", choices=("none", "second", "cluster"),
                        help="how often recordings are fsynced (default none: survives a crash, not a power cut)")
    parser.add_argument("--room", action="append", default=[], metavar="ID:KIND",
                        help="open a room at start and keep it (repeatable), e.g. ward-3:monitoring")
    parser.add_argument("--ice-host", action="append", default=[], metavar="ADDR",
                        help="host address offered in ICE candidates (repeatable; e.g. the public address behind NAT)")
    parser.add_argument("--udp-port", type=int, metavar="PORT",
                        help="one UDP port for every WebRTC peer's ICE and media on each --ice-host (the one port "
                             "a firewall must open; 0: any free one); with --workers, worker i takes PORT+i. "
                             "Default: a port of its own per peer")
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
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="websocket Origin allowed besides the server's own (repeatable; '*' for any)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--dev", action="store_true",
                        help="development: without a secret, use a random one (tokens from other processes won't verify)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="text (default) or json: one JSON object per line, for journald/Loki/ELK")
    parser.add_argument("--drain-timeout", type=float, help="on SIGTERM, seconds participants may finish (default 60)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve HTTPS and WSS on --port")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--redis", metavar="URL",
                        help="join a cluster on this Redis (or MEDSTREAM_REDIS_URL), e.g. redis://10.0.0.9:6379/0; "
                             "needs MEDSTREAM_CLUSTER_SECRET(_FILE); see docs/cluster.md")
    parser.add_argument("--node-id", help="this node's name in the cluster (default: host name and port)")
    parser.add_argument("--advertise", metavar="WS_URL",
                        help="the websocket address that reaches this node alone, e.g. wss://node2.example:8765/ws "
                             "(clients are redirected there; default ws://HOST:PORT/ws)")
    parser.add_argument("--workers", type=int, help="worker processes sharing --port (SO_REUSEPORT; needs --redis)")
    parser.add_argument("--node-port", type=port_number,
                        help="with --workers: worker i also listens alone on NODE_PORT+i (default PORT+1; "
                             "0: each worker any free port, advertised through Redis)")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)  # a worker's end of its lifeline
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
            raise ConfigError("TURN credentials need both --turn-url and --turn-secret")
        try:
            turn = TurnRest(turn_urls, str(turn_secret), float(args.turn_ttl or turn_file.get("ttl_s", 43200)))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    signaling = SignalingConfig(
        **resolve_keys(args, generate=bool(getattr(args, "dev", False))),
        ice_servers=ice_servers,
        record_kinds=tuple(args.record or file.get("record_kinds", [])),
        turn=turn,
        **{k: v for k, v in limits.items() if k in SignalingConfig.__dataclass_fields__ and "secret" not in k
           and not k.endswith("_kid")},
    )
    rooms = []
    for spec in args.room or file.get("rooms", []):
        room_id, _, kind = str(spec).partition(":")
        kind = kind or "consultation"
        if not room_id or kind not in ROOM_KINDS:
            raise ConfigError(f"room must be ID or ID:KIND with KIND one of {', '.join(ROOM_KINDS)}, got {spec!r}")
        rooms.append((room_id, kind))
    port = _port(pick(args.port, "MEDSTREAM_PORT", "port", 8765), "port")
    audit = pick(args.audit_log, "MEDSTREAM_AUDIT_LOG", "audit_log", "var/audit.jsonl")
    host = str(pick(args.host, "MEDSTREAM_HOST", "host", "127.0.0.1"))
    ice_hosts = tuple(args.ice_host or file.get("ice_host_addresses", []))
    if not ice_hosts and host in ("127.0.0.1", "localhost"):
        # serving this machine only: offer the loopback address (aioice never offers it by itself)
        ice_hosts = ("127.0.0.1",)
    if bool(getattr(args, "tls_cert", None) or file.get("tls_cert") or env.get("MEDSTREAM_TLS_CERT")) != bool(
            getattr(args, "tls_key", None) or file.get("tls_key") or env.get("MEDSTREAM_TLS_KEY")):
        raise ConfigError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
    if (args.webhook or hooks.get("urls")) and not (env.get("MEDSTREAM_WEBHOOK_SECRET") or hooks.get("secret")):
        raise ConfigError("webhooks need a signing secret: MEDSTREAM_WEBHOOK_SECRET or "
                         "[webhooks] secret in --config")
    cluster, workers, reuse_port, own_port = _cluster_config(args, file, host, port)
    udp_port = _udp_port(args, env, file, ice_hosts, workers)
    readings_dir = pick(getattr(args, "readings_dir", None), "MEDSTREAM_READINGS_DIR", "readings_dir", "var/readings")
    return ServerConfig(
        cluster=cluster, workers=workers, reuse_port=reuse_port, own_port=own_port,
        signaling=signaling,
        host=host,
        port=port,
        audit_log=Path(audit) if audit and str(audit).lower() != "none" else None,
        recordings_dir=Path(pick(args.recordings_dir, "MEDSTREAM_RECORDINGS_DIR", "recordings_dir", "var/recordings")),
        recordings_retention_days=file.get("recordings_retention_days"),
        readings_dir=None if str(readings_dir).lower() == "none" else Path(readings_dir),
        readings_centre=str(pick(getattr(args, "readings_centre", None), "MEDSTREAM_READINGS_CENTRE",
                                 "readings_centre", "ecg-centre")),
        **_recordings_security(args, env, file),
        rooms=tuple(rooms),
        ice_host_addresses=ice_hosts,
        udp_port=udp_port,
        media=not args.no_media and file.get("media", True),
        api_key=env.get("MEDSTREAM_API_KEY") or file.get("api_key") or None,
        allowed_origins=tuple(args.allow_origin or [o for o in env.get("MEDSTREAM_ALLOWED_ORIGINS", "").split(",") if o]
                              or file.get("allowed_origins", [])),
        metrics_token=env.get("MEDSTREAM_METRICS_TOKEN") or file.get("metrics_token") or None,
        waveform_retention_s=float(file.get("waveform_retention_s", 600.0)),
        audit_hash=str(pick(None, "MEDSTREAM_AUDIT_HASH", "audit_hash", "sha256")),
        webhook_urls=tuple(args.webhook or hooks.get("urls", [])),
        webhook_secret=env.get("MEDSTREAM_WEBHOOK_SECRET") or hooks.get("secret") or None,
        webhook_queue_dir=Path(hooks.get("queue_dir", "var/webhooks")),
        webhook_retry_max_s=float(hooks.get("retry_max_s", 60.0)),
        drain_timeout_s=float(pick(args.drain_timeout, "MEDSTREAM_DRAIN_TIMEOUT", "drain_timeout_s", 60.0)),
        min_free_disk_mb=int(file.get("min_free_disk_mb", 1024)),
        tls_cert=_path(pick(args.tls_cert, "MEDSTREAM_TLS_CERT", "tls_cert", None)),
        tls_key=_path(pick(args.tls_key, "MEDSTREAM_TLS_KEY", "tls_key", None)),
    )


def _cluster_config(args: argparse.Namespace, file: dict[str, Any], host: str,
                    port: int) -> tuple[ClusterConfig | None, int, bool, int | None]:
    """(cluster, workers, reuse_port, own_port) from --redis/--node-id/--advertise/--workers."""
    env = os.environ
    section = file.get("cluster", {})
    redis_url = getattr(args, "redis", None) or env.get("MEDSTREAM_REDIS_URL") or section.get("redis_url")
    workers = int(getattr(args, "workers", None) or env.get("MEDSTREAM_WORKERS") or section.get("workers", 1))
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not redis_url:
        if workers > 1:
            raise ConfigError("--workers needs --redis: the workers coordinate through it")
        return None, 1, False, None
    secret = _secret_from(args, file, "CLUSTER_SECRET", "cluster_secret") or section.get("secret")
    if not secret:
        raise ConfigError("--redis needs the cluster secret shared by every node: set MEDSTREAM_CLUSTER_SECRET "
                          "or MEDSTREAM_CLUSTER_SECRET_FILE (e.g. `openssl rand -base64 48`)")
    index = getattr(args, "worker_index", None)
    node_port = getattr(args, "node_port", None)
    if node_port is None:
        node_port = section.get("node_port")
    own_port = None
    node_id = getattr(args, "node_id", None) or env.get("MEDSTREAM_NODE_ID") or section.get("node_id") \
        or f"{socket.gethostname()}-{port}"
    advertise = getattr(args, "advertise", None) or env.get("MEDSTREAM_ADVERTISE") or section.get("advertise") or ""
    if workers > 1 and node_port == 0 and advertise:
        raise ConfigError("--node-port 0 gives the workers ports nobody knows in advance: "
                          "--advertise needs a fixed --node-port")
    if workers > 1 and index is not None:
        own_port = 0 if node_port == 0 else int(node_port if node_port is not None else port + 1) + index
        node_id = f"{node_id}-w{index}"
        if advertise:  # the workers' own ports on the advertised host
            advertise = re.sub(r":\d+(/|$)", f":{own_port}\\1", advertise, count=1)
    try:
        cluster = ClusterConfig(
            redis_url=str(redis_url), node_id=str(node_id), url=str(advertise), secret=str(secret),
            heartbeat_s=float(section.get("heartbeat_s", 1.0)), ttl_s=float(section.get("ttl_s", 4.0)),
            prefix=str(section.get("prefix", "ms:")),
            cascade_share=int(env.get("MEDSTREAM_CASCADE_SHARE") or section.get("cascade_share", 100)))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cluster, workers, workers > 1, own_port


def _recordings_security(args: argparse.Namespace, env: Mapping[str, str], file: Mapping[str, Any]) -> dict[str, Any]:
    """Encryption at rest and fsync policy of recordings (key from a file or the environment)."""
    algorithm = getattr(args, "recordings_encryption", None) or env.get("MEDSTREAM_RECORDINGS_ENCRYPTION") \
        or file.get("recordings_encryption")
    key_file = getattr(args, "recordings_key_file", None) or env.get("MEDSTREAM_RECORDINGS_KEY_FILE") \
        or file.get("recordings_key_file")
    fsync = getattr(args, "recordings_fsync", None) or env.get("MEDSTREAM_RECORDINGS_FSYNC") \
        or file.get("recordings_fsync") or "none"
    if fsync not in ("none", "second", "cluster"):
        raise ConfigError(f"recordings fsync must be none, second or cluster, got {fsync!r}")
    out: dict[str, Any] = {"recordings_fsync": fsync}
    if algorithm or key_file or env.get(ENV_KEY):
        try:
            out["recordings_key"] = MasterKey.load(Path(key_file) if key_file else None, dict(env))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"recordings encryption: {exc}") from None
        out["recordings_encryption"] = algorithm or "aes-256-gcm"
        if out["recordings_encryption"] not in ("aes-256-gcm", "sm4-gcm"):
            raise ConfigError(f"recordings encryption must be aes-256-gcm or sm4-gcm, got {algorithm!r}")
    return out


_SECRETS_IN_TEXT = re.compile(
    r"((?:token|access_token|secret)=)[^\s&#\"']+|(Bearer\s+)[^\s\"']+|eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with anything that looks like a token (query parameter, bearer header, JWT) replaced."""
    return _SECRETS_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", text)


class RedactTokens(logging.Filter):
    """Tokens are never logged: at any level, from our loggers or a library's (aiohttp's request
    lines at DEBUG carry `?token=`), the formatted message is redacted before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True




def _port(value: Any, name: str) -> int:
    """`value` (a flag, variable or file entry) as a TCP/UDP port 0-65535, or a ConfigError naming `name`."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number 0-65535, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be 0-65535, got {port}")
    return port


def _udp_port(args: argparse.Namespace, env: Any, file: dict[str, Any], ice_hosts: tuple[str, ...],
              workers: int) -> int | None:
    """--udp-port / MEDSTREAM_UDP_PORT / udp_port: the shared ICE port (worker i of --workers: +i)."""
    raw = getattr(args, "udp_port", None)
    if raw is None:
        raw = env.get("MEDSTREAM_UDP_PORT") or file.get("udp_port")
    if raw is None or raw == "":
        return None
    udp_port = _port(raw, "--udp-port")
    if not ice_hosts:
        raise ConfigError("--udp-port needs --ice-host: the address(es) the shared UDP port is bound on "
                          "and offered in ICE candidates")
    index = getattr(args, "worker_index", None)
    if workers > 1 and index is not None and udp_port:
        udp_port += int(index)
    return udp_port


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
        raise ConfigError(f"--ice-server must be URLS[;username=U;credential=C] with stun:/turn: URLs, "
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
    handler.addFilter(RedactTokens())  # tokens are never logged, whatever the format
    logging.basicConfig(level=getattr(logging, (level or "INFO").upper(), logging.INFO), handlers=[handler],
                        force=True)
