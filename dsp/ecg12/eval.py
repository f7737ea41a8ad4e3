"""`medstream ecg12-eval`: measurements and triage flags of 12-lead records, agreement with their labels.

Labels come from the WFDB header's ``Dx`` line: CPSC 2018 class names (first release) or SNOMED
CT codes (PhysioNet/CinC 2021). A flag is scored only on records whose labels say clearly
whether it should fire: e.g. a nonspecific intraventricular conduction delay (NSIVCB) or an
incomplete RBBB is neither a positive nor a negative for "wide QRS", and an "ST changes" label
is neither for ST depression. ``--synthetic N`` also scores the interval measurements on N
synthetic ECGs (`dsp.ecg12.synthetic`) against the IEC 60601-2-25 limits.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsp.ecg12.flags import FlagKind, Sex, triage
from dsp.ecg12.measurements import MeasurementError, analyze
from dsp.ecg12.record import Ecg12Error
from dsp.ecg12.synthetic import random_params, synthesize
from dsp.ecg12.wfdb_io import read_wfdb

#: label name -> SNOMED CT codes and CPSC 2018 class names meaning it
LABELS: dict[str, frozenset[str]] = {
    "AF": frozenset({"164889003", "164890007", "AF"}),  # AF, atrial flutter
    "I-AVB": frozenset({"270492004", "I-AVB"}),
    "LBBB": frozenset({"164909002", "733534002", "LBBB"}),
    "RBBB": frozenset({"59118001", "713427006", "RBBB"}),
    "IVCD": frozenset({"698252002", "713426002", "445118002"}),  # NSIVCB, IRBBB, LAFB: uncertain width
    "STE": frozenset({"164931005", "STE"}),
    "STD": frozenset({"429622005", "STD"}),
    "ST-other": frozenset({"55930002", "428750005", "164930006"}),  # ST changes, NSSTTA, ST abnormal
    "LQT": frozenset({"111975006"}),
}

#: flag -> (labels that make it a positive, labels that exclude the record from scoring it)
FLAG_TRUTH: dict[FlagKind, tuple[frozenset[str], frozenset[str]]] = {
    FlagKind.WIDE_QRS: (frozenset({"LBBB", "RBBB"}), frozenset({"IVCD"})),
    FlagKind.LBBB_PATTERN: (frozenset({"LBBB"}), frozenset({"IVCD"})),
    FlagKind.RBBB_PATTERN: (frozenset({"RBBB"}), frozenset({"IVCD"})),
    FlagKind.AV_BLOCK_1: (frozenset({"I-AVB"}), frozenset()),
    FlagKind.AF_SUSPECTED: (frozenset({"AF"}), frozenset()),
    FlagKind.STEMI_SUSPECTED: (frozenset({"STE"}), frozenset()),
    FlagKind.ST_DEPRESSION: (frozenset({"STD"}), frozenset({"ST-other"})),
    FlagKind.QTC_PROLONGED: (frozenset({"LQT"}), frozenset()),
}

#: IEC 60601-2-25:2011 201.12.4.102.3.2, biological ECGs (CSE): (|mean| limit, SD limit) in ms
IEC_LIMITS_MS: dict[str, tuple[float, float]] = {
    "p_duration_ms": (10.0, 15.0),
    "pr_ms": (10.0, 10.0),
    "qrs_ms": (10.0, 10.0),
    "qt_ms": (25.0, 30.0),
}


@dataclass(frozen=True)
class HeaderInfo:
    """What a header's comments say about the patient and the diagnosis."""

    labels: frozenset[str]
    raw_dx: str | None
    sex: Sex
    age_years: float | None


def parse_header(comments: list[str]) -> HeaderInfo:
    """Labels, sex and age from WFDB header comments (``Dx:``, ``Sex:``, ``Age:``; PTB's ``sex:``/``age:``)."""
    raw_dx: str | None = None
    sex, age = Sex.UNKNOWN, None
    for line in comments:
        key, _, value = line.strip().lstrip("#").strip().partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "dx":
            raw_dx = value
        elif key == "sex":
            sex = {"m": Sex.MALE, "male": Sex.MALE, "f": Sex.FEMALE, "female": Sex.FEMALE}.get(
                value.lower(), Sex.UNKNOWN
            )
        elif key == "age":
            match = re.match(r"\d+(\.\d+)?", value)
            age = float(match.group(0)) if match else None
    labels: set[str] = set()
    if raw_dx is not None:
        tokens = {t.strip() for t in raw_dx.split(",") if t.strip()}
        for name, codes in LABELS.items():
            if tokens & codes:
                labels.add(name)
    return HeaderInfo(labels=frozenset(labels), raw_dx=raw_dx, sex=sex, age_years=age)


def evaluate_record(path: Path) -> dict[str, object]:
    """Measure, flag and label one record; errors (invalid ECG, not measurable) are reported, not raised."""
    name = path.name
    try:
        ecg, comments = read_wfdb(path)
    except (Ecg12Error, FileNotFoundError) as exc:
        return {"record": name, "error": str(exc)}
    info = parse_header(comments)
    try:
        analysis = analyze(ecg)
    except MeasurementError as exc:
        return {"record": name, "error": str(exc), "labels": sorted(info.labels), "dx": info.raw_dx}
    result = triage(analysis.measurements, info.sex, info.age_years)
    return {
        "record": name,
        "sampling_rate_hz": ecg.sampling_rate_hz,
        "duration_s": round(ecg.duration_s, 2),
        "dx": info.raw_dx,
        "labels": sorted(info.labels),
        "sex": info.sex.value,
        "age": info.age_years,
        "measurements": analysis.measurements.to_json(),
        "triage": result.to_json(),
        "flags": sorted(k.value for k in result.kinds()),
    }


def agreement(results: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    """Per-flag TP/FP/FN/TN, sensitivity and specificity over labelled, measured records."""
    table: dict[str, dict[str, object]] = {}
    for kind, (positive, exclude) in FLAG_TRUTH.items():
        tp = fp = fn = tn = 0
        missed: list[str] = []
        false: list[str] = []
        for r in results:
            if "error" in r or r.get("dx") is None:
                continue
            labels = set(r["labels"])  # type: ignore[call-overload]
            is_pos = bool(labels & positive)
            if not is_pos and labels & exclude:
                continue
            fired = kind.value in r["flags"]  # type: ignore[operator]
            if is_pos and fired:
                tp += 1
            elif is_pos:
                fn += 1
                missed.append(str(r["record"]))
            elif fired:
                fp += 1
                false.append(str(r["record"]))
            else:
                tn += 1
        table[kind.value] = {
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "tn": tn,
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
            "missed": missed,
            "false_positives": false,
        }
    return table


def synthetic_errors(n: int, seed: int, sampling_rate_hz: float = 500.0, noise_scale: float = 1.0) -> dict[str, object]:
    """Error (measured - true) mean and SD per interval over ``n`` synthetic ECGs, with the IEC limits."""
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {
        k: [] for k in ("heart_rate_bpm", "p_duration_ms", "pr_ms", "qrs_ms", "qt_ms", "axis_deg")
    }
    missing: dict[str, int] = {k: 0 for k in errors}
    for _ in range(n):
        params = random_params(rng, sampling_rate_hz, noise_scale)
        ecg, truth = synthesize(params, rng)
        m = analyze(ecg).measurements
        pairs = {
            "heart_rate_bpm": (m.heart_rate_bpm, truth.heart_rate_bpm),
            "p_duration_ms": (m.p_duration_ms, truth.p_duration_ms),
            "pr_ms": (m.pr_ms, truth.pr_ms),
            "qrs_ms": (m.qrs_ms, truth.qrs_ms),
            "qt_ms": (m.qt_ms, truth.qt_ms),
            "axis_deg": (m.axis_deg, truth.axis_deg),
        }
        for key, (measured, true) in pairs.items():
            if measured is None:
                missing[key] += 1
                continue
            err = measured - true
            if key == "axis_deg":
                err = (err + 180.0) % 360.0 - 180.0
            errors[key].append(float(err))
    out: dict[str, object] = {"n": n, "seed": seed, "sampling_rate_hz": sampling_rate_hz, "noise_scale": noise_scale}
    for key, values in errors.items():
        arr = np.asarray(values)
        mean = float(arr.mean()) if arr.size else math.nan
        sd = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
        entry: dict[str, object] = {
            "mean": round(mean, 2),
            "sd": round(sd, 2),
            "max_abs": round(float(np.abs(arr).max()), 1) if arr.size else None,
            "not_measured": missing[key],
        }
        if key in IEC_LIMITS_MS:
            mean_limit, sd_limit = IEC_LIMITS_MS[key]
            entry["iec_mean_limit"] = mean_limit
            entry["iec_sd_limit"] = sd_limit
            entry["meets_iec"] = bool(abs(mean) <= mean_limit and sd <= sd_limit and missing[key] == 0)
        out[key] = entry
    return out


def _fmt(v: object) -> str:
    return "-" if v is None else f"{v:.0f}" if isinstance(v, float) else str(v)


def _print_record(r: dict[str, object]) -> None:
    if "error" in r:
        print(f"{r['record']:<10} rejected: {r['error']}")
        return
    m = r["measurements"]
    assert isinstance(m, dict)
    print(
        f"{r['record']:<10} HR {_fmt(m['heart_rate_bpm']):>3} {'irreg' if not m['rhythm_regular'] else 'reg  '} "
        f"P {_fmt(m['p_duration_ms']):>3} PR {_fmt(m['pr_ms']):>3} QRS {_fmt(m['qrs_ms']):>3} QT {_fmt(m['qt_ms']):>3} "
        f"QTcB {_fmt(m['qtc_bazett_ms']):>3} QTcF {_fmt(m['qtc_fridericia_ms']):>3} axis {_fmt(m['axis_deg']):>4}  "
        f"labels {','.join(r['labels']) or '-'}  flags {','.join(r['flags']) or '-'}"  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``medstream ecg12-eval``."""
    parser = argparse.ArgumentParser(prog="medstream ecg12-eval", description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="*", help="WFDB record paths (without extension; .hea accepted)")
    parser.add_argument("--json", dest="json_out", help="write all results to this JSON file")
    parser.add_argument(
        "--synthetic", type=int, default=0, metavar="N", help="also score intervals on N synthetic ECGs"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic ECGs")
    parser.add_argument("--fs", type=float, default=500.0, help="sampling rate of the synthetic ECGs (Hz)")
    parser.add_argument("--noise-scale", type=float, default=1.0, help="multiply the synthetic noise, wander and mains")
    args = parser.parse_args(argv)
    if not args.records and not args.synthetic:
        parser.error("give RECORD paths and/or --synthetic N")
    results = []
    paths = dict.fromkeys(Path(rec[:-4] if rec.endswith((".hea", ".mat", ".dat")) else rec) for rec in args.records)
    for path in paths:  # "A*" matches A0001.hea and A0001.mat: each record once
        r = evaluate_record(path)
        _print_record(r)
        results.append(r)
    out: dict[str, object] = {"records": results}
    if results:
        table = agreement(results)
        out["agreement"] = table
        print("\nflag agreement with the records' labels (labelled, measured records):")
        print(f"{'flag':<24} {'TP':>3} {'FN':>3} {'FP':>3} {'TN':>3}  {'Se':>5} {'Sp':>5}")
        for flag, row in table.items():
            se, sp = row["sensitivity"], row["specificity"]
            print(
                f"{flag:<24} {row['tp']:>3} {row['fn']:>3} {row['fp']:>3} {row['tn']:>3}  "
                f"{'-' if se is None else f'{se:.2f}':>5} {'-' if sp is None else f'{sp:.2f}':>5}"
            )
    if args.synthetic:
        syn = synthetic_errors(args.synthetic, args.seed, args.fs, args.noise_scale)
        out["synthetic"] = syn
        print(
            f"\nsynthetic ECGs: n={syn['n']} seed={syn['seed']} fs={syn['sampling_rate_hz']:g} Hz "
            f"noise x{syn['noise_scale']:g}; error = measured - true"
        )
        for key, entry in syn.items():
            if not isinstance(entry, dict):
                continue
            iec = (
                f"IEC |mean|<={entry['iec_mean_limit']:g} SD<={entry['iec_sd_limit']:g}: {'met' if entry['meets_iec'] else 'NOT met'}"
                if "iec_mean_limit" in entry
                else ""
            )
            print(f"  {key:<15} mean {entry['mean']:+7.2f}  SD {entry['sd']:6.2f}  max|e| {entry['max_abs']}  {iec}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
