"""ECG alarms with IEC 60601-2-27-style priorities: physiological and technical.

Physiological: asystole (no beat for ``asystole_s``, HIGH), extreme brady/tachycardia (HIGH),
brady/tachycardia outside the patient's limits (MEDIUM). Technical: leads off / flat line
(MEDIUM), ADC saturation (LOW), too noisy to analyse (LOW).

While a technical condition is present the rhythm cannot be trusted, so physiological alarms are
frozen (neither raised nor cleared) until the signal is analysable again: a lead coming off does
not silence an asystole alarm, and a noisy burst does not raise a false tachycardia.
`AlarmMonitor` is a sans-I/O state machine for one stream: conditions in, raised/cleared alarms
out. `AlarmBank` applies the same rules to many streams at once: the wanted set of alarms is a
bit mask per stream computed with numpy, and Python only runs for streams whose set changes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum, IntEnum

import numpy as np

from dsp.signal_quality import QualityArrays, QualityFlags


class AlarmKind(Enum):
    """What the alarm is about."""

    ASYSTOLE = "asystole"
    EXTREME_BRADYCARDIA = "extreme_bradycardia"
    EXTREME_TACHYCARDIA = "extreme_tachycardia"
    BRADYCARDIA = "bradycardia"
    TACHYCARDIA = "tachycardia"
    LEADS_OFF = "leads_off"
    SATURATION = "saturation"
    NOISE = "noise"


class AlarmPriority(IntEnum):
    """IEC 60601-1-8 priorities (higher value = more urgent)."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3


PRIORITY: dict[AlarmKind, AlarmPriority] = {
    AlarmKind.ASYSTOLE: AlarmPriority.HIGH,
    AlarmKind.EXTREME_BRADYCARDIA: AlarmPriority.HIGH,
    AlarmKind.EXTREME_TACHYCARDIA: AlarmPriority.HIGH,
    AlarmKind.BRADYCARDIA: AlarmPriority.MEDIUM,
    AlarmKind.TACHYCARDIA: AlarmPriority.MEDIUM,
    AlarmKind.LEADS_OFF: AlarmPriority.MEDIUM,
    AlarmKind.SATURATION: AlarmPriority.LOW,
    AlarmKind.NOISE: AlarmPriority.LOW,
}
_ALL_KINDS = tuple(AlarmKind)
_PHYSIOLOGICAL = (
    AlarmKind.ASYSTOLE,
    AlarmKind.EXTREME_BRADYCARDIA,
    AlarmKind.EXTREME_TACHYCARDIA,
    AlarmKind.BRADYCARDIA,
    AlarmKind.TACHYCARDIA,
)


@dataclass(frozen=True)
class AlarmLimits:
    """Per-patient alarm limits (beats per minute, seconds).

    Raises:
        ValueError: if the limits are not ordered extreme_brady < brady < tachy < extreme_tachy
            or asystole_s is not positive.
    """

    bradycardia_bpm: float = 50.0
    tachycardia_bpm: float = 120.0
    extreme_bradycardia_bpm: float = 40.0
    extreme_tachycardia_bpm: float = 150.0
    asystole_s: float = 4.0

    def __post_init__(self) -> None:
        order = (
            self.extreme_bradycardia_bpm,
            self.bradycardia_bpm,
            self.tachycardia_bpm,
            self.extreme_tachycardia_bpm,
        )
        if not all(a < b for a, b in itertools.pairwise(order)) or order[0] <= 0:
            raise ValueError(
                "limits must satisfy 0 < extreme_brady < brady < tachy < extreme_tachy bpm, "
                f"got {order}"
            )
        if not self.asystole_s > 0:
            raise ValueError(f"asystole_s must be > 0 s, got {self.asystole_s}")


@dataclass(frozen=True)
class Alarm:
    """An alarm condition; ``since_sample`` is the stream sample where the condition began."""

    kind: AlarmKind
    priority: AlarmPriority
    message: str
    since_sample: int


@dataclass
class AlarmMonitor:
    """Alarm state of one stream. Call ``evaluate`` after each processed block."""

    sampling_rate_hz: float
    limits: AlarmLimits = field(default_factory=AlarmLimits)
    active: dict[AlarmKind, Alarm] = field(default_factory=dict)
    #: sample where the signal last became analysable; asystole is timed from no earlier
    analysable_since: int | None = None

    def evaluate(
        self,
        now_sample: int,
        stream_start_sample: int,
        last_beat_sample: int | None,
        alarm_rate_bpm: float | None,
        quality: QualityFlags,
        decision_delay_samples: int = 0,
    ) -> tuple[list[Alarm], list[Alarm]]:
        """Update alarm states; return (raised, cleared) alarms, in priority order.

        Args:
            now_sample: newest sample of the stream (absolute index).
            stream_start_sample: first sample of the stream (absolute index).
            last_beat_sample: R peak of the newest beat, or None if none yet.
            alarm_rate_bpm: fast rate from `HeartRateMeter`, or None.
            quality: technical flags for the trailing window.
            decision_delay_samples: how far behind ``now_sample`` beats are decided; asystole
                is judged at ``now_sample - decision_delay_samples`` so a beat not yet decided
                does not count as missing.
        """
        fs = self.sampling_rate_hz
        want: dict[AlarmKind, tuple[str, int]] = {}
        if quality.flat:
            want[AlarmKind.LEADS_OFF] = (
                f"ECG leads off / flat line ({quality.ptp_mv:.3f} mV peak-to-peak)", now_sample
            )
        if quality.saturated:
            want[AlarmKind.SATURATION] = ("ECG signal saturated (ADC clipping)", now_sample)
        if quality.noisy:
            want[AlarmKind.NOISE] = (
                f"ECG too noisy to analyse ({quality.noise_mv:.2f} mV noise)", now_sample
            )
        elif quality.artefact:
            want[AlarmKind.NOISE] = ("ECG too noisy to analyse (artefact in the QRS band)", now_sample)
        if not quality.analysable:
            self.analysable_since = None
        elif self.analysable_since is None:
            self.analysable_since = now_sample
        if quality.analysable:
            judged = now_sample - decision_delay_samples
            reference = stream_start_sample if last_beat_sample is None else last_beat_sample
            since = now_sample if self.analysable_since is None else self.analysable_since
            reference = max(reference, since - decision_delay_samples)
            asystole_samples = int(round(self.limits.asystole_s * fs))
            if judged - reference >= asystole_samples:
                want[AlarmKind.ASYSTOLE] = (
                    f"Asystole: no beat for {(judged - reference) / fs:.1f} s",
                    reference + asystole_samples,
                )
            elif alarm_rate_bpm is not None:
                lim = self.limits
                rate = alarm_rate_bpm
                if rate < lim.extreme_bradycardia_bpm:
                    want[AlarmKind.EXTREME_BRADYCARDIA] = (
                        f"Extreme bradycardia {rate:.0f} bpm < {lim.extreme_bradycardia_bpm:g}",
                        now_sample,
                    )
                elif rate < lim.bradycardia_bpm:
                    want[AlarmKind.BRADYCARDIA] = (
                        f"Bradycardia {rate:.0f} bpm < {lim.bradycardia_bpm:g}", now_sample
                    )
                elif rate > lim.extreme_tachycardia_bpm:
                    want[AlarmKind.EXTREME_TACHYCARDIA] = (
                        f"Extreme tachycardia {rate:.0f} bpm > {lim.extreme_tachycardia_bpm:g}",
                        now_sample,
                    )
                elif rate > lim.tachycardia_bpm:
                    want[AlarmKind.TACHYCARDIA] = (
                        f"Tachycardia {rate:.0f} bpm > {lim.tachycardia_bpm:g}", now_sample
                    )
        raised: list[Alarm] = []
        cleared: list[Alarm] = []
        if not want and not self.active:
            return raised, cleared  # the common case, kept cheap for hundreds of streams
        for kind in _ALL_KINDS:
            frozen = kind in _PHYSIOLOGICAL and not quality.analysable
            if kind in want and kind not in self.active:
                message, since = want[kind]
                alarm = Alarm(kind, PRIORITY[kind], message, since)
                self.active[kind] = alarm
                raised.append(alarm)
            elif kind not in want and kind in self.active and not frozen:
                cleared.append(self.active.pop(kind))
        raised.sort(key=lambda a: -a.priority)
        return raised, cleared

    def active_alarms(self) -> list[Alarm]:
        """Active alarms, most urgent first."""
        return sorted(self.active.values(), key=lambda a: -a.priority)


_BIT = {kind: 1 << i for i, kind in enumerate(_ALL_KINDS)}
_PHYSIOLOGICAL_MASK = sum(_BIT[k] for k in _PHYSIOLOGICAL)


class AlarmBank:
    """Alarm states of many streams of one sampling rate (rows), rules as `AlarmMonitor`.

    Per-row limits live in arrays; ``evaluate`` computes every row's wanted alarms as a bit mask
    and builds `Alarm` objects only for rows whose alarms are raised or cleared.
    """

    def __init__(self, sampling_rate_hz: float) -> None:
        self.fs = float(sampling_rate_hz)
        # columns: extreme brady, brady, tachy, extreme tachy (bpm), asystole (samples)
        self._limits = np.zeros((0, 5))
        self._mask = np.zeros(0, dtype=np.int64)
        self._analysable_since = np.zeros(0, dtype=np.int64)  # -1: not analysable
        self._active: list[dict[AlarmKind, Alarm]] = []
        self._sorted: list[list[Alarm]] = []  # the same, most urgent first (kept up to date)

    def add_stream(self, limits: AlarmLimits) -> int:
        """Add a stream with its limits; return its row."""
        row = np.array([[
            limits.extreme_bradycardia_bpm, limits.bradycardia_bpm, limits.tachycardia_bpm,
            limits.extreme_tachycardia_bpm, round(limits.asystole_s * self.fs),
        ]])
        self._limits = np.concatenate([self._limits, row])
        self._mask = np.append(self._mask, 0)
        self._analysable_since = np.append(self._analysable_since, -1)
        self._active.append({})
        self._sorted.append([])
        return len(self._active) - 1

    def remove_stream(self, row: int) -> None:
        """Remove one stream; rows after it shift down by one."""
        self._limits = np.delete(self._limits, row, axis=0)
        self._mask = np.delete(self._mask, row)
        self._analysable_since = np.delete(self._analysable_since, row)
        del self._active[row]
        del self._sorted[row]

    def active_alarms(self, row: int) -> list[Alarm]:
        """Active alarms of one row, most urgent first (a list shared until they change)."""
        return self._sorted[row]

    def evaluate(
        self,
        rows: np.ndarray,
        now_sample: np.ndarray,
        start_sample: np.ndarray,
        last_beat_sample: np.ndarray,
        alarm_rate_bpm: np.ndarray,
        quality: QualityArrays,
        decision_delay_samples: int = 0,
    ) -> dict[int, tuple[list[Alarm], list[Alarm]]]:
        """Update the alarms of ``rows``; return {position in rows: (raised, cleared)} for the
        rows whose alarms changed (raised most urgent first).

        Args (arrays aligned with ``rows``): newest sample, first sample and newest beat's R
        peak (-1: none) as absolute indices; alarm rate in bpm (NaN: unknown); the technical
        flags. ``decision_delay_samples`` as in `AlarmMonitor.evaluate`.
        """
        lim = self._limits[rows]
        analysable = quality.analysable
        since = self._analysable_since[rows]
        since = np.where(analysable, np.where(since < 0, now_sample, since), -1)
        self._analysable_since[rows] = since
        judged = now_sample - decision_delay_samples
        reference = np.where(last_beat_sample < 0, start_sample, last_beat_sample)
        reference = np.maximum(reference, since - decision_delay_samples)
        asystole = analysable & (judged - reference >= lim[:, 4])
        rate = alarm_rate_bpm
        known = analysable & ~asystole & ~np.isnan(rate)
        with np.errstate(invalid="ignore"):
            x_brady = known & (rate < lim[:, 0])
            brady = known & ~x_brady & (rate < lim[:, 1])
            x_tachy = known & ~x_brady & ~brady & (rate > lim[:, 3])
            tachy = known & ~x_brady & ~brady & ~x_tachy & (rate > lim[:, 2])
        want = (
            quality.flat * _BIT[AlarmKind.LEADS_OFF]
            + quality.saturated * _BIT[AlarmKind.SATURATION]
            + quality.noisy * _BIT[AlarmKind.NOISE]
            + asystole * _BIT[AlarmKind.ASYSTOLE]
            + x_brady * _BIT[AlarmKind.EXTREME_BRADYCARDIA]
            + brady * _BIT[AlarmKind.BRADYCARDIA]
            + x_tachy * _BIT[AlarmKind.EXTREME_TACHYCARDIA]
            + tachy * _BIT[AlarmKind.TACHYCARDIA]
        ).astype(np.int64)
        old = self._mask[rows]
        # physiological alarms are frozen (kept as they are) while the signal is not analysable
        new = np.where(
            analysable, want, (want & ~_PHYSIOLOGICAL_MASK) | (old & _PHYSIOLOGICAL_MASK)
        )
        changed = np.flatnonzero(new != old)
        out: dict[int, tuple[list[Alarm], list[Alarm]]] = {}
        if changed.size == 0:
            return out
        self._mask[rows[changed]] = new[changed]
        for pos in changed.tolist():
            row = int(rows[pos])
            active = self._active[row]
            raised: list[Alarm] = []
            cleared: list[Alarm] = []
            now = int(now_sample[pos])
            for kind in _ALL_KINDS:
                bit = _BIT[kind]
                if new[pos] & bit and not old[pos] & bit:
                    message, begun = self._describe(kind, pos, now, quality, rate, lim, reference,
                                                    judged)
                    alarm = Alarm(kind, PRIORITY[kind], message, begun)
                    active[kind] = alarm
                    raised.append(alarm)
                elif old[pos] & bit and not new[pos] & bit:
                    cleared.append(active.pop(kind))
            raised.sort(key=lambda a: -a.priority)
            out[pos] = (raised, cleared)
            self._sorted[row] = sorted(active.values(), key=lambda a: -a.priority)
        return out

    def _describe(
        self,
        kind: AlarmKind,
        pos: int,
        now: int,
        quality: QualityArrays,
        rate: np.ndarray,
        lim: np.ndarray,
        reference: np.ndarray,
        judged: np.ndarray,
    ) -> tuple[str, int]:
        """Message and start sample of a newly raised alarm."""
        if kind is AlarmKind.LEADS_OFF:
            return f"ECG leads off / flat line ({quality.ptp_mv[pos]:.3f} mV peak-to-peak)", now
        if kind is AlarmKind.SATURATION:
            return "ECG signal saturated (ADC clipping)", now
        if kind is AlarmKind.NOISE:
            if quality.artefact[pos]:
                return "ECG too noisy to analyse (artefact in the QRS band)", now
            return f"ECG too noisy to analyse ({quality.noise_mv[pos]:.2f} mV noise)", now
        if kind is AlarmKind.ASYSTOLE:
            ref = int(reference[pos])
            return (
                f"Asystole: no beat for {(int(judged[pos]) - ref) / self.fs:.1f} s",
                ref + int(lim[pos, 4]),
            )
        r = float(rate[pos])
        text = {
            AlarmKind.EXTREME_BRADYCARDIA: f"Extreme bradycardia {r:.0f} bpm < {lim[pos, 0]:g}",
            AlarmKind.BRADYCARDIA: f"Bradycardia {r:.0f} bpm < {lim[pos, 1]:g}",
            AlarmKind.TACHYCARDIA: f"Tachycardia {r:.0f} bpm > {lim[pos, 2]:g}",
            AlarmKind.EXTREME_TACHYCARDIA: f"Extreme tachycardia {r:.0f} bpm > {lim[pos, 3]:g}",
        }[kind]
        return text, now
