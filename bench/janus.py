"""medstream's relay side by side with Janus (issue 17): same clients, clip and accounting.

    unshare --net -- sh -c 'ip link set lo up && exec python -m bench.janus --json bench/results/janus.json'
    ... python -m bench.janus --quick          # 2 load points, 1 round, 6 s windows

Both servers run in their own process pinned to core 0 (`taskset`), the aiortc client workers
(`bench.sfu_clients`: P publishers of a pre-encoded VP8 ~0.6 Mbit/s 20 fps clip + Opus, S
subscribers counting decrypted RTP without decoding) to core 1. At every load point the runs
are interleaved (Janus, medstream, medstream, Janus, ...) for `--rounds` pairs. Figures per run
(`bench.sfu.run_point`): server CPU (user+sys from /proc) per forwarded packet and per video
stream-second, RSS idle and per subscriber, video frame loss, received fps per stream, relay
latency p50/p99. Ratios medstream / Janus (medians over rounds) are printed and written as JSON.

Janus: Debian's `janus` 1.1.2 (installed with apt-get when missing and we are root; skipped
with a message otherwise), VideoRoom plugin and websockets transport only, a private config in
a temporary directory, rooms created through the API (`bitrate=0`, `fir_freq=0`). Janus skips
interfaces flagged loopback when it gathers host candidates, so on a loopback-only machine it
offers none: a small `LD_PRELOAD` shim around `getifaddrs()`, compiled here with gcc, presents
`lo` as an ordinary interface and hides the others, so 127.0.0.1 is its only candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.proc import free_port, rss_mb, wait_for_port

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
DEFAULT_POINTS = "2x4,1x20,4x8,1x40,1x80"
QUICK_POINTS = "2x4,1x40"

_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <string.h>
/* Present `lo` as an ordinary interface and hide every other one (their addresses removed). */
int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **) = 0;
    if (!real) real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int rc = real(ifap);
    if (rc != 0) return rc;
    for (struct ifaddrs *i = *ifap; i; i = i->ifa_next) {
        if (i->ifa_name && strcmp(i->ifa_name, "lo") == 0) i->ifa_flags &= ~IFF_LOOPBACK;
        else { i->ifa_addr = 0; i->ifa_flags &= ~IFF_UP; }
    }
    return 0;
}
"""


def ensure_janus() -> str | None:
    """None if Janus can run here, else why not (installs it with apt-get when root)."""
    if shutil.which("janus") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return "janus is not installed and we cannot apt-get it (not root)"
        r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "janus"],
                           capture_output=True, text=True,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0 or shutil.which("janus") is None:
            return f"apt-get install janus failed: {r.stderr.strip()[-300:]}"
    if shutil.which("gcc") is None:
        return "gcc is needed to build the getifaddrs shim"
    for sub in ("plugins/libjanus_videoroom.so", "transports/libjanus_websockets.so"):
        if not (JANUS_LIB / sub).exists():
            return f"{JANUS_LIB / sub} is missing"
    return None


def prepare_janus(workdir: Path) -> Path:
    """Write Janus's private config (VideoRoom + websockets only) and the shim; returns its dir."""
    root = workdir / "janus"
    for sub in ("conf", "plugins", "transports", "events", "loggers"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "plugins" / "libjanus_videoroom.so").symlink_to(JANUS_LIB / "plugins/libjanus_videoroom.so")
    (root / "transports" / "libjanus_websockets.so").symlink_to(
        JANUS_LIB / "transports/libjanus_websockets.so")
    shim_c = root / "shim.c"
    shim_c.write_text(_SHIM_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(root / "shim.so"), str(shim_c), "-ldl"],
                   check=True)
    conf = root / "conf"
    (conf / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{conf}"
    plugins_folder = "{root / 'plugins'}"
    transports_folder = "{root / 'transports'}"
    events_folder = "{root / 'events'}"
    loggers_folder = "{root / 'loggers'}"
    debug_level = 3
    admin_secret = "bench-unused"
    protected_folders = []
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    nice_debug = false
    full_trickle = false
    ice_enforce_list = "lo"
}}
plugins: {{
}}
transports: {{
}}
events: {{
    broadcast = false
}}
""")
    (conf / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return root


def start_janus(root: Path, core: int) -> tuple[subprocess.Popen[str], str, float]:
    """Start Janus pinned to `core`; returns the process, its websocket URL and idle RSS (MiB)."""
    port = free_port()
    (root / "conf" / "janus.transport.websockets.jcfg").write_text(f"""general: {{
    json = "compact"
    ws = true
    ws_port = {port}
    ws_ip = "127.0.0.1"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
""")
    env = {**os.environ, "LD_PRELOAD": str(root / "shim.so")}
    log = open(root / "janus.log", "a")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(["taskset", "-c", str(core), "janus", "-F", str(root / "conf"),
                             "-C", str(root / "conf" / "janus.jcfg"), "-i", "127.0.0.1", "-o"],
                            stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for_port(port, 30)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"janus did not listen; see {root / 'janus.log'}") from None
    time.sleep(0.5)
    return proc, f"ws://127.0.0.1:{port}", rss_mb(proc.pid)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def summarise(results: list[dict[str, Any]], points: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Per load point: medians per server and the ratio medstream / Janus."""
    rows = []
    keys = ("server_cpu_us_per_packet", "server_cpu_s_per_stream_s", "server_cpu_pct",
            "forwarded_pps", "loss_pct", "fps_per_stream", "latency_ms_p50", "latency_ms_p99",
            "server_rss_mb", "rss_per_subscriber_kib", "server_rss_idle_mb")
    for pubs, subs in points:
        row: dict[str, Any] = {"point": f"{pubs}:{subs}"}
        for server in ("janus", "medstream"):
            runs = [r for r in results if r["relay"] == server and r["publishers"] == pubs
                    and r["subscribers"] == subs and "failed" not in r]
            row[server] = {k: _median(runs, k) for k in keys} | {"runs": len(runs)}
        ours, theirs = row["medstream"], row["janus"]
        row["ratio"] = {k: (round(ours[k] / theirs[k], 2) if ours.get(k) and theirs.get(k) else None)
                        for k in ("server_cpu_us_per_packet", "server_cpu_s_per_stream_s",
                                  "rss_per_subscriber_kib", "latency_ms_p99")}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from bench import sfu

    p = argparse.ArgumentParser(prog="python -m bench.janus", description=__doc__.split("\n")[0])
    p.add_argument("--points", type=sfu._parse_points, default=None,
                   help=f"publishers x subscribers, default {DEFAULT_POINTS}")
    p.add_argument("--rounds", type=int, default=2, help="interleaved pairs per point (default 2)")
    p.add_argument("--seconds", type=float, default=12.0, help="measurement window per run")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_POINTS}, 1 round, 6 s windows")
    p.add_argument("--servers", default="janus,medstream")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--profile", type=Path, help="py-spy raw profile of medstream at the last point")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    points = args.points or sfu._parse_points(QUICK_POINTS if args.quick else DEFAULT_POINTS)
    rounds, seconds = (1, 6.0) if args.quick else (args.rounds, args.seconds)
    servers = [s for s in args.servers.split(",") if s]
    if (os.cpu_count() or 0) < 2:
        print("bench.janus: needs 2 cores (servers on core 0, clients on core 1)", file=sys.stderr)
        return 2
    skipped = None
    if "janus" in servers:
        skipped = ensure_janus()
        if skipped:
            print(f"bench.janus: Janus skipped: {skipped}", file=sys.stderr)
            servers.remove("janus")
    os.sched_setaffinity(0, {sfu.CLIENT_CORE})
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-janus-") as tmp:
        workdir = Path(tmp)
        clip = workdir / "clip.webm"
        clip_info = sfu.encode_clip(clip, fps=20, bitrate_bps=600_000)
        if "janus" in servers:
            sfu.JANUS_ROOT = prepare_janus(workdir)
        for i, (pubs, subs) in enumerate(points):
            for r in range(rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for server in order:
                    profile = args.profile if (server == "medstream" and i == len(points) - 1
                                               and r == rounds - 1) else None
                    run = sfu.run_point(server, pubs, subs, seconds, clip, args.workers, workdir,
                                        profile)
                    run["round"] = r
                    results.append(run)
                    print(json.dumps({k: run.get(k) for k in (
                        "relay", "publishers", "subscribers", "server_cpu_us_per_packet",
                        "forwarded_pps", "loss_pct", "fps_per_stream", "latency_ms_p50",
                        "latency_ms_p99", "server_rss_mb", "rss_per_subscriber_kib", "failed")}),
                        flush=True)
                    if args.json:
                        args.json.write_text(json.dumps({"clip": clip_info, "results": results}) + "\n")
    table = summarise(results, points)
    print(f"{'point':>7} | {'Janus us/pkt':>12} | {'medstream':>9} | {'ratio':>5} | "
          f"{'RSS/sub KiB J/m':>16} | {'p99 ms J/m':>11} | {'loss % J/m':>10}")
    for row in table:
        j, m = row["janus"], row["medstream"]
        print(f"{row['point']:>7} | {j['server_cpu_us_per_packet']!s:>12} | "
              f"{m['server_cpu_us_per_packet']!s:>9} | {row['ratio']['server_cpu_us_per_packet']!s:>5} | "
              f"{j['rss_per_subscriber_kib']!s:>7}/{m['rss_per_subscriber_kib']!s:<8} | "
              f"{j['latency_ms_p99']!s:>5}/{m['latency_ms_p99']!s:<5} | {j['loss_pct']!s}/{m['loss_pct']!s}")
    summary = {"benchmark": "bench.janus", "clip": clip_info, "rounds": rounds, "seconds": seconds,
               "pinning": {"servers_core": sfu.SERVER_CORE, "clients_core": sfu.CLIENT_CORE},
               "janus_skipped": skipped, "loadavg_end": os.getloadavg(), "table": table,
               "results": results}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
