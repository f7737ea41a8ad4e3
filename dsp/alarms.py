"""ECG alarms with IEC 60601-2-27-style priorities: physiological and technical.

Physiological: asystole (no beat for ``asystole_s``, HIGH), extreme brady/tachycardia (HIGH),
brady/tachycardia outside the patient's limits (MEDIUM). Technical: leads off / flat line
(MEDIUM), ADC saturation (LOW), too noisy to analyse (LOW).

While a technical condition is present the rhythm cannot be trusted, so physiological alarms are
frozen (neither raised nor cleared) until the signal is analysable again: a lead coming off does
not silence an asystole alarm, and a noisy burst does not raise a false tachycardia.
`AlarmMonitor` is a sans-I/O state machine: conditions in, raised/cleared alarms out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from dsp.signal_quality import QualityFlags


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
        if not all(a < b for a, b in zip(order, order[1:])) or order[0] <= 0:
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
        if not quality.analysable:
            self.analysable_since = None
        elif self.analysable_since is None:
            self.analysable_since = now_sample
        if quality.analysable:
            judged = now_sample - decision_delay_samples
            reference = stream_start_sample if last_beat_sample is None else last_beat_sample
            reference = max(reference, self.analysable_since - decision_delay_samples)
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
