"""Uploads to `Ecg12`: WFDB (bytes or a directory) and DICOM 12-lead ECG, and the triage of an upload.

The HTTP layer hands over what it received (file names and bytes); this module decides the
format from the content, validates, and returns the ECG with what the file says about the
patient, so one call serves the upload route and the device snapshot later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dsp.ecg12.flags import Priority, Sex, Triage, triage
from dsp.ecg12.measurements import Analysis, analyze
from dsp.ecg12.record import Ecg12
from readings.dicom import parse_dicom
from readings.wfdb_format import ecg_from_files


class IngestError(ValueError):
    """The upload is not a supported ECG file; the message names what was expected and what was got."""


@dataclass(frozen=True)
class Upload:
    """A decoded upload: the ECG and what the file itself says (empty when it says nothing)."""

    ecg: Ecg12
    source_format: str  # "wfdb" or "dicom"
    patient_id: str = ""
    patient_name: str = ""
    sex: str = ""
    age_years: float | None = None
    comments: tuple[str, ...] = ()
    device_measurements: dict[str, float] = field(default_factory=dict)


def is_dicom(data: bytes) -> bool:
    """True if ``data`` has the DICOM Part 10 preamble ('DICM' at byte 128)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def parse_upload(files: Mapping[str, bytes]) -> Upload:
    """Decode an upload of one DICOM file, or the files of one WFDB record (.hea + signal files).

    Raises:
        IngestError: nothing given, several DICOM files, or neither a .hea nor a DICOM file.
        readings.wfdb_format.WfdbFormatError, readings.dicom.DicomEcgError,
        dsp.ecg12.record.Ecg12Error: the file is malformed or the ECG is invalid (all ValueError).
    """
    if not files:
        raise IngestError("expected a DICOM ECG file or WFDB files (.hea + .dat/.mat), got no file")
    dicoms = [name for name, data in files.items() if is_dicom(data)]
    if dicoms:
        if len(files) != 1:
            raise IngestError(f"expected one DICOM file per upload, got {len(files)} files: {sorted(files)}")
        d = parse_dicom(files[dicoms[0]])
        return Upload(
            ecg=d.ecg,
            source_format="dicom",
            patient_id=d.patient_id,
            patient_name=d.patient_name,
            sex=d.sex,
            age_years=d.age_years,
            comments=d.device_statements,
            device_measurements=d.device_measurements,
        )
    if not any(name.endswith(".hea") for name in files):
        raise IngestError(f"expected a DICOM file (DICM preamble) or a WFDB .hea header, got {sorted(files)}")
    ecg, header = ecg_from_files(files)
    sex, age = "", None
    for c in header.comments:
        key, _, value = c.partition(":")
        if key.strip().lower() == "sex":
            sex = {"male": "M", "m": "M", "female": "F", "f": "F"}.get(value.strip().lower(), "")
        elif key.strip().lower() == "age":
            try:
                age = float(value.strip())
            except ValueError:
                age = None
    return Upload(ecg=ecg, source_format="wfdb", sex=sex, age_years=age, comments=header.comments)


def read_wfdb_directory(directory: str | Path, record_name: str) -> Upload:
    """An upload from a WFDB record on disk (``directory/record_name.hea`` and its signal files)."""
    folder = Path(directory)
    files = {p.name: p.read_bytes() for p in folder.glob(f"{record_name}.*") if p.is_file()}
    if f"{record_name}.hea" not in files:
        raise IngestError(f"expected {folder / (record_name + '.hea')}, not found")
    return parse_upload({n: d for n, d in files.items() if n.endswith((".hea", ".dat", ".mat"))})


@dataclass(frozen=True, eq=False)
class Assessment:
    """The measurements and triage of an upload, ready for `ReadingDesk.submit`."""

    analysis: Analysis
    triage: Triage

    @property
    def priority(self) -> Priority:
        """Queue priority from the flags."""
        return self.triage.priority


def assess(ecg: Ecg12, sex: str = "", age_years: float | None = None) -> Assessment:
    """Measure and triage an ECG (sex "M"/"F"/other, age for the ST-elevation thresholds).

    Raises dsp.ecg12.measurements.MeasurementError when too few beats are found.
    """
    s = {"M": Sex.MALE, "F": Sex.FEMALE}.get(sex.upper()[:1] if sex else "", Sex.UNKNOWN)
    analysis = analyze(ecg)
    return Assessment(analysis=analysis, triage=triage(analysis.measurements, s, age_years))
