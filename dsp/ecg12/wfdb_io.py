"""WFDB records as `Ecg12`: the lead names, units and gains come from the header."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsp.ecg12.record import Ecg12, Ecg12Error, canonical_lead, unit_factor_to_mv


def ecg_from_wfdb(record: object) -> Ecg12:
    """Convert a ``wfdb.Record`` (physical signals read) to a validated `Ecg12`.

    Non-standard channels (Frank X/Y/Z of PTB) are ignored; every channel's units must be mV or µV.

    Raises:
        Ecg12Error: as `Ecg12.from_leads`, or mixed units across the standard leads.
    """
    sig = np.asarray(record.p_signal, dtype=np.float64)  # type: ignore[attr-defined]
    names = list(record.sig_name)  # type: ignore[attr-defined]
    units = [str(u) for u in (record.units or ["mV"] * len(names))]  # type: ignore[attr-defined]
    leads: dict[str, np.ndarray] = {}
    for col, (name, unit) in enumerate(zip(names, units)):
        if canonical_lead(name) is None:
            continue
        leads[name] = sig[:, col] * unit_factor_to_mv(unit)
    if not leads:
        raise Ecg12Error(f"no standard ECG lead among the record's channels, got {names}")
    return Ecg12.from_leads(leads, float(record.fs), units="mV")  # type: ignore[attr-defined]


def read_wfdb(path: str | Path) -> tuple[Ecg12, list[str]]:
    """Read a WFDB record (path without extension) -> (`Ecg12`, header comment lines).

    Raises:
        FileNotFoundError: the header is missing. Ecg12Error: the record is not a valid 12-lead ECG.
    """
    import wfdb

    path = Path(path)
    if not Path(str(path) + ".hea").exists():
        raise FileNotFoundError(f"expected WFDB header {path}.hea, not found")
    record = wfdb.rdrecord(str(path))
    return ecg_from_wfdb(record), list(record.comments or [])
