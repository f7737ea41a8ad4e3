"""Plain HTTP GET on the signaling port: health, metrics, the browser client, recordings.

One port is what a hospital firewall admin wants to open, so these ride on the websocket server's
`process_request` hook. Handlers take a path and headers and return (status, headers, body).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp4": "video/mp4",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def text(status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> HttpResponse:
    return HttpResponse(status, (("Content-Type", content_type),), body.encode())


def not_found(path: str) -> HttpResponse:
    return text(404, f"not found: {path}\n")


def static_file(root: Path, rel: str) -> HttpResponse:
    """Serve a file below `root`, refusing anything that escapes it."""
    rel = rel.lstrip("/") or "index.html"
    try:
        path = (root / rel).resolve()
        path.relative_to(root.resolve())
    except (ValueError, OSError):
        return not_found(rel)
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        return not_found(rel)
    ctype = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return HttpResponse(
        200, (("Content-Type", ctype), ("Cache-Control", "no-cache")), path.read_bytes()
    )


def split_path(raw: str) -> tuple[str, str]:
    """(decoded path, query) of a request target."""
    parts = urlsplit(raw)
    return unquote(parts.path), parts.query


Handler = Callable[[str, str, dict[str, str]], HttpResponse | None]
