"""Analysis scheduling: feed each stream's ECG to the analyzer in order, in steps, off the loop.

The relay owns one `AnalysisScheduler`. For every new sample range of a stream it calls `feed`;
the scheduler queues *ops* (add stream, remove stream, feed samples) on the event loop, and each
analysis step hands the queued ops to a worker thread, the only place the analyzer is touched
(`apply_and_process`), then translates the analyzer's results into wire `Analysis` messages on
the loop (`publish`) and hands each to the relay (`on_update`), which fans them out.

The analyzer runs on a grid of *stream* time, not wall time: each stream is fed in blocks of
`block_s` of its own samples (counted from where its analysis began) and `process()` runs once per
block, however many blocks arrived since the last step. The DSP judges its alarm rules (raise
delays, clear hold-offs) at the end of each `process()` call, so a step that found 30 s of a
stream at once (a monitor back-filling after an outage, a node stalled by load) used to judge a
14-s tachycardia once and miss it; on the grid, a burst gives the same beats and alarms as live
streaming, and the same as `dsp.alarm_eval` with `--step-s` = `block_s`. The cost: a partial
block waits for the rest of its samples (at most `block_s` of extra latency for beats and
alarms; the waveform itself is relayed at once).

Analysis sees contiguous samples only: out-of-order samples are held until the hole before them
is back-filled; after `gap_timeout_s` (wall time, from when the hole opened), or when the held
data exceeds `max_hold_s` (stream time), or when the monitor declares the hole lost (`skip_to`),
the analyzer's state for that stream is reset and feeding resumes after the hole, so beats are
never computed across missing data.

`dsp` is imported lazily (`default_analyzer`, `alarm_limits`), so a node without neurokit2/scipy
still relays waveforms, without analysis.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from protocol.waveforms import AlarmInfo, Analysis, Announce, ChannelInfo, RateLimits, physical

if TYPE_CHECKING:
    from dsp.alarms import AlarmLimits

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the analyzer seam


class BeatLike(Protocol):
    """A detected beat (`dsp.analyzer.Beat`)."""

    @property
    def sample_index(self) -> int: ...


class AlarmLike(Protocol):
    """An alarm condition (`dsp.alarms.Alarm`): `kind` and `priority` are enums."""

    @property
    def kind(self) -> object: ...
    @property
    def priority(self) -> object: ...
    @property
    def message(self) -> str: ...
    @property
    def since_sample(self) -> int: ...


class StreamResultLike(Protocol):
    """What one analysis step found for one stream (`dsp.analyzer.StreamResult`).

    `beats`, `rr_ms`, alarms raised/cleared: new since the previous step; `heart_rate_bpm`,
    `irregularity`, `active_alarms`: current values (None while unknown).
    """

    @property
    def beats(self) -> Sequence[BeatLike]: ...
    @property
    def heart_rate_bpm(self) -> float | None: ...
    @property
    def rr_ms(self) -> Sequence[float]: ...
    @property
    def irregularity(self) -> float | None: ...
    @property
    def active_alarms(self) -> Sequence[AlarmLike]: ...
    @property
    def alarms_raised(self) -> Sequence[AlarmLike]: ...
    @property
    def alarms_cleared(self) -> Sequence[AlarmLike]: ...


class MultiStreamAnalyzerLike(Protocol):
    """The part of `dsp.analyzer.MultiStreamAnalyzer` the scheduler uses (from one thread at a
    time: the worker thread of a step)."""

    def add_stream(self, stream_id: str, sampling_rate_hz: float,
                   limits: AlarmLimits | None = None) -> None: ...
    def remove_stream(self, stream_id: str) -> None: ...
    def feed(self, stream_id: str, samples_mv: np.ndarray, first_sample: int) -> None: ...
    def process(self) -> Mapping[str, StreamResultLike]: ...


def default_analyzer() -> MultiStreamAnalyzerLike | None:
    """A `dsp.analyzer.MultiStreamAnalyzer`, or None (logged) if dsp cannot be imported."""
    try:
        from dsp.analyzer import MultiStreamAnalyzer
    except ImportError as exc:
        log.warning("waveform analysis disabled: dsp.analyzer not importable (%s)", exc)
        return None
    analyzer: MultiStreamAnalyzerLike = MultiStreamAnalyzer()
    return analyzer


def alarm_limits(limits: RateLimits | None) -> AlarmLimits | None:
    """The monitor's brady/tachy limits as `dsp.alarms.AlarmLimits` (None: analyzer defaults).

    The extreme limits keep their defaults unless that would break their ordering, in which case
    they are moved 10 bpm below brady / 30 bpm above tachy. Raises ValueError for limits the
    analyzer refuses.
    """
    if limits is None or (limits.brady_bpm is None and limits.tachy_bpm is None):
        return None
    from dsp.alarms import AlarmLimits

    d = AlarmLimits()
    brady = limits.brady_bpm if limits.brady_bpm is not None else d.bradycardia_bpm
    tachy = limits.tachy_bpm if limits.tachy_bpm is not None else d.tachycardia_bpm
    return AlarmLimits(
        bradycardia_bpm=brady,
        tachycardia_bpm=tachy,
        extreme_bradycardia_bpm=min(d.extreme_bradycardia_bpm, brady - 10.0),
        extreme_tachycardia_bpm=max(d.extreme_tachycardia_bpm, tachy + 30.0),
        asystole_s=d.asystole_s,
    )


def ecg_channel_index(announce: Announce) -> int | None:
    """The channel analysed: the announced `ecg_channel`, else the first in mV, else None."""
    if announce.ecg_channel is not None:
        return announce.ecg_channel
    return next((i for i, c in enumerate(announce.channels) if c.unit == "mV"), None)


# --------------------------------------------------------------------------- ops (loop -> worker)


@dataclass(frozen=True, slots=True)
class _AddStream:
    key: str
    sampling_rate_hz: float
    limits: AlarmLimits | None  # built (and validated) on the event loop

    def apply(self, analyzer: MultiStreamAnalyzerLike) -> None:
        analyzer.add_stream(self.key, self.sampling_rate_hz, self.limits)


@dataclass(frozen=True, slots=True)
class _RemoveStream:
    key: str

    def apply(self, analyzer: MultiStreamAnalyzerLike) -> None:
        analyzer.remove_stream(self.key)


@dataclass(frozen=True, slots=True, eq=False)
class _Feed:
    """ADC integers of the ECG channel; converted to mV in the worker thread, off the loop."""

    key: str
    adc: np.ndarray
    channel: ChannelInfo
    first_sample: int

    def apply(self, analyzer: MultiStreamAnalyzerLike) -> None:
        analyzer.feed(self.key, physical(self.adc, self.channel), self.first_sample)


_Op = _AddStream | _RemoveStream | _Feed


# --------------------------------------------------------------------------- DSP -> wire


def _enum_text(v: object) -> str:
    """A DSP enum member as wire text: its string value, else its lower-case name."""
    value = getattr(v, "value", None)
    if isinstance(value, str):
        return value
    name = getattr(v, "name", None)
    return name.lower() if isinstance(name, str) else str(v)


def _alarm_info(a: AlarmLike) -> AlarmInfo:
    return AlarmInfo(_enum_text(a.kind), _enum_text(a.priority), str(a.message),
                     int(getattr(a, "since_sample", 0)))


def _beat_label(b: BeatLike) -> str:
    """A beat's class symbol (`dsp.analyzer.Beat.label`); ``N`` from an analyzer without."""
    return str(getattr(b, "label", "N"))


def _last_float(v: float | Sequence[float] | np.ndarray | None) -> float | None:
    if v is None:
        return None
    if isinstance(v, Sequence | np.ndarray):
        return float(v[-1]) if len(v) else None
    f = float(v)
    return f if np.isfinite(f) else None


# --------------------------------------------------------------------------- scheduling


@dataclass(slots=True, eq=False)
class StreamAnalysis:
    """The analysis state of one stream, owned by the scheduler (the relay keeps a reference).

    `next_sample`: the next stream sample the scheduler expects (everything before it is fed or
    pending); `pending`: contiguous ADC rows of the ECG channel short of a whole block, ending at
    `next_sample`; `block_n`: samples per analysis block; `held`: ADC rows that arrived beyond a
    hole, by first sample; `gap_opened_at`: clock time the oldest open hole appeared (None: no
    hole); `last`: the latest published values without beats or alarm changes (what a viewer
    joining now is sent).
    """

    key: str
    stream_id: str
    sampling_rate_hz: float
    ecg_index: int
    channel: ChannelInfo
    limits: AlarmLimits | None
    next_sample: int
    block_n: int = 1
    pending: list[np.ndarray] = field(default_factory=list)
    pending_n: int = 0
    held: dict[int, np.ndarray] = field(default_factory=dict)
    held_samples: int = 0
    gap_opened_at: float | None = None
    last: Analysis | None = None


@dataclass(frozen=True, slots=True)
class AnalysisUpdate:
    """One stream's result of a step, as the wire message. `news`: it has beats or alarm
    changes (store sinks get only those; viewers get every update)."""

    stream: StreamAnalysis
    analysis: Analysis
    news: bool


class AnalysisScheduler:
    """Feeds streams to one analyzer in order and runs it in steps; results go to `on_update`.

    `analyzer`: None disables analysis (every method is then a cheap no-op and `open` returns
    None). `clock`: monotonic seconds (tests pass a fake). `gap_timeout_s` / `max_hold_s`: how
    long (wall time) / how much (stream time) a stream's analysis waits for a back-fill before it
    resets and continues after the hole. `block_s`: the analysis grid, seconds of stream time per
    `process()` call (see the module docstring). Everything but `apply_and_process` runs on the
    loop. Raises ValueError if `block_s` <= 0.
    """

    def __init__(
        self,
        analyzer: MultiStreamAnalyzerLike | None,
        *,
        on_update: Callable[[AnalysisUpdate], None],
        gap_timeout_s: float,
        max_hold_s: float,
        block_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not block_s > 0:
            raise ValueError(f"block_s must be > 0 s, got {block_s}")
        self._analyzer = analyzer
        self.block_s = block_s
        self._on_update = on_update
        self.gap_timeout_s = gap_timeout_s
        self.max_hold_s = max_hold_s
        self._clock = clock
        self._streams: dict[str, StreamAnalysis] = {}
        self._keys = itertools.count()
        self._ops: list[_Op] = []
        self._lock = asyncio.Lock()
        self.steps = 0
        self.last_step_ms = 0.0
        self.step_observers: list[Callable[[float], None]] = []  # each step's duration, seconds (metrics)

    @property
    def enabled(self) -> bool:
        """True when there is an analyzer."""
        return self._analyzer is not None

    def limits_for(self, limits: RateLimits | None) -> AlarmLimits | None:
        """The announce's rate limits as analyzer limits (None when disabled or not given).
        Raises ValueError for limits the analyzer refuses."""
        return alarm_limits(limits) if self._analyzer is not None else None

    # ------------------------------------------------------------------ streams

    def open(self, announce: Announce, first_sample: int,
             limits: AlarmLimits | None) -> StreamAnalysis | None:
        """Start analysing a stream from `first_sample`; None if it has no ECG channel or
        analysis is disabled. `limits` from `limits_for`."""
        idx = ecg_channel_index(announce)
        if idx is None or self._analyzer is None:
            return None
        key = f"w{next(self._keys)}"
        st = StreamAnalysis(key, announce.stream_id, announce.sampling_rate_hz, idx,
                            announce.channels[idx], limits, first_sample,
                            block_n=max(1, round(self.block_s * announce.sampling_rate_hz)))
        self._streams[key] = st
        self._ops.append(_AddStream(key, st.sampling_rate_hz, limits))
        return st

    def close(self, st: StreamAnalysis) -> None:
        """Stop analysing the stream; a step already running does not publish it. Idempotent."""
        if self._streams.pop(st.key, None) is not None:
            self._ops.append(_RemoveStream(st.key))

    def feed(self, st: StreamAnalysis, first: int, piece: np.ndarray) -> None:
        """New samples [first, first + n) of the stream (all channels, shape (n_channels, n)):
        fed now if contiguous, held if a hole is before them, ignored if behind the analysis
        point (a hole it already gave up on)."""
        end = first + piece.shape[1]
        if end <= st.next_sample:
            return
        mv = piece[st.ecg_index]  # ADC integers; the worker thread converts them to mV
        if first < st.next_sample:
            mv, first = mv[st.next_sample - first:], st.next_sample
        if first == st.next_sample:
            self._take(st, mv)
            self._drain_held(st)
        else:
            st.held[first] = mv
            st.held_samples += len(mv)

    def _drain_held(self, st: StreamAnalysis) -> None:
        while st.held:
            first = min(st.held)
            if first > st.next_sample:
                return
            mv = st.held.pop(first)
            st.held_samples -= len(mv)
            end = first + len(mv)
            if end > st.next_sample:
                self._take(st, mv[st.next_sample - first:])

    def _take(self, st: StreamAnalysis, mv: np.ndarray) -> None:
        """Samples that continue the stream at `next_sample`: whole blocks are fed, the rest
        waits in `pending` for the next samples."""
        st.next_sample += len(mv)
        st.pending.append(mv)
        st.pending_n += len(mv)
        n = st.block_n
        if st.pending_n < n:
            return
        buf = st.pending[0] if len(st.pending) == 1 else np.concatenate(st.pending)
        first = st.next_sample - st.pending_n
        whole = st.pending_n - st.pending_n % n
        for lo in range(0, whole, n):
            self._ops.append(_Feed(st.key, buf[lo:lo + n], st.channel, first + lo))
        st.pending = [buf[whole:]] if whole < len(buf) else []
        st.pending_n = len(buf) - whole

    def _flush(self, st: StreamAnalysis) -> None:
        """Feed a partial block now (before a reset: what came before the hole is analysed)."""
        if st.pending_n:
            buf = st.pending[0] if len(st.pending) == 1 else np.concatenate(st.pending)
            self._ops.append(_Feed(st.key, buf, st.channel, st.next_sample - st.pending_n))
            st.pending, st.pending_n = [], 0

    def note_gap(self, st: StreamAnalysis, open_: bool) -> None:
        """Whether the stream has an unfilled hole now: the gap timeout runs from its opening."""
        if not open_:
            st.gap_opened_at = None
        elif st.gap_opened_at is None:
            st.gap_opened_at = self._clock()

    def skip_to(self, st: StreamAnalysis, to: int) -> None:
        """Give up on samples before `to`: reset the analyzer's state for the stream after a
        hole and feed what is held beyond it (the grid starts again at `to`)."""
        self._flush(st)
        self._ops.append(_RemoveStream(st.key))
        self._ops.append(_AddStream(st.key, st.sampling_rate_hz, st.limits))
        for first in [f for f in st.held if f + len(st.held[f]) <= to]:
            st.held_samples -= len(st.held.pop(first))
        st.next_sample = to
        self._drain_held(st)

    def _expire_holds(self) -> None:
        now = self._clock()
        for st in list(self._streams.values()):
            if not st.held:
                continue
            too_old = st.gap_opened_at is not None and now - st.gap_opened_at >= self.gap_timeout_s
            too_big = st.held_samples > self.max_hold_s * st.sampling_rate_hz
            if too_old or too_big:
                self.skip_to(st, min(st.held))

    # ------------------------------------------------------------------ steps

    def take_ops(self) -> list[_Op]:
        """The ops queued since the last step (expired holds skipped first); on the loop."""
        self._expire_holds()
        ops, self._ops = self._ops, []
        return ops

    def apply_and_process(self, ops: list[_Op]) -> list[Mapping[str, StreamResultLike]]:
        """Runs in a worker thread: the only place the analyzer is touched. One `process()` per
        round of blocks (a stream's second block starts the next round), so every block is
        judged on its own; the results of each round, in order (one round in a step that kept
        up with its streams)."""
        analyzer = self._analyzer
        assert analyzer is not None
        rounds: list[Mapping[str, StreamResultLike]] = []
        fed: set[str] = set()  # streams with a block in the current round

        def process() -> None:
            rounds.append(analyzer.process())
            fed.clear()

        for op in ops:
            if not isinstance(op, _AddStream) and op.key in fed:
                process()  # its next block, or a reset after its last one
            try:
                op.apply(analyzer)
            except ValueError:  # our bug (the relay feeds contiguously); keep the others going
                log.exception("waveform analysis: %s failed", type(op).__name__)
            if isinstance(op, _Feed):
                fed.add(op.key)
        process()
        return rounds

    def publish(self, rounds: Sequence[Mapping[str, StreamResultLike]]) -> None:
        """A step's results, round by round, as wire messages to `on_update`, on the loop (an
        alarm raised and cleared in one step keeps its order); a stream whose values did not
        change and that has no news is left out."""
        for results in rounds:
            self._publish_round(results)

    def _publish_round(self, results: Mapping[str, StreamResultLike]) -> None:
        for key, r in results.items():
            st = self._streams.get(key)
            if st is None:
                continue  # stream closed while the step ran
            hr, rr, irr = (_last_float(r.heart_rate_bpm), _last_float(r.rr_ms),
                           _last_float(r.irregularity))
            news = bool(r.beats or r.alarms_raised or r.alarms_cleared)
            prev = st.last
            if not news and prev is not None and (prev.heart_rate_bpm, prev.rr_ms,
                                                  prev.irregularity) == (hr, rr, irr):
                continue  # nothing new (active alarms only change through raised/cleared)
            msg = Analysis(
                st.stream_id,
                tuple(int(b.sample_index) for b in r.beats),
                hr, rr, irr,
                tuple(_alarm_info(a) for a in r.active_alarms),
                tuple(_alarm_info(a) for a in r.alarms_raised),
                tuple(_alarm_info(a) for a in r.alarms_cleared),
                "".join(_beat_label(b) for b in r.beats),
            )
            self._on_update(AnalysisUpdate(st, msg, news))
            st.last = Analysis(msg.stream_id, (), hr, rr, irr, msg.active_alarms)

    def analyze_once(self) -> None:
        """One step in the calling thread (tests, tools): feed, process, publish."""
        if self._analyzer is None:
            return
        t = time.perf_counter()
        self.publish(self.apply_and_process(self.take_ops()))
        self._note_step(t)

    def _note_step(self, t_start: float) -> None:
        self.steps += 1
        elapsed_s = time.perf_counter() - t_start
        self.last_step_ms = elapsed_s * 1000.0
        for observe in self.step_observers:
            observe(elapsed_s)

    async def run(self, interval_s: float = 0.2) -> None:
        """A step every `interval_s` seconds, the DSP in a worker thread, until cancelled.
        Samples keep arriving on the loop while a step runs; they go to the next one.
        Raises ValueError if `interval_s` <= 0."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if self._analyzer is None:
            return
        while True:
            await asyncio.sleep(interval_s)
            async with self._lock:
                t = time.perf_counter()
                try:
                    results = await asyncio.to_thread(self.apply_and_process, self.take_ops())
                except Exception:  # a DSP bug must not stop live analysis for every bed
                    log.exception("waveform analysis step failed")
                    continue
                self.publish(results)
                self._note_step(t)
