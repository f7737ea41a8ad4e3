"""`medstream alarm-eval`: stream WFDB records through the live analyzer, report alarms and HR.

Every record is one stream of one `MultiStreamAnalyzer`, fed exactly as the server feeds it:
chunks of ``--chunk-s`` (monitors send 100 ms) queued as they "arrive", one ``process()`` every
``--step-s`` of signal time (the relay's analysis step, 0.2 s). All records run side by side in
the same analyzer (streams of equal rate are batched, as on a monitoring wall). Times in the
output are seconds from the record's start; an alarm's ``raised_s``/``cleared_s`` are the end of
the analyzer's 0.25 s analysis step (in signal time) that raised/cleared it, ``since_s`` where
the condition began. The analyzer evaluates its alarms on that grid of signal time, so the
alarms do not depend on ``--chunk-s`` or ``--step-s`` (tested); the wall shows them when the
next ``process()`` after that step runs.

When the record has a ``.atr`` annotation file, its rhythm annotations are used to score the
alarms (`score_alarms`): latency of a VF/VT alarm after each annotated VF/VFL/VT episode, and
physiological alarms raised outside those episodes (and outside annotated noise) that the
reference beats do not justify, per monitored hour.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsp.alarms import AlarmKind, AlarmLimits
from dsp.analyzer import MultiStreamAnalyzer
from dsp.ventricular import VentricularParams

VENTRICULAR_KINDS = frozenset({AlarmKind.VENTRICULAR_FIBRILLATION.value,
                               AlarmKind.VENTRICULAR_TACHYCARDIA.value})
PHYSIOLOGICAL_KINDS = frozenset({
    AlarmKind.ASYSTOLE.value, AlarmKind.EXTREME_BRADYCARDIA.value,
    AlarmKind.EXTREME_TACHYCARDIA.value, AlarmKind.BRADYCARDIA.value,
    AlarmKind.TACHYCARDIA.value, *VENTRICULAR_KINDS,
})
#: rhythm labels of ventricular episodes an alarm must catch, and of unscored noise
_VENTRICULAR_RHYTHMS = ("(VF", "(VFL", "(VT")
_NOISE_RHYTHMS = ("(NOISE",)
#: an alarm raised this long after an episode ended still belongs to it (hold-offs, latency)
EPISODE_GRACE_S = 10.0
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
#: ventricular beat labels (AAMI class V: premature ventricular contraction, ventricular escape)
_VENTRICULAR_BEATS = frozenset("VE")


@dataclass(frozen=True)
class VentricularRun:
    """Consecutive ventricular beats (``V``/``E``) of a record's reference labels, seconds.

    ``met_s`` is when the run meets the VT alarm's own definition (`VentricularParams`: at
    least ``vt_run_beats`` consecutive ventricular beats whose mean rate from the run's first
    beat is at least ``vt_rate_bpm``): the R peak of the beat that completes it (None: never).
    """

    start_s: float
    end_s: float
    beats: int
    rate_bpm: float
    met_s: float | None

    @property
    def kind(self) -> str:
        """``vt`` (meets the definition), ``run`` (3 or more beats, or a slow run), ``couplet``."""
        return "vt" if self.met_s is not None else "run" if self.beats >= 3 else "couplet"


def ventricular_runs(
    beats_s: np.ndarray, symbols: list[str], params: VentricularParams | None = None
) -> list[VentricularRun]:
    """Runs of two or more consecutive ventricular beats in reference beats (times, labels)."""
    p = params or VentricularParams()
    need = max(p.vt_run_beats, 1)
    out: list[VentricularRun] = []
    i, n = 0, len(symbols)
    while i < n:
        if symbols[i] not in _VENTRICULAR_BEATS:
            i += 1
            continue
        j = i
        while j + 1 < n and symbols[j + 1] in _VENTRICULAR_BEATS:
            j += 1
        count = j - i + 1
        if count >= 2:
            t = beats_s[i : j + 1]
            met = None
            for k in range(need - 1, count):  # the run's mean rate so far, as the rule judges
                if k and 60.0 * k / (t[k] - t[0]) >= p.vt_rate_bpm:
                    met = float(t[k])
                    break
            rate = 60.0 * (count - 1) / float(t[-1] - t[0]) if t[-1] > t[0] else 0.0
            out.append(VentricularRun(float(t[0]), float(t[-1]), count, rate, met))
        i = j + 1
    return out


@dataclass
class RecordRun:
    """What the analyzer reported for one record."""

    name: str
    fs: float
    duration_s: float
    alarms: list[dict[str, Any]] = field(default_factory=list)
    hr: list[list[float | None]] = field(default_factory=list)
    beats: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The record's entry of the ``--json`` output."""
        return {"fs": self.fs, "duration_s": self.duration_s, "alarms": self.alarms,
                "hr": self.hr, "beats": self.beats}


def run_records(
    signals: dict[str, tuple[np.ndarray, float]],
    chunk_s: float = 0.1,
    step_s: float = 0.2,
    limits: AlarmLimits | None = None,
    analyzer: MultiStreamAnalyzer | None = None,
) -> dict[str, RecordRun]:
    """Stream ``{name: (signal_mv, fs)}`` side by side through one analyzer; return the runs.

    Signal time advances in ``step_s`` steps; in each, every stream gets its chunks of
    ``chunk_s`` that end within the step, then one ``process()`` runs.
    """
    an = analyzer or MultiStreamAnalyzer()
    runs: dict[str, RecordRun] = {}
    pos: dict[str, int] = {}
    open_alarms: dict[tuple[str, str], dict[str, Any]] = {}
    hr_now: dict[str, float | None] = {}
    for name, (x, fs) in signals.items():
        an.add_stream(name, fs, limits)
        runs[name] = RecordRun(name, float(fs), x.size / fs)
        pos[name] = 0
        hr_now[name] = None
    end_s = max(r.duration_s for r in runs.values()) if runs else 0.0
    t = 0.0
    step = 0
    while t < end_s:
        step += 1
        t = step * step_s
        for name, (x, fs) in signals.items():
            chunk = max(1, int(round(chunk_s * fs)))
            upto = min(x.size, int(round(t * fs)) // chunk * chunk if t < end_s else x.size)
            while pos[name] < upto:
                n = min(chunk, upto - pos[name])
                an.feed(name, x[pos[name] : pos[name] + n], pos[name])
                pos[name] += n
        results = an.process()
        for name, res in results.items():
            run = runs[name]
            run.beats.extend(b.sample_index for b in res.beats)
            for event in res.alarm_events:  # in order, at the analysis step that decided them
                a = event.alarm
                at_s = round((event.sample_index + 1) / run.fs, 3)
                if event.raised:
                    entry: dict[str, Any] = {
                        "kind": a.kind.value, "priority": a.priority.name.lower(),
                        "raised_s": at_s, "cleared_s": None,
                        "since_s": round(a.since_sample / run.fs, 3), "message": a.message,
                    }
                    run.alarms.append(entry)
                    open_alarms[(name, a.kind.value)] = entry
                else:
                    done = open_alarms.pop((name, a.kind.value), None)
                    if done is not None:
                        done["cleared_s"] = at_s
            hr_now[name] = res.heart_rate_bpm
        for name, run in runs.items():
            while len(run.hr) + 1 <= min(t, run.duration_s) + 1e-9:
                second = len(run.hr) + 1
                value = hr_now[name]
                run.hr.append([float(second), None if value is None else round(value, 1)])
    return runs


@dataclass(frozen=True)
class Episode:
    """An annotated rhythm episode, seconds from the record's start."""

    label: str
    start_s: float
    end_s: float


def rhythm_episodes(record_path: str, fs: float, duration_s: float) -> list[Episode]:
    """Rhythm episodes ('(VT', '(VFL', '[..]' flutter as '(VFL', ...) of a WFDB ``.atr``."""
    import wfdb

    ann = wfdb.rdann(record_path, "atr")
    out: list[Episode] = []
    label: str | None = None
    start = 0.0
    bracket: float | None = None
    for sample, sym, aux in zip(ann.sample, ann.symbol, ann.aux_note, strict=False):
        t = float(sample) / fs
        if sym == "[":
            bracket = t
        elif sym == "]" and bracket is not None:
            out.append(Episode("(VFL", bracket, t))
            bracket = None
        if sym != "+":
            continue
        if label is not None:
            out.append(Episode(label, start, t))
        label, start = (aux or "").strip("\x00 "), t
    if label is not None:
        out.append(Episode(label, start, duration_s))
    if bracket is not None:
        out.append(Episode("(VFL", bracket, duration_s))
    # flutter/fibrillation marked both ways ('[..]' and '(VFL'/'(VF') is one episode
    kept: list[Episode] = []
    for e in sorted(out, key=lambda e: e.start_s):
        if any(_same(k.label, e.label) and min(k.end_s, e.end_s) - max(k.start_s, e.start_s)
               > 0.5 * (e.end_s - e.start_s) for k in kept):
            continue
        kept.append(e)
    return kept


def _same(a: str, b: str) -> bool:
    flutter = ("(VF", "(VFL")
    return a == b or (a in flutter and b in flutter)


def _reference_beats(record_path: str, fs: float) -> tuple[np.ndarray, list[str]] | None:
    """Reference beat times (s) and labels of a WFDB ``.atr`` (None: no beat labels)."""
    import wfdb

    ann = wfdb.rdann(record_path, "atr")
    pairs = [(s, sym) for s, sym in zip(ann.sample, ann.symbol, strict=False)
             if sym in BEAT_SYMBOLS]
    if len(pairs) <= 50:
        return None
    return np.asarray([s for s, _ in pairs], np.float64) / fs, [sym for _, sym in pairs]


def _reference_beats_s(record_path: str, fs: float) -> np.ndarray | None:
    ref = _reference_beats(record_path, fs)
    return None if ref is None else ref[0]


def _justified(kind: str, t: float, ref: np.ndarray | None, limits: AlarmLimits) -> bool:
    """Whether the reference beats justify a rate/asystole alarm raised at ``t`` s (10 % margin)."""
    if ref is None or kind in VENTRICULAR_KINDS:
        return False
    before = ref[(ref <= t) & (ref > t - 15.0)]
    if kind == AlarmKind.ASYSTOLE.value:
        gaps = np.diff(np.concatenate([before, ref[ref > t][:1]]))
        return bool(gaps.size and gaps.max() >= 0.75 * limits.asystole_s)
    if before.size < 3:
        return kind in (AlarmKind.BRADYCARDIA.value, AlarmKind.EXTREME_BRADYCARDIA.value)
    rr = np.diff(before[-5:])
    fastest, slowest = 60.0 / rr.min(), 60.0 / rr.max()
    rate = 60.0 / float(np.median(rr))
    if kind == AlarmKind.TACHYCARDIA.value:
        return max(rate, fastest) > 0.9 * limits.tachycardia_bpm
    if kind == AlarmKind.EXTREME_TACHYCARDIA.value:
        return max(rate, fastest) > 0.9 * limits.extreme_tachycardia_bpm
    if kind == AlarmKind.BRADYCARDIA.value:
        return min(rate, slowest) < 1.1 * limits.bradycardia_bpm
    return min(rate, slowest) < 1.1 * limits.extreme_bradycardia_bpm


def score_alarms(
    run: RecordRun, episodes: list[Episode], ref_beats_s: np.ndarray | None,
    limits: AlarmLimits | None = None,
) -> dict[str, Any]:
    """VF/VT latencies per annotated episode and unjustified physiological alarms per hour.

    An episode's latency is the first VF/VT alarm shown (raised, or still on) at or after its
    onset, minus the onset; none before the episode ends + `EPISODE_GRACE_S`: missed
    (``alarm_on_at_onset``: an alarm of an earlier episode was still shown). A false
    alarm is a physiological alarm raised outside every VF/VFL/VT/noise episode (+ grace) and,
    when the record has beat labels, not justified by them (`_justified`).
    """
    lim = limits or AlarmLimits()
    vent = [e for e in episodes if e.label in _VENTRICULAR_RHYTHMS]
    excused = [e for e in episodes if e.label in _VENTRICULAR_RHYTHMS + _NOISE_RHYTHMS]
    shown = _shown_ventricular(run)
    latencies: list[dict[str, Any]] = []
    for e in vent:
        hits = _hits(shown, e.start_s, e.end_s)
        latency = round(min(hits) - e.start_s, 2) if hits else None
        on_before = any(r < e.start_s <= c for r, c in shown)
        latencies.append({"label": e.label, "start_s": round(e.start_s, 2),
                          "duration_s": round(e.end_s - e.start_s, 2), "latency_s": latency,
                          "alarm_on_at_onset": on_before})
    false: list[dict[str, Any]] = []
    for a in run.alarms:
        if a["kind"] not in PHYSIOLOGICAL_KINDS:
            continue
        t = float(a["raised_s"])
        if any(b["cleared_s"] == a["raised_s"] and _family(b["kind"]) == _family(a["kind"])
               for b in run.alarms):
            continue  # an escalation (tachycardia -> extreme tachycardia) is the same alarm
        if any(e.start_s <= t <= e.end_s + EPISODE_GRACE_S for e in excused):
            continue
        if _justified(str(a["kind"]), t, ref_beats_s, lim):
            continue
        false.append(a)
    excluded_s = _union_length([(e.start_s, min(run.duration_s, e.end_s + EPISODE_GRACE_S))
                                for e in excused])
    monitored_h = max(run.duration_s - excluded_s, 0.0) / 3600.0
    return {"episodes": latencies, "false_alarms": false, "monitored_h": monitored_h}


def _shown_ventricular(run: RecordRun) -> list[tuple[float, float]]:
    """(raised, cleared) of each VF/VT alarm of `run`; one still on clears at the record's end."""
    return [(float(a["raised_s"]), run.duration_s if a["cleared_s"] is None else float(a["cleared_s"]))
            for a in run.alarms if a["kind"] in VENTRICULAR_KINDS]


def _hits(shown: list[tuple[float, float]], start_s: float, end_s: float) -> list[float]:
    """When each of `shown` was on within [start_s, end_s + EPISODE_GRACE_S], from start_s on."""
    return [max(r, start_s) for r, c in shown if c >= start_s and r <= end_s + EPISODE_GRACE_S]


def score_ventricular_runs(
    run: RecordRun, runs: list[VentricularRun]
) -> list[dict[str, Any]]:
    """Each reference run of ventricular beats against the VF/VT alarms shown.

    ``latency_s`` is from the moment the run meets the VT alarm's definition (``met_s``) to the
    first VF/VT alarm shown (raised, or still on) between the run's first beat and its last
    beat + `EPISODE_GRACE_S` (negative: raised before the definition was met, e.g. by the
    spectral rule); None: not alarmed. Runs that do not meet it (``run``: 3-4 beats or a slow
    run, ``couplet``: 2) have no latency; ``alarmed`` tells whether a VT alarm was shown.
    """
    shown = _shown_ventricular(run)
    out: list[dict[str, Any]] = []
    for r in runs:
        hits = _hits(shown, r.start_s, r.end_s)
        entry: dict[str, Any] = {
            "kind": r.kind, "start_s": round(r.start_s, 2), "beats": r.beats,
            "rate_bpm": round(r.rate_bpm, 1),
            "met_s": None if r.met_s is None else round(r.met_s, 2),
            "alarmed": bool(hits),
            "alarm_on_at_onset": any(a < r.start_s <= c for a, c in shown),
        }
        if r.met_s is not None:
            entry["latency_s"] = round(min(hits) - r.met_s, 2) if hits else None
        out.append(entry)
    return out


def _runs_summary(runs: list[dict[str, Any]]) -> str:
    """The table's lines on reference runs of ventricular beats (see `score_ventricular_runs`)."""
    p = VentricularParams()
    vt = [r for r in runs if r["kind"] == "vt"]
    caught = sum(r["latency_s"] is not None for r in vt)
    lat = sorted(r["latency_s"] for r in vt
                 if r["latency_s"] is not None and not r["alarm_on_at_onset"])
    line = (f"VT by the alarm's definition (>= {p.vt_run_beats} ventricular beats at >= "
            f"{p.vt_rate_bpm:g} bpm, reference labels): {caught}/{len(vt)} alarmed")
    if lat:
        line += (f"; {len(lat)} with no alarm shown at their onset, latency from the "
                 f"definition met: median {np.median(lat):.1f} s, max {lat[-1]:.1f} s")
    for kind, what in (("run", "shorter or slower runs (3+ beats)"), ("couplet", "couplets")):
        some = [r for r in runs if r["kind"] == kind]
        line += (f"\n{what}: {len(some)}, {sum(r['alarmed'] for r in some)} shown with a "
                 "VT/VF alarm")
    return line


def _family(kind: object) -> str:
    if kind in VENTRICULAR_KINDS:
        return "ventricular"
    return "slow" if "brady" in str(kind) else "fast" if "tachy" in str(kind) else str(kind)


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def load_signal(path: str, channel: int = 0) -> tuple[np.ndarray, float]:
    """Channel ``channel`` of a WFDB record in millivolts (NaN -> 0) and its rate."""
    import wfdb

    rec = wfdb.rdrecord(path, channels=[channel])
    return np.nan_to_num(np.asarray(rec.p_signal[:, 0], dtype=np.float64)), float(rec.fs)


def main(argv: list[str]) -> int:
    """Entry point of `medstream alarm-eval RECORD... [--json OUT] [--chunk-s S] [--step-s S]`."""
    parser = argparse.ArgumentParser(prog="medstream alarm-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", nargs="+", metavar="RECORD", help="WFDB path, no extension")
    parser.add_argument("--json", metavar="OUT", help="write alarms, HR and beats per record")
    parser.add_argument("--chunk-s", type=float, default=0.1, help="monitor chunk (s, 0.1)")
    parser.add_argument("--step-s", type=float, default=0.2, help="analysis step (s, 0.2)")
    parser.add_argument("--channel", type=int, default=0, help="ECG channel (0)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the signal (EC13 amplitude tests: 0.5, 2)")
    args = parser.parse_args(argv)
    if args.chunk_s <= 0 or args.step_s <= 0:
        parser.error(f"--chunk-s and --step-s must be > 0, got {args.chunk_s}, {args.step_s}")
    signals: dict[str, tuple[np.ndarray, float]] = {}
    paths: dict[str, str] = {}
    for rec in args.records:
        if not Path(rec + ".hea").exists():
            parser.error(f"record {rec!r}: expected {rec}.hea, not found")
        name = Path(rec).name
        if name in signals:
            name = rec
        x, fs = load_signal(rec, args.channel)
        signals[name] = (x * args.scale, fs)
        paths[name] = rec
    runs = run_records(signals, args.chunk_s, args.step_s)
    report: dict[str, Any] = {"chunk_s": args.chunk_s, "step_s": args.step_s,
                                 "scale": args.scale, "records": {}}
    print(f"chunks {args.chunk_s:g} s, analysis every {args.step_s:g} s, amplitude x{args.scale:g}")
    print(f"{'record':>8} {'min':>6} {'beats':>6} | alarms raised by kind | VF/VT episodes: "
          "caught/total, latency median/max s (alarm off at onset) | false physiological alarms (per h)")
    total_false, total_h = 0, 0.0
    vt_runs: list[dict[str, Any]] = []
    for name, run in runs.items():
        entry = run.to_json()
        counts: dict[str, int] = {}
        for a in run.alarms:
            counts[str(a["kind"])] = counts.get(str(a["kind"]), 0) + 1
        line = (f"{name:>8} {run.duration_s / 60:6.1f} {len(run.beats):6d} | "
                + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
        path = paths[name]
        if Path(path + ".atr").exists():
            episodes = rhythm_episodes(path, run.fs, run.duration_s)
            ref = _reference_beats(path, run.fs)
            score = score_alarms(run, episodes, None if ref is None else ref[0])
            if ref is not None:  # VT by the alarm's own definition on the reference labels
                score["ventricular_runs"] = score_ventricular_runs(
                    run, ventricular_runs(ref[0], ref[1]))
                vt_runs += score["ventricular_runs"]
            entry["score"] = score
            eps = score["episodes"]
            lat = [e["latency_s"] for e in eps
                   if e["latency_s"] is not None and not e["alarm_on_at_onset"]]
            caught = sum(e["latency_s"] is not None for e in eps)
            n_false = len(score["false_alarms"])
            hours = float(score["monitored_h"])
            total_false += n_false
            total_h += hours
            line += (f" | {caught}/{len(eps)}"
                     + (f" {np.median(lat):.1f}/{max(lat):.1f}" if lat else "")
                     + f" | {n_false} ({n_false / hours if hours else 0:.1f}/h)")
        print(line)
        report["records"][name] = entry
    if total_h:
        print(f"false physiological alarms: {total_false} in {total_h:.2f} monitored h "
              f"= {total_false / total_h:.1f}/h")
    if vt_runs:
        print(_runs_summary(vt_runs))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0
