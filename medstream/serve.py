"""`medstream serve`: run one node until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

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


async def serve_forever(app: MedstreamApp, lifeline_fd: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain (new joins refused, clients told, up to the drain
    timeout for them to finish), finish recordings and stop. A second signal stops at once.
    `lifeline_fd`: a `--workers` worker's end of its supervisor's pipe; when the supervisor dies
    the worker stops at once (no drain) and exits within ORPHAN_EXIT_S whatever hangs."""
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

    def orphaned() -> None:
        print("medstream: the supervisor is gone: stopping now", file=sys.stderr, flush=True)
        on_signal()
        on_signal()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    if lifeline_fd is not None:
        watch_lifeline(lifeline_fd, lambda: loop.call_soon_threadsafe(orphaned))
    print(f"medstream serving on {app.url}  (websocket {app.ws_url}, health {app.url}/healthz)", flush=True)
    await stop.wait()
    print(f"medstream draining (up to {app.config.drain_timeout_s:g} s; signal again to stop now)", flush=True)
    await app.drain(app.config.drain_timeout_s)
    await app.stop()


ORPHAN_EXIT_S = 15.0  # a worker whose supervisor died is gone by then, even if its stop hangs


def watch_lifeline(fd: int, on_gone: Callable[[], object]) -> None:
    """Call `on_gone` (from a thread) when the supervisor holding the pipe's write end is gone,
    however it went (SIGKILL included: the kernel closes its descriptors, the read sees EOF), then
    end the process ORPHAN_EXIT_S later if it is still there. A worker must not outlive its
    supervisor: it would keep its ports and its cluster record with nobody to stop or restart it."""
    def run() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 64):  # the supervisor never writes: only EOF (or an error) ends this
                pass
        on_gone()
        time.sleep(ORPHAN_EXIT_S)
        print(f"medstream: still stopping {ORPHAN_EXIT_S:g} s after the supervisor died: exiting",
              file=sys.stderr, flush=True)
        os._exit(70)

    threading.Thread(target=run, name="supervisor-lifeline", daemon=True).start()


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
        return run_workers(config.workers, argv, config.drain_timeout_s)
    app = MedstreamApp(config)
    try:
        run(lambda: serve_forever(app, args.supervisor_fd))
    except OSError as exc:
        print(f"medstream serve: {listen_error(exc, config.host, config.port)}", file=sys.stderr)
        return 2
    return 0


def listen_error(exc: OSError, host: str, port: int) -> str:
    """What went wrong when the server could not listen, in plain words (naming the port that
    failed: a worker's own port is not --port)."""
    port = getattr(exc, "port", port)
    option = getattr(exc, "option", "--port")
    host = getattr(exc, "host", host)  # the shared UDP port (media_server.udp_mux) is on an --ice-host
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another medstream?): stop it or pick another {option}"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"cannot listen on {host}: not an address of this machine ({getattr(exc, 'host_option', '--host')})"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} (ports below 1024 need root): pick another {option}"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


STOP_GRACE_S = 30.0  # after the drain timeout: a worker still not stopped is killed


def run_workers(n: int, argv: list[str], drain_timeout_s: float) -> int:
    """`--workers N`: N processes of this command sharing the port (SO_REUSEPORT, the kernel
    spreads new connections), each its own cluster node on its own port too. A signal is passed
    on to every worker; a worker that dies is restarted (its rooms are taken over meanwhile); a
    worker still there STOP_GRACE_S after its drain timeout is killed. The workers hold the read
    end of a pipe only this process can write to: when it dies, however, they stop
    (`watch_lifeline`)."""
    import subprocess

    lifeline, keep = os.pipe()  # `keep` (not inheritable) is closed by the kernel when we die

    def spawn(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "medstream.cli", "serve", *argv, "--worker-index", str(i),
                                 "--supervisor-fd", str(lifeline)], pass_fds=(lifeline,))

    workers = [spawn(i) for i in range(n)]
    started = [time.monotonic()] * n
    stopping = False
    kill_at = float("inf")

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping, kill_at
        if not stopping:
            kill_at = time.monotonic() + drain_timeout_s + STOP_GRACE_S
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
            os.close(keep)
            return max((w.returncode or 0) for w in workers)
        if time.monotonic() > kill_at:
            for i, w in enumerate(workers):
                if w.poll() is None:
                    print(f"medstream: worker {i} did not stop in time: killed", file=sys.stderr, flush=True)
                    w.kill()
            kill_at = float("inf")
        time.sleep(0.2)
