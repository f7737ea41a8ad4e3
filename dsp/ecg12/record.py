"""`Ecg12`: a validated resting 12-lead ECG (leads, units, sampling rate, length).

Every ingest path (WFDB, DICOM, the waveform protocol's snapshot later) ends in `Ecg12.from_leads`,
so the checks live in one place and their errors name what was expected and what was got.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: the standard leads, in the order rows are stored
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LIMB_LEADS: tuple[str, ...] = LEADS[:6]
PRECORDIAL_LEADS: tuple[str, ...] = LEADS[6:]

MIN_SAMPLING_RATE_HZ = 250.0
MAX_SAMPLING_RATE_HZ = 1000.0
MIN_DURATION_S = 8.0
MAX_DURATION_S = 60.0
#: a resting ECG beyond this is a unit mistake (µV given as mV) or a saturated channel
MAX_ABS_MV = 20.0

#: unit spelling -> factor to millivolts
UNITS_TO_MV: dict[str, float] = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "millivolt": 1.0}


class Ecg12Error(ValueError):
    """A 12-lead ECG failed validation; the message names what was expected and what was got."""


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    roman = {"I": "1", "II": "2", "III": "3"}
    for lead in LEADS:
        key = lead.lower()
        table[key] = lead
        for prefix in ("lead ", "lead_", "lead-", "mdc_ecg_lead_"):
            table[prefix + key] = lead
    for lead, digit in roman.items():
        table["d" + lead.lower()] = lead  # DI, DII, DIII (French/Spanish machines)
        table["lead " + digit] = lead
    for i in range(1, 7):
        table[f"c{i}"] = f"V{i}"  # European chest-lead names
        table[f"v{i} lead"] = f"V{i}"
    for lead in ("aVR", "aVL", "aVF"):
        table[lead.lower().replace("a", "a-", 1)] = lead  # "a-vr"
    return table


_ALIASES = _alias_table()


def canonical_lead(name: str) -> str | None:
    """The standard name for a lead label ("ii", "Lead II", "MDC_ECG_LEAD_II", "DII" -> "II"), or None."""
    return _ALIASES.get(" ".join(name.strip().lower().split()))


def unit_factor_to_mv(units: str) -> float:
    """Factor that converts ``units`` to millivolts. Raises `Ecg12Error` for anything but mV/µV."""
    factor = UNITS_TO_MV.get(units.strip().lower())
    if factor is None:
        raise Ecg12Error(f"units must be mV or µV, got {units!r}")
    return factor


@dataclass(frozen=True, eq=False)
class Ecg12:
    """A resting 12-lead ECG: ``signals_mv`` shape (12, n) in `LEADS` order, millivolts.

    Build it with `from_leads` (validates); the constructor trusts its arguments.
    """

    signals_mv: np.ndarray
    sampling_rate_hz: float
    derived_leads: tuple[str, ...] = ()

    @property
    def n_samples(self) -> int:
        """Samples per lead."""
        return int(self.signals_mv.shape[1])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sampling_rate_hz

    def lead(self, name: str) -> np.ndarray:
        """One lead's samples (mV) by any accepted name. Raises `Ecg12Error` for an unknown name."""
        canonical = canonical_lead(name)
        if canonical is None:
            raise Ecg12Error(f"unknown lead {name!r}; expected one of {', '.join(LEADS)}")
        return self.signals_mv[LEADS.index(canonical)]

    @classmethod
    def from_leads(
        cls,
        leads: Mapping[str, np.ndarray],
        sampling_rate_hz: float,
        units: str = "mV",
        derive_limb_leads: bool = True,
    ) -> Ecg12:
        """Validate and assemble a 12-lead ECG from named 1-D arrays.

        Names may be aliases (`canonical_lead`); extra non-standard leads (e.g. Frank X/Y/Z) are
        ignored. With ``derive_limb_leads`` an 8-lead set (I, II, V1-V6, as DICOM and SCP-ECG
        often store it) is completed with III, aVR, aVL, aVF by Einthoven's and Goldberger's
        equations; the derived names are kept in ``derived_leads``.

        Raises:
            Ecg12Error: unknown units, rate outside 250-1000 Hz, length outside 8-60 s, a
                standard lead given twice or missing, leads of unequal length, non-finite
                samples, or amplitudes beyond ±20 mV (a unit mistake).
        """
        factor = unit_factor_to_mv(units)
        fs = float(sampling_rate_hz)
        if not math.isfinite(fs) or not MIN_SAMPLING_RATE_HZ <= fs <= MAX_SAMPLING_RATE_HZ:
            raise Ecg12Error(
                f"sampling rate must be {MIN_SAMPLING_RATE_HZ:.0f}-{MAX_SAMPLING_RATE_HZ:.0f} Hz, got {sampling_rate_hz}"
            )
        found: dict[str, np.ndarray] = {}
        ignored: list[str] = []
        for name, values in leads.items():
            canonical = canonical_lead(name)
            if canonical is None:
                ignored.append(name)
                continue
            if canonical in found:
                raise Ecg12Error(f"lead {canonical} given twice (as {name!r} and another alias)")
            arr = np.asarray(values, dtype=np.float64)
            if arr.ndim != 1:
                raise Ecg12Error(f"lead {canonical} must be 1-D samples, got shape {arr.shape}")
            found[canonical] = arr * factor
        derived: list[str] = []
        if derive_limb_leads and "I" in found and "II" in found:
            lead_i, lead_ii = found["I"], found["II"]
            if lead_i.shape == lead_ii.shape:
                formulas = {
                    "III": lambda: lead_ii - lead_i,
                    "aVR": lambda: -(lead_i + lead_ii) / 2.0,
                    "aVL": lambda: lead_i - lead_ii / 2.0,
                    "aVF": lambda: lead_ii - lead_i / 2.0,
                }
                for name, formula in formulas.items():
                    if name not in found:
                        found[name] = formula()
                        derived.append(name)
        missing = [lead for lead in LEADS if lead not in found]
        if missing:
            got = ", ".join(sorted(found)) or "none"
            extra = f" (ignored unknown names: {', '.join(map(repr, ignored))})" if ignored else ""
            raise Ecg12Error(f"missing leads {', '.join(missing)}; expected {', '.join(LEADS)}, got {got}{extra}")
        lengths = {lead: found[lead].shape[0] for lead in LEADS}
        if len(set(lengths.values())) != 1:
            raise Ecg12Error(f"all leads must have the same number of samples, got {lengths}")
        n = lengths["I"]
        duration = n / fs
        if not MIN_DURATION_S <= duration <= MAX_DURATION_S:
            raise Ecg12Error(
                f"length must be {MIN_DURATION_S:.0f}-{MAX_DURATION_S:.0f} s, got {duration:.3f} s ({n} samples at {fs:g} Hz)"
            )
        signals = np.stack([found[lead] for lead in LEADS])
        bad = ~np.isfinite(signals)
        if bad.any():
            rows = sorted({LEADS[r] for r in np.nonzero(bad)[0]})
            raise Ecg12Error(f"samples must be finite, got {int(bad.sum())} NaN/inf in leads {', '.join(rows)}")
        peak = float(np.max(np.abs(signals - np.median(signals, axis=1, keepdims=True))))
        if peak > MAX_ABS_MV:
            raise Ecg12Error(
                f"amplitudes must stay within ±{MAX_ABS_MV:.0f} mV, got {peak:.1f} mV after converting from {units!r}"
                " (µV labelled as mV?)"
            )
        return cls(signals_mv=signals, sampling_rate_hz=fs, derived_leads=tuple(derived))
