"""Prometheus text exposition of the server's counters and gauges (`GET /metrics`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One metric sample: name, labels, value; `kind` is its Prometheus type."""

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    kind: str = "gauge"
    help: str = ""


def render(samples: Iterable[Sample]) -> str:
    """Render samples grouped by metric name, HELP/TYPE once per name."""
    out: list[str] = []
    seen: set[str] = set()
    for s in sorted(samples, key=lambda s: s.name):
        if s.name not in seen:
            seen.add(s.name)
            if s.help:
                out.append(f"# HELP {s.name} {s.help}")
            out.append(f"# TYPE {s.name} {s.kind}")
        labels = ""
        if s.labels:
            labels = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels) + "}"
        out.append(f"{s.name}{labels} {_number(s.value)}")
    return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))
