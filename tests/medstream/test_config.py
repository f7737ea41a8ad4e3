"""The node's configuration from flags and file: ICE servers with credentials, TURN secrets,
webhooks and TLS that are refused when half-configured."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest

from medstream.config import ConfigError, add_server_arguments, parse_ice_server, server_config
from protocol.signaling import IceServerInfo


def config(*argv: str):
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    secret_file = Path(tempfile.mkdtemp()) / "secret"
    secret_file.write_text("x" * 32)
    return server_config(parser.parse_args(["--secret-file", str(secret_file), *argv]))


def test_ice_server_flag_takes_urls_and_credentials() -> None:
    assert parse_ice_server("turn:t.example:3478,turn:t.example:3478?transport=tcp;username=u;credential=p") == \
        IceServerInfo(("turn:t.example:3478", "turn:t.example:3478?transport=tcp"), "u", "p")
    assert parse_ice_server({"urls": "stun:s.example:3478"}) == IceServerInfo(("stun:s.example:3478",))
    for bad in ("http://x", "turn:x;password=p", ""):
        with pytest.raises(ConfigError):
            parse_ice_server(bad)


def test_turn_tls_and_webhooks_half_configured_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MEDSTREAM_TURN_SECRET", "MEDSTREAM_WEBHOOK_SECRET", "MEDSTREAM_TLS_CERT", "MEDSTREAM_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    c = config("--turn-url", "turn:t.example:3478", "--turn-secret", "s", "--turn-ttl", "600",
               "--ice-server", "stun:s.example:3478")
    assert c.signaling.turn is not None and c.signaling.turn.ttl_s == 600
    assert c.signaling.ice_servers == (IceServerInfo(("stun:s.example:3478",)),)
    with pytest.raises(ConfigError, match="turn-secret"):
        config("--turn-url", "turn:t.example:3478")
    with pytest.raises(ConfigError, match="both"):
        config("--tls-cert", str(tmp_path / "c.pem"))
    with pytest.raises(ConfigError, match="webhooks need a signing secret"):
        config("--webhook", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("MEDSTREAM_WEBHOOK_SECRET", "w" * 32)
    c = config("--webhook", "http://127.0.0.1:9/hook", "--tls-cert", "c.pem", "--tls-key", "k.pem")
    assert c.webhook_urls == ("http://127.0.0.1:9/hook",) and c.webhook_secret == "w" * 32
    assert c.tls_cert == Path("c.pem") and c.tls_key == Path("k.pem")


def test_the_example_config_in_deploy_is_what_the_node_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    for line in (root / "deploy" / "medstream.env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            monkeypatch.setenv(*line.split("=", 1))
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    c = server_config(parser.parse_args(["--config", str(root / "deploy" / "medstream.toml")]))
    assert (c.host, c.port, c.drain_timeout_s, c.min_free_disk_mb) == ("0.0.0.0", 443, 120, 2048)
    assert c.tls_cert == Path("/etc/medstream/tls/fullchain.pem") and c.api_key
    assert c.signaling.turn is not None and len(c.signaling.turn.urls) == 3
    assert c.signaling.ice_servers[0].urls == ("stun:turn.hospital.example:3478",)
    assert c.webhook_urls and c.webhook_secret and c.rooms == (("ward-3", "monitoring"),)
    assert c.signaling.max_participants_per_room == 500 and c.signaling.record_kinds == ("consultation",)
    assert "ExecStart=/opt/medstream/venv/bin/medstream serve --config /etc/medstream/medstream.toml" in \
        (root / "deploy" / "medstream.service").read_text()


def test_udp_port_is_off_by_default_and_needs_an_ice_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSTREAM_UDP_PORT", raising=False)
    assert config().udp_port is None
    assert config("--udp-port", "40000").udp_port == 40000  # default host 127.0.0.1 offers 127.0.0.1
    with pytest.raises(ConfigError, match="--ice-host"):
        config("--host", "0.0.0.0", "--udp-port", "40000")
    assert config("--host", "0.0.0.0", "--ice-host", "10.0.0.5", "--udp-port", "40000").udp_port == 40000
    with pytest.raises(ConfigError, match="0-65535"):
        config("--udp-port", "70000")
    monkeypatch.setenv("MEDSTREAM_UDP_PORT", "40002")
    assert config().udp_port == 40002
