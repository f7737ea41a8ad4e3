"""`medstream serve`: run one node until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from medstream.app import MedstreamApp
from medstream.config import add_server_arguments, configure_logging, server_config


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
    app = MedstreamApp(server_config(args))
    run(lambda: serve_forever(app))
    return 0
