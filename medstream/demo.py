"""`medstream demo`: a self-contained node with simulated bedside monitors and links to open.

Starts a MedstreamApp on 127.0.0.1 (SFU and waveform relay on, ICE offering 127.0.0.1 unless
`--ice-host` says otherwise), opens a consultation, a broadcast and a monitoring ward, streams 3-4
simulated monitors into the ward (real MIT-BIH records when ../shared/data/ecg is there, else
synthetic ECG; bed-4 has an asystole on cue and a tachycardia later) plus one monitor into the
consultation, and prints the links. Runs until Ctrl-C, SIGTERM or `--duration` seconds; on a signal
it stops cleanly, so recordings in progress are finished (manifests complete, files hashed). Needs
nothing but the Python dependencies (no Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

from clients.monitor_sim import (
    MonitorSimConfig,
    MonitorSimulator,
    RecordSource,
    SyntheticSource,
    parse_events,
)
from medstream.app import MedstreamApp
from medstream.config import SECRET_ON_COMMAND_LINE, ServerConfig
from signaling.hub import SignalingConfig
from signaling.tokens import issue_token

log = logging.getLogger("medstream.demo")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg"
CONSULTATION, BROADCAST, WARD = "demo-consultation", "demo-grand-rounds", "demo-ward"
RECORDS = ("mitdb/100", "mitdb/112", "mitdb/208")  # regular sinus; sinus; frequent PVCs
MONITOR_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DemoLinks:
    """The links the demo prints (each carries its own signed token)."""

    consultation_host: str
    consultation_expert: str
    broadcast_presenter: str
    broadcast_viewer: str
    wall: str


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `medstream demo`."""
    p = argparse.ArgumentParser(prog="medstream demo", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="HTTP + websocket port (default 8765; 0 = any)")
    p.add_argument("--ice-host", action="append", default=[], metavar="ADDR",
                   help="address offered in ICE candidates (repeatable; default 127.0.0.1)")
    p.add_argument("--secret", default=None, help=argparse.SUPPRESS)  # refused: see config.SECRET_ON_COMMAND_LINE
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with mitdb/ WFDB records (synthetic ECG if missing)")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    p.add_argument("--asystole-at", type=float, default=45.0,
                   help="seconds after start when bed-4's heart stops (for 12 s)")
    p.add_argument("--valid-for", type=float, default=12 * 3600.0, help="token validity (s)")
    p.add_argument("--record", action="append", default=[], metavar="KIND",
                   choices=("consultation", "broadcast", "monitoring"),
                   help="record every room of this kind from the start (repeatable)")
    p.add_argument("--recordings-dir", type=Path, default=Path("var/recordings"),
                   help="where recordings go (default var/recordings)")
    return p


def make_links(base_url: str, secret: str, valid_for_s: float) -> DemoLinks:
    """Sign one token per link (rooms already exist, so only hosts carry a room kind)."""
    def link(page: str, room: str, identity: str, role: str, name: str, kind: str | None = None) -> str:
        tok = issue_token(secret, room=room, identity=identity, role=role, name=name,
                          valid_for_s=valid_for_s, room_kind=kind)
        return f"{base_url}/{page}.html#token={tok}"  # a fragment never reaches servers' or proxies' logs

    return DemoLinks(
        consultation_host=link("consultation", CONSULTATION, "dr-host", "host", "Dr Host", "consultation"),
        consultation_expert=link("consultation", CONSULTATION, "dr-expert", "expert", "Dr Expert"),
        broadcast_presenter=link("broadcast", BROADCAST, "presenter", "host", "Presenter", "broadcast"),
        broadcast_viewer=link("broadcast", BROADCAST, "viewer-1", "viewer", "Viewer 1"),
        wall=link("wall", WARD, "nurse-station", "supervisor", "Nurse station"),
    )


def monitors(ws_url: str, secret: str, data: Path, asystole_at_s: float) -> list[MonitorSimulator]:
    """The simulated bedside monitors: three in the ward from records (or synthetic), bed-4
    synthetic with events, and one in the consultation."""
    def config(room: str, bed: str, seed: int) -> MonitorSimConfig:
        tok = issue_token(secret, room=room, identity=f"monitor-{room}-{bed}", role="monitor",
                          name=f"Monitor {bed}")
        return MonitorSimConfig(url=ws_url, token=tok, stream_id=bed, seed=seed)

    sims = []
    for i, rec in enumerate(RECORDS, start=1):
        path = data / rec
        if path.with_suffix(".hea").exists():
            source: RecordSource | SyntheticSource = RecordSource(path, loop=True)
        else:
            source = SyntheticSource(60.0 + 12 * i, seed=i)
        sims.append(MonitorSimulator(source, config(WARD, f"bed-{i}", i)))
    events = parse_events(f"asystole@{asystole_at_s:g}+12,tachy@{asystole_at_s + 60:g}+30:150")
    sims.append(MonitorSimulator(SyntheticSource(78.0, events, seed=4), config(WARD, "bed-4", 4)))
    sims.append(MonitorSimulator(SyntheticSource(84.0, seed=5), config(CONSULTATION, "patient", 5)))
    return sims


async def run(args: argparse.Namespace) -> int:
    """Start the node and the monitors, print the links, wait for Ctrl-C or the duration."""
    if args.secret:
        raise SystemExit(SECRET_ON_COMMAND_LINE)
    secret = os.environ.get("MEDSTREAM_SECRET") or secrets.token_urlsafe(32)
    config = ServerConfig(
        signaling=SignalingConfig(secret=secret, record_kinds=tuple(args.record)),
        recordings_dir=args.recordings_dir,
        host=args.host,
        port=args.port,
        audit_log=None,
        rooms=((CONSULTATION, "consultation"), (BROADCAST, "broadcast"), (WARD, "monitoring")),
        ice_host_addresses=tuple(args.ice_host) or ("127.0.0.1",),
        media=True,
        waveforms=True,
        recorder=True,
    )
    app = MedstreamApp(config)
    await app.start()
    tasks: list[asyncio.Task[object]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    handled = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / Windows
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
    try:
        for sim in monitors(app.ws_url, secret, args.data, args.asystole_at):
            tasks.append(asyncio.create_task(sim.run()))
        links = make_links(app.url, secret, args.valid_for)
        print(f"medstream demo on {app.url}  (landing page: {app.url}/)", flush=True)
        print("\nConsultation (with a bedside monitor):")
        print(f"  host:      {links.consultation_host}")
        print(f"  expert:    {links.consultation_expert}")
        print("\nBroadcast:")
        print(f"  presenter: {links.broadcast_presenter}")
        print(f"  viewer:    {links.broadcast_viewer}")
        print(f"\nMonitoring wall (4 beds; bed-4 asystole at {args.asystole_at:g} s, tachycardia at "
              f"{args.asystole_at + 60:g} s):")
        print(f"  wall:      {links.wall}")
        print("\nCtrl-C to stop.", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        if received:
            print(f"\n{received[0]}: stopping, finishing recordings ...", flush=True)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        for t in tasks:
            t.cancel()
        # bounded: a monitor that does not stop must not keep the recordings from finishing
        _, pending = await asyncio.wait(tasks, timeout=MONITOR_STOP_TIMEOUT_S) if tasks else (set(), set())
        if pending:
            log.warning("%d simulated monitor(s) did not stop within %g s", len(pending), MONITOR_STOP_TIMEOUT_S)
        await app.stop()  # finishes recordings first (manifests and hashes), then sockets
    if received:
        print("stopped.", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """`medstream demo [--port N] [--ice-host ADDR] [--duration S]`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 130
