# ruff: noqa: RUF001  (Chinese labels use full-width punctuation, as Chinese typesetting does)
"""The signed report as a printable PDF in the standard 12-lead layout.

A4 landscape, drawn in millimetre coordinates (one axes spanning the page, 1 unit = 1 mm), so
the calibration is exact by construction and checkable on a raster: 25 mm/s, 10 mm/mV, a 1 mm
grid with 5 mm major lines, a 1 mV x 200 ms calibration pulse at the start of every row; the
3x4 layout (I/aVR/V1/V4, II/aVL/V2/V5, III/aVF/V3/V6, 2.5 s each) and a 10 s lead II rhythm
strip; measurements, triage flags and the report text around it. Chinese text needs a CJK font
(fonts-noto-cjk or WenQuanYi); without one the PDF is still produced, with missing glyphs, and
`cjk_font_path()` returns None so callers can say so.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle

from dsp.ecg12.delineation import condition
from dsp.ecg12.record import LEADS, Ecg12
from readings.workflow import ReadingRequest

PAGE_W_MM = 297.0
PAGE_H_MM = 210.0
SPEED_MM_PER_S = 25.0
GAIN_MM_PER_MV = 10.0
#: the grid rectangle (mm from the page's bottom-left corner)
GRID_X0_MM, GRID_X1_MM = 20.0, 280.0
GRID_Y0_MM, GRID_Y1_MM = 50.0, 180.0
#: where traces start (after the calibration pulse) and the row baselines, top row first
TRACE_X0_MM = 28.0
ROW_BASELINES_MM = (160.0, 130.0, 100.0, 67.5)
CAL_X0_MM = 21.0
LAYOUT: tuple[tuple[str, ...], ...] = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
COLUMN_S = 2.5
RHYTHM_LEAD = "II"
CHINA_TZ = timezone(timedelta(hours=8), "CST")

_CJK_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)


def cjk_font_path() -> Path | None:
    """An installed font with Chinese glyphs, or None (install fonts-noto-cjk)."""
    for candidate in _CJK_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    for folder in (Path("/usr/share/fonts"), Path("/usr/local/share/fonts")):
        if folder.exists():
            for p in sorted(folder.rglob("*CJK*")):
                if p.suffix.lower() in (".ttc", ".otf", ".ttf"):
                    return p
    return None


def _fmt_time(ts: float | None, tz: timezone) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


def _num(m: dict[str, object], key: str) -> str:
    v = m.get(key)
    return "-" if v is None else f"{float(v):.0f}"  # type: ignore[arg-type]


def _grid(ax: Axes) -> None:
    minor: list[list[tuple[float, float]]] = []
    major: list[list[tuple[float, float]]] = []
    x = GRID_X0_MM
    i = 0
    while x <= GRID_X1_MM + 1e-9:
        (major if i % 5 == 0 else minor).append([(x, GRID_Y0_MM), (x, GRID_Y1_MM)])
        i += 1
        x = GRID_X0_MM + i
    y = GRID_Y0_MM
    i = 0
    while y <= GRID_Y1_MM + 1e-9:
        (major if i % 5 == 0 else minor).append([(GRID_X0_MM, y), (GRID_X1_MM, y)])
        i += 1
        y = GRID_Y0_MM + i
    ax.add_collection(LineCollection(minor, colors="#f6c1c1", linewidths=0.25))
    ax.add_collection(LineCollection(major, colors="#e58080", linewidths=0.6))


def _calibration_pulse(ax: Axes, baseline: float) -> None:
    x0, h = CAL_X0_MM, 1.0 * GAIN_MM_PER_MV
    w = 0.2 * SPEED_MM_PER_S
    xs = [x0, x0 + 1.0, x0 + 1.0, x0 + 1.0 + w, x0 + 1.0 + w, x0 + 2.0 + w]
    ys = [baseline, baseline, baseline + h, baseline + h, baseline, baseline]
    ax.plot(xs, ys, color="black", linewidth=0.6)


def report_figure(ecg: Ecg12, request: ReadingRequest, clinic_name: str = "", tz: timezone = CHINA_TZ) -> Figure:
    """The report page as a matplotlib Figure (mm coordinates); `render_pdf` saves it."""
    font_path = cjk_font_path()
    fp = FontProperties(fname=str(font_path)) if font_path else FontProperties(family="DejaVu Sans")
    fig = Figure(figsize=(PAGE_W_MM / 25.4, PAGE_H_MM / 25.4))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0.0, PAGE_W_MM)
    ax.set_ylim(0.0, PAGE_H_MM)
    ax.axis("off")
    _grid(ax)
    fs = ecg.sampling_rate_hz
    x = condition(ecg.signals_mv, fs)
    col_n = int(round(COLUMN_S * fs))
    clip = ax.add_patch(
        Rectangle((GRID_X0_MM, GRID_Y0_MM), GRID_X1_MM - GRID_X0_MM, GRID_Y1_MM - GRID_Y0_MM, fill=False, linewidth=0)
    )

    def trace(values: np.ndarray, x0: float, baseline: float) -> None:
        t = np.arange(values.shape[0]) / fs
        line = ax.plot(x0 + t * SPEED_MM_PER_S, baseline + values * GAIN_MM_PER_MV, color="black", linewidth=0.45)[0]
        line.set_clip_path(clip)

    for r, row in enumerate(LAYOUT):
        base = ROW_BASELINES_MM[r]
        _calibration_pulse(ax, base)
        for c, lead in enumerate(row):
            seg = x[LEADS.index(lead), c * col_n : (c + 1) * col_n]
            if seg.size:
                trace(seg, TRACE_X0_MM + c * COLUMN_S * SPEED_MM_PER_S, base)
            ax.text(TRACE_X0_MM + c * COLUMN_S * SPEED_MM_PER_S + 1.0, base + 8.0, lead, fontsize=8, fontproperties=fp)
            if c:  # the lead-change tick
                xc = TRACE_X0_MM + c * COLUMN_S * SPEED_MM_PER_S
                ax.plot([xc, xc], [base - 3.0, base + 3.0], color="black", linewidth=0.6)
    base = ROW_BASELINES_MM[3]
    _calibration_pulse(ax, base)
    rhythm = x[LEADS.index(RHYTHM_LEAD), : int(round(4 * COLUMN_S * fs))]
    trace(rhythm, TRACE_X0_MM, base)
    ax.text(TRACE_X0_MM + 1.0, base + 8.0, RHYTHM_LEAD, fontsize=8, fontproperties=fp)

    # header
    p = request.patient
    sex = {"M": "男", "F": "女"}.get(p.sex, "不详")
    age = "-" if p.age_years is None else f"{p.age_years:.0f}岁"
    m = request.measurements
    ax.text(GRID_X0_MM, 202.0, "十二导联心电图报告  12-lead ECG report", fontsize=13, fontproperties=fp, weight="bold")
    ax.text(
        GRID_X0_MM,
        195.0,
        f"姓名 {p.name or '-'}   患者ID {p.patient_id}   性别 {sex}   年龄 {age}   "
        f"送检单位 {clinic_name or request.clinic_id}   申请号 {request.referral_id}   申请时间 {_fmt_time(request.created_at, tz)}",
        fontsize=8,
        fontproperties=fp,
    )
    ax.text(
        GRID_X0_MM,
        188.0,
        f"心率 {_num(m, 'heart_rate_bpm')} bpm   P {_num(m, 'p_duration_ms')} ms   PR {_num(m, 'pr_ms')} ms   "
        f"QRS {_num(m, 'qrs_ms')} ms   QT/QTc(Bazett)/QTc(Fridericia) {_num(m, 'qt_ms')}/{_num(m, 'qtc_bazett_ms')}/{_num(m, 'qtc_fridericia_ms')} ms   "
        f"QRS电轴 {_num(m, 'axis_deg')}°   节律{'规整' if m.get('rhythm_regular') else '不齐'}",
        fontsize=8,
        fontproperties=fp,
    )
    ax.text(
        GRID_X0_MM,
        182.5,
        f"走纸速度 {SPEED_MM_PER_S:g} mm/s   增益 {GAIN_MM_PER_MV:g} mm/mV   滤波 0.5–60 Hz   采样率 {fs:g} Hz",
        fontsize=7,
        fontproperties=fp,
    )
    # footer: flags, report, signature
    flags = request.triage.get("flags", [])

    def flag_line(f: dict[str, object]) -> str:
        values = f.get("values")
        items = list(values.items())[:6] if isinstance(values, dict) else []
        shown = ", ".join(f"{k} {v}" for k, v in items)
        return f"{f.get('rule_zh', '')}［{shown}］"

    # one line per flag, urgent ones first, at most 4
    ordered = sorted(flags, key=lambda f: not f.get("urgent"))
    lines = [flag_line(f)[:200] for f in ordered[:4]] or ["无"]
    ax.text(GRID_X0_MM, 47.5, "自动提示（非诊断）：", fontsize=6, fontproperties=fp)
    for k, line in enumerate(lines):
        ax.text(GRID_X0_MM + 22.0, 47.5 - 2.4 * k, line, fontsize=5.5, fontproperties=fp)
    rep = request.report
    if rep is not None:
        ax.text(GRID_X0_MM, 34.5, f"节律：{rep.rhythm}", fontsize=9, fontproperties=fp)
        findings = "；".join(rep.findings) or "-"
        ax.text(GRID_X0_MM, 28.5, f"所见：{findings}"[:200], fontsize=9, fontproperties=fp)
        ax.text(GRID_X0_MM, 22.0, f"诊断意见：{rep.conclusion}"[:200], fontsize=10, fontproperties=fp, weight="bold")
    signer = request.signed_by or "（未签名 unsigned）"
    ax.text(
        GRID_X0_MM,
        12.0,
        f"报告医师 {signer}   签名时间 {_fmt_time(request.signed_at, tz)}",
        fontsize=8,
        fontproperties=fp,
    )
    ax.text(
        GRID_X0_MM,
        6.0,
        "自动测量与提示仅供参考，以医师签名的报告为准。 Automatic measurements and flags are aids; the signed report is the diagnosis.",
        fontsize=6,
        fontproperties=fp,
    )
    return fig


def render_pdf(ecg: Ecg12, request: ReadingRequest, clinic_name: str = "", tz: timezone = CHINA_TZ) -> bytes:
    """The report page as PDF bytes (A4 landscape)."""
    fig = report_figure(ecg, request, clinic_name, tz)
    buf = io.BytesIO()
    FigureCanvasPdf(fig).print_pdf(buf, metadata={"Title": f"ECG report {request.request_id}", "Creator": "medstream"})
    return buf.getvalue()


def render_png(ecg: Ecg12, request: ReadingRequest, px_per_mm: float = 4.0, clinic_name: str = "") -> bytes:
    """The same page as PNG (previews, calibration checks): ``px_per_mm`` pixels per millimetre."""
    fig = report_figure(ecg, request, clinic_name)
    fig.set_dpi(px_per_mm * 25.4)
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()
