// The 12-lead view in the standard layout: 3 rows x 4 columns of 2.5 s (I/aVR/V1/V4,
// II/aVL/V2/V5, III/aVF/V3/V6) and a 10 s lead II rhythm strip, at 25 mm/s and 10 mm/mV on a
// 1 mm grid (5 mm major lines), a 1 mV x 200 ms calibration pulse at the start of every row, and
// calipers (click two points: the interval in ms, the rate it gives, the voltage difference).
//
// Everything is laid out in millimetres and drawn at `pxPerMm` CSS pixels per millimetre (times
// devicePixelRatio on the backing store, so lines stay sharp). `geometry()` tells tests and the
// calipers where each row and lead is; tests measure 10 mm/mV and 25 mm/s on the canvas pixels.

import { t } from "./i18n.js";

export const SPEED_MM_PER_S = 25;
export const GAIN_MM_PER_MV = 10;
export const LAYOUT = [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"], ["III", "aVF", "V3", "V6"]];
export const RHYTHM_LEAD = "II";
export const COLUMN_S = 2.5;
const CAL_X_MM = 2;          // calibration pulse starts here
const CAL_W_MM = 5;          // 200 ms at 25 mm/s
const TRACE_X0_MM = 10;      // traces start after the pulse
const ROW_H_MM = 30;         // each row: 3 cm (±1.5 mV)
const WIDTH_MM = TRACE_X0_MM + 4 * COLUMN_S * SPEED_MM_PER_S + 2;   // 262 mm
const HEIGHT_MM = 4 * ROW_H_MM + 4;
export const TRACE_COLOUR = "#000000";
const MINOR = "#f4c6c6", MAJOR = "#e48a8a", LABEL = "#7a1f1f", CALIPER = "#1d4ed8";

export class Ecg12View {
  /** `canvas`: where to draw; `pxPerMm`: CSS pixels per millimetre (the page's scale). */
  constructor(canvas, { pxPerMm = 4, onCaliper = null } = {}) {
    this.canvas = canvas;
    this.pxPerMm = pxPerMm;
    this.ecg = null;
    this.calipers = [];   // [{xMm, yMm}] (0-2 points)
    this.onCaliper = onCaliper;
    canvas.addEventListener("click", (ev) => this._click(ev));
  }

  /** Row baselines (mm from the top) and the 12 leads' boxes: what tests and calipers use. */
  geometry() {
    const rows = [0, 1, 2, 3].map((i) => ({ baselineMm: ROW_H_MM * i + ROW_H_MM / 2 + 2, topMm: ROW_H_MM * i + 2 }));
    const leads = {};
    LAYOUT.forEach((row, r) => row.forEach((lead, c) => {
      leads[lead] = { row: r, x0Mm: TRACE_X0_MM + c * COLUMN_S * SPEED_MM_PER_S, t0S: c * COLUMN_S, durationS: COLUMN_S };
    }));
    return {
      pxPerMm: this.pxPerMm, devicePxPerMm: this.pxPerMm * this._scale(), widthMm: WIDTH_MM, heightMm: HEIGHT_MM,
      speedMmPerS: SPEED_MM_PER_S, gainMmPerMv: GAIN_MM_PER_MV, rowHeightMm: ROW_H_MM,
      calibration: { x0Mm: CAL_X_MM, widthMm: CAL_W_MM, heightMm: GAIN_MM_PER_MV },
      traceX0Mm: TRACE_X0_MM, rows, leads,
      rhythm: { row: 3, lead: RHYTHM_LEAD, x0Mm: TRACE_X0_MM, durationS: 4 * COLUMN_S },
    };
  }

  _scale() { return Math.max(1, Math.round(window.devicePixelRatio || 1)); }

  /** Draw an ECG as the server sends it (`/readings/<id>/ecg`: samples in µV per lead). */
  draw(ecg) {
    this.ecg = ecg;
    const s = this._scale(), k = this.pxPerMm;
    const c = this.canvas;
    c.style.width = `${WIDTH_MM * k}px`;
    c.style.height = `${HEIGHT_MM * k}px`;
    c.width = Math.round(WIDTH_MM * k * s);
    c.height = Math.round(HEIGHT_MM * k * s);
    const g = c.getContext("2d");
    g.setTransform(k * s, 0, 0, k * s, 0, 0);   // user units: millimetres
    g.fillStyle = "#ffffff";
    g.fillRect(0, 0, WIDTH_MM, HEIGHT_MM);
    this._grid(g);
    const geo = this.geometry();
    const fs = ecg.sampling_rate_hz;
    const index = Object.fromEntries(ecg.leads.map((name, i) => [name, i]));
    g.font = "3px sans-serif";
    for (let r = 0; r < 4; r++) this._pulse(g, geo.rows[r].baselineMm);
    LAYOUT.forEach((row, r) => row.forEach((lead) => {
      const box = geo.leads[lead];
      this._trace(g, ecg.samples_uv[index[lead]], fs, box.t0S, box.durationS, box.x0Mm, geo.rows[r].baselineMm);
      g.fillStyle = LABEL;
      g.fillText(lead, box.x0Mm + 1, geo.rows[r].topMm + 4);
    }));
    const rb = geo.rows[3].baselineMm;
    this._trace(g, ecg.samples_uv[index[RHYTHM_LEAD]], fs, 0, geo.rhythm.durationS, TRACE_X0_MM, rb);
    g.fillStyle = LABEL;
    g.fillText(RHYTHM_LEAD, TRACE_X0_MM + 1, geo.rows[3].topMm + 4);
    g.fillText(t("ecg12.scale_note", { speed: SPEED_MM_PER_S, gain: GAIN_MM_PER_MV }), WIDTH_MM - 70, HEIGHT_MM - 1);
    this._drawCalipers(g);
  }

  _grid(g) {
    // one device pixel wide, on pixel centres: crisp lines exactly 1 mm (5 mm) apart
    const px = 1 / (this.pxPerMm * this._scale());
    for (const [step, colour] of [[1, MINOR], [5, MAJOR]]) {
      g.strokeStyle = colour;
      g.lineWidth = px;
      g.beginPath();
      for (let x = 0; x <= WIDTH_MM + 1e-9; x += step) { g.moveTo(x + px / 2, 0); g.lineTo(x + px / 2, HEIGHT_MM); }
      for (let y = 0; y <= HEIGHT_MM + 1e-9; y += step) { g.moveTo(0, y + px / 2); g.lineTo(WIDTH_MM, y + px / 2); }
      g.stroke();
    }
  }

  _pulse(g, baseline) {
    g.strokeStyle = TRACE_COLOUR;
    g.lineWidth = 0.25;
    g.beginPath();
    g.moveTo(CAL_X_MM - 1, baseline);
    g.lineTo(CAL_X_MM, baseline);
    g.lineTo(CAL_X_MM, baseline - GAIN_MM_PER_MV);
    g.lineTo(CAL_X_MM + CAL_W_MM, baseline - GAIN_MM_PER_MV);
    g.lineTo(CAL_X_MM + CAL_W_MM, baseline);
    g.lineTo(CAL_X_MM + CAL_W_MM + 1, baseline);
    g.stroke();
  }

  _trace(g, uv, fs, t0, duration, x0, baseline) {
    const first = Math.round(t0 * fs), n = Math.min(uv.length - first, Math.round(duration * fs));
    if (n <= 1) return;
    g.save();
    g.beginPath();
    g.rect(x0, baseline - ROW_H_MM / 2, duration * SPEED_MM_PER_S, ROW_H_MM);
    g.clip();
    g.strokeStyle = TRACE_COLOUR;
    g.lineWidth = 0.25;
    g.lineJoin = "round";
    g.beginPath();
    for (let i = 0; i < n; i++) {
      const x = x0 + (i / fs) * SPEED_MM_PER_S;
      const y = baseline - (uv[first + i] / 1000) * GAIN_MM_PER_MV;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    }
    g.stroke();
    g.restore();
  }

  _click(ev) {
    const rect = this.canvas.getBoundingClientRect();
    const xMm = (ev.clientX - rect.left) / (rect.width / WIDTH_MM);
    const yMm = (ev.clientY - rect.top) / (rect.height / HEIGHT_MM);
    this.calipers = this.calipers.length >= 2 ? [{ xMm, yMm }] : [...this.calipers, { xMm, yMm }];
    if (this.ecg) this.draw(this.ecg);
    if (this.onCaliper) this.onCaliper(this.caliperReading());
  }

  /** The calipers' interval (ms), the rate it means (bpm) and the voltage difference (mV). */
  caliperReading() {
    if (this.calipers.length < 2) return null;
    const [a, b] = this.calipers;
    const ms = Math.abs(b.xMm - a.xMm) / SPEED_MM_PER_S * 1000;
    return { ms: Math.round(ms), bpm: ms > 0 ? Math.round(60000 / ms) : null,
             mv: Math.round(((a.yMm - b.yMm) / GAIN_MM_PER_MV) * 100) / 100 };
  }

  _drawCalipers(g) {
    g.strokeStyle = CALIPER;
    g.lineWidth = 0.2;
    for (const p of this.calipers) {
      g.beginPath(); g.moveTo(p.xMm, 0); g.lineTo(p.xMm, HEIGHT_MM); g.stroke();
      g.beginPath(); g.moveTo(p.xMm - 2, p.yMm); g.lineTo(p.xMm + 2, p.yMm); g.stroke();
    }
  }
}

/** The measurement rows the reader checks first: [label key, value text]. */
export function measurementRows(m) {
  const ms = (v) => (v === null || v === undefined ? "—" : `${Math.round(v)} ms`);
  return [
    ["ecg12.m.hr", m.heart_rate_bpm == null ? "—" : `${Math.round(m.heart_rate_bpm)} bpm`],
    ["ecg12.m.rhythm", t(m.rhythm_regular ? "ecg12.regular" : "ecg12.irregular")],
    ["ecg12.m.p", m.p_present ? ms(m.p_duration_ms) : t("ecg12.no_p")],
    ["ecg12.m.pr", ms(m.pr_ms)],
    ["ecg12.m.qrs", ms(m.qrs_ms)],
    ["ecg12.m.qt", ms(m.qt_ms)],
    ["ecg12.m.qtcb", ms(m.qtc_bazett_ms)],
    ["ecg12.m.qtcf", ms(m.qtc_fridericia_ms)],
    ["ecg12.m.axis", m.axis_deg == null ? "—" : `${Math.round(m.axis_deg)}°`],
  ];
}
