"""A node's cluster settings (no Redis import here: a single node reads its config without it)."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.records import MIN_CLUSTER_SECRET_BYTES


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """`url`: this node's own websocket address (clients redirected here use it; behind NAT or a
    load balancer, the address that reaches this node and no other)."""

    redis_url: str
    node_id: str
    url: str
    secret: str
    heartbeat_s: float = 1.0
    ttl_s: float = 4.0  # a node silent this long is dead (its record expires): its rooms go elsewhere
    prefix: str = "ms:"
    state_flush_s: float = 1.0  # room state is written at most this often (a burst of joins: one write a room)

    def __post_init__(self) -> None:
        if len(self.secret.encode()) < MIN_CLUSTER_SECRET_BYTES:
            raise ValueError(f"the cluster secret must be at least {MIN_CLUSTER_SECRET_BYTES} bytes, "
                             f"got {len(self.secret.encode())}")
        if self.ttl_s <= self.heartbeat_s:
            raise ValueError(f"ttl_s must exceed heartbeat_s, got {self.ttl_s} <= {self.heartbeat_s}")
