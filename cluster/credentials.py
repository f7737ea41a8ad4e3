"""Node credentials: what one node shows another to open a media link or pull a track.

`from|to|purpose|unix_seconds|mac`, the MAC being HMAC-SHA256 under the cluster secret over the
rest: only a holder of the secret (a node of this cluster) can mint one, it names the node it is
for (a credential for node B is refused by node C) and it is accepted for `window_s` around its
time (node clocks are NTP-synchronised; the window is wide enough for their drift and narrow
enough that a credential read off the wire is soon worthless).
"""

from __future__ import annotations

import hmac

from cluster.records import token_b64

WINDOW_S = 120.0


class CredentialError(ValueError):
    """Not a credential of this cluster for this node and purpose (or out of its window)."""


def mint(secret: bytes, *, purpose: str, from_node: str, to_node: str, now: float) -> str:
    body = f"{from_node}|{to_node}|{purpose}|{int(now)}"
    return f"{body}|{token_b64(secret, body)}"


def verify(secret: bytes, credential: str, *, purpose: str, to_node: str, now: float,
           window_s: float = WINDOW_S) -> str:
    """The id of the node that minted `credential`; raises CredentialError."""
    body, _, mac = credential.rpartition("|")
    parts = body.split("|")
    if len(parts) != 4 or not hmac.compare_digest(mac.encode(), token_b64(secret, body).encode()):
        raise CredentialError("not a credential of this cluster")
    from_node, to, what, at = parts
    if to != to_node or what != purpose:
        raise CredentialError(f"a credential for {to!r}/{what!r}, not {to_node!r}/{purpose!r}")
    try:
        age = now - int(at)
    except ValueError:
        raise CredentialError("credential time is not a number") from None
    if abs(age) > window_s:
        raise CredentialError(f"credential is {age:+.0f} s old (window ±{window_s:.0f} s)")
    return from_node
