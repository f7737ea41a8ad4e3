"""`medstream ecg12-eval`: label parsing, per-record output, agreement table, JSON."""

from __future__ import annotations

import json

import pytest

from dsp.ecg12.eval import agreement, main, parse_header
from dsp.ecg12.flags import Sex
from medstream.cli import SUBCOMMANDS


def test_parse_header_cpsc_cinc_ptb() -> None:
    cpsc = parse_header(["Age: 85", "Sex: Female", "Dx: AF,RBBB"])
    assert cpsc.labels == {"AF", "RBBB"} and cpsc.sex is Sex.FEMALE and cpsc.age_years == 85
    cinc = parse_header([" Age: 71", " Sex: Male", " Dx: 59118001,426177001"])
    assert cinc.labels == {"RBBB"} and cinc.sex is Sex.MALE
    ptb = parse_header(["age: 81", "sex: female", "Reason for admission: Myocardial infarction"])
    assert ptb.raw_dx is None and ptb.labels == frozenset() and ptb.age_years == 81


def test_agreement_counts_and_exclusions() -> None:
    results = [
        {"record": "a", "dx": "RBBB", "labels": ["RBBB"], "flags": ["wide_qrs", "rbbb_pattern"]},
        {"record": "b", "dx": "LBBB", "labels": ["LBBB"], "flags": ["wide_qrs"]},
        {"record": "c", "dx": "Normal", "labels": [], "flags": ["wide_qrs"]},
        {"record": "d", "dx": "698252002", "labels": ["IVCD"], "flags": ["wide_qrs"]},  # excluded
        {"record": "e", "dx": None, "labels": [], "flags": ["wide_qrs"]},  # unlabelled: not scored
        {"record": "f", "error": "rejected"},
    ]
    table = agreement(results)  # type: ignore[arg-type]
    wide = table["wide_qrs"]
    assert (wide["tp"], wide["fn"], wide["fp"], wide["tn"]) == (2, 0, 1, 0)
    assert wide["false_positives"] == ["c"]
    lbbb = table["lbbb_pattern"]
    assert (lbbb["tp"], lbbb["fn"], lbbb["missed"]) == (0, 1, ["b"])
    assert lbbb["specificity"] == 1.0


def test_cli_on_real_records(ecg_data_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert SUBCOMMANDS["ecg12-eval"][0] == "dsp.ecg12.eval"
    root = ecg_data_dir / "12lead"
    out = tmp_path / "e.json"
    args = [
        str(root / "cpsc2018" / "A0010.hea"),
        str(root / "cpsc2018" / "A0010.mat"),
        str(root / "cpsc2018" / "A0002"),
    ]
    args += [str(root / "ptbxl" / "00001_lr"), "--synthetic", "3", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "A0010" in text and "rbbb_pattern" in text and "QRS" in text
    assert "00001_lr   rejected: sampling rate must be 250-1000 Hz, got 100" in text
    assert "pr_ms" in text and "IEC" in text
    data = json.loads(out.read_text())
    assert [r["record"] for r in data["records"]] == ["A0010", "A0002", "00001_lr"]  # A0010 once
    a0010 = data["records"][0]
    assert a0010["labels"] == ["RBBB"] and a0010["measurements"]["qrs_ms"] >= 120
    assert data["agreement"]["rbbb_pattern"]["tp"] == 1 and data["agreement"]["rbbb_pattern"]["tn"] == 1
    assert data["synthetic"]["n"] == 3


def test_cli_needs_something(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "give RECORD paths" in capsys.readouterr().err
