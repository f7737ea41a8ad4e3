# ruff: noqa: RUF001  (the Chinese rule texts use full-width punctuation, as Chinese typesetting does)
"""Triage flags (not diagnoses) and the reading-queue priority they give.

Each flag carries the rule as shown to the reader (Chinese and English) and the values that
triggered it, so the expert sees *why* a request was put first. Rules:

* QTc prolonged: Fridericia QTc >= 450 ms (men, sex unknown) / >= 460 ms (women) (AHA/ACCF/HRS
  2009 part IV); >= 500 ms is raised to urgent. Fridericia, not Bazett, because Bazett
  over-corrects at the tachycardias common in these referrals; both are shown.
* Wide QRS: QRS >= 120 ms. LBBB / RBBB pattern on top of it (AHA/ACCF/HRS 2009 part III,
  simplified to what the median beat shows): RBBB = terminal positive deflection in V1 (above its
  J point) and terminal S in I or V6; LBBB = V1 predominantly negative (its Q or S deeper than
  its R is tall), V6 and I predominantly positive without Q or terminal S.
* First-degree AV block: PR > 200 ms with a P wave found.
* AF suspected: irregular RR (median |ΔRR| / median RR > 0.08) and no P wave on the median beat.
* ST elevation: at the J point in >= 2 contiguous leads, thresholds of the 4th universal
  definition of MI (Thygesen 2018): >= 0.1 mV in every lead except V2-V3, where >= 0.2 mV (men >= 40 y),
  >= 0.25 mV (men < 40 y), >= 0.15 mV (women; also used when sex is unknown, the sensitive
  choice). aVR is not used for elevation.
* ST depression: <= -0.05 mV at the J point and at J+60 ms, horizontal or down-sloping (J to
  J+80 ms slope <= 0.5 mV/s), in >= 2 contiguous leads (aVR excluded).
* With QRS >= 120 ms only ST deviation *concordant* with the lead's QRS counts for either ST
  flag (Sgarbossa et al., NEJM 334:481-487, 1996): discordant ST is the expected secondary change.

Priority: suspected STEMI first, then AF / QTc >= 500 / ST depression / LBBB, then any other
flag, then none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from dsp.ecg12.measurements import Measurements

#: contiguous lead pairs: the frontal plane in anatomical groups, the chest leads as neighbours
CONTIGUOUS_PAIRS: tuple[tuple[str, str], ...] = (
    ("II", "III"),
    ("II", "aVF"),
    ("III", "aVF"),
    ("I", "aVL"),
    ("I", "V6"),
    ("V1", "V2"),
    ("V2", "V3"),
    ("V3", "V4"),
    ("V4", "V5"),
    ("V5", "V6"),
)


class FlagKind(str, Enum):
    """What a triage flag says; the value is its stable JSON name."""

    STEMI_SUSPECTED = "st_elevation"
    ST_DEPRESSION = "st_depression"
    AF_SUSPECTED = "af_suspected"
    QTC_PROLONGED = "qtc_prolonged"
    WIDE_QRS = "wide_qrs"
    LBBB_PATTERN = "lbbb_pattern"
    RBBB_PATTERN = "rbbb_pattern"
    AV_BLOCK_1 = "first_degree_av_block"


class Priority(IntEnum):
    """Reading-queue priority; lower sorts first."""

    STAT = 0  # suspected STEMI
    URGENT = 1
    FLAGGED = 2
    ROUTINE = 3


class Sex(str, Enum):
    """Patient sex as the thresholds need it."""

    MALE = "M"
    FEMALE = "F"
    UNKNOWN = "U"


@dataclass(frozen=True)
class Flag:
    """One triage flag: the rule as shown to the reader and the values that triggered it."""

    kind: FlagKind
    rule_zh: str
    rule_en: str
    values: dict[str, float | str] = field(default_factory=dict)
    urgent: bool = False

    def to_json(self) -> dict[str, object]:
        """Plain dict for JSON."""
        return {
            "kind": self.kind.value,
            "rule_zh": self.rule_zh,
            "rule_en": self.rule_en,
            "values": self.values,
            "urgent": self.urgent,
        }


@dataclass(frozen=True)
class Triage:
    """Flags of one ECG and the queue priority they give."""

    flags: tuple[Flag, ...]
    priority: Priority

    def kinds(self) -> frozenset[FlagKind]:
        """The set of flag kinds raised."""
        return frozenset(f.kind for f in self.flags)

    def to_json(self) -> dict[str, object]:
        """Plain dict for JSON."""
        return {"priority": self.priority.name.lower(), "flags": [f.to_json() for f in self.flags]}


def ste_threshold_mv(lead: str, sex: Sex, age_years: float | None) -> float:
    """4th-UDMI ST-elevation cut-point for one lead (mV)."""
    if lead not in ("V2", "V3"):
        return 0.10
    if sex is Sex.MALE:
        return 0.25 if age_years is not None and age_years < 40 else 0.20
    return 0.15


def _contiguous(hits: set[str]) -> list[tuple[str, str]]:
    return [pair for pair in CONTIGUOUS_PAIRS if pair[0] in hits and pair[1] in hits]


def triage(m: Measurements, sex: Sex = Sex.UNKNOWN, age_years: float | None = None) -> Triage:
    """Raise the triage flags for one ECG's measurements (rules in the module docstring)."""
    flags: list[Flag] = []
    leads = m.leads
    # with a wide QRS, ST deviation opposite to the QRS is expected (secondary repolarisation):
    # only ST concordant with the QRS counts (Sgarbossa 1996, criteria 1 and 2)
    wide = m.qrs_ms >= 120.0

    def concordant(name: str, elevation: bool) -> bool:
        net = leads[name].qrs_net_mv_ms
        return not wide or (net > 0 if elevation else net < 0)

    # ST elevation
    ste = {
        name: amp.st_j_mv
        for name, amp in leads.items()
        if name != "aVR" and amp.st_j_mv >= ste_threshold_mv(name, sex, age_years) and concordant(name, True)
    }
    pairs = _contiguous(set(ste))
    if pairs:
        involved = sorted({lead for pair in pairs for lead in pair}, key=list(leads).index)
        flags.append(
            Flag(
                FlagKind.STEMI_SUSPECTED,
                rule_zh="≥2个相邻导联 J点ST段抬高（QRS≥120 ms时仅计与QRS主波同向者）：V2-V3 ≥0.2 mV（男≥40岁）/≥0.25 mV（男<40岁）/≥0.15 mV（女或性别不详），其余导联 ≥0.1 mV（第四版心肌梗死通用定义）",
                rule_en="ST elevation at the J point in >=2 contiguous leads (with QRS >=120 ms only ST concordant with the QRS counts): V2-V3 >=0.2 mV (men >=40 y) / >=0.25 mV (men <40 y) / >=0.15 mV (women or sex unknown), other leads >=0.1 mV (4th universal definition of MI)",
                values={f"ST_J_{lead}_mV": round(ste[lead], 3) for lead in involved},
                urgent=True,
            )
        )
    # ST depression
    std = {
        name: amp.st_j_mv
        for name, amp in leads.items()
        if name != "aVR"
        and amp.st_j_mv <= -0.05
        and amp.st_j60_mv <= -0.05
        and amp.st_slope_mv_per_s <= 0.5
        and concordant(name, False)
    }
    pairs = _contiguous(set(std))
    if pairs:
        involved = sorted({lead for pair in pairs for lead in pair}, key=list(leads).index)
        flags.append(
            Flag(
                FlagKind.ST_DEPRESSION,
                rule_zh="≥2个相邻导联 ST段水平或下斜型压低 ≥0.05 mV（J点及J点后60 ms；aVR除外；QRS≥120 ms时仅计与QRS主波同向者）",
                rule_en="horizontal or down-sloping ST depression >=0.05 mV (at J and J+60 ms) in >=2 contiguous leads (aVR excluded; with QRS >=120 ms only ST concordant with the QRS counts)",
                values={f"ST_J_{lead}_mV": round(std[lead], 3) for lead in involved},
                urgent=True,
            )
        )
    # AF
    if not m.p_present and not m.rhythm_regular:
        flags.append(
            Flag(
                FlagKind.AF_SUSPECTED,
                rule_zh="RR间期绝对不齐（相邻RR差中位数/RR中位数 >0.08）且中位心搏未见P波",
                rule_en="irregular RR (median |successive RR difference| / median RR > 0.08) and no P wave on the median beat",
                values={"rr_irregularity": round(m.rr_irregularity, 3), "heart_rate_bpm": round(m.heart_rate_bpm)},
                urgent=True,
            )
        )
    # QTc
    qtc = m.qtc_fridericia_ms
    limit = 460.0 if sex is Sex.FEMALE else 450.0
    if qtc is not None and qtc >= limit:
        flags.append(
            Flag(
                FlagKind.QTC_PROLONGED,
                rule_zh=f"QTc（Fridericia）≥{limit:.0f} ms（男或性别不详450，女460）；≥500 ms为紧急",
                rule_en=f"QTc (Fridericia) >= {limit:.0f} ms (men or sex unknown 450, women 460); >= 500 ms is urgent",
                values={
                    "qtc_fridericia_ms": round(qtc),
                    "qtc_bazett_ms": round(m.qtc_bazett_ms or 0.0),
                    "qt_ms": round(m.qt_ms or 0.0),
                    "qrs_ms": round(m.qrs_ms),
                },
                urgent=qtc >= 500.0,
            )
        )
    # QRS width and bundle-branch pattern
    if m.qrs_ms >= 120.0:
        flags.append(
            Flag(
                FlagKind.WIDE_QRS,
                rule_zh="QRS时限 ≥120 ms",
                rule_en="QRS duration >= 120 ms",
                values={"qrs_ms": round(m.qrs_ms)},
            )
        )
        v1, v6, lead_i = leads["V1"], leads["V6"], leads["I"]
        # the terminal R' of V1 must stand above the J point: in LBBB V1's QS returns steeply
        # into an elevated ST, which alone would make its last 40 ms positive
        r_prime = v1.terminal_qrs_mv > max(0.05, v1.st_j_mv + 0.05)
        if r_prime and (lead_i.terminal_qrs_mv < -0.02 or v6.terminal_qrs_mv < -0.02):
            flags.append(
                Flag(
                    FlagKind.RBBB_PATTERN,
                    rule_zh="QRS ≥120 ms，V1终末正向波（rsR'），I或V6终末S波",
                    rule_en="QRS >= 120 ms, terminal positive deflection in V1 (rsR'), terminal S in I or V6",
                    values={
                        "qrs_ms": round(m.qrs_ms),
                        "V1_terminal_mV": round(v1.terminal_qrs_mv, 3),
                        "I_terminal_mV": round(lead_i.terminal_qrs_mv, 3),
                        "V6_terminal_mV": round(v6.terminal_qrs_mv, 3),
                    },
                )
            )
        elif (
            v1.qrs_net_mv_ms < 0
            and v1.r_mv < min(v1.q_mv, v1.s_mv) * -1.0
            and v6.qrs_net_mv_ms > 0
            and lead_i.qrs_net_mv_ms > 0
            and v6.q_mv > -0.05
            and lead_i.q_mv > -0.05
            and v6.terminal_qrs_mv >= -0.05
        ):
            flags.append(
                Flag(
                    FlagKind.LBBB_PATTERN,
                    rule_zh="QRS ≥120 ms，V1以负向波为主（QS或rS），I、V6以正向波为主且无q波、无终末S波",
                    rule_en="QRS >= 120 ms, V1 predominantly negative (QS or rS), I and V6 predominantly positive without q or terminal S",
                    values={
                        "qrs_ms": round(m.qrs_ms),
                        "V1_net_mV_ms": round(v1.qrs_net_mv_ms, 1),
                        "V6_net_mV_ms": round(v6.qrs_net_mv_ms, 1),
                        "V6_Q_mV": round(v6.q_mv, 3),
                    },
                    urgent=True,
                )
            )
    # first-degree AV block
    if m.pr_ms is not None and m.pr_ms > 200.0:
        flags.append(
            Flag(
                FlagKind.AV_BLOCK_1,
                rule_zh="PR间期 >200 ms（一度房室传导阻滞可能）",
                rule_en="PR interval > 200 ms (possible first-degree AV block)",
                values={"pr_ms": round(m.pr_ms)},
            )
        )
    kinds = {f.kind for f in flags}
    if FlagKind.STEMI_SUSPECTED in kinds:
        priority = Priority.STAT
    elif any(f.urgent for f in flags):
        priority = Priority.URGENT
    elif flags:
        priority = Priority.FLAGGED
    else:
        priority = Priority.ROUTINE
    return Triage(flags=tuple(flags), priority=priority)
