"""A real cluster per test: `redis-server` and `medstream serve --redis` nodes as processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.cluster_harness import SECRET, Node, RedisServer
from signaling.tokens import issue_token
from tests.conftest import timeout_s
from tests.helpers import MediaParticipant, WsClient


def ctoken(room: str, identity: str, role: str, *, kind: str | None = None, **kw: Any) -> str:
    """A token signed with the cluster nodes' token secret."""
    return issue_token(SECRET, room=room, identity=identity, role=role, room_kind=kind, **kw)


class Cluster:
    """Redis and nodes of one test; everything started is stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = RedisServer(workdir)
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, **kw: Any) -> Node:
        node = Node(name, self.redis.url, self.workdir, **kw)
        self.nodes[name] = node
        node.start(timeout_s(90))
        return node

    def start_nodes(self, names: tuple[str, ...], **kw: Any) -> list[Node]:
        """Several nodes started at once (their start-ups overlap), ready when this returns."""
        nodes = [Node(name, self.redis.url, self.workdir, **kw) for name in names]
        for node in nodes:
            self.nodes[node.name] = node
            node.spawn()
        for node in nodes:
            node.wait_ready(timeout_s(90))
        return nodes

    def wait_nodes(self, via: Node, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s(timeout)
        while len(via.get("/cluster/v1/nodes")["nodes"]) != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{via.name} never saw {count} live nodes")
            time.sleep(0.1)

    def close(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:  # their drains overlap
            list(pool.map(lambda n: n.stop(timeout_s(10)), self.nodes.values()))
        self.redis.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log()[-3000:]}" for n in self.nodes.values())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.redis.start()
    try:
        yield c
    finally:
        print(c.logs())  # pytest shows it for a test that failed
        c.close()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Redis and nodes a and b for the tests that kill nothing (each uses rooms of its own):
    started once, in parallel."""
    c = Cluster(tmp_path_factory.mktemp("shared-cluster"))
    c.redis.start()
    try:
        a, _ = c.start_nodes(("a", "b"))
        c.wait_nodes(a, 2)
        yield c
    finally:
        c.close()


async def join_via(url: str, tok: str, **fields: Any) -> tuple[WsClient, dict[str, Any], list[str]]:
    """Join at `url`, following `redirect` replies as a client does; returns the client, its last
    reply and the URLs it was redirected to."""
    hops: list[str] = []
    for _ in range(3):
        ws = await WsClient.connect(url)
        reply = await ws.join(tok, **fields)
        if reply["type"] != "redirect":
            return ws, reply, hops
        await ws.close()
        url = reply["url"]
        hops.append(url)
    raise AssertionError(f"redirected in a loop: {hops}")


async def media_join_via(url: str, tok: str, **peer_kw: Any) -> tuple[MediaParticipant, list[str]]:
    """A real aiortc participant joining through any node (redirects followed before media)."""
    from tests.support.rtc_peer import ClientPeer

    peer = ClientPeer(peer_kw.pop("name", "client"), **peer_kw)
    hops: list[str] = []
    for _ in range(3):
        ws = await WsClient.connect(url)
        me = MediaParticipant(ws, peer)
        reply = await ws.join(tok, media=True)
        if reply["type"] == "joined":
            return me, hops
        await ws.close()
        if reply["type"] != "redirect":
            raise AssertionError(f"join failed: {reply}")
        url = reply["url"]
        hops.append(url)
    raise AssertionError(f"redirected in a loop: {hops}")


def room_state(node: Node, room: str) -> Any:
    """The cluster's view of a room, or None while it has none yet: a room's state reaches Redis a
    moment after the join that opened it (writes are coalesced), so tests poll it with `until`."""
    try:
        return node.get(f"/cluster/v1/rooms/{room}")
    except OSError:  # 404 (HTTPError) before the first state write, or the node not answering
        return None


async def until(predicate: Any, timeout: float, what: str) -> Any:
    """Poll `predicate()` (sync or async) until truthy, within a scaled deadline."""
    deadline = time.monotonic() + timeout_s(timeout)
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
