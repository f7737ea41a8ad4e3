"""Many ECG streams analysed in one batched numpy step: beats, heart rate, alarms.

The server feeds each stream's samples as they arrive (``feed`` only queues) and calls
``process()`` every ~100-250 ms from a worker thread. Streams of equal sampling rate share one
`PanTompkinsBank`, one `SignalQualityBank` and one `VentricularBank` (VF/VT, independent of the
QRS detector); the queued samples of streams with equal queued
length are stacked into one 2-D block, so filtering is one ``sosfilt`` call per group and the
per-sample work is vectorised. Heart-rate refreshes and alarm rules run as array operations
over all streams of a group; Python loops run per candidate peak, per beat and per stream with
something new, never per sample. Not thread-safe: call ``feed``/``process`` from one thread (or guard them with a lock).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np

from dsp.alarms import Alarm, AlarmBank, AlarmLimits, AlarmTiming
from dsp.filters import check_sampling_rate
from dsp.heart_rate import HeartRateBank
from dsp.qrs import BEAT_SYMBOLS, BEAT_UNCLASSIFIED, PanTompkinsBank, PanTompkinsParams
from dsp.signal_quality import QualityLimits, SignalQualityBank
from dsp.ventricular import VentricularBank, VentricularParams


@dataclass(frozen=True, slots=True)
class Beat:
    """A detected heartbeat: R-peak sample index (stream's own numbering), time in s, and its
    class as an MIT-BIH/AAMI symbol: ``N`` normal, ``V`` ventricular (wide against the
    patient's own normal beats, or of another shape and not narrower), ``Q`` unclassifiable (no reference yet, or found while the
    signal was not analysable)."""

    sample_index: int
    time_s: float
    label: str = "N"


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """An alarm raised (``raised``) or cleared at the end of the analysis step that ends on
    stream sample ``sample_index`` (so ``(sample_index + 1) / fs`` s of signal were analysed)."""

    sample_index: int
    raised: bool
    alarm: Alarm


@dataclass(slots=True)
class StreamResult:
    """What one ``process()`` call found for one stream.

    ``beats``/``rr_ms`` are new since the previous call; ``heart_rate_bpm`` and
    ``irregularity`` are the current (once-per-second) values, None while unknown;
    ``active_alarms`` is the full current set, most urgent first; ``alarm_events`` are the
    raises and clears of ``alarms_raised``/``alarms_cleared`` in the order they happened, with
    the sample at which each was decided.
    """

    stream_id: str
    beats: list[Beat] = field(default_factory=list)
    heart_rate_bpm: float | None = None
    rr_ms: list[float] = field(default_factory=list)
    irregularity: float | None = None
    alarms_raised: list[Alarm] = field(default_factory=list)
    alarms_cleared: list[Alarm] = field(default_factory=list)
    active_alarms: list[Alarm] = field(default_factory=list)
    alarm_events: list[AlarmEvent] = field(default_factory=list)


def _merged(a: StreamResult, b: StreamResult) -> StreamResult:
    """Two consecutive steps' results of one stream as one (``b`` is the later)."""
    if not (b.beats or b.rr_ms or b.alarm_events):
        if not (a.beats or a.rr_ms or a.alarm_events):
            return b
        return StreamResult(b.stream_id, a.beats, b.heart_rate_bpm, a.rr_ms, b.irregularity,
                            a.alarms_raised, a.alarms_cleared, b.active_alarms, a.alarm_events)
    return StreamResult(
        b.stream_id, a.beats + b.beats, b.heart_rate_bpm, a.rr_ms + b.rr_ms, b.irregularity,
        a.alarms_raised + b.alarms_raised, a.alarms_cleared + b.alarms_cleared, b.active_alarms,
        a.alarm_events + b.alarm_events,
    )


@dataclass
class _Stream:
    stream_id: str
    fs: float
    group: _Group
    start_sample: int | None = None
    next_sample: int | None = None
    queue: list[np.ndarray] = field(default_factory=list)
    #: the result returned while nothing changes (built on first need, shared; read-only)
    quiet: StreamResult | None = None
    quiet_fields: tuple[float | None, float | None, list[Alarm]] = (None, None, [])

    def quiet_result(self) -> StreamResult:
        """The result of a call that found nothing new (current values, no events)."""
        if self.quiet is None:
            hr, irr, active = self.quiet_fields
            self.quiet = StreamResult(self.stream_id, [], hr, [], irr, [], [], active)
        return self.quiet


_stream_id = operator.attrgetter("stream_id")


@dataclass
class _Group:
    """Streams of one sampling rate: every per-stream state lives in arrays indexed by row."""

    fs: float
    detectors: PanTompkinsBank
    quality: SignalQualityBank
    rates: HeartRateBank
    alarms: AlarmBank
    ventricular: VentricularBank
    #: samples per analysis step (alarms and rates are evaluated at the end of each)
    step_samples: int
    members: list[str] = field(default_factory=list)  # stream ids in row order
    streams: list[_Stream] = field(default_factory=list)  # same order
    start: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: whether a row has had a result yet (its first result is always built)
    answered: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: whether a row's signal was not analysable at its last step (a technical condition)
    blind: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class MultiStreamAnalyzer:
    """Causal ECG analysis for many streams, batched per sampling rate.

    Usage: ``add_stream`` once per stream, ``feed`` contiguous chunks as they arrive,
    ``process()`` periodically; it returns a `StreamResult` for every stream that had queued
    samples. Sample indices are the stream's own (the ``first_sample`` numbering of ``feed``).
    A stream with nothing new (no beat, no alarm change) gets the same `StreamResult` object as
    last time (after a heart-rate refresh, a new one that is then reused): treat results as
    read-only.
    """

    def __init__(
        self,
        qrs_params: PanTompkinsParams | None = None,
        quality_limits: QualityLimits | None = None,
        ventricular_params: VentricularParams | None = None,
        alarm_timing: AlarmTiming | None = None,
        step_s: float = 0.25,
    ) -> None:
        """``step_s``: the analysis step in stream time (alarms and rates are evaluated at the
        end of each). 0.25 s: half the VF/VT window step, far finer than any alarm delay, and
        the DSP's cost is mostly per step, so fewer steps are cheaper (the server calls
        ``process`` every 0.2 s of wall time; a call finds 0, 1 or more whole steps).
        Raises ValueError if not 0.01-5 s."""
        if not 0.01 <= step_s <= 5.0:
            raise ValueError(f"step_s must be 0.01-5 s, got {step_s}")
        self.step_s = float(step_s)
        self._qrs_params = qrs_params or PanTompkinsParams()
        self._quality_limits = quality_limits or QualityLimits()
        self._ventricular_params = ventricular_params or VentricularParams()
        self._alarm_timing = alarm_timing or AlarmTiming()
        self._streams: dict[str, _Stream] = {}
        self._groups: dict[float, _Group] = {}

    @property
    def stream_ids(self) -> list[str]:
        """Ids of the streams currently analysed."""
        return list(self._streams)

    def add_stream(
        self, stream_id: str, sampling_rate_hz: float, limits: AlarmLimits | None = None
    ) -> None:
        """Start analysing a stream.

        Raises:
            ValueError: if the id is already in use or the rate is outside 125-1000 Hz.
        """
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} already exists")
        fs = check_sampling_rate(sampling_rate_hz)
        group = self._groups.get(fs)
        if group is None:
            group = _Group(
                fs,
                PanTompkinsBank(fs, self._qrs_params),
                SignalQualityBank(fs, self._quality_limits),
                HeartRateBank(fs),
                AlarmBank(fs, self._alarm_timing),
                VentricularBank(fs, self._ventricular_params),
                max(1, int(round(self.step_s * fs))),
            )
            self._groups[fs] = group
        group.detectors.add_stream()
        group.quality.add_stream()
        group.rates.add_stream()
        group.alarms.add_stream(limits or AlarmLimits())
        group.ventricular.add_stream()
        group.members.append(stream_id)
        group.start = np.append(group.start, 0)
        group.answered = np.append(group.answered, False)
        group.blind = np.append(group.blind, False)
        stream = _Stream(stream_id, fs, group)
        group.streams.append(stream)
        self._streams[stream_id] = stream

    def remove_stream(self, stream_id: str) -> None:
        """Stop analysing a stream and drop its queued samples and state.

        Raises:
            ValueError: if the stream is unknown.
        """
        stream = self._stream(stream_id)
        group = stream.group
        row = group.members.index(stream_id)
        group.detectors.remove_stream(row)
        group.quality.remove_stream(row)
        group.rates.remove_stream(row)
        group.alarms.remove_stream(row)
        group.ventricular.remove_stream(row)
        group.start = np.delete(group.start, row)
        group.answered = np.delete(group.answered, row)
        group.blind = np.delete(group.blind, row)
        del group.members[row]
        del group.streams[row]
        del self._streams[stream_id]
        if not group.members:
            del self._groups[group.fs]

    def feed(self, stream_id: str, samples_mv: np.ndarray, first_sample: int) -> None:
        """Queue the next contiguous samples of a stream (millivolts, 1-D, finite).

        ``first_sample`` is the index of ``samples_mv[0]``; the first call fixes the stream's
        start, every later call must continue exactly where the previous one ended.

        Raises:
            ValueError: unknown stream, empty/non-1-D/non-finite samples, or a gap/overlap.
        """
        stream = self._stream(stream_id)
        x = np.asarray(samples_mv, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {x.shape}")
        if x.size == 0:
            raise ValueError(f"stream {stream_id!r}: expected at least 1 sample, got an empty chunk")
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x))[0])
            raise ValueError(
                f"stream {stream_id!r}: samples must be finite, got {x[bad]} at offset {bad}"
            )
        first = int(first_sample)
        if stream.next_sample is None:
            stream.start_sample = first
            group = stream.group
            group.start[group.members.index(stream_id)] = first
        elif first != stream.next_sample:
            raise ValueError(
                f"stream {stream_id!r}: expected first_sample {stream.next_sample} "
                f"(contiguous), got {first}"
            )
        stream.next_sample = first + x.size
        stream.queue.append(x)

    def process(self) -> dict[str, StreamResult]:
        """Analyse the whole analysis steps queued, batched per sampling rate.

        Streams are analysed in steps of ``step_s`` of their own sample time (``step_s * fs``
        samples counted from the stream's first sample); samples past the last whole step
        stay queued for the next call. Alarms and rates are evaluated at the end of each step,
        so what is raised or cleared, and at which sample, does not depend on how the samples
        were chunked or how often ``process`` runs (a late call catches up step by step). A
        stream with queued samples but no whole step gets its current (quiet) result.
        """
        results: dict[str, StreamResult] = {}
        for group in self._groups.values():
            size = group.step_samples
            first: dict[int, np.ndarray] = {}  # row -> its first whole step (1-D)
            more: dict[int, np.ndarray] = {}  # row -> its further whole steps (k - 1, size)
            for row, stream in enumerate(group.streams):
                queue = stream.queue
                if not queue:
                    continue
                block = queue[0] if len(queue) == 1 else np.concatenate(queue)
                queue.clear()
                n = block.size
                if n == size:  # the usual case: exactly one step arrived
                    first[row] = block
                    continue
                k = n // size
                if k * size < n:
                    queue.append(block[k * size :])
                if k == 0:
                    results[stream.stream_id] = stream.quiet_result()
                    continue
                first[row] = block[:size]
                if k > 1:
                    more[row] = block[size : k * size].reshape(k - 1, size)
            if not first:
                continue
            self._step(group, list(first), list(first.values()), results, merge=False)
            for r in range(max((p.shape[0] for p in more.values()), default=0)):
                rows = [row for row, p in more.items() if p.shape[0] > r]
                self._step(group, rows, [more[row][r] for row in rows], results, merge=True)
        return results

    def _step(self, group: _Group, rows: list[int], steps: list[np.ndarray],
              results: dict[str, StreamResult], merge: bool) -> None:
        """One batched analysis step of ``rows`` (one whole step each, in ``steps``)."""
        size = group.step_samples
        # one C-level concatenate: np.stack would wrap every row in Python
        x = np.concatenate(steps).reshape(len(rows), size)
        whole = len(rows) == len(group.members)  # fast path: no gather/scatter
        if not merge:
            self._process_block(group, x, None if whole else np.asarray(rows), results)
            return
        step_results: dict[str, StreamResult] = {}
        self._process_block(group, x, None if whole else np.asarray(rows), step_results)
        for sid, res in step_results.items():
            results[sid] = _merged(results[sid], res)

    def _process_block(
        self,
        group: _Group,
        x: np.ndarray,
        sel: np.ndarray | None,
        results: dict[str, StreamResult],
    ) -> None:
        """Detect, measure and alarm one block; put a result per row into ``results``."""
        rows = np.arange(len(group.members)) if sel is None else sel
        beat_pos, beat_idx = group.detectors.process_flat(x, sel)
        beat_cls = group.detectors.last_classes
        quality = group.quality.process_arrays(x, sel, group.detectors.last_bandpassed)
        ventricular = group.ventricular
        ventricular.process(x, sel)
        start = group.start[rows]
        now = start + group.detectors.samples_seen[rows] - 1
        fs = group.fs
        rates = group.rates
        news: dict[int, tuple[list[Beat], list[float]]] = {}
        if beat_pos.size:
            absolute = beat_idx + start[beat_pos]
            rr_all = rates.on_beats(rows[beat_pos], absolute)
            # beats found while the signal is not analysable are not classified
            codes = np.where(quality.analysable[beat_pos], beat_cls, BEAT_UNCLASSIFIED)
            for pos, index, rr, code in zip(
                beat_pos.tolist(), absolute.tolist(), rr_all.tolist(), codes.tolist(),
                strict=True,
            ):
                entry = news.get(pos)
                if entry is None:
                    entry = news[pos] = ([], [])
                entry[0].append(Beat(index, index / fs, BEAT_SYMBOLS[code]))
                if rr == rr:  # not NaN: the stream's first beat closes no interval
                    entry[1].append(rr)
        # the QRS-based VT rule: a run of wide beats (detector's own sample numbering)
        vp = self._ventricular_params
        wide = group.detectors.wide_runs(rows)
        run = wide[:, 0]
        wide_first = wide[:, 1] + start
        wide_vt = (
            (vp.vt_run_beats > 0)  # 0: the QRS-based VT rule is off (spectral rule only)
            & (run >= vp.vt_run_beats)
            & (wide[:, 2] - wide[:, 1] <= (run - 1) * fs * 60.0 / vp.vt_rate_bpm)
            & (now - (wide[:, 2] + start) <= 2.0 * fs)
        )
        # bidirectional VT: complexes alternating ventricular / normal-looking, steady and fast
        alt = group.detectors.alternating_runs(rows)
        alt_vt = (
            (vp.vt_run_beats > 0) & (vp.vt_alternating_beats > 0)
            & (alt[:, 0] >= vp.vt_alternating_beats)
            & (alt[:, 2] - alt[:, 1] <= (alt[:, 0] - 1) * fs * 60.0 / vp.vt_rate_bpm)
            & (now - (alt[:, 2] + start) <= 2.0 * fs)
        )
        wide_first = np.where(wide_vt, wide_first, alt[:, 1] + start)
        wide_vt |= alt_vt
        refreshed = rates.update(rows, now)
        blind = ~quality.analysable
        if blind.any():  # no rate from beats found in noise or across it
            refreshed[blind] |= rates.forget(rows[blind])
        back = group.blind[rows] & ~blind
        if back.any():  # the detector's levels adapted to the noise: learn them again
            group.detectors.relearn(rows[back])
        group.blind[rows] = blind
        changes = group.alarms.evaluate(
            rows,
            now,
            start,
            rates.last_beat[rows],
            rates.alarm_rate_bpm[rows],
            quality,
            decision_delay_samples=group.detectors.decision_delay_samples,
            fibrillation=ventricular.fibrillation[rows],
            ventricular_tachycardia=ventricular.tachycardia[rows] | wide_vt,
            ventricular_onset=np.where(
                ventricular.fibrillation[rows] | ventricular.tachycardia[rows],
                ventricular.onset_sample[rows] + start, wide_first),
        )
        streams = group.streams
        fresh = refreshed.copy()
        fresh[list(news)] = True
        fresh[list(changes)] = True
        fresh |= ~group.answered[rows]
        group.answered[rows] = True
        news_pos = np.flatnonzero(fresh)
        if news_pos.size < rows.size:  # the rest get their cached quiet result
            quiet = [streams[r] for r in rows[~fresh].tolist()]
            # C-level iteration: this runs for most of a thousand streams at every step
            results.update(zip(map(_stream_id, quiet), map(_Stream.quiet_result, quiet),
                               strict=True))
        news_rows = rows[news_pos]
        hr_all = rates.heart_rate_bpm[news_rows].tolist()
        irr_all = rates.irregularity[news_rows].tolist()
        sorted_alarms = group.alarms.active_alarms
        for pos, row, hr, irr in zip(
            news_pos.tolist(), news_rows.tolist(), hr_all, irr_all, strict=True
        ):
            stream = streams[row]
            active = sorted_alarms(row)
            hr_v = None if hr != hr else hr  # NaN -> None
            irr_v = None if irr != irr else irr
            fields = (hr_v, irr_v, active)
            if fields != stream.quiet_fields:  # a beat alone leaves the quiet result valid
                stream.quiet = None
                stream.quiet_fields = fields
            entry = news.get(pos)
            change = changes.get(pos)
            if entry is None and change is None:
                # a heart-rate refresh only: it is the new quiet result (one object, not two)
                results[stream.stream_id] = stream.quiet_result()
                continue
            beats, rr_ms = entry if entry is not None else ([], [])
            if change is None:
                results[stream.stream_id] = StreamResult(
                    stream.stream_id, beats, hr_v, rr_ms, irr_v, [], [], active, [])
                continue
            raised, cleared = change
            at = int(now[pos])
            results[stream.stream_id] = StreamResult(
                stream.stream_id, beats, hr_v, rr_ms, irr_v, raised, cleared, active,
                [AlarmEvent(at, False, c) for c in cleared]
                + [AlarmEvent(at, True, r) for r in raised],
            )

    def _stream(self, stream_id: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise ValueError(f"unknown stream {stream_id!r}") from None
