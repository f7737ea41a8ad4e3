"""The analyzer's alarms and beats do not depend on how samples arrive or how often it runs.

The integration test of a monitored bed (alarms to a webhook receiver) was intermittent: the
live server's analyzer got every sample, but the alarm rules ran once per ``process()`` call,
on whatever had arrived, so their raise delays and hold-offs were counted in calls of wall-clock
cadence; under load a call held several seconds of a fast (8x) stream and a 14 s tachycardia
could go unalarmed. Now the analyzer works in whole steps of stream time and every rule is
judged at the end of each, so a late or irregular caller gets exactly the same alarms.
"""

from __future__ import annotations

import numpy as np
import wfdb

from dsp.analyzer import MultiStreamAnalyzer
from tests.dsp.conftest import cached_record

Event = tuple[int, bool, str, int]  # (sample decided, raised, kind, condition since)


def _stream(signals: dict[str, tuple[np.ndarray, int]], chunks, calls) -> tuple[
        dict[str, list[Event]], dict[str, list[int]]]:
    """Feed every signal in chunks drawn from ``chunks()`` and run ``process()`` after each
    chunk for which ``calls()`` is True; return the alarm events and beats per stream."""
    an = MultiStreamAnalyzer()
    for name, (_, fs) in signals.items():
        an.add_stream(name, fs)
    pos = dict.fromkeys(signals, 0)
    events: dict[str, list[Event]] = {n: [] for n in signals}
    beats: dict[str, list[int]] = {n: [] for n in signals}
    while any(pos[n] < x.size for n, (x, _) in signals.items()):
        for name, (x, _) in signals.items():
            if pos[name] < x.size:
                n = chunks()
                an.feed(name, x[pos[name] : pos[name] + n], pos[name])
                pos[name] = min(x.size, pos[name] + n)
        if calls():
            for name, res in an.process().items():
                beats[name] += [b.sample_index for b in res.beats]
                events[name] += [(e.sample_index, e.raised, e.alarm.kind.value,
                                  e.alarm.since_sample) for e in res.alarm_events]
    for name, res in an.process().items():
        beats[name] += [b.sample_index for b in res.beats]
        events[name] += [(e.sample_index, e.raised, e.alarm.kind.value, e.alarm.since_sample)
                         for e in res.alarm_events]
    return events, beats


def test_alarms_and_beats_are_the_same_for_any_chunking_and_call_timing(ecg_data_dir):
    # cudb cu01 around its VF (sinus, VF at 214 s, then defibrillation artefact and recovery)
    # and mitdb 119 with nstdb muscle noise that stops analysis (noise alarm, re-learning)
    cu = cached_record(str(ecg_data_dir / "cudb" / "cu01"))
    x119 = cached_record(str(ecg_data_dir / "mitdb" / "119")).signal_mv[: 90 * 360].copy()
    ma = wfdb.rdrecord(str(ecg_data_dir / "nstdb" / "ma"), channels=[0]).p_signal[:, 0]
    ma = ma[: 30 * 360] - ma[: 30 * 360].mean()
    x119[30 * 360 : 60 * 360] += ma * np.std(x119) / np.std(ma) * 10 ** (18 / 20)
    signals = {"cu01": (cu.signal_mv[190 * 250 : 320 * 250], 250), "119+ma": (x119, 360)}
    rng = np.random.default_rng(11)
    server = _stream(signals, lambda: 25, iter([False, True] * 10**6).__next__)  # 0.1 s / 0.2 s
    late = _stream(signals, lambda: 250, lambda: rng.random() < 0.1)  # 1 s chunks, ~10 s late
    ragged = _stream(signals, lambda: int(rng.integers(1, 200)), lambda: rng.random() < 0.5)
    events, beats = server
    kinds = {k for e in events.values() for _, up, k, _ in e if up}
    assert {"ventricular_fibrillation", "noise"} <= kinds, events
    assert all(beats.values())
    for other in (late, ragged):
        assert other == server
