"""Running the node as a service: readiness, metrics in Prometheus' own client, JSON logs.

- `Readiness` answers `/readyz`: not ready while starting or draining, nor when a part the node
  needs is unusable (the recordings disk missing, read-only or below its free-space floor; the
  webhook spool likewise). The checks touch the disk, so they run in a worker thread.
- `NodeMetrics` is the `/metrics` registry: the node's figures under their old names (a
  collector over `medstream.metrics` samples), process and platform metrics, and histograms of
  join latency, waveform relay latency and analysis step time.
- `JsonFormatter`: one JSON object per log line (`--log-format json`), for journald/Loki/ELK.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from medstream.metrics import Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class DiskNeed:
    """A directory the node writes to: it must exist (or be creatable), be writable and keep
    `min_free_bytes` free."""

    name: str
    path: Path
    min_free_bytes: int = 1024**3


def check_disk(need: DiskNeed) -> str | None:
    """Why `need` is unusable, or None (blocking: call in a worker thread)."""
    try:
        need.path.mkdir(parents=True, exist_ok=True)
        probe = need.path / f".readyz-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        free = shutil.disk_usage(need.path).free
    except OSError as exc:
        return f"{need.name} ({need.path}) is not writable: {exc.strerror or exc}"
    if free < need.min_free_bytes:
        return f"{need.name} ({need.path}) has {free // 2**20} MiB free, needs {need.min_free_bytes // 2**20} MiB"
    return None


class Readiness:
    """The node's state and the disks it needs; `check()` -> (ready, reasons)."""

    def __init__(self, disks: Iterable[DiskNeed] = ()) -> None:
        self.state = NodeState.STARTING
        self.disks = tuple(disks)

    async def check(self) -> tuple[bool, list[str]]:
        reasons = [] if self.state is NodeState.READY else [f"the node is {self.state.value}"]
        for need in self.disks:
            problem = await asyncio.to_thread(check_disk, need)
            if problem is not None:
                reasons.append(problem)
        return not reasons, reasons


class _SampleCollector:
    """The node's figures (`medstream.metrics.Sample`s) as Prometheus metric families, names kept."""

    def __init__(self, samples: Callable[[], list[Sample]]) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for s in self._samples():
            family = families.get(s.name)
            if family is None:
                labels = [k for k, _ in s.labels]
                family = (CounterMetricFamily(s.name, s.help, labels=labels) if s.kind == "counter"
                          else GaugeMetricFamily(s.name, s.help, labels=labels))
                families[s.name] = family
            family.add_metric([v for _, v in s.labels], s.value)  # type: ignore[attr-defined]
        yield from families.values()


class NodeMetrics:
    """One registry per node (several nodes in one test process must not share one)."""

    def __init__(self, samples: Callable[[], list[Sample]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SampleCollector(samples))  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.join_latency = Histogram(
            "medstream_join_latency_seconds", "websocket opened -> participant joined",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.relay_latency = Histogram(
            "medstream_waveform_relay_latency_seconds",
            "a waveform frame's time in the server: received from the monitor -> written to a viewer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=self.registry)
        self.analysis_step = Histogram(
            "medstream_waveform_analysis_step_seconds", "one ECG analysis step for every stream (worker thread)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ["exception"]}` per line, UTC ISO 8601 times."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(out, ensure_ascii=False)
