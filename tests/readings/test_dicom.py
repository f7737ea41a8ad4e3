"""DICOM 12-lead ECG: a real device export (pydicom's Mortara file), our export, every refusal."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dsp.ecg12.measurements import measure
from dsp.ecg12.record import LEADS, Ecg12, Ecg12Error
from readings.dicom import DicomEcgError, encode_dicom, parse_dicom

MORTARA = get_testdata_file("waveform_ecg.dcm")


def _mortara() -> bytes:
    assert MORTARA is not None
    with open(MORTARA, "rb") as f:
        return f.read()


def test_reads_device_export() -> None:
    d = parse_dicom(_mortara())
    assert (d.ecg.sampling_rate_hz, d.ecg.n_samples) == (1000.0, 10000)  # the RHYTHM group, not the median beat
    assert (d.sex, d.age_years, d.patient_id) == ("F", 42.0, "642341")
    assert d.acquired_at == datetime(2013, 1, 25, 10, 59, 19)
    assert d.manufacturer.startswith("Mortara")
    assert d.device_measurements["QRS Duration"] == 75.0 and d.device_statements == ("RITMO SINUSALE", "ECG NORMALE")
    # channel sensitivity 1.25 µV/unit applied: lead III = II - I holds sample by sample (Einthoven)
    assert np.allclose(d.ecg.lead("III"), d.ecg.lead("II") - d.ecg.lead("I"), atol=0.01)


def test_our_measurements_agree_with_the_devices() -> None:
    """The Mortara's own global measurements are an independent reference for one normal ECG."""
    d = parse_dicom(_mortara())
    m = measure(d.ecg)
    dev = d.device_measurements
    assert m.rr_mean_ms == pytest.approx(dev["RR Interval"], abs=5)
    assert m.pr_ms == pytest.approx(dev["PR Interval"], abs=15)
    assert m.qrs_ms == pytest.approx(dev["QRS Duration"], abs=10)
    assert m.qt_ms == pytest.approx(dev["QT Interval"], abs=25)
    assert m.axis_deg == pytest.approx(dev["QRS Axis"], abs=10)


def test_round_trip(twelve_lead_dir) -> None:  # type: ignore[no-untyped-def]
    ecg = parse_dicom(_mortara()).ecg
    data = encode_dicom(ecg, "P-7", "Wang^Fang", "F", 42, datetime(2026, 11, 25, 9, 30))
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.9.1.1" and ds.Modality == "ECG"
    back = parse_dicom(data)
    assert np.abs(back.ecg.signals_mv - ecg.signals_mv).max() <= 0.0005 + 1e-12  # 1 µV quantisation
    assert (back.patient_id, back.sex, back.age_years, back.acquired_at) == (
        "P-7",
        "F",
        42.0,
        datetime(2026, 11, 25, 9, 30),
    )


def test_eight_lead_dicom_gets_derived_limb_leads() -> None:
    ecg = parse_dicom(_mortara()).ecg
    ds = pydicom.dcmread(io.BytesIO(encode_dicom(ecg, "P")))
    group = ds.WaveformSequence[0]
    keep = [LEADS.index(lead) for lead in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")]
    samples = np.frombuffer(group.WaveformData, dtype="<i2").reshape(-1, 12)[:, keep]
    group.ChannelDefinitionSequence = [group.ChannelDefinitionSequence[i] for i in keep]
    group.NumberOfWaveformChannels = 8
    group.WaveformData = samples.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    d = parse_dicom(buf.getvalue())
    assert d.ecg.derived_leads == ("III", "aVR", "aVL", "aVF")
    assert np.allclose(d.ecg.lead("aVF"), ecg.lead("II") - ecg.lead("I") / 2.0, atol=0.002)


def test_refusals() -> None:
    with pytest.raises(DicomEcgError, match=r"expected a DICOM file"):
        parse_dicom(b"not dicom at all")
    ct = get_testdata_file("CT_small.dcm")
    assert ct is not None
    with pytest.raises(
        DicomEcgError, match=r"SOP class must be .*12-lead ECG Waveform Storage.*got 1.2.840.10008.5.1.4.1.1.2"
    ):
        parse_dicom(Path(ct).read_bytes())
    ds = pydicom.dcmread(io.BytesIO(_mortara()))
    ds.WaveformSequence[0].SamplingFrequency = "100"
    ds.WaveformSequence[1].SamplingFrequency = "100"
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(Ecg12Error, match=r"sampling rate must be 250-1000 Hz, got 100"):
        parse_dicom(buf.getvalue())
    ds = pydicom.dcmread(io.BytesIO(_mortara()))
    for ch in ds.WaveformSequence[0].ChannelDefinitionSequence:
        ch.ChannelSensitivityUnitsSequence[0].CodeValue = "mmHg"
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(DicomEcgError, match=r"channel 0 \(I\): units must be mV or µV, got 'mmHg'"):
        parse_dicom(buf.getvalue())
    del ds.WaveformSequence
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(DicomEcgError, match=r"expected a Waveform Sequence"):
        parse_dicom(buf.getvalue())
    rng = np.random.default_rng(0)
    long = Ecg12.from_leads({lead: 0.01 * rng.standard_normal(20000) for lead in LEADS}, 1000)
    with pytest.raises(DicomEcgError, match=r"at most 16384 samples per channel, got 20000"):
        encode_dicom(long, "P")
