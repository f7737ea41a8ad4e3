"""Triage flags: rules on constructed measurements, and on a handful of real labelled records."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from dsp.ecg12.flags import FlagKind, Priority, Sex, ste_threshold_mv, triage
from dsp.ecg12.measurements import LeadAmplitudes, Measurements, measure
from dsp.ecg12.record import LEADS
from dsp.ecg12.wfdb_io import read_wfdb

FLAT = LeadAmplitudes(0.1, 0.0, 1.0, -0.2, 0.3, 0.0, 0.0, 0.0, 20.0, 0.0)


def _normal(**changes: object) -> Measurements:
    m = Measurements(
        heart_rate_bpm=70.0,
        rr_mean_ms=857.0,
        rr_irregularity=0.02,
        rhythm_regular=True,
        n_beats=12,
        n_beats_in_median=10,
        p_present=True,
        p_duration_ms=100.0,
        pr_ms=160.0,
        qrs_ms=90.0,
        qt_ms=380.0,
        qtc_bazett_ms=410.0,
        qtc_fridericia_ms=400.0,
        axis_deg=50.0,
        leads={lead: FLAT for lead in LEADS},
    )
    return replace(m, **changes)  # type: ignore[arg-type]


def _st(values: dict[str, float], **changes: object) -> Measurements:
    leads = {lead: replace(FLAT, st_j_mv=values.get(lead, 0.0), st_j60_mv=values.get(lead, 0.0)) for lead in LEADS}
    return _normal(leads=leads, **changes)


def test_normal_has_no_flag() -> None:
    t = triage(_normal())
    assert t.flags == () and t.priority is Priority.ROUTINE


def test_ste_needs_two_contiguous_leads_and_is_stat() -> None:
    t = triage(_st({"II": 0.15, "aVF": 0.12}))
    assert t.kinds() == {FlagKind.STEMI_SUSPECTED} and t.priority is Priority.STAT
    flag = t.flags[0]
    assert "contiguous" in flag.rule_en and "相邻导联" in flag.rule_zh
    assert flag.values == {"ST_J_II_mV": 0.15, "ST_J_aVF_mV": 0.12}
    assert triage(_st({"II": 0.15, "V1": 0.12})).flags == ()  # not contiguous
    assert triage(_st({"aVR": 0.3, "III": 0.05})).flags == ()  # aVR never counts for elevation


def test_v2_v3_thresholds_by_sex_and_age() -> None:
    assert ste_threshold_mv("V2", Sex.MALE, 45) == 0.20
    assert ste_threshold_mv("V3", Sex.MALE, 30) == 0.25
    assert ste_threshold_mv("V2", Sex.FEMALE, 30) == 0.15
    assert ste_threshold_mv("V2", Sex.UNKNOWN, None) == 0.15
    assert ste_threshold_mv("V5", Sex.MALE, 30) == 0.10
    m = _st({"V2": 0.22, "V3": 0.22})
    assert FlagKind.STEMI_SUSPECTED in triage(m, Sex.MALE, 50).kinds()
    assert triage(m, Sex.MALE, 30).flags == ()  # young men: 0.25 mV


def test_st_depression_needs_flat_or_downsloping() -> None:
    down = {
        lead: replace(FLAT, st_j_mv=-0.07, st_j60_mv=-0.08, st_slope_mv_per_s=-0.2) if lead in ("V5", "V6") else FLAT
        for lead in LEADS
    }
    t = triage(_normal(leads=down))
    assert t.kinds() == {FlagKind.ST_DEPRESSION} and t.priority is Priority.URGENT
    up = {
        lead: replace(FLAT, st_j_mv=-0.15, st_j60_mv=-0.06, st_slope_mv_per_s=2.0) if lead in ("V5", "V6") else FLAT
        for lead in LEADS
    }
    assert triage(_normal(leads=up)).flags == ()  # up-sloping (J-point) depression is not flagged
    j_only = {lead: replace(FLAT, st_j_mv=-0.08, st_j60_mv=0.0) if lead in ("V5", "V6") else FLAT for lead in LEADS}
    assert triage(_normal(leads=j_only)).flags == ()  # back to baseline by J+60: not horizontal


def test_wide_qrs_discordant_st_is_secondary() -> None:
    # QRS 150 ms, V1-V3 negative QRS with ST elevation (as in LBBB): discordant, not a STEMI flag
    leads = {lead: FLAT for lead in LEADS}
    for lead in ("V1", "V2", "V3"):
        leads[lead] = replace(FLAT, st_j_mv=0.3, st_j60_mv=0.3, qrs_net_mv_ms=-60.0)
    t = triage(_normal(qrs_ms=150.0, leads=leads))
    assert FlagKind.STEMI_SUSPECTED not in t.kinds() and FlagKind.WIDE_QRS in t.kinds()
    for lead in ("V1", "V2", "V3"):
        leads[lead] = replace(FLAT, st_j_mv=0.3, st_j60_mv=0.3, qrs_net_mv_ms=60.0)  # concordant: counts
    assert FlagKind.STEMI_SUSPECTED in triage(_normal(qrs_ms=150.0, leads=leads)).kinds()


def test_qtc_af_and_av_block_rules() -> None:
    assert triage(_normal(qtc_fridericia_ms=455.0)).kinds() == {FlagKind.QTC_PROLONGED}
    assert triage(_normal(qtc_fridericia_ms=455.0), Sex.FEMALE).flags == ()
    long = triage(_normal(qtc_fridericia_ms=510.0))
    assert long.priority is Priority.URGENT and long.flags[0].values["qtc_fridericia_ms"] == 510
    af = triage(_normal(rhythm_regular=False, rr_irregularity=0.2, p_present=False, pr_ms=None, p_duration_ms=None))
    assert af.kinds() == {FlagKind.AF_SUSPECTED} and af.priority is Priority.URGENT
    assert triage(_normal(rhythm_regular=False, rr_irregularity=0.2)).flags == ()  # P waves: not AF
    avb = triage(_normal(pr_ms=230.0))
    assert avb.kinds() == {FlagKind.AV_BLOCK_1} and avb.priority is Priority.FLAGGED
    assert triage(_normal(pr_ms=200.0)).flags == ()  # > 200 ms, not >=


@cache
def _flags(root: str, record: str) -> tuple[frozenset[FlagKind], Priority]:
    ecg, _ = read_wfdb(Path(root) / record)
    t = triage(measure(ecg))
    return t.kinds(), t.priority


@pytest.mark.parametrize(
    ("record", "expected", "absent"),
    [
        ("cpsc2018/A0002", set(), set(FlagKind)),  # normal
        ("cpsc2018/A0010", {FlagKind.RBBB_PATTERN, FlagKind.WIDE_QRS}, {FlagKind.LBBB_PATTERN}),
        (
            "cpsc2018/A0044",
            {FlagKind.LBBB_PATTERN, FlagKind.WIDE_QRS},
            {FlagKind.RBBB_PATTERN, FlagKind.STEMI_SUSPECTED},
        ),
        ("cpsc2018/A0102", {FlagKind.AV_BLOCK_1}, {FlagKind.AF_SUSPECTED}),
        ("cpsc2018/A0043", {FlagKind.AF_SUSPECTED, FlagKind.RBBB_PATTERN}, {FlagKind.AV_BLOCK_1}),
        ("cpsc2018/A0021", {FlagKind.STEMI_SUSPECTED}, {FlagKind.WIDE_QRS}),
        ("cpsc2018/A0100", {FlagKind.ST_DEPRESSION}, {FlagKind.STEMI_SUSPECTED}),
    ],
)
def test_flags_on_labelled_records(ecg_data_dir, record: str, expected: set[FlagKind], absent: set[FlagKind]) -> None:  # type: ignore[no-untyped-def]
    kinds, priority = _flags(str(ecg_data_dir / "12lead"), record)
    assert expected <= kinds, kinds
    assert not (absent & kinds), kinds
    if FlagKind.STEMI_SUSPECTED in kinds:
        assert priority is Priority.STAT
    if not kinds:
        assert priority is Priority.ROUTINE
