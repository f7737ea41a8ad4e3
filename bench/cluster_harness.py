"""A real cluster on this machine: one `redis-server` and `medstream serve --redis` nodes as
separate processes on 127.0.0.1, for the cluster tests (tests/cluster/) and bench/cluster.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.proc import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "cluster-token-secret-0123456789-abcdefghijklmnop"
CLUSTER_SECRET = "cluster-node-secret-0123456789-abcdefghijklmnop"
API_KEY = "cluster-admin-key-0123456789"


class RedisServer:
    """`redis-server` on 127.0.0.1 with its data in a temporary directory and no persistence
    (a restart loses everything: the worst case the nodes must survive)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: `apt-get install redis-server` (scripts/setup.sh --test)")
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Node:
    """One `medstream serve --redis` process."""

    def __init__(self, name: str, redis_url: str, workdir: Path, *, media: bool = False, port: int | None = None,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None, log_level: str = "INFO") -> None:
        self.name = name
        self.port = port or free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        cluster = ["--redis", redis_url, "--node-id", name] if redis_url else []  # "": a single node, no Redis
        cmd = [sys.executable, "-m", "medstream.cli", "serve", "--port", str(self.port), *cluster,
               "--audit-log", "", "--recordings-dir", str(workdir / f"rec-{name}"),
               "--log-level", log_level, *extra]
        if not media:
            cmd.append("--no-media")
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDSTREAM_")}
        self.env = {**base, "PYTHONPATH": str(REPO_ROOT), "MEDSTREAM_SECRET": SECRET,
                    "MEDSTREAM_CLUSTER_SECRET": CLUSTER_SECRET, "MEDSTREAM_API_KEY": API_KEY, **(env or {})}
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 90.0) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop(), after the process)
        self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited ({self.proc.returncode}): {self.log()[-2000:]}")
            try:
                if "--redis" not in self.cmd:
                    if self.get("/healthz")["status"] == "ok":
                        return
                elif self.get("/cluster/v1/nodes")["available"]:
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"node {self.name} did not join the cluster in {timeout_s} s: {self.log()[-2000:]}")

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {API_KEY}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye to Redis."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:  # a second signal cuts the drain (sent apart: two pending signals merge into one)
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()


def tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="medstream-cluster-"))
