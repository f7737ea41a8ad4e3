"""`Ecg12` validation: every error names what was expected and what was got; aliases; derived leads."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.ecg12.record import LEADS, Ecg12, Ecg12Error, canonical_lead
from dsp.ecg12.wfdb_io import read_wfdb


def _leads(n: int = 5000, value: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {lead: value + 0.01 * rng.standard_normal(n) for lead in LEADS}


def test_valid_ecg_rows_in_standard_order() -> None:
    leads = _leads()
    leads = dict(reversed(list(leads.items())))  # order of the mapping must not matter
    ecg = Ecg12.from_leads(leads, 500)
    assert ecg.signals_mv.shape == (12, 5000)
    assert ecg.duration_s == pytest.approx(10.0)
    assert np.array_equal(ecg.lead("V3"), leads["V3"])
    assert ecg.derived_leads == ()


@pytest.mark.parametrize(
    ("label", "lead"),
    [
        ("ii", "II"),
        ("Lead II", "II"),
        ("MDC_ECG_LEAD_AVF", "aVF"),
        ("DIII", "III"),
        ("C1", "V1"),
        (" v6 ", "V6"),
        ("AVL", "aVL"),
    ],
)
def test_aliases(label: str, lead: str) -> None:
    assert canonical_lead(label) == lead


def test_unknown_label_is_none_and_ignored_but_named_when_leads_missing() -> None:
    assert canonical_lead("vx") is None
    leads = _leads()
    leads["vx"] = leads.pop("V6")
    with pytest.raises(Ecg12Error, match=r"missing leads V6; expected I, II.*ignored unknown names: 'vx'"):
        Ecg12.from_leads(leads, 500)


def test_microvolts_converted() -> None:
    leads = {k: v * 1000.0 for k, v in _leads().items()}
    ecg = Ecg12.from_leads(leads, 500, units="µV")
    assert np.allclose(ecg.lead("I"), leads["I"] / 1000.0)
    assert np.allclose(Ecg12.from_leads(leads, 500, units="uV").signals_mv, ecg.signals_mv)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": "V"}, r"units must be mV or µV, got 'V'"),
        ({"sampling_rate_hz": 200}, r"sampling rate must be 250-1000 Hz, got 200"),
        ({"sampling_rate_hz": 2000}, r"sampling rate must be 250-1000 Hz, got 2000"),
        ({"sampling_rate_hz": float("nan")}, r"sampling rate must be 250-1000 Hz, got nan"),
    ],
)
def test_units_and_rate_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"sampling_rate_hz": 500, **kwargs}
    with pytest.raises(Ecg12Error, match=message):
        Ecg12.from_leads(_leads(), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("n", "got"), [(3999, "7.998 s"), (30001, "60.002 s")])
def test_length_errors(n: int, got: str) -> None:
    with pytest.raises(Ecg12Error, match=rf"length must be 8-60 s, got {got} \({n} samples at 500 Hz\)"):
        Ecg12.from_leads(_leads(n), 500)


def test_missing_duplicate_unequal_nonfinite_and_unit_mistake() -> None:
    leads = _leads()
    del leads["V2"], leads["aVR"]
    with pytest.raises(Ecg12Error, match=r"missing leads V2; expected"):  # aVR is derived from I and II
        Ecg12.from_leads(leads, 500)
    with pytest.raises(Ecg12Error, match=r"missing leads aVR, V2"):
        Ecg12.from_leads(leads, 500, derive_limb_leads=False)
    leads = _leads()
    leads["Lead I"] = leads["I"]
    with pytest.raises(Ecg12Error, match=r"lead I given twice"):
        Ecg12.from_leads(leads, 500)
    leads = _leads()
    leads["V4"] = leads["V4"][:-1]
    with pytest.raises(Ecg12Error, match=r"same number of samples, got .*'V4': 4999"):
        Ecg12.from_leads(leads, 500)
    leads = _leads()
    leads["V5"][10] = np.nan
    with pytest.raises(Ecg12Error, match=r"finite, got 1 NaN/inf in leads V5"):
        Ecg12.from_leads(leads, 500)
    leads = _leads()
    leads["II"] = leads["II"] + np.where(np.arange(5000) % 500 == 0, 1200.0, 0.0)  # µV sent as mV
    with pytest.raises(Ecg12Error, match=r"within ±20 mV, got 1200.0 mV .*µV labelled as mV"):
        Ecg12.from_leads(leads, 500)
    leads = _leads()
    leads["I"] = leads["I"].reshape(50, 100)
    with pytest.raises(Ecg12Error, match=r"lead I must be 1-D samples, got shape \(50, 100\)"):
        Ecg12.from_leads(leads, 500)


def test_eight_leads_complete_with_einthoven_goldberger() -> None:
    rng = np.random.default_rng(1)
    lead_i, lead_ii = rng.standard_normal(5000) * 0.3, rng.standard_normal(5000) * 0.3
    leads = {"I": lead_i, "II": lead_ii, **{f"V{k}": rng.standard_normal(5000) * 0.3 for k in range(1, 7)}}
    ecg = Ecg12.from_leads(leads, 500)
    assert ecg.derived_leads == ("III", "aVR", "aVL", "aVF")
    assert np.allclose(ecg.lead("III"), lead_ii - lead_i)
    assert np.allclose(ecg.lead("aVR") + ecg.lead("aVL") + ecg.lead("aVF"), 0.0)
    assert np.allclose(ecg.lead("aVL"), (lead_i - ecg.lead("III")) / 2.0)


def test_unknown_lead_lookup() -> None:
    ecg = Ecg12.from_leads(_leads(), 500)
    with pytest.raises(Ecg12Error, match=r"unknown lead 'V7'; expected one of I, II"):
        ecg.lead("V7")


def test_real_records(ecg_data_dir) -> None:  # type: ignore[no-untyped-def]
    root = ecg_data_dir / "12lead"
    ecg, comments = read_wfdb(root / "cpsc2018" / "A0001")  # .mat (16+24), 15 s
    assert (ecg.sampling_rate_hz, ecg.n_samples) == (500.0, 7500)
    assert "Dx: RBBB" in comments
    ecg, _ = read_wfdb(root / "ptbdb" / "s0010_re")  # 15 channels, 1000 Hz, 38.4 s: Frank leads ignored
    assert (ecg.sampling_rate_hz, ecg.signals_mv.shape) == (1000.0, (12, 38400))
    with pytest.raises(Ecg12Error, match=r"sampling rate must be 250-1000 Hz, got 100"):
        read_wfdb(root / "ptbxl" / "00001_lr")
    with pytest.raises(FileNotFoundError, match=r"expected WFDB header .*nothere.hea"):
        read_wfdb(root / "nothere")
