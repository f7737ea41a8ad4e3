"""`medstream serve`: run one node until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys

from medstream.app import MedstreamApp
from medstream.config import ConfigError, add_server_arguments, configure_logging, server_config


def run(coro_factory) -> None:  # type: ignore[no-untyped-def]
    """Run on uvloop when it is installed, plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro_factory())
    else:
        uvloop.run(coro_factory())


async def serve_forever(app: MedstreamApp) -> None:
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"medstream serving on {app.url}  (websocket {app.ws_url}, health {app.url}/healthz)", flush=True)
    await stop.wait()
    await app.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medstream serve", description="Run the medstream server.")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = server_config(args)
    except ConfigError as exc:
        print(f"medstream serve: {exc}", file=sys.stderr)
        return 2
    app = MedstreamApp(config)
    try:
        run(lambda: serve_forever(app))
    except OSError as exc:
        print(f"medstream serve: {listen_error(exc, config.host, config.port)}", file=sys.stderr)
        return 2
    return 0


def listen_error(exc: OSError, host: str, port: int) -> str:
    """What went wrong when the server could not listen, in plain words."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another medstream?): stop it or pick another --port"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"cannot listen on {host}: not an address of this machine (--host)"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} (ports below 1024 need root): pick another --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
