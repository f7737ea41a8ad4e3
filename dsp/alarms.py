"""ECG alarms with IEC 60601-2-27 kinds and IEC 60601-1-8 priorities: physiological, technical.

Physiological: ventricular fibrillation/flutter and ventricular tachycardia (from
`dsp.ventricular`, independent of QRS detection, HIGH), asystole (no beat for ``asystole_s``,
HIGH), extreme brady/tachycardia (HIGH), brady/tachycardia outside the patient's limits
(MEDIUM). Technical: leads off / flat line (MEDIUM), ADC saturation (LOW), ECG too noisy to
analyse (MEDIUM: the monitor is blind to arrhythmias while it lasts).

Behaviour, so that the wall does not flap (`AlarmTiming`):
* a condition must hold for ``raise_delay_s`` of its kind before the alarm is raised, and an
  alarm is cleared only once its condition has been absent for ``clear_holdoff_s``;
* escalation: a more severe alarm of the same family replaces the lesser one at once (extreme
  tachycardia replaces tachycardia; VF replaces VT; VF/VT suppress asystole and rate alarms,
  asystole suppresses rate alarms), never both at once;
* while a technical condition is present the rhythm cannot be trusted, so physiological alarms
  are frozen (neither raised nor cleared) until the signal is analysable again: a lead coming
  off does not silence an asystole alarm, and a noise burst does not raise a false tachycardia.
* latching (a HIGH alarm stays shown until acknowledged, IEC 60601-1-8 6.3.4) is the display's
  job: the analyzer reports when the *condition* ends (``alarms_cleared``), the wall keeps a
  latched HIGH alarm until a nurse acknowledges it (`Alarm.latching`).

`AlarmBank` applies the rules to many streams at once: the conditions are a bit mask per stream
computed with numpy, and Python only runs for streams whose alarms change. `AlarmMonitor` is the
same for one stream (a one-row bank).
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
    VENTRICULAR_FIBRILLATION = "ventricular_fibrillation"
    VENTRICULAR_TACHYCARDIA = "ventricular_tachycardia"
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
    AlarmKind.VENTRICULAR_FIBRILLATION: AlarmPriority.HIGH,
    AlarmKind.VENTRICULAR_TACHYCARDIA: AlarmPriority.HIGH,
    AlarmKind.EXTREME_BRADYCARDIA: AlarmPriority.HIGH,
    AlarmKind.EXTREME_TACHYCARDIA: AlarmPriority.HIGH,
    AlarmKind.BRADYCARDIA: AlarmPriority.MEDIUM,
    AlarmKind.TACHYCARDIA: AlarmPriority.MEDIUM,
    AlarmKind.LEADS_OFF: AlarmPriority.MEDIUM,
    AlarmKind.SATURATION: AlarmPriority.LOW,
    AlarmKind.NOISE: AlarmPriority.MEDIUM,
}
_ALL_KINDS = tuple(AlarmKind)
_PHYSIOLOGICAL = (
    AlarmKind.ASYSTOLE,
    AlarmKind.VENTRICULAR_FIBRILLATION,
    AlarmKind.VENTRICULAR_TACHYCARDIA,
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
class AlarmTiming:
    """Raise delays and clear hold-offs per alarm kind, seconds (0 where not listed).

    Rate alarms wait 2 s (a few fast beats are not a tachycardia) and hold 5 s after the rate
    returns (no flapping around a limit); asystole and VF/VT are raised at once (their detectors
    already require 4 s / 1 s of evidence). VF/VT hold 6 s after their condition ends (itself 2 s
    of non-ventricular windows): ventricular arrhythmias come in salvos (flutter bursts a few
    seconds apart), and a rhythm is not stable again after a few organised seconds, so a salvo
    is one alarm, not a new raise every few seconds (2 s gave vfdb 64 raises outside the
    annotated episodes, 6 s 41; 10 s, 33, was not taken: it also hid a late onset). Technical conditions clear at once so analysis resumes.
    """

    raise_delay_s: tuple[tuple[AlarmKind, float], ...] = (
        (AlarmKind.BRADYCARDIA, 2.0),
        (AlarmKind.TACHYCARDIA, 2.0),
        (AlarmKind.EXTREME_BRADYCARDIA, 2.0),
        (AlarmKind.EXTREME_TACHYCARDIA, 2.0),
    )
    clear_holdoff_s: tuple[tuple[AlarmKind, float], ...] = (
        (AlarmKind.BRADYCARDIA, 5.0),
        (AlarmKind.TACHYCARDIA, 5.0),
        (AlarmKind.EXTREME_BRADYCARDIA, 5.0),
        (AlarmKind.EXTREME_TACHYCARDIA, 5.0),
        (AlarmKind.VENTRICULAR_FIBRILLATION, 6.0),
        (AlarmKind.VENTRICULAR_TACHYCARDIA, 6.0),
    )

    def samples(self, sampling_rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
        """(raise delay, clear hold-off) per kind in `AlarmKind` order, in samples (int64)."""
        raise_s = dict(self.raise_delay_s)
        hold_s = dict(self.clear_holdoff_s)
        fs = float(sampling_rate_hz)
        return (
            np.array([round(raise_s.get(k, 0.0) * fs) for k in _ALL_KINDS], dtype=np.int64),
            np.array([round(hold_s.get(k, 0.0) * fs) for k in _ALL_KINDS], dtype=np.int64),
        )


@dataclass(frozen=True)
class Alarm:
    """An alarm condition; ``since_sample`` is the stream sample where the condition began."""

    kind: AlarmKind
    priority: AlarmPriority
    message: str
    since_sample: int

    @property
    def latching(self) -> bool:
        """Whether the display keeps it after its condition ends, until acknowledged (HIGH)."""
        return self.priority is AlarmPriority.HIGH


_BIT = {kind: 1 << i for i, kind in enumerate(_ALL_KINDS)}
_PHYSIOLOGICAL_MASK = sum(_BIT[k] for k in _PHYSIOLOGICAL)
_VENTRICULAR = _BIT[AlarmKind.VENTRICULAR_FIBRILLATION] | _BIT[AlarmKind.VENTRICULAR_TACHYCARDIA]
_RATES = sum(_BIT[k] for k in (AlarmKind.EXTREME_BRADYCARDIA, AlarmKind.BRADYCARDIA,
                                AlarmKind.EXTREME_TACHYCARDIA, AlarmKind.TACHYCARDIA))
_SLOW = _BIT[AlarmKind.EXTREME_BRADYCARDIA] | _BIT[AlarmKind.BRADYCARDIA]
_FAST = _BIT[AlarmKind.EXTREME_TACHYCARDIA] | _BIT[AlarmKind.TACHYCARDIA]
_SHIFTS = np.arange(len(_ALL_KINDS), dtype=np.int64)


def _unpack(mask: np.ndarray) -> np.ndarray:
    """Bit masks (n,) -> bools (n, kinds)."""
    return ((mask[:, None] >> _SHIFTS[None, :]) & 1).astype(bool)


def _pack(bits: np.ndarray) -> np.ndarray:
    """Bools (n, kinds) -> bit masks (n,)."""
    return (bits.astype(np.int64) << _SHIFTS[None, :]).sum(axis=1)


def _escalate(mask: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Keep one alarm per family, the most severe: VF > VT > asystole > rate alarms; within the
    rates an extreme alarm replaces its lesser one."""
    b = _BIT
    vf, vt = b[AlarmKind.VENTRICULAR_FIBRILLATION], b[AlarmKind.VENTRICULAR_TACHYCARDIA]
    mask = np.where(mask & vf, mask & ~vt, mask)
    mask = np.where(mask & _VENTRICULAR, mask & ~(b[AlarmKind.ASYSTOLE] | _RATES), mask)
    mask = np.where(mask & b[AlarmKind.ASYSTOLE], mask & ~_RATES, mask)
    # a rate wanted now in the opposite direction ends a held one (a held, more severe alarm
    # of the same direction stays until its hold-off passes: de-escalation does not flap)
    mask = np.where(wanted & _SLOW, mask & ~(_FAST & ~wanted), mask)
    mask = np.where(wanted & _FAST, mask & ~(_SLOW & ~wanted), mask)
    for extreme, lesser in ((AlarmKind.EXTREME_TACHYCARDIA, AlarmKind.TACHYCARDIA),
                            (AlarmKind.EXTREME_BRADYCARDIA, AlarmKind.BRADYCARDIA)):
        mask = np.where(mask & b[extreme], mask & ~b[lesser], mask)
    return mask


class AlarmBank:
    """Alarm states of many streams of one sampling rate (rows), rules as `AlarmMonitor`.

    Per-row limits live in arrays; ``evaluate`` computes every row's wanted alarms as a bit mask
    and builds `Alarm` objects only for rows whose alarms are raised or cleared.
    """

    def __init__(self, sampling_rate_hz: float, timing: AlarmTiming | None = None) -> None:
        self.fs = float(sampling_rate_hz)
        self.timing = timing or AlarmTiming()
        self._raise_delay, self._holdoff = self.timing.samples(self.fs)
        k = len(_ALL_KINDS)
        self._want_since = np.zeros((0, k), dtype=np.int64)  # -1: not wanted now
        self._last_want = np.zeros((0, k), dtype=np.int64)
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
        k = len(_ALL_KINDS)
        self._want_since = np.concatenate([self._want_since, np.full((1, k), -1, np.int64)])
        self._last_want = np.concatenate([self._last_want, np.full((1, k), -1, np.int64)])
        self._active.append({})
        self._sorted.append([])
        return len(self._active) - 1

    def remove_stream(self, row: int) -> None:
        """Remove one stream; rows after it shift down by one."""
        self._limits = np.delete(self._limits, row, axis=0)
        self._mask = np.delete(self._mask, row)
        self._analysable_since = np.delete(self._analysable_since, row)
        self._want_since = np.delete(self._want_since, row, axis=0)
        self._last_want = np.delete(self._last_want, row, axis=0)
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
        fibrillation: np.ndarray | None = None,
        ventricular_tachycardia: np.ndarray | None = None,
        ventricular_onset: np.ndarray | None = None,
    ) -> dict[int, tuple[list[Alarm], list[Alarm]]]:
        """Update the alarms of ``rows``; return {position in rows: (raised, cleared)} for the
        rows whose alarms changed (raised most urgent first).

        Args (arrays aligned with ``rows``): newest sample, first sample and newest beat's R
        peak (-1: none) as absolute indices; alarm rate in bpm (NaN: unknown); the technical
        flags; whether `dsp.ventricular` sees fibrillation / ventricular tachycardia and since
        which sample (None: not analysed). ``decision_delay_samples``: how far behind the
        newest sample beats are decided; asystole is judged that far back so a beat not yet
        decided does not count as missing.
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
        no = np.zeros(rows.shape[0], dtype=bool)
        vf = analysable & (no if fibrillation is None else fibrillation)
        vt = analysable & (no if ventricular_tachycardia is None else ventricular_tachycardia)
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
            + vf * _BIT[AlarmKind.VENTRICULAR_FIBRILLATION]
            + vt * _BIT[AlarmKind.VENTRICULAR_TACHYCARDIA]
        ).astype(np.int64)
        old = self._mask[rows]
        # raise delay and clear hold-off, per kind
        bits = _unpack(want)
        now_col = now_sample[:, None]
        ws = self._want_since[rows]
        ws = np.where(bits, np.where(ws < 0, now_col, ws), -1)
        lw = np.where(bits, now_col, self._last_want[rows])
        self._want_since[rows] = ws
        self._last_want[rows] = lw
        old_bits = _unpack(old)
        due = bits & (now_col - ws >= self._raise_delay[None, :])
        held = old_bits & (bits | (now_col - lw < self._holdoff[None, :]))
        new = _escalate(_pack(due | held), want)
        # physiological alarms are frozen (kept as they are) while the signal is not analysable
        new = np.where(
            analysable, new, (new & ~_PHYSIOLOGICAL_MASK) | (old & _PHYSIOLOGICAL_MASK)
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
                                                    judged, ventricular_onset)
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
        ventricular_onset: np.ndarray | None = None,
    ) -> tuple[str, int]:
        """Message and start sample of a newly raised alarm."""
        if kind in (AlarmKind.VENTRICULAR_FIBRILLATION, AlarmKind.VENTRICULAR_TACHYCARDIA):
            onset = now if ventricular_onset is None else int(ventricular_onset[pos])
            name = ("Ventricular fibrillation / flutter"
                    if kind is AlarmKind.VENTRICULAR_FIBRILLATION else "Ventricular tachycardia")
            return name, onset
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


@dataclass
class AlarmMonitor:
    """Alarm state of one stream (a one-row `AlarmBank`). Call ``evaluate`` after each block."""

    sampling_rate_hz: float
    limits: AlarmLimits = field(default_factory=AlarmLimits)
    timing: AlarmTiming = field(default_factory=AlarmTiming)
    _bank: AlarmBank = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._bank = AlarmBank(self.sampling_rate_hz, self.timing)
        self._bank.add_stream(self.limits)

    @property
    def active(self) -> dict[AlarmKind, Alarm]:
        """Active alarms by kind."""
        return {a.kind: a for a in self._bank.active_alarms(0)}

    def evaluate(
        self,
        now_sample: int,
        stream_start_sample: int,
        last_beat_sample: int | None,
        alarm_rate_bpm: float | None,
        quality: QualityFlags,
        decision_delay_samples: int = 0,
        fibrillation: bool = False,
        ventricular_tachycardia: bool = False,
        ventricular_onset_sample: int = 0,
    ) -> tuple[list[Alarm], list[Alarm]]:
        """Update alarm states; return (raised, cleared) alarms, raised most urgent first.

        Arguments as `AlarmBank.evaluate`, for one stream (None: no beat / rate unknown).
        """
        q = QualityArrays(
            np.array([quality.flat]), np.array([quality.saturated]),
            np.array([quality.noisy or quality.artefact]), np.array([quality.artefact]),
            np.array([quality.ptp_mv]), np.array([quality.noise_mv]),
            np.array([quality.artefact_ratio]),
        )
        out = self._bank.evaluate(
            np.array([0]), np.array([now_sample]), np.array([stream_start_sample]),
            np.array([-1 if last_beat_sample is None else last_beat_sample]),
            np.array([np.nan if alarm_rate_bpm is None else alarm_rate_bpm]), q,
            decision_delay_samples, np.array([fibrillation]),
            np.array([ventricular_tachycardia]), np.array([ventricular_onset_sample]),
        )
        return out.get(0, ([], []))

    def active_alarms(self) -> list[Alarm]:
        """Active alarms, most urgent first."""
        return list(self._bank.active_alarms(0))
