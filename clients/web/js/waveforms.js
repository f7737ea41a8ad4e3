// Live waveforms (docs/protocol-waveforms.md): decode the server's msgpack frames into per-stream
// state, draw them like a bedside monitor (25 mm/s sweep with a moving erase bar over an ECG
// grid), and run the alarm display and tone.

import { decode } from "./msgpack.js";
import { el, audioContext } from "./ui.js";
import { t, tOr, has } from "./i18n.js";

const RING_S = 60;  // seconds of samples kept per stream (for redraw and automation)
const CSS_PX_PER_MM = 96 / 25.4;
export const SWEEP_MM_PER_S = 25;
export const GAIN_MM_PER_MV = 10;
const GAINS_MM_PER_MV = [20, 10, 5, 2.5];
const DISPLAY_DELAY_S = 0.5;  // monitors draw a little behind the newest sample: smooth sweep
const MAX_LAG_S = 10.0;  // further behind than this, the sweep jumps to the live edge
const NOTE_HOLD_MS = 3000;
const ERASE_W_PX = 12;
export const PRIORITY_RANK = { high: 3, medium: 2, low: 1 };

/** One stream's live state: samples (ECG channel, mV), heart rate, beats, numerics, alarms. */
class WaveformStream {
  constructor(msg) {
    this.id = msg.stream;
    this.announce(msg);
    this.newest = 0;  // one past the highest sample received
    this.heartRateBpm = null;
    this.rrMs = null;
    this.irregularity = null;
    this.lastBeatSample = null;
    this.beats = [];  // recent beat sample indices (ascending)
    this.ventricular = new Set();  // those of them the analyzer classed "V" (beat_labels)
    this.alarms = [];  // active alarms (kind, priority, message, since_sample)
    this.numerics = {};
    this.numericsTime = null;
    this.liveChunks = 0;
    this.backfillChunks = 0;
    this.backfillSamples = 0;
    this.backfillAt = 0;
    this.gaps = [];  // open gaps {from_sample, to_sample, lost}
    this.lostSamples = 0;
    this.skippedSamples = 0;
    this.skippedAt = 0;
    this.ended = null;
    this.analyses = 0;
  }

  announce(msg) {
    this.publisher = msg.publisher;
    this.channels = msg.channels;
    this.fs = msg.sampling_rate_hz;
    const ecg = msg.ecg_channel ?? msg.channels.findIndex((c) => c.unit === "mV");
    this.ecgChannel = ecg >= 0 ? ecg : 0;
    this.ended = null;
    if (!this.ring || this.ring.length !== Math.round(this.fs * RING_S)) {
      this.ring = new Float32Array(Math.round(this.fs * RING_S)).fill(NaN);
    }
  }

  chunk(msg) {
    const bytes = msg.data;
    const n = msg.dtype === "<i4" ? bytes.byteLength / 4 / msg.n_channels : bytes.byteLength / 2 / msg.n_channels;
    // msgpack bin values are fresh copies, so the typed-array view is aligned (x86/ARM: little-endian)
    const all = msg.dtype === "<i4" ? new Int32Array(bytes.buffer, bytes.byteOffset, n * msg.n_channels)
                                     : new Int16Array(bytes.buffer, bytes.byteOffset, n * msg.n_channels);
    const ch = this.channels[this.ecgChannel] || { gain: 200, baseline: 0 };
    const off = this.ecgChannel * n;
    const N = this.ring.length;
    for (let i = 0; i < n; i++) this.ring[(msg.seq + i) % N] = (all[off + i] - ch.baseline) / ch.gain;
    this.newest = Math.max(this.newest, msg.seq + n);
    if (msg.live === false) {
      this.backfillChunks += 1;
      this.backfillSamples += n;
      this.backfillAt = Date.now();
    } else {
      this.liveChunks += 1;
    }
    const end = msg.seq + n;
    this.gaps = this.gaps.filter((g) => !(g.from_sample >= msg.seq && g.to_sample <= end) || g.lost);
  }

  analysis(msg) {
    this.analyses += 1;
    this.heartRateBpm = msg.heart_rate_bpm;  // the meter's current value; null while unknown/stale
    if (msg.rr_ms !== null) this.rrMs = msg.rr_ms;
    if (msg.irregularity !== null) this.irregularity = msg.irregularity;
    const labels = msg.beat_labels || "";  // absent from older servers: every beat "N"
    msg.beats.forEach((b, k) => { this.beats.push(b); if (labels[k] === "V") this.ventricular.add(b); });
    if (this.beats.length > 400) {
      for (const old of this.beats.splice(0, this.beats.length - 400)) this.ventricular.delete(old);
    }
    if (msg.beats.length) this.lastBeatSample = msg.beats[msg.beats.length - 1];
    this.alarms = [...msg.active_alarms].sort((a, b) => (PRIORITY_RANK[b.priority] || 0) - (PRIORITY_RANK[a.priority] || 0));
    return msg.beats;
  }

  /** Sample value (mV) at stream index i, NaN if missing or no longer kept. */
  at(i) {
    if (i < this.newest - this.ring.length || i >= this.newest) return NaN;
    return this.ring[i % this.ring.length];
  }

  /** Short notes for people (in the page's language): catching up after a drop, gaps, skipped
   *  display, the end of the stream. `noteKeys()` gives the same as i18n keys (automation). */
  notes() {
    return this.noteKeys().map(([key, vars]) => t(key, vars));
  }

  noteKeys() {
    const out = [];
    const now = Date.now();
    if (now - this.backfillAt < NOTE_HOLD_MS) {
      out.push(["note.catching_up", { s: (this.backfillSamples / this.fs).toFixed(1) }]);
    }
    for (const g of this.gaps) {
      const s = ((g.to_sample - g.from_sample) / this.fs).toFixed(1);
      out.push(g.lost ? ["note.lost", { s }] : ["note.gap", { s }]);
    }
    if (now - this.skippedAt < NOTE_HOLD_MS) out.push(["note.skipped", {}]);
    if (this.ended) out.push(["note.stream_ended", { reason: tOr("stream_ended", this.ended) }]);
    return out;
  }

  /** Forget every sample (the session ended: nothing left that could look live). */
  clearSamples() {
    this.ring.fill(NaN);
    this.heartRateBpm = null;
    this.alarms = [];
    this.numerics = {};
  }

  snapshot() {
    return {
      id: this.id, publisher: this.publisher, samplingRateHz: this.fs,
      channels: this.channels.map((c) => c.name), newestSample: this.newest,
      heartRateBpm: this.heartRateBpm, rrMs: this.rrMs, irregularity: this.irregularity,
      lastBeatSample: this.lastBeatSample, beats: this.beats.length, analyses: this.analyses,
      numerics: { ...this.numerics }, alarms: this.alarms.map((a) => ({ ...a })),
      liveChunks: this.liveChunks, backfillChunks: this.backfillChunks,
      backfillSamples: this.backfillSamples, lostSamples: this.lostSamples,
      skippedSamples: this.skippedSamples, ended: this.ended, notes: this.notes(),
      noteKeys: this.noteKeys().map(([k]) => k),
    };
  }
}

/** Decodes binary frames and keeps every stream's state; `onChange(stream, what)` after each. */
export class WaveformStore {
  constructor(onChange = () => {}) {
    this.streams = new Map();
    this.onChange = onChange;
    this.frames = 0;
    this.errors = 0;
    this.lastError = null;
  }

  /** Feed one binary websocket frame (ArrayBuffer). Malformed frames are counted, not thrown. */
  onFrame(buffer) {
    let m;
    try { m = decode(new Uint8Array(buffer)); } catch (e) {
      this.errors += 1;
      this.lastError = String(e);
      return;
    }
    this.frames += 1;
    const s = this.streams.get(m.stream);
    switch (m.type) {
      case "announce": {
        if (s) s.announce(m); else this.streams.set(m.stream, new WaveformStream(m));
        this.onChange(this.streams.get(m.stream), "announce");
        return;
      }
      case "chunk":
        if (s) { s.chunk(m); this.onChange(s, "chunk"); }
        return;
      case "analysis":
        if (s) { const beats = s.analysis(m); this.onChange(s, "analysis", beats); }
        return;
      case "numerics":
        if (s) { Object.assign(s.numerics, m.values); s.numericsTime = m.time; this.onChange(s, "numerics"); }
        return;
      case "gap":
        if (s) {
          s.gaps = s.gaps.filter((g) => g.from_sample !== m.from_sample);
          if (!m.lost || m.to_sample > m.from_sample) s.gaps.push({ from_sample: m.from_sample, to_sample: m.to_sample, lost: m.lost });
          if (m.lost) s.lostSamples += m.to_sample - m.from_sample;
          this.onChange(s, "gap");
        }
        return;
      case "skipped":
        if (s) { s.skippedSamples += m.to_sample - m.from_sample; s.skippedAt = Date.now(); this.onChange(s, "skipped"); }
        return;
      case "stream_ended":
        if (s) { s.ended = m.reason; this.onChange(s, "ended"); }
        return;
      default:
        return;  // ack/error are for monitors
    }
  }

  snapshot() {
    return Object.fromEntries([...this.streams].map(([id, s]) => [id, s.snapshot()]));
  }
}

/** Draws one stream like a monitor: fixed grid canvas below, sweeping trace canvas above. */
export class SweepView {
  constructor(stream, container, { heightMm = 30, color = "#3cff6b" } = {}) {
    this.stream = stream;
    this.color = color;
    this.grid = el("canvas.grid");
    this.trace = el("canvas.trace");
    this.box = el("div.sweep", {}, this.grid, this.trace);
    container.style.minHeight = `${Math.round(heightMm * CSS_PX_PER_MM)}px`;
    container.append(this.box);
    this.cursor = null;  // fractional sample index drawn up to
    this.drawn = null;  // integer: samples before it are on screen
    this.firstDrawn = null;  // where this view's trace starts (after a jump to the live edge)
    this.pendingBeats = [];
    this.beatsDrawn = 0;
    this.gainMmPerMv = GAIN_MM_PER_MV;
    this.offsetMv = 0;
    this.stopped = false;
    this.redraws = 0;
    this.resize();
  }

  /** Stop drawing and blank the trace (the session ended). */
  stop() {
    this.stopped = true;
    this.pendingBeats = [];
    this.trace.getContext("2d").clearRect(0, 0, this.width, this.height);
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(100, this.box.clientWidth);
    const h = Math.max(40, this.box.clientHeight);
    if (this.width === w && this.height === h) return;
    this.width = w;
    this.height = h;
    for (const c of [this.grid, this.trace]) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
      c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
    }
    this._drawGrid();
    this.trace.getContext("2d").clearRect(0, 0, w, h);
    this.penX = null;
    this._redraw();  // a rotation or resize keeps the sweep: draw the last screenful again
  }

  get _samplesPerWidth() {
    return Math.floor(this.width / (SWEEP_MM_PER_S * CSS_PX_PER_MM) * this.stream.fs);
  }

  _redraw() {
    if (this.stopped || this.drawn === null || this.firstDrawn === null) return;
    const eraseSamples = Math.ceil(ERASE_W_PX / (SWEEP_MM_PER_S * CSS_PX_PER_MM) * this.stream.fs);
    const from = Math.max(this.firstDrawn, this.drawn - this._samplesPerWidth + eraseSamples);
    if (from >= this.drawn) return;
    this._autoScale(this.drawn);
    this._stroke(from, this.drawn, null, null);
    for (const b of this.stream.beats) if (b >= from && b < this.drawn) this._marker(b);
    this.redraws += 1;
  }

  /** Draw samples [from, to) continuing the pen at (px, py) (null: start afresh); keeps the pen. */
  _stroke(from, to, px, py) {
    const s = this.stream;
    const pen = this.trace.getContext("2d");
    pen.strokeStyle = this.color;
    pen.lineWidth = 1.6;
    pen.lineJoin = "round";
    pen.beginPath();
    if (px !== null) pen.moveTo(px, py);
    let clipped = false;
    for (let i = from; i < to; i++) {
      const v = s.at(i);
      const x = this._x(i);
      if (Number.isNaN(v)) { px = null; continue; }
      const yRaw = this._y(v);
      if (yRaw < 0 || yRaw > this.height) clipped = true;
      const y = Math.max(1, Math.min(this.height - 1, yRaw));
      if (px === null || x < px) pen.moveTo(x, y); else pen.lineTo(x, y);
      px = x; py = y;
    }
    pen.stroke();
    this.clipped = clipped;  // rescale on the next step rather than keep drawing off-scale
    this.penX = px;
    this.penY = py;
  }

  _drawGrid() {
    const g = this.grid.getContext("2d");
    g.fillStyle = "#050807";
    g.fillRect(0, 0, this.width, this.height);
    const mm = CSS_PX_PER_MM;
    for (let i = 0, x = 0; x <= this.width; i++, x = i * mm) {
      g.strokeStyle = i % 5 === 0 ? "rgba(255,90,90,0.28)" : "rgba(255,90,90,0.10)";
      g.beginPath(); g.moveTo(Math.round(x) + 0.5, 0); g.lineTo(Math.round(x) + 0.5, this.height); g.stroke();
    }
    for (let i = 0, y = 0; y <= this.height; i++, y = i * mm) {
      g.strokeStyle = i % 5 === 0 ? "rgba(255,90,90,0.28)" : "rgba(255,90,90,0.10)";
      g.beginPath(); g.moveTo(0, Math.round(y) + 0.5); g.lineTo(this.width, Math.round(y) + 0.5); g.stroke();
    }
  }

  _x(i) {
    const pxPerS = SWEEP_MM_PER_S * CSS_PX_PER_MM;
    return ((i / this.stream.fs) * pxPerS) % this.width;
  }

  _y(v) {
    return this.height / 2 - (v - this.offsetMv) * this.gainMmPerMv * CSS_PX_PER_MM;
  }

  /** Once per sweep, like a monitor's auto-size: pick the largest standard gain that fits the
   *  last sweep's amplitude, and centre its median. */
  _autoScale(upto) {
    const s = this.stream;
    const n = Math.min(Math.round(this.width / (SWEEP_MM_PER_S * CSS_PX_PER_MM) * s.fs), upto);
    const vals = [];
    for (let i = upto - n; i < upto; i += 2) { const v = s.at(i); if (!Number.isNaN(v)) vals.push(v); }
    if (vals.length < 10) return;
    vals.sort((a, b) => a - b);
    const median = vals[vals.length >> 1];
    const lo = vals[Math.floor(vals.length * 0.002)];
    const hi = vals[Math.ceil(vals.length * 0.998) - 1];
    const halfRangeMm = Math.max(hi - median, median - lo);
    const fits = GAINS_MM_PER_MV.find((g) => halfRangeMm * g * CSS_PX_PER_MM < 0.45 * this.height);
    this.gainMmPerMv = fits || GAINS_MM_PER_MV[GAINS_MM_PER_MV.length - 1];
    this.offsetMv = median;
  }

  /** New beats from an analysis: drawn when the sweep reaches them (or now, if it already has). */
  addBeats(beats) {
    for (const b of beats) {
      if (this.drawn !== null && b < this.drawn) this._marker(b); else this.pendingBeats.push(b);
    }
  }

  _marker(i) {
    if (this.firstDrawn === null || i < this.firstDrawn) return;  // no trace drawn there
    if (this.drawn !== null && this.drawn - i > this.stream.fs * this.width / (SWEEP_MM_PER_S * CSS_PX_PER_MM)) return;
    const pen = this.trace.getContext("2d");
    const x = this._x(i);
    pen.fillStyle = this.stream.ventricular.has(i) ? "#ffcc00" : "#ffffff";  // V as in playback
    pen.beginPath(); pen.moveTo(x - 4, 2); pen.lineTo(x + 4, 2); pen.lineTo(x, 9); pen.closePath(); pen.fill();
    this.beatsDrawn += 1;
  }

  /** Advance the sweep by `dtS` seconds of wall time. */
  step(dtS) {
    const s = this.stream;
    if (!s.newest || this.stopped) return;
    const live = s.newest - DISPLAY_DELAY_S * s.fs;
    if (this.cursor === null || live - this.cursor > MAX_LAG_S * s.fs) {
      this.cursor = Math.max(0, live);
      this.drawn = Math.floor(this.cursor);
      this.firstDrawn = this.drawn;
      this.penX = null;
    }
    // behind the live edge (a faster-than-real-time source, a stalled tab): sweep faster, smoothly
    const lagS = (live - this.cursor) / s.fs;
    const rate = Math.min(4, Math.max(1, 1 + 2 * (lagS - 0.1)));
    this.cursor = Math.min(this.cursor + dtS * s.fs * rate, Math.max(live, this.drawn));
    const upto = Math.floor(this.cursor);
    if (upto <= this.drawn) return;
    const pen = this.trace.getContext("2d");
    const eraseW = ERASE_W_PX;
    // erase bar: clear just ahead of the new stretch of trace
    const x0 = this._x(this.drawn);
    const x1 = this._x(upto);
    const clear = (a, b) => pen.clearRect(a, 0, Math.max(0, b - a), this.height);
    if (x1 >= x0) { clear(x0 + 1, Math.min(this.width, x1 + eraseW)); if (x1 + eraseW > this.width) clear(0, x1 + eraseW - this.width); }
    else { clear(x0 + 1, this.width); clear(0, x1 + eraseW); }
    const wrapped = this.penX === null || x1 < x0;
    if (wrapped || this.clipped) this._autoScale(this.drawn);
    this._stroke(this.drawn, upto, wrapped ? null : this.penX, this.penY);
    this.drawn = upto;
    if (this.pendingBeats.length) {
      const due = this.pendingBeats.filter((b) => b < upto);
      this.pendingBeats = this.pendingBeats.filter((b) => b >= upto);
      due.forEach((b) => this._marker(b));
    }
  }
}

/** The alarm's text in the page's language (kind-based; the server's English message only for a
 *  kind this page has no text for). */
export function alarmText(a) {
  if (has(`alarm.${a.kind}`)) return t(`alarm.${a.kind}`);
  return a.message || t("alarm.unknown");
}

const fmt = (v, digits = 0) => (v === undefined || v === null || Number.isNaN(v) ? "--" : Number(v).toFixed(digits));

/** A bed: header, sweep, heart rate and numerics, alarm banner and notes. */
export class BedTile {
  constructor(stream, container, { name = null, heightMm = 30 } = {}) {
    this.stream = stream;
    this.title = el("span.bed-name", {}, name || stream.id);
    this.alarmBanner = el("div.bed-alarm", { hidden: true });
    this.notes = el("div.bed-notes");
    this.hr = el("span.hr-value", { "data-testid": "hr" }, "--");
    this.numerics = {
      spo2: el("span.num-value"), nibp: el("span.num-value"), rr: el("span.num-value"), temp: el("span.num-value"),
    };
    const main = el("div.bed-wave");
    this.root = el("section.bed", { dataset: { stream: stream.id } },
      el("header.bed-head", {}, this.title, this.alarmBanner),
      el("div.bed-body", {},
        main,
        el("div.bed-numerics", {},
          el("div.num.hr", {}, label("num.hr"), this.hr),
          el("div.num.spo2", {}, label("num.spo2"), this.numerics.spo2),
          el("div.num.nibp", {}, label("num.nibp"), this.numerics.nibp),
          el("div.num.rr", {}, label("num.rr"), this.numerics.rr),
          el("div.num.temp", {}, label("num.temp"), this.numerics.temp))),
      this.notes);
    container.append(this.root);
    this.view = new SweepView(stream, main, { heightMm });
    this.lead = el("span.lead", {}, this._leadText());
    main.append(this.lead);
    this.update();
  }

  _leadText() {
    const ch = this.stream.channels[this.stream.ecgChannel];
    return t("lead.line", { lead: ch ? ch.name : "ECG", speed: SWEEP_MM_PER_S,
                            gain: this.view ? this.view.gainMmPerMv : GAIN_MM_PER_MV });
  }

  /** The session ended: stop the sweep, blank the trace and the numbers. Idempotent. */
  end() {
    this.ended = true;
    this.view.stop();
    this.stream.clearSamples();
    this.update();
  }

  update() {
    const s = this.stream;
    for (const l of this.root.querySelectorAll(".num-label")) l.textContent = t(l.dataset.i18n);
    this.hr.textContent = s.heartRateBpm === null ? "---" : fmt(s.heartRateBpm);
    const n = s.numerics;
    this.numerics.spo2.textContent = fmt(n.spo2_pct);
    this.numerics.nibp.textContent = `${fmt(n.nibp_sys_mmhg)}/${fmt(n.nibp_dia_mmhg)}`;
    this.numerics.rr.textContent = fmt(n.resp_rate_bpm);
    this.numerics.temp.textContent = fmt(n.temp_c, 1);
    const top = s.alarms[0];
    this.alarmBanner.hidden = !top;
    this.root.classList.remove("alarm-high", "alarm-medium", "alarm-low");
    if (top) {
      this.alarmBanner.textContent = s.alarms.map(alarmText).join(" \u2022 ");
      this.alarmBanner.title = s.alarms.map((a) => a.message || "").join(" \u2022 ");
      this.alarmBanner.dataset.priority = top.priority;
      this.root.classList.add(`alarm-${top.priority}`);
    }
    this.notes.textContent = this.ended ? t("wall.ended") : s.notes().join(" \u2022 ");
    this.root.classList.toggle("ended", Boolean(s.ended) || Boolean(this.ended));
    this.lead.textContent = this._leadText();
  }
}

/** Runs every SweepView on animation frames; returns a function that stops it. */
export function animate(views) {
  let last = performance.now();
  let running = true;
  const frame = (now) => {
    if (!running) return;
    const dt = Math.min(0.25, (now - last) / 1000);
    last = now;
    for (const v of views()) { v.resize(); v.step(dt); }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  return () => { running = false; };
}

function label(key) {
  return el("span.num-label", { "data-i18n": key }, t(key));
}

/**
 * Alarm list across streams with acknowledge/silence and an audible tone by priority
 * (IEC 60601-1-8-like bursts: high 3+2 pulses at 960 Hz every 5 s, medium 3 pulses at 660 Hz
 * every 10 s, low 1 pulse at 480 Hz every 20 s).
 */
export class AlarmCenter {
  constructor({ silenceS = 120 } = {}) {
    this.silenceS = silenceS;
    this.active = new Map();  // `${stream}/${kind}` -> {stream, kind, priority, message, since, acknowledged}
    this.silencedUntil = 0;
    this.bursts = 0;
    this.lastBurstAt = 0;
    this.lastBurstPriority = null;
    setInterval(() => this._tick(), 250);
  }

  /** Replace the active set of one stream (from its latest analysis). */
  setStreamAlarms(streamId, alarms) {
    const keep = new Set();
    for (const a of alarms) {
      const key = `${streamId}/${a.kind}`;
      keep.add(key);
      const old = this.active.get(key);
      this.active.set(key, { stream: streamId, kind: a.kind, priority: a.priority, message: a.message,
                             latched: Boolean(a.latched),  // condition over, kept until acknowledged
                             since: old ? old.since : Date.now(), acknowledged: old ? old.acknowledged : false });
    }
    for (const key of [...this.active.keys()]) {
      if (key.startsWith(`${streamId}/`) && !keep.has(key)) this.active.delete(key);
    }
  }

  /** Forget every alarm (the session ended). */
  clear() {
    this.active.clear();
  }

  list() {
    return [...this.active.values()].sort((a, b) => (PRIORITY_RANK[b.priority] || 0) - (PRIORITY_RANK[a.priority] || 0) || a.since - b.since);
  }

  /** Acknowledge every active alarm and silence the tone for `silenceS` (new alarms sound again). */
  acknowledge() {
    for (const a of this.active.values()) a.acknowledged = true;
    this.silencedUntil = Date.now() + this.silenceS * 1000;
  }

  /** "on", "off" (the browser has not allowed sound yet: it needs a click) or "silenced". */
  soundState() {
    let ctx = null;
    try { ctx = audioContext({ resume: false }); } catch { return "off"; }
    if (ctx.state !== "running") return "off";
    return Date.now() < this.silencedUntil ? "silenced" : "on";
  }

  /** Ask the browser for sound (call from a click: autoplay rules need a user gesture). */
  async enableSound() {
    const ctx = audioContext();
    await ctx.resume();
    return ctx.state;
  }

  /** The priority whose tone is due now ("high"/"medium"/"low") or null. */
  sounding() {
    const unacked = this.list().filter((a) => !a.acknowledged);
    return unacked.length ? unacked[0].priority : null;
  }

  _tick() {
    const p = this.sounding();
    if (!p) return;
    const period = { high: 5000, medium: 10000, low: 20000 }[p] || 10000;
    const now = Date.now();
    if (now - this.lastBurstAt < period && this.lastBurstPriority === p) return;
    this.lastBurstAt = now;
    this.lastBurstPriority = p;
    this.bursts += 1;
    this._burst(p);
  }

  _burst(priority) {
    let ctx;
    // never resumes by itself: sound starts from a click (the wall asks for it), so the page
    // always knows, and shows, whether its alarms can be heard
    try { ctx = audioContext({ resume: false }); } catch { return; }
    if (ctx.state !== "running") { this.silentBursts = (this.silentBursts || 0) + 1; return; }
    const spec = {
      high: { f: 960, pulses: [0, 0.2, 0.4, 1.0, 1.2] },
      medium: { f: 660, pulses: [0, 0.25, 0.5] },
      low: { f: 480, pulses: [0] },
    }[priority] || { f: 660, pulses: [0] };
    const t0 = ctx.currentTime + 0.02;
    for (const at of spec.pulses) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = spec.f;
      gain.gain.setValueAtTime(0, t0 + at);
      gain.gain.linearRampToValueAtTime(0.2, t0 + at + 0.01);
      gain.gain.setValueAtTime(0.2, t0 + at + 0.14);
      gain.gain.linearRampToValueAtTime(0, t0 + at + 0.16);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t0 + at);
      osc.stop(t0 + at + 0.17);
    }
  }

  snapshot() {
    return { active: this.list(), sounding: this.sounding(), bursts: this.bursts,
             silencedUntil: this.silencedUntil, sound: this.soundState(), silentBursts: this.silentBursts || 0 };
  }
}
