"""Time-limited TURN credentials from a shared secret, per participant (the "REST API for TURN"
scheme, draft-uberti-behave-turn-rest-00, which coturn implements as `use-auth-secret` with
`static-auth-secret`).

username   = "<expiry unix seconds>:<participant id>"
credential = base64(HMAC-SHA1(secret, username))

The TURN server recomputes the credential from the username and its copy of the secret and
refuses it after the expiry: nothing is stored, nothing is shared with the client but a
password that stops working. A participant's credentials are made at join (and resume) and
last `ttl_s`, longer than any booked session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from protocol.signaling import IceServerInfo


@dataclass(frozen=True)
class TurnRest:
    """TURN servers that take REST-API credentials: their URLs (e.g. "turn:turn.example:3478",
    "turn:turn.example:3478?transport=tcp", "turns:turn.example:443?transport=tcp"), the shared
    secret and how long a credential lasts."""

    urls: tuple[str, ...]
    secret: str
    ttl_s: float = 12 * 3600.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("TurnRest needs at least one turn:/turns: URL, got ()")
        for url in self.urls:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(f"a TURN URL must start with turn: or turns:, got {url!r}")
        if not self.secret:
            raise ValueError("TurnRest needs the TURN server's shared secret")
        if not self.ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {self.ttl_s}")

    def ice_server(self, user: str, now: float) -> IceServerInfo:
        """Credentials for `user` (a participant id) valid until now + ttl_s."""
        username = f"{int(now + self.ttl_s)}:{user}"
        return IceServerInfo(self.urls, username, credential(self.secret, username))


def credential(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), as coturn checks it."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
