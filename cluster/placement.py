"""Where a room lives and where a join goes: plain functions of what the registry says.

A room lives on one node. A join for a room that lives elsewhere is redirected there (the client
reconnects to that node's own address; its media goes there anyway). A room nobody hosts, or whose
node stopped heartbeating, is placed on the least loaded live node. No I/O here: the node
(`cluster.node`) reads the registry, asks these functions, and writes the claim.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cluster.records import NodeInfo

# what one unit of each load figure weighs (a forwarded stream costs the SFU about as much as
# three signaling-only participants; a fully busy core counts like 300 participants)
PARTICIPANT_WEIGHT = 1.0
STREAM_WEIGHT = 3.0
CPU_WEIGHT = 300.0
ROOM_WEIGHT = 2.0


def load_score(node: NodeInfo, placed_since_heartbeat: int = 0) -> float:
    """Lower is emptier. `placed_since_heartbeat`: rooms this node has put there since the
    target's last heartbeat, so a burst of new rooms spreads instead of herding onto one node."""
    load = node.load
    return (PARTICIPANT_WEIGHT * load.participants + STREAM_WEIGHT * load.forwarded_streams
            + CPU_WEIGHT * load.cpu + ROOM_WEIGHT * (load.rooms + placed_since_heartbeat))


def choose_node(nodes: Iterable[NodeInfo], placed: dict[str, int] | None = None) -> NodeInfo | None:
    """The non-draining node with the lowest load score (ties: the lowest id); None if there is
    none. `nodes` are the live ones: those whose registry record has not expired in Redis (its
    expiry, not a comparison of clocks of different machines, decides who is alive)."""
    placed = placed or {}
    candidates = [n for n in nodes if not n.draining]
    if not candidates:
        return None
    return min(candidates, key=lambda n: (load_score(n, placed.get(n.node_id, 0)), n.node_id))


@dataclass(frozen=True, slots=True)
class Local:
    """Serve the join here (the room is here, or the hub refuses it as it would alone)."""

    takeover: bool = False  # the room was hosted by a node that died: recreate it here first


@dataclass(frozen=True, slots=True)
class Redirect:
    """Tell the client to join at `url` (the node hosting the room)."""

    node_id: str
    url: str


@dataclass(frozen=True, slots=True)
class Place:
    """Nobody (alive) hosts the room: claim it for `node` (replacing `previous`, a dead owner or
    None) and then serve or redirect."""

    node: NodeInfo
    previous: str | None


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No live node can take the room (all draining or gone)."""


Route = Local | Redirect | Place | Unavailable


def route_join(*, self_id: str, hosted_here: bool, owner: str | None, nodes: dict[str, NodeInfo],
               may_open: bool, placed: dict[str, int] | None = None) -> Route:
    """Where a verified join for one room goes. `nodes`: the live nodes by id.

    hosted_here: the room is in this node's hub; owner: the node the directory names (or None);
    may_open: the join may create the room (a host whose token names the kind) or the room has
    state in Redis (it was open on a node that died)."""
    if hosted_here or owner == self_id:
        return Local()
    if owner is not None and (n := nodes.get(owner)) is not None:
        return Redirect(n.node_id, n.url)
    if not may_open:
        return Local()  # the hub answers unknown_room, as a single node would
    target = choose_node(nodes.values(), placed)
    if target is None:
        return Unavailable()
    return Place(target, owner)
