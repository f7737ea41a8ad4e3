"""`medstream ecg-eval`: score the live QRS detector against WFDB reference beats.

Each record is streamed through `PanTompkinsDetector` in random-sized chunks (seeded) exactly as
the server would feed it; every beat's emission delay is the end of the chunk that revealed it
minus the reference R-peak time. neurokit2's default ``ecg_peaks`` (offline, zero-phase, whole
record) is scored side by side. Scoring is EC57-style (see `dsp.records.score_beats`).
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from dsp.qrs import PanTompkinsDetector
from dsp.records import (
    LEARNING_PERIOD_S,
    BeatScore,
    EcgRecord,
    load_record,
    resample_record,
    score_beats,
)


@dataclass(frozen=True)
class RecordResult:
    """Scores of one record: our live detector, neurokit2, and our emission delays (ms)."""

    name: str
    medstream: BeatScore
    neurokit2: BeatScore
    delays_ms: tuple[float, ...]


def stream_detect(
    record: EcgRecord, rng: np.random.Generator, max_chunk_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Run the live detector over a record in random chunks of 1..max_chunk_s samples.

    Returns (R-peak sample indices, emission sample index = end of the revealing chunk).
    """
    fs = record.sampling_rate_hz
    det = PanTompkinsDetector(fs)
    x = record.signal_mv
    max_chunk = max(1, int(round(max_chunk_s * fs)))
    beats: list[int] = []
    emitted: list[int] = []
    pos = 0
    while pos < x.size:
        n = int(rng.integers(1, max_chunk + 1))
        found = det.process(x[pos : pos + n])
        pos = min(pos + n, x.size)
        beats.extend(found)
        emitted.extend([pos] * len(found))
    last = det.flush()  # the end of the record decides the last beat(s)
    beats.extend(last)
    emitted.extend([x.size] * len(last))
    return np.asarray(beats, dtype=np.int64), np.asarray(emitted, dtype=np.int64)


def neurokit2_detect(record: EcgRecord) -> np.ndarray:
    """neurokit2's default detector (``ecg_peaks``), offline over the whole record."""
    import neurokit2 as nk

    _, info = nk.ecg_peaks(record.signal_mv, sampling_rate=int(round(record.sampling_rate_hz)))
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def _emission_delays_ms(
    record: EcgRecord, beats: np.ndarray, emitted: np.ndarray, skip_s: float
) -> list[float]:
    """Delay of each detection matched to a reference beat (nearest within 150 ms), in ms."""
    fs = record.sampling_rate_hz
    ref = np.sort(record.beats)
    if ref.size == 0 or beats.size == 0:
        return []
    pos = np.clip(np.searchsorted(ref, beats), 1, ref.size - 1)
    nearest = np.where(
        np.abs(ref[pos] - beats) < np.abs(ref[pos - 1] - beats), ref[pos], ref[pos - 1]
    )
    ok = (np.abs(nearest - beats) <= 0.150 * fs) & (beats >= skip_s * fs)
    return ((emitted[ok] - nearest[ok]) * 1000.0 / fs).tolist()


def evaluate_record(
    path: str, seed: int, skip_s: float, max_chunk_s: float, fs: float | None = None
) -> RecordResult:
    """Score one record (both detectors) with chunking drawn from ``seed``, optionally
    resampled to ``fs`` Hz first."""
    record = load_record(path)
    if fs is not None and fs != record.sampling_rate_hz:
        record = resample_record(record, fs)
    rng = np.random.default_rng([seed, zlib.crc32(record.name.encode())])
    beats, emitted = stream_detect(record, rng, max_chunk_s)
    ours = score_beats(record, beats, skip_s)
    theirs = score_beats(record, neurokit2_detect(record), skip_s)
    delays = _emission_delays_ms(record, beats, emitted, skip_s)
    return RecordResult(record.name, ours, theirs, tuple(delays))


def _score_json(s: BeatScore) -> dict[str, float]:
    return {"tp": s.tp, "fp": s.fp, "fn": s.fn, "se": s.se, "ppv": s.ppv}


def _entry(ours: BeatScore, theirs: BeatScore, delays: list[float]) -> dict[str, object]:
    return {
        "medstream": _score_json(ours),
        "neurokit2": _score_json(theirs),
        "delay_ms_median": float(np.median(delays)) if delays else None,
        "delay_ms_max": float(np.max(delays)) if delays else None,
    }


def _line(name: str, ours: BeatScore, theirs: BeatScore, delays: list[float]) -> str:
    med = f"{np.median(delays):6.0f}" if delays else "     -"
    mx = f"{np.max(delays):6.0f}" if delays else "     -"
    return (
        f"{name:>8} | {ours.tp:6d} {ours.fp:5d} {ours.fn:5d} {100 * ours.se:7.2f} "
        f"{100 * ours.ppv:7.2f} | {theirs.tp:6d} {theirs.fp:5d} {theirs.fn:5d} "
        f"{100 * theirs.se:7.2f} {100 * theirs.ppv:7.2f} | {med} {mx}"
    )


WFDB_SUFFIXES = (".hea", ".dat", ".atr", ".xws", ".qrs")


def record_names(paths: list[str]) -> list[str]:
    """WFDB record names from what a person typed: `100`, `100.hea`, or a shell glob such as
    `mitdb/1*` that also matched each record's `.dat`/`.atr` (each record once, in order).

    A file with a WFDB suffix but no header of its own (e.g. `102-0.atr`) is skipped; a name
    without a header raises FileNotFoundError."""
    names: dict[str, None] = {}
    for raw in paths:
        suffix = next((x for x in WFDB_SUFFIXES if raw.endswith(x)), "")
        name = raw[: len(raw) - len(suffix)] if suffix else raw
        if not Path(name + ".hea").exists():
            if suffix and suffix != ".hea":
                continue  # an annotation or signal file without a record of that name
            raise FileNotFoundError(f"record {name!r}: expected {name}.hea, not found")
        names.setdefault(name, None)
    if not names:
        raise FileNotFoundError(f"no WFDB record among {paths[:5]}")
    return list(names)


def main(argv: list[str]) -> int:
    """Entry point of `medstream ecg-eval RECORD... [--seed N] [--json FILE] [--no-skip]`."""
    parser = argparse.ArgumentParser(prog="medstream ecg-eval", description=__doc__)
    parser.add_argument("records", nargs="+", metavar="RECORD", help="WFDB path, no extension")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random chunk sizes")
    parser.add_argument("--json", metavar="FILE", help="write per-record and total scores")
    parser.add_argument(
        "--skip-first-5min",
        dest="skip",
        action="store_true",
        help="do not score the first 5 min (EC57 learning period)",
    )
    parser.add_argument("--no-skip", dest="skip", action="store_false", help="score it (default)")
    parser.add_argument(
        "--max-chunk-s", type=float, default=0.25, help="chunks are 1 sample..this long (s)"
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--fs", type=float, default=None, help="resample records to this rate first (Hz)"
    )
    args = parser.parse_args(argv)
    try:
        records = record_names(args.records)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    skip_s = LEARNING_PERIOD_S if args.skip else 0.0
    jobs = [(rec, args.seed, skip_s, args.max_chunk_s, args.fs) for rec in records]
    if args.processes > 1 and len(jobs) > 1:
        with Pool(min(args.processes, len(jobs))) as pool:
            results = pool.starmap(evaluate_record, jobs)
    else:
        results = [evaluate_record(*job) for job in jobs]

    print(f"first 5 min {'skipped' if args.skip else 'scored'}; seed {args.seed}; "
          f"chunks 1 sample..{args.max_chunk_s:g} s"
          + (f"; resampled to {args.fs:g} Hz" if args.fs else ""))
    print(f"{'record':>8} | {'medstream (live, causal)':^37} | {'neurokit2 ecg_peaks':^37} |"
          f" delay ms")
    print(f"{'':>8} | {'tp':>6} {'fp':>5} {'fn':>5} {'Se%':>7} {'+P%':>7} | {'tp':>6} {'fp':>5} "
          f"{'fn':>5} {'Se%':>7} {'+P%':>7} | {'median':>6} {'max':>6}")
    total_ours, total_theirs = BeatScore(0, 0, 0), BeatScore(0, 0, 0)
    all_delays: list[float] = []
    report: dict[str, object] = {"skip_first_5min": args.skip, "seed": args.seed, "records": {}}
    for r in results:
        print(_line(r.name, r.medstream, r.neurokit2, list(r.delays_ms)))
        total_ours += r.medstream
        total_theirs += r.neurokit2
        all_delays.extend(r.delays_ms)
        report["records"][r.name] = _entry(r.medstream, r.neurokit2, list(r.delays_ms))  # type: ignore[index]
    print(_line("total", total_ours, total_theirs, all_delays))
    report["total"] = _entry(total_ours, total_theirs, all_delays)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
