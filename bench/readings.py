"""Reading-desk cost: CPU per 12-lead ECG at each step the node runs off the event loop.

    python -m bench.readings [RECORD_DIR] [--repeat N] [--json FILE]

For every WFDB record of RECORD_DIR (default ../shared/data/ecg/12lead/cpsc2018), through a real
`ReadingService` on a scratch store: `prepare` (decode, validate, measure, triage), `submit_prepared`
(store the ECG as WFDB, queue; this one runs on the loop), `ecg_view_json` (what the 12-lead
viewer fetches, and its JSON size), `render_report` (the PDF). CPU is this thread's CPU time
(`time.thread_time`), so other work on a shared machine does not inflate it; wall time is printed
beside it for reference. Prints figures and writes JSON; never asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from readings.service import ReadingService, ecg_view_json
from readings.store import ReadingStore
from readings.workflow import Actor, Patient, Report, Role

T = TypeVar("T")
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg" / "12lead" / "cpsc2018"


def _timed(into: dict[str, list[float]], key: str, fn: Callable[..., T], *args: Any) -> T:
    cpu, wall = time.thread_time(), time.perf_counter()
    out = fn(*args)
    into.setdefault(key + "_cpu_ms", []).append((time.thread_time() - cpu) * 1000)
    into.setdefault(key + "_wall_ms", []).append((time.perf_counter() - wall) * 1000)
    return out


def run(directory: Path, repeat: int) -> dict[str, Any]:
    records = sorted(p.with_suffix("") for p in directory.glob("*.hea"))
    t: dict[str, list[float]] = {}
    sizes: list[int] = []
    clinic = Actor("dr-wang", Role.CLINIC, "clinic-a")
    reader = Actor("dr-li", Role.READER, "centre")
    with tempfile.TemporaryDirectory() as tmp:
        service = ReadingService("centre", ReadingStore(tmp))
        for n in range(repeat):
            for rec in records:
                files = {p.name: p.read_bytes() for p in rec.parent.glob(rec.name + ".*")
                         if p.suffix in (".hea", ".dat", ".mat")}
                upload, assessment = _timed(t, "prepare", service.prepare, files)
                req = _timed(t, "submit", service.submit_prepared, clinic, upload, assessment, f"{rec.name}-{n}",
                             Patient(rec.name), time.time())
                body = _timed(t, "view_json", lambda r: json.dumps(ecg_view_json(service.load_ecg(r))), req)
                sizes.append(len(body))
                service.claim(reader, req.request_id, time.time())
                signed = service.sign_only(reader, req.request_id, Report("窦性心律", (), "测试"), time.time())
                _timed(t, "render_pdf", service.render_report, signed)
    out: dict[str, Any] = {"records": len(records), "repeat": repeat, "directory": str(directory)}
    for key, values in t.items():
        out[key] = {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}
    out["view_json_kb"] = {"median": round(statistics.median(sizes) / 1024, 1), "max": round(max(sizes) / 1024, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = run(args.directory, args.repeat)
    for key in ("prepare", "submit", "view_json", "render_pdf"):
        cpu, wall = result[f"{key}_cpu_ms"], result[f"{key}_wall_ms"]
        print(f"{key:<11} CPU median {cpu['median']:7.1f} ms (max {cpu['max']:7.1f}); wall median {wall['median']:7.1f} ms")
    print(f"viewer JSON median {result['view_json_kb']['median']} KiB (max {result['view_json_kb']['max']})"
          f" over {result['records']} records x {result['repeat']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
