"""Resting 12-lead ECG analysis: validated container, measurements from the median beat, triage flags.

Offline (zero-phase) analysis for the remote reading workflow (`readings`); see docs/dsp.md.
"""

from dsp.ecg12.flags import Flag, FlagKind, Priority, Sex, Triage, triage
from dsp.ecg12.measurements import Analysis, LeadAmplitudes, MeasurementError, Measurements, analyze, measure
from dsp.ecg12.record import LEADS, Ecg12, Ecg12Error, canonical_lead

__all__ = [
    "LEADS",
    "Analysis",
    "Ecg12",
    "Ecg12Error",
    "Flag",
    "FlagKind",
    "LeadAmplitudes",
    "MeasurementError",
    "Measurements",
    "Priority",
    "Sex",
    "Triage",
    "analyze",
    "canonical_lead",
    "measure",
    "triage",
]
