"""The cluster's plain parts: placement and routing decisions, sealed records, config."""

from __future__ import annotations

import argparse

import pytest

from cluster.placement import Local, Place, Redirect, Unavailable, choose_node, load_score, route_join
from cluster.records import NodeInfo, NodeLoad, SealError, seal, seal_json, unseal, unseal_json
from medstream.config import ConfigError, add_server_arguments, server_config
from protocol import signaling as wire

NOW = 1000.0


def node(node_id: str, participants: int = 0, seen: float = NOW, cpu: float = 0.0, draining: bool = False,
         rooms: int = 0) -> NodeInfo:
    return NodeInfo(node_id, f"ws://{node_id}:8765/ws", seen, NodeLoad(participants, rooms, 0, cpu), draining)


def test_the_least_loaded_node_is_chosen_and_a_burst_spreads() -> None:
    nodes = [node("a", participants=40), node("b", participants=10)]
    assert choose_node(nodes).node_id == "b"
    assert choose_node([node("a"), node("b")], placed={"a": 1}).node_id == "b"
    assert choose_node([node("a", draining=True)]) is None
    assert load_score(node("x", cpu=1.0)) > load_score(node("y", participants=100))  # a busy core weighs


def test_route_join() -> None:
    nodes = {"a": node("a"), "b": node("b", participants=5)}  # the live ones ("dead" expired)
    kw = dict(nodes=nodes)
    assert route_join(self_id="a", hosted_here=True, owner="b", may_open=False, **kw) == Local()
    assert route_join(self_id="a", hosted_here=False, owner="b", may_open=False, **kw) == Redirect(
        "b", "ws://b:8765/ws")
    # nobody hosts it and the join may not open it: the hub answers unknown_room as a single node would
    assert route_join(self_id="a", hosted_here=False, owner=None, may_open=False, **kw) == Local()
    # its node died: placed on the emptiest live one, replacing the dead owner
    assert route_join(self_id="b", hosted_here=False, owner="dead", may_open=True, **kw) == Place(nodes["a"], "dead")
    assert route_join(self_id="a", hosted_here=False, owner=None, may_open=True, nodes={}) == Unavailable()


def test_records_are_sealed_with_the_cluster_secret() -> None:
    secret = b"s" * 32
    assert unseal(secret, seal(secret, b"frame")) == b"frame"
    info = node("a", participants=3)
    assert NodeInfo.from_json(unseal_json(secret, seal_json(secret, info.to_json()))) == info
    forged = seal(b"x" * 32, b"frame")
    with pytest.raises(SealError):
        unseal(secret, forged)
    with pytest.raises(SealError):
        unseal(secret, seal(secret, b"frame")[:-1] + b"!")


def test_redirect_is_on_the_wire() -> None:
    msg = wire.Redirect("ws://10.0.0.2:8765/ws", "ward-3", id=4)
    assert wire.decode_server_message(wire.encode(msg)) == msg


def _config(monkeypatch: pytest.MonkeyPatch, *argv: str, **env: str):  # type: ignore[no-untyped-def]
    for k in list(__import__("os").environ):
        if k.startswith("MEDSTREAM_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("MEDSTREAM_SECRET", "t" * 40)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    return server_config(parser.parse_args(list(argv)))


def test_cluster_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _config(monkeypatch).cluster is None  # without --redis: one process, as before
    with pytest.raises(ConfigError, match="cluster secret"):
        _config(monkeypatch, "--redis", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        _config(monkeypatch, "--redis", "redis://r:6379/0", MEDSTREAM_CLUSTER_SECRET="short")
    with pytest.raises(ConfigError, match="--workers needs --redis"):
        _config(monkeypatch, "--workers", "2")
    c = _config(monkeypatch, "--redis", "redis://r:6379/0", "--node-id", "n1", "--advertise", "wss://n1.example:8765/ws",
                MEDSTREAM_CLUSTER_SECRET="c" * 40)
    assert c.cluster is not None and (c.cluster.node_id, c.cluster.url) == ("n1", "wss://n1.example:8765/ws")
    w = _config(monkeypatch, "--redis", "redis://r:6379/0", "--node-id", "n1", "--port", "8765", "--workers", "2",
                "--worker-index", "1", "--advertise", "wss://n1.example:8765/ws", MEDSTREAM_CLUSTER_SECRET="c" * 40)
    assert w.cluster is not None and w.reuse_port and w.own_port == 8767
    assert (w.cluster.node_id, w.cluster.url) == ("n1-w1", "wss://n1.example:8767/ws")


def test_a_single_node_does_not_import_redis() -> None:
    import subprocess
    import sys

    code = "import sys, medstream.serve, medstream.app; assert 'redis' not in sys.modules, 'redis imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
