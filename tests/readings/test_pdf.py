"""The report PDF: A4 landscape, and calibrated (25 mm/s, 10 mm/mV, 1/5 mm grid) measured on a raster."""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from dsp.ecg12.flags import Priority
from dsp.ecg12.record import LEADS, Ecg12
from readings.pdf import (
    CAL_X0_MM,
    GRID_X0_MM,
    GRID_Y0_MM,
    PAGE_H_MM,
    ROW_BASELINES_MM,
    TRACE_X0_MM,
    cjk_font_path,
    render_pdf,
    render_png,
    report_figure,
)
from readings.workflow import Patient, ReadingRequest, Report, State

PX_PER_MM = 10.0


def _pulse_ecg() -> Ecg12:
    """1 mV Gaussian bumps (sigma 25 ms) every 1.0 s from t = 0.5 s, in every lead, 10 s at 500 Hz."""
    t = np.arange(5000) / 500.0
    x = sum(np.exp(-0.5 * ((t - c) / 0.025) ** 2) for c in np.arange(0.5, 10.0, 1.0))
    return Ecg12.from_leads({lead: np.asarray(x) for lead in LEADS}, 500.0)


def _request() -> ReadingRequest:
    return ReadingRequest(
        request_id="centre-1-0",
        clinic_id="clinic-a",
        referral_id="R-1",
        patient=Patient("P1", "张三", "M", 64),
        ecg_key="k",
        measurements={"heart_rate_bpm": 60.0, "qrs_ms": 90.0, "rhythm_regular": True},
        triage={"flags": [{"rule_zh": "QRS时限 ≥120 ms", "values": {"qrs_ms": 130}}]},
        priority=Priority.FLAGGED,
        created_at=1_795_600_800.0,
        state=State.SIGNED,
        report=Report("窦性心律", ("未见异常",), "正常心电图"),
        signed_by="dr-li",
        signed_at=1_795_601_000.0,
    )


@cache
def _raster() -> np.ndarray:
    fig = report_figure(_pulse_ecg(), _request())
    fig.set_dpi(PX_PER_MM * 25.4)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].astype(int)


def _row(y_mm: float) -> int:
    return int(round((PAGE_H_MM - y_mm) * PX_PER_MM))


def _col(x_mm: float) -> int:
    return int(round(x_mm * PX_PER_MM))


def _runs(mask: np.ndarray) -> np.ndarray:
    """Centres of the True runs of a 1-D mask."""
    edges = np.diff(np.concatenate(([0], mask.astype(int), [0])))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return (starts + ends - 1) / 2.0


def test_page_is_a4_landscape_pdf_with_cjk_font() -> None:
    pdf = render_pdf(_pulse_ecg(), _request(), "东坝乡卫生院")
    assert pdf.startswith(b"%PDF-")
    box = re.search(rb"/MediaBox \[\s*0 0 ([0-9.]+) ([0-9.]+)\s*\]", pdf)
    assert box is not None
    assert float(box.group(1)) == pytest.approx(297 / 25.4 * 72, abs=0.01)
    assert float(box.group(2)) == pytest.approx(210 / 25.4 * 72, abs=0.01)
    if cjk_font_path() is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk): Chinese glyphs missing")
    assert re.search(rb"/BaseFont /[A-Z]{6}\+Noto\w*CJK", pdf) or b"wqy" in pdf.lower()
    assert render_png(_pulse_ecg(), _request(), px_per_mm=1.0).startswith(b"\x89PNG")


def test_grid_is_one_and_five_millimetres() -> None:
    img = _raster()
    row = img[_row(GRID_Y0_MM + 2.5), _col(GRID_X0_MM) : _col(GRID_X0_MM + 100)]
    major = _runs((row[:, 0] > 200) & (row[:, 1] < 150))
    any_line = _runs((row[:, 0] > 200) & (row[:, 1] < 215))
    assert np.allclose(np.diff(major), 5 * PX_PER_MM, atol=1.0)
    assert np.allclose(np.diff(any_line), 1 * PX_PER_MM, atol=1.0)
    assert major[0] == pytest.approx(0, abs=1.5)  # the grid starts with a major line


def test_paper_speed_and_gain_on_the_rhythm_strip() -> None:
    img = _raster()
    base = ROW_BASELINES_MM[3]
    top, bottom = _row(base + 15), _row(base - 5)
    left, right = _col(TRACE_X0_MM + 6.0), _col(TRACE_X0_MM + 250)  # right of the lead label
    black = (img[top:bottom, left:right] < 90).all(axis=2)
    cols = np.nonzero(black.any(axis=0))[0]
    highest = np.full(black.shape[1], black.shape[0], dtype=float)
    highest[cols] = black[:, cols].argmax(axis=0)
    # the bump peaks: columns where the trace reaches within 2 px of its top
    peaks = _runs(highest <= highest.min() + 2)
    assert len(peaks) == 10
    assert np.allclose(np.diff(peaks), 25.0 * PX_PER_MM, atol=2.0)  # 1 s = 25 mm
    assert peaks[0] == pytest.approx((0.5 * 25.0 - 6.0) * PX_PER_MM, abs=3.0)  # t = 0.5 s
    between = black[:, int(peaks[0] + 100)]  # 0.4 s after a bump: the baseline
    baseline_px = np.nonzero(between)[0].mean()
    height_mm = (baseline_px - highest.min()) / PX_PER_MM
    assert height_mm == pytest.approx(10.0, rel=0.04)  # 1 mV = 10 mm (display filter costs < 4 %)


def test_calibration_pulse_is_10_mm_by_5_mm() -> None:
    img = _raster()
    base = ROW_BASELINES_MM[0]
    black = (img < 90).all(axis=2)
    edge = black[_row(base + 12) : _row(base - 2), _col(CAL_X0_MM + 1.0)]
    rows = np.nonzero(edge)[0]
    assert (rows.max() - rows.min()) / PX_PER_MM == pytest.approx(10.0, abs=0.3)
    top = black[_row(base + 10), _col(CAL_X0_MM) : _col(CAL_X0_MM + 8)]
    cols = np.nonzero(top)[0]
    assert (cols.max() - cols.min()) / PX_PER_MM == pytest.approx(5.0, abs=0.3)
