"""`medstream serve`: run one node until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
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
    """Serve until SIGTERM/SIGINT, then drain (new joins refused, clients told, up to the drain
    timeout for them to finish), finish recordings and stop. A second signal stops at once."""
    await app.start()
    # start-up objects (modules, config, the app) live as long as the process: frozen, the
    # collector's full passes skip them (the live ECG analysis allocates per beat, and a full
    # pass over ~100k start-up objects cost ~8 % of its CPU time; docs/dsp.md, Throughput)
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    signals = 0
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:
            app.cut_drain()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    print(f"medstream serving on {app.url}  (websocket {app.ws_url}, health {app.url}/healthz)", flush=True)
    await stop.wait()
    print(f"medstream draining (up to {app.config.drain_timeout_s:g} s; signal again to stop now)", flush=True)
    await app.drain(app.config.drain_timeout_s)
    await app.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="medstream serve", description="Run the medstream server.")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        config = server_config(args)
    except ConfigError as exc:
        print(f"medstream serve: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1 and args.worker_index is None:
        return run_workers(config.workers, argv)
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


def run_workers(n: int, argv: list[str]) -> int:
    """`--workers N`: N processes of this command sharing the port (SO_REUSEPORT, the kernel
    spreads new connections), each its own cluster node on its own port too. A signal is passed
    on to every worker; a worker that dies is restarted (its rooms are taken over meanwhile)."""
    import subprocess
    import time

    def die_with_parent() -> None:  # a supervisor killed with SIGKILL takes its workers with it
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    def spawn(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "medstream.cli", "serve", *argv, "--worker-index", str(i)],
                                preexec_fn=die_with_parent if sys.platform == "linux" else None)

    workers = [spawn(i) for i in range(n)]
    started = [time.monotonic()] * n
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.poll() is None:
                w.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    print(f"medstream: {n} workers started", flush=True)
    while True:
        for i, w in enumerate(workers):
            code = w.poll()
            if code is not None and not stopping:
                if time.monotonic() - started[i] < 10:  # dies at start: a config or port error, not a crash
                    print(f"medstream: worker {i} exited at start ({code}); stopping", file=sys.stderr, flush=True)
                    forward(signal.SIGTERM, None)
                    continue
                print(f"medstream: worker {i} exited ({code}); restarting it", file=sys.stderr, flush=True)
                workers[i], started[i] = spawn(i), time.monotonic()
        if stopping and all(w.poll() is not None for w in workers):
            return max((w.returncode or 0) for w in workers)
        time.sleep(0.2)
