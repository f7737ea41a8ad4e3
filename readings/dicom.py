"""DICOM 12-lead ECG Waveform Storage (PS3.3 A.34.3) from and to bytes, with pydicom.

Why DICOM: it is what hospital ECG machines (Mortara, GE, Philips, Nihon Kohden and the Chinese
vendors) export to the PACS the county and provincial hospitals already run, pydicom reads and
writes it without native code, and pydicom ships a real device export (a Mortara 12-lead,
``waveform_ecg.dcm``) that the tests read as an independent fixture. HL7 aECG (FDA XML) is used
for drug trials more than in hospitals; SCP-ECG (EN 1064) is common on older Chinese carts but has
no maintained Python reader (its Huffman-coded sections would be ours to write and to trust).
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from dsp.ecg12.record import LEADS, Ecg12, Ecg12Error, canonical_lead, unit_factor_to_mv

TWELVE_LEAD_ECG_STORAGE = "1.2.840.10008.5.1.4.1.1.9.1.1"
GENERAL_ECG_STORAGE = "1.2.840.10008.5.1.4.1.1.9.1.2"
ACCEPTED_SOP_CLASSES = {
    TWELVE_LEAD_ECG_STORAGE: "12-lead ECG Waveform Storage",
    GENERAL_ECG_STORAGE: "General ECG Waveform Storage",
}

#: SCP-ECG lead codes (DICOM CID 3001, scheme SCPECG) -> lead
SCPECG_CODES: dict[str, str] = {
    "5.6.3-9-1": "I",
    "5.6.3-9-2": "II",
    "5.6.3-9-61": "III",
    "5.6.3-9-62": "aVR",
    "5.6.3-9-63": "aVL",
    "5.6.3-9-64": "aVF",
    "5.6.3-9-3": "V1",
    "5.6.3-9-4": "V2",
    "5.6.3-9-5": "V3",
    "5.6.3-9-6": "V4",
    "5.6.3-9-7": "V5",
    "5.6.3-9-8": "V6",
}
#: ISO/IEEE 11073 MDC lead codes (scheme MDC) -> lead
MDC_CODES: dict[str, str] = {
    "2:1": "I", "2:2": "II", "2:61": "III", "2:62": "aVR", "2:63": "aVL", "2:64": "aVF",
    "2:3": "V1", "2:4": "V2", "2:5": "V3", "2:6": "V4", "2:7": "V5", "2:8": "V6",
}  # fmt: skip
_LEAD_TO_SCPECG = {lead: code for code, lead in SCPECG_CODES.items()}


class DicomEcgError(ValueError):
    """Not a readable DICOM 12-lead ECG; the message names what was expected and what was got."""


@dataclass(frozen=True)
class DicomEcg:
    """A DICOM ECG's signal and the patient/acquisition attributes a reading request needs."""

    ecg: Ecg12
    patient_id: str
    patient_name: str
    sex: str
    age_years: float | None
    acquired_at: datetime | None
    manufacturer: str
    sop_instance_uid: str
    #: the device's own global measurements from the Waveform Annotation Sequence, e.g.
    #: {"PR Interval": 161.0, "QRS Duration": 75.0} (units as the device gave them: ms, deg)
    device_measurements: dict[str, float]
    #: the device's own statements (free text), e.g. ("RITMO SINUSALE", "ECG NORMALE")
    device_statements: tuple[str, ...]


def _lead_of(channel: object) -> str | None:
    src = getattr(channel, "ChannelSourceSequence", None)
    if not src:
        return None
    item = src[0]
    code, scheme = str(getattr(item, "CodeValue", "")), str(getattr(item, "CodingSchemeDesignator", ""))
    if scheme.upper().startswith("SCPECG") and code in SCPECG_CODES:
        return SCPECG_CODES[code]
    if scheme.upper() == "MDC" and code in MDC_CODES:
        return MDC_CODES[code]
    meaning = re.sub(r"\s*\(.*\)\s*$", "", str(getattr(item, "CodeMeaning", "")))
    return canonical_lead(meaning)


def _age_years(value: str) -> float | None:
    m = re.fullmatch(r"(\d{3})([DWMY])", value or "")
    if not m:
        return None
    return int(m.group(1)) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[m.group(2)]


def parse_dicom(data: bytes) -> DicomEcg:
    """Read a DICOM ECG from bytes; the rhythm (original) multiplex group becomes the `Ecg12`.

    Raises:
        DicomEcgError: not DICOM, not an ECG SOP class, no 12-lead rhythm group, unknown units.
        Ecg12Error: the signal fails `Ecg12.from_leads` (rate, length, leads).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise DicomEcgError(f"expected a DICOM file (preamble 'DICM'), could not read it: {exc}") from exc
    sop = str(getattr(ds, "SOPClassUID", ""))
    if sop not in ACCEPTED_SOP_CLASSES:
        raise DicomEcgError(
            f"SOP class must be {' or '.join(f'{v} ({k})' for k, v in ACCEPTED_SOP_CLASSES.items())}, got {sop or 'none'}"
        )
    groups = list(getattr(ds, "WaveformSequence", []) or [])
    if not groups:
        raise DicomEcgError("expected a Waveform Sequence (5400,0100), got none")

    # the rhythm group: labelled RHYTHM, else the original group with the most samples
    def rank(i: int) -> tuple[int, int, int]:
        g = groups[i]
        return (
            int(str(getattr(g, "MultiplexGroupLabel", "")).upper() == "RHYTHM"),
            int(str(getattr(g, "WaveformOriginality", "")).upper() == "ORIGINAL"),
            int(getattr(g, "NumberOfWaveformSamples", 0)),
        )

    index = max(range(len(groups)), key=rank)
    group = groups[index]
    try:
        values = ds.waveform_array(index)  # (samples, channels), sensitivity and baseline applied
    except Exception as exc:  # pydicom raises several types for malformed waveform data
        raise DicomEcgError(f"waveform data of group {index} could not be decoded: {exc}") from exc
    leads: dict[str, np.ndarray] = {}
    unnamed: list[int] = []
    for ch, channel in enumerate(group.ChannelDefinitionSequence):
        lead = _lead_of(channel)
        if lead is None:
            unnamed.append(ch)
            continue
        units_seq = getattr(channel, "ChannelSensitivityUnitsSequence", None)
        units = str(units_seq[0].CodeValue) if units_seq else "uV"
        try:
            factor = unit_factor_to_mv(units)
        except Ecg12Error as exc:
            raise DicomEcgError(f"channel {ch} ({lead}): {exc}") from exc
        if lead in leads:
            raise DicomEcgError(f"lead {lead} appears twice in the rhythm group (channels)")
        leads[lead] = np.asarray(values[:, ch], dtype=np.float64) * factor
    fs = float(getattr(group, "SamplingFrequency", 0) or 0)
    ecg = Ecg12.from_leads(leads, fs, units="mV")
    acquired: datetime | None = None
    stamp = str(getattr(ds, "AcquisitionDateTime", "") or "")
    if len(stamp) >= 14:
        try:
            acquired = datetime.strptime(stamp[:14], "%Y%m%d%H%M%S")
        except ValueError:
            acquired = None
    numeric: dict[str, float] = {}
    statements: list[str] = []
    for ann in getattr(ds, "WaveformAnnotationSequence", []) or []:
        text = getattr(ann, "UnformattedTextValue", None)
        if text:
            statements.append(str(text))
        concept = getattr(ann, "ConceptNameCodeSequence", None)
        value = getattr(ann, "NumericValue", None)
        if concept and value is not None and not getattr(ann, "ReferencedSamplePositions", None):
            with contextlib.suppress(TypeError, ValueError):
                numeric[str(concept[0].CodeMeaning)] = float(value)
    return DicomEcg(
        ecg=ecg,
        patient_id=str(getattr(ds, "PatientID", "") or ""),
        patient_name=str(getattr(ds, "PatientName", "") or ""),
        sex=str(getattr(ds, "PatientSex", "") or ""),
        age_years=_age_years(str(getattr(ds, "PatientAge", "") or "")),
        acquired_at=acquired,
        manufacturer=str(getattr(ds, "Manufacturer", "") or ""),
        sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "") or ""),
        device_measurements=numeric,
        device_statements=tuple(statements),
    )


def encode_dicom(
    ecg: Ecg12,
    patient_id: str,
    patient_name: str = "",
    sex: str = "",
    age_years: int | None = None,
    acquired_at: datetime | None = None,
) -> bytes:
    """A DICOM 12-lead ECG Waveform Storage file of ``ecg`` (1 µV per unit, 16-bit, one RHYTHM group).

    For export to a PACS and to build test inputs; the 12-lead IOD allows at most 16384 samples
    per channel, so longer ECGs are refused.

    Raises:
        DicomEcgError: more than 16384 samples per lead, or a sample beyond ±32.767 mV.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    if ecg.n_samples > 16384:
        raise DicomEcgError(f"the 12-lead ECG IOD holds at most 16384 samples per channel, got {ecg.n_samples}")
    digital = np.round(ecg.signals_mv * 1000.0)
    if np.abs(digital).max(initial=0) > 32767:
        raise DicomEcgError("samples must stay within ±32.767 mV for 16-bit µV storage")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(TWELVE_LEAD_ECG_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = TWELVE_LEAD_ECG_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "ECG"
    ds.Manufacturer = "medstream"
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientSex = sex
    if age_years is not None:
        ds.PatientAge = f"{int(age_years):03d}Y"
    if acquired_at is not None:
        ds.AcquisitionDateTime = acquired_at.strftime("%Y%m%d%H%M%S")
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(LEADS)
    group.NumberOfWaveformSamples = ecg.n_samples
    group.SamplingFrequency = f"{ecg.sampling_rate_hz:g}"
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for lead in LEADS:
        ch = Dataset()
        src = Dataset()
        src.CodeValue = _LEAD_TO_SCPECG[lead]
        src.CodingSchemeDesignator = "SCPECG"
        src.CodingSchemeVersion = "1.3"
        src.CodeMeaning = f"Lead {lead}"
        ch.ChannelSourceSequence = [src]
        ch.ChannelSensitivity = "1"
        unit = Dataset()
        unit.CodeValue = "uV"
        unit.CodingSchemeDesignator = "UCUM"
        unit.CodeMeaning = "microvolt"
        ch.ChannelSensitivityUnitsSequence = [unit]
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = "0"
        ch.ChannelSampleSkew = "0"
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = channels
    group.WaveformData = digital.T.astype("<i2").tobytes()
    ds.WaveformSequence = [group]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
