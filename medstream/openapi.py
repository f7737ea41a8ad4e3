"""The OpenAPI 3.1 document of this node's HTTP routes, built from the routes as they are added.

Every route goes through `DocumentedRoutes` (the node's `route` function): it adds the route to
aiohttp and records its `Operation`, so the document served at `/api/v1/openapi.json` cannot list
a route the node does not have. Routes whose installer passes no `Operation` (parts that predate
this document: the recordings download, health) are described in `KNOWN` here; the document is made
from aiohttp's router at request time, and a route with no description anywhere is left out of it
(and `tests/medstream/test_openapi.py` fails).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from medstream.http import Handler

JSON = "application/json"
ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}


@dataclass(frozen=True)
class Operation:
    """One method on one path. `auth`: the security scheme ("apiKey", "accessToken") or None."""

    summary: str
    tag: str = "admin"
    auth: str | None = "apiKey"
    request: dict[str, Any] | None = None  # JSON schema of the body
    request_type: str = JSON
    responses: dict[int, str] = field(default_factory=lambda: {200: "done"})
    response: dict[str, Any] | None = None  # JSON schema of the success body
    response_type: str = JSON
    query: tuple[tuple[str, str], ...] = ()  # (name, description)
    description: str = ""


KNOWN: dict[tuple[str, str], Operation] = {
    ("GET", "/ws"): Operation("signaling websocket (docs/protocol.md); upgrade only", "signaling", None,
                              responses={101: "switching protocols"}, response_type="text/plain"),
    ("GET", "/recordings"): Operation("a room's recorded sessions, for its host or supervisor", "recordings",
                                      "accessToken", query=(("token", "access token (or Authorization: Bearer)"),),
                                      responses={200: "sessions", 401: "no valid token", 403: "not this room or role"}),
    ("GET", "/recordings/{tail}"): Operation(
        "one recorded file, /recordings/<room>/<session>/<file>, with Range support", "recordings", "accessToken",
        query=(("token", "access token (or Authorization: Bearer)"),), response_type="application/octet-stream",
        responses={200: "the file", 206: "a range of it", 401: "no valid token", 403: "not this room or role",
                   404: "no such file"}),
    ("GET", "/playback/{room}/{session}"): Operation(
        "a recorded session for the playback page: media, waveform records with beats and alarms, events",
        "recordings", "accessToken", query=(("token", "host/supervisor access token or library token"),),
        responses={200: "the session timeline", 401: "no valid token", 403: "not this room or role",
                   404: "no such session"}),
    ("GET", "/"): Operation("the browser app", "pages", None, response_type="text/html", responses={200: "page"}),
    ("GET", "/{path}"): Operation("browser pages and /static/ modules", "pages", None, response_type="text/html",
                                  responses={200: "file", 404: "not found"}),
}


def canonical(path: str) -> str:
    """aiohttp's `{name:regex}` as OpenAPI's `{name}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


class DocumentedRoutes:
    """Adds routes through `add` (HttpServer.route) and keeps what each one is."""

    def __init__(self, add: Callable[[str, str, Handler], None]) -> None:
        self._add = add
        self.operations: dict[tuple[str, str], Operation] = {}

    def __call__(self, method: str, path: str, handler: Handler, op: Operation | None = None) -> None:
        self._add(method, path, handler)
        if op is not None:
            self.operations[(method.upper(), canonical(path))] = op

    def undocumented(self, routes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Which of these (method, aiohttp path) routes have no description."""
        return [(m, p) for m, p in routes if self._op(m, p) is None]

    def _op(self, method: str, path: str) -> Operation | None:
        key = (method.upper(), canonical(path))
        return self.operations.get(key) or KNOWN.get(key)

    def document(self, routes: Iterable[tuple[str, str]], *, version: str,
                 server_url: str | None = None) -> dict[str, Any]:
        """The OpenAPI 3.1 document of `routes` (the router's (method, path) pairs; HEAD and
        undocumented ones left out), JSON-ready."""
        paths: dict[str, dict[str, Any]] = {}
        for method, path in sorted(set(routes)):
            op = self._op(method, path)
            if op is not None and method.upper() != "HEAD":
                paths.setdefault(canonical(path), {})[method.lower()] = _operation(method, canonical(path), op)
        doc: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": "medstream", "version": version,
                     "description": "Admin API, WHIP/WHEP and the other HTTP routes of one medstream node."},
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "apiKey": {"type": "http", "scheme": "bearer",
                               "description": "the node's API key (api_key / MEDSTREAM_API_KEY)"},
                    "adminToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                   "description": "an admin-grant token for one room or all "
                                                  "(medstream token --grant admin [--room R])"},
                    "accessToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                    "description": "a room access token (medstream token, POST /api/v1/tokens)"},
                },
                "schemas": {"Error": {"type": "object", "required": ["error", "message"],
                                      "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}},
            },
        }
        if server_url:
            doc["servers"] = [{"url": server_url}]
        return doc


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "tags": [op.tag],
                           "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}"}
    if op.description:
        out["description"] = op.description
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in re.findall(r"\{(\w+)\}", path)]
    params += [{"name": name, "in": "query", "required": False, "description": desc, "schema": {"type": "string"}}
               for name, desc in op.query]
    if params:
        out["parameters"] = params
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {op.request_type: {"schema": op.request}}}
    responses: dict[str, Any] = {}
    for status, desc in op.responses.items():
        if status < 300 and status != 204:
            schema = op.response if op.response is not None else {}
            responses[str(status)] = {"description": desc, "content": {op.response_type: {"schema": schema}}}
        elif status >= 400 and op.response_type == JSON:
            responses[str(status)] = {"description": desc, "content": {JSON: {"schema": ERROR_SCHEMA}}}
        else:
            responses[str(status)] = {"description": desc}
    out["responses"] = responses
    if op.auth == "apiKey":  # the admin API: the key or an admin-grant token
        out["security"] = [{"apiKey": []}, {"adminToken": []}]
    elif op.auth is not None:
        out["security"] = [{op.auth: []}]
    else:
        out["security"] = []
    return out
