// Playback of a recorded session (docs/recording.md, "Playback"): every video and audio track
// and the patient monitor's ECG on one clock, the session clock (seconds since the recording
// began). Media files carry it in their timestamps, a waveform record starts at its
// `start_offset_s`. One JavaScript clock is the master; media elements are seeked to it and
// corrected when they drift, the ECG is drawn from it at 25 mm/s with the recorded beats
// (N normal, V ventricular) and alarms, so seeking moves everything together.
// Opened as playback.html?token=T&room=R&session=S; the token is a host's or supervisor's of the
// room, or a library token.

import { el } from "./ui.js";
import { t, setText, initI18n, onLanguageChange, tOr } from "./i18n.js";

const CSS_PX_PER_MM = 96 / 25.4;
const SWEEP_MM_PER_S = 25;
const GAIN_MM_PER_MV = 10;
const DRIFT_S = 0.15;  // a media element further than this from the clock is re-seeked
const ERASE_S = 0.25;

initI18n();
const q = new URLSearchParams(location.search);
const token = q.get("token") || "";
const roomId = q.get("room") || "";
const sessionId = q.get("session") || "";
const banner = document.getElementById("banner");

const clock = { base: 0, at: 0, playing: false };
function now() {
  return clock.playing ? clock.base + (performance.now() - clock.at) / 1000 : clock.base;
}

let timeline = null;
const players = [];  // {el, entry, offset}: media time = session time - offset
const waves = [];  // {entry, mv: Float32Array, raw, n, canvas}

function withToken(url) { return `${url}?token=${encodeURIComponent(token)}`; }

function fmt(s) {
  const m = Math.floor(Math.max(0, s) / 60);
  const r = Math.floor(Math.max(0, s) % 60);
  return `${m}:${String(r).padStart(2, "0")}`;
}

function nameOf(pid) {
  const p = (timeline?.participants || []).find((x) => x.participant_id === pid);
  return p ? p.name : pid;
}

function roleOf(pid) {
  const p = (timeline?.participants || []).find((x) => x.participant_id === pid);
  return p ? tOr("role", p.role) : t("role.unknown");
}

async function load() {
  setText(banner, "playback.loading");
  banner.className = "banner info";
  banner.hidden = false;
  const res = await fetch(`/playback/${encodeURIComponent(roomId)}/${encodeURIComponent(sessionId)}?token=${encodeURIComponent(token)}`);
  if (!res.ok) {
    setText(banner, res.status === 401 || res.status === 403 ? "playback.no_access" : "playback.not_found");
    banner.className = "banner";
    window.medstream.playback.error = res.status;
    return;
  }
  timeline = await res.json();
  document.getElementById("session").textContent = `${roomId} · ${timeline.started_at || ""}`;
  buildTiles();
  await loadWaves();
  buildTimeline();
  document.getElementById("seek").max = String(timeline.duration_s);
  document.getElementById("duration").textContent = fmt(timeline.duration_s);
  await Promise.all(players.map(ready));
  banner.hidden = true;
  await seek(0);
  window.medstream.playback.ready = true;
  requestAnimationFrame(frame);
  setInterval(correctDrift, 250);
}

function buildTiles() {
  const tiles = document.getElementById("tiles");
  const byPid = new Map();
  for (const m of timeline.media) {
    if (!byPid.has(m.participant_id)) byPid.set(m.participant_id, []);
    byPid.get(m.participant_id).push(m);
  }
  for (const [pid, entries] of byPid) {
    const tile = el("div.tile", { dataset: { participant: pid } });
    const video = entries.find((e) => e.kind === "video");
    if (!video) tile.classList.add("novideo");
    for (const entry of entries) {
      const media = document.createElement(entry.kind === "video" ? "video" : "audio");
      media.preload = "auto";
      media.playsInline = true;
      media.src = withToken(entry.url);
      media.dataset.track = entry.track_id;
      const p = { el: media, entry, offset: null };
      players.push(p);
      if (entry.kind === "video") tile.append(media);
      else tile.append(media);
    }
    tile.append(el("div.avatar", {}, nameOf(pid).slice(0, 1)),
                el("div.label", {}, el("span.name", {}, nameOf(pid)), el("span.role", {}, roleOf(pid))));
    tiles.append(tile);
  }
}

function ready(p) {
  return new Promise((resolve) => {
    const done = () => {
      // A WebM's media timeline may keep the file's timestamps (the session clock: Chromium
      // does) or begin at 0; the element's duration tells which, once: it ends at the file's
      // last timestamp in the first case, after `duration_s` in the second.
      const d = p.el.duration;
      const kept = Math.abs(d - (p.entry.start_offset_s + p.entry.duration_s));
      const shifted = Math.abs(d - p.entry.duration_s);
      p.offset = Number.isFinite(d) && shifted < kept ? p.entry.start_offset_s : 0;
      resolve();
    };
    if (p.el.readyState >= 1) done();
    else {
      p.el.addEventListener("loadedmetadata", done, { once: true });
      p.el.addEventListener("error", () => { p.offset = p.entry.start_offset_s; p.failed = true; resolve(); }, { once: true });
    }
  });
}

async function loadWaves() {
  const box = document.getElementById("ecgs");
  for (const entry of timeline.waveforms) {
    const res = await fetch(withToken(entry.url));
    const buf = await res.arrayBuffer();
    const nCh = entry.channels.length;
    const raw = entry.format === 32 ? new Int32Array(buf, 0, Math.floor(buf.byteLength / 4 / nCh) * nCh)
                                    : new Int16Array(buf, 0, Math.floor(buf.byteLength / 2 / nCh) * nCh);
    const n = raw.length / nCh;
    const ch = entry.channels[entry.ecg_channel] || { gain: 200, baseline: 0 };
    const invalid = entry.format === 32 ? -2147483648 : -32768;
    const mv = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const v = raw[i * nCh + entry.ecg_channel];
      mv[i] = v === invalid ? NaN : (v - ch.baseline) / ch.gain;
    }
    const canvas = el("canvas");
    const label = el("div.lead", {}, `${nameOf(entry.participant_id)} · ${ch.name || ""}  ${SWEEP_MM_PER_S} mm/s  ${GAIN_MM_PER_MV} mm/mV`);
    const counts = el("div.lead.pb-counts", { style: "top: auto; bottom: 6px" });
    const v = entry.beats.filter((b) => b[1] === "V").length;
    setText(counts, "playback.beats", { n: entry.beats.length, v });
    box.append(el("div.pb-ecg", { dataset: { record: entry.record } }, canvas, label, counts));
    waves.push({ entry, raw, n, mv, canvas, drawn: 0 });
  }
}

function eventText(e) {
  const who = nameOf(e.participant_id);
  if (e.kind === "alarm" || e.kind === "alarm_cleared") {
    return t(`event.${e.kind}`, { name: who, label: alarmLabel(e.label) });
  }
  return t(`event.${e.kind}`, { name: who });
}

function alarmLabel(label) {
  // recorded as "<kind> <priority>: <message>" or "cleared <kind>"
  const kind = (label || "").replace(/^cleared /, "").split(" ")[0];
  return tOr("alarm", kind);
}

function buildTimeline() {
  const bar = document.getElementById("timeline");
  const list = document.getElementById("events");
  bar.replaceChildren();
  list.replaceChildren();
  const d = Math.max(0.001, timeline.duration_s);
  for (const e of timeline.events) {
    bar.append(el(`i.${e.kind}`, { style: `left: ${(100 * e.t / d).toFixed(3)}%`, title: eventText(e) }));
    list.append(el("li", { onclick: () => seek(e.t) }, el("span.muted", {}, fmt(e.t)), " ", eventText(e)));
  }
  bar.append(el("b#cursor"));
  bar.onclick = (ev) => {
    const r = bar.getBoundingClientRect();
    seek(((ev.clientX - r.left) / r.width) * d);
  };
}

onLanguageChange(() => {
  if (!timeline) return;
  buildTimeline();
  for (const w of waves) {
    const v = w.entry.beats.filter((b) => b[1] === "V").length;
    const counts = w.canvas.parentElement.querySelector(".pb-counts");
    setText(counts, "playback.beats", { n: w.entry.beats.length, v });
  }
  setText(document.getElementById("play"), clock.playing ? "btn.pause" : "btn.play");
});

function inSpan(p, s) {
  return s >= p.entry.start_offset_s - 0.02 && s <= p.entry.start_offset_s + p.entry.duration_s + 0.05;
}

function mediaTime(p, s) { return Math.max(0, s - (p.offset ?? p.entry.start_offset_s)); }

/** Seek everything to session time `s`; resolves when every visible video shows its frame. */
async function seek(s) {
  s = Math.max(0, Math.min(s, timeline ? timeline.duration_s : 0));
  clock.base = s;
  clock.at = performance.now();
  const waits = [];
  for (const p of players) {
    if (p.failed) continue;
    const target = mediaTime(p, s);
    if (Math.abs(p.el.currentTime - target) > 0.001) {
      waits.push(new Promise((resolve) => {
        p.el.addEventListener("seeked", resolve, { once: true });
        setTimeout(resolve, 5000);
      }));
      p.el.currentTime = target;
    }
    if (!clock.playing || !inSpan(p, s)) p.el.pause();
  }
  await Promise.all(waits);
  if (clock.playing) for (const p of players) if (inSpan(p, s) && !p.failed) p.el.play().catch(() => {});
  drawAll();
}

function play() {
  if (clock.playing) return;
  clock.base = now();
  clock.at = performance.now();
  clock.playing = true;
  setText(document.getElementById("play"), "btn.pause");
  for (const p of players) {
    if (p.failed) continue;
    if (inSpan(p, clock.base)) {
      p.el.currentTime = mediaTime(p, clock.base);
      p.el.play().catch(() => {});
    }
  }
}

function pause() {
  clock.base = now();
  clock.playing = false;
  setText(document.getElementById("play"), "btn.play");
  for (const p of players) p.el.pause();
}

function correctDrift() {
  if (!clock.playing) return;
  const s = now();
  if (timeline && s >= timeline.duration_s) { pause(); return; }
  for (const p of players) {
    if (p.failed) continue;
    if (!inSpan(p, s)) { if (!p.el.paused) p.el.pause(); continue; }
    if (p.el.paused) p.el.play().catch(() => {});
    if (Math.abs(p.el.currentTime - mediaTime(p, s)) > DRIFT_S) p.el.currentTime = mediaTime(p, s);
  }
}

/** The ECG sample drawn at the cursor at session time `s` (index, raw values of every channel). */
function ecgAt(s, which = 0) {
  const w = waves[which];
  if (!w) return null;
  const i = Math.floor((s - w.entry.start_offset_s) * w.entry.fs + 1e-6);
  if (i < 0 || i >= w.n) return { record: w.entry.record, sample: i, values: null };
  const nCh = w.entry.channels.length;
  const values = Array.from(w.raw.subarray(i * nCh, i * nCh + nCh));
  return { record: w.entry.record, sample: i, values, mv: w.mv[i] };
}

function draw(w, s) {
  const c = w.canvas;
  const rect = c.getBoundingClientRect();
  if (c.width !== Math.round(rect.width) || c.height !== Math.round(rect.height)) {
    c.width = Math.round(rect.width);
    c.height = Math.round(rect.height);
  }
  const g = c.getContext("2d");
  const W = c.width, H = c.height;
  const pxPerS = SWEEP_MM_PER_S * CSS_PX_PER_MM;
  const span = W / pxPerS;
  g.fillStyle = "#000";
  g.fillRect(0, 0, W, H);
  g.lineWidth = 1;
  for (let i = 0, x = 0; x <= W; i++, x = i * CSS_PX_PER_MM) {
    g.strokeStyle = i % 5 === 0 ? "rgba(255,90,90,0.28)" : "rgba(255,90,90,0.10)";
    g.beginPath(); g.moveTo(x, 0); g.lineTo(x, H); g.stroke();
  }
  for (let i = 0, y = 0; y <= H; i++, y = i * CSS_PX_PER_MM) {
    g.strokeStyle = i % 5 === 0 ? "rgba(255,90,90,0.28)" : "rgba(255,90,90,0.10)";
    g.beginPath(); g.moveTo(0, y); g.lineTo(W, y); g.stroke();
  }
  const fs = w.entry.fs;
  const t0 = w.entry.start_offset_s;
  const sweepStart = Math.floor(s / span) * span;  // the sweep's left edge, in session time
  const cursorX = (s - sweepStart) * pxPerS;
  const pxPerMv = GAIN_MM_PER_MV * CSS_PX_PER_MM;
  const mid = H / 2;
  // x -> the session time drawn there: this sweep left of the cursor, the previous one right of it
  const timeAt = (x) => (x <= cursorX ? sweepStart + x / pxPerS : sweepStart - span + x / pxPerS);
  g.strokeStyle = "#3cff6b";
  g.lineWidth = 1.5;
  g.beginPath();
  let pen = false;
  for (let x = 0; x < W; x++) {
    if (x > cursorX && x < cursorX + ERASE_S * pxPerS) { pen = false; continue; }
    const i = Math.floor((timeAt(x) - t0) * fs);
    const v = i >= 0 && i < w.n ? w.mv[i] : NaN;
    if (Number.isNaN(v)) { pen = false; continue; }
    const y = mid - v * pxPerMv;
    if (pen) g.lineTo(x, y); else g.moveTo(x, y);
    pen = true;
  }
  g.stroke();
  // beats and alarms of what is on screen
  g.font = "11px sans-serif";
  const lo = Math.floor((sweepStart - span - t0) * fs), hi = Math.ceil((s - t0) * fs);
  for (const [sample, symbol] of w.entry.beats) {
    if (sample < lo || sample > hi) continue;
    const bt = t0 + sample / fs;
    const x = bt >= sweepStart ? (bt - sweepStart) * pxPerS : (bt - sweepStart + span) * pxPerS;
    if (bt < sweepStart && x < cursorX + ERASE_S * pxPerS) continue;
    g.fillStyle = symbol === "V" ? "#ffcc00" : "#3cff6b99";
    g.fillRect(x - 1, 4, 2, 8);
    if (symbol !== "N") g.fillText(symbol, x + 3, 12);
  }
  for (const [sample, label] of w.entry.alarms) {
    if (sample < lo || sample > hi) continue;
    const at = t0 + sample / fs;
    const x = at >= sweepStart ? (at - sweepStart) * pxPerS : (at - sweepStart + span) * pxPerS;
    g.fillStyle = label.startsWith("cleared ") ? "#3cff6b" : "#ff4d4d";
    g.fillRect(x - 1, 0, 2, H);
    g.fillText(alarmLabel(label), x + 4, H - 8);
  }
  g.fillStyle = "#ffffff";
  g.fillRect(cursorX, 0, 1, H);
  w.drawn += 1;
}

function drawAll() {
  const s = now();
  for (const w of waves) draw(w, s);
  document.getElementById("time").textContent = fmt(s);
  const seekBar = document.getElementById("seek");
  if (document.activeElement !== seekBar) seekBar.value = String(s);
  const cursor = document.getElementById("cursor");
  if (cursor && timeline) cursor.style.left = `${(100 * s / Math.max(0.001, timeline.duration_s)).toFixed(3)}%`;
}

function frame() {
  drawAll();
  requestAnimationFrame(frame);
}

document.getElementById("play").addEventListener("click", () => (clock.playing ? pause() : play()));
document.getElementById("seek").addEventListener("input", (e) => seek(Number(e.target.value)));

window.medstream = {
  playback: {
    ready: false,
    error: null,
    get timeline() { return timeline; },
    now,
    seek,
    play,
    pause,
    ecgAt,
    get playing() { return clock.playing; },
    /** Each media element: its track, where it is, and what it has decoded (automation). */
    media() {
      return players.map((p) => ({
        track_id: p.entry.track_id, kind: p.entry.kind, participant_id: p.entry.participant_id,
        current_time: p.el.currentTime, offset: p.offset, ready_state: p.el.readyState, paused: p.el.paused,
        failed: !!p.failed, error: p.el.error ? p.el.error.message || String(p.el.error.code) : null,
        seekable_start: p.el.seekable.length ? p.el.seekable.start(0) : null,
        decoded_frames: p.el.getVideoPlaybackQuality ? p.el.getVideoPlaybackQuality().totalVideoFrames : null,
      }));
    },
    waveDraws() { return waves.map((w) => w.drawn); },
  },
};

load().catch((e) => {
  console.error("playback failed", e);
  setText(banner, "playback.error");
  banner.className = "banner";
  banner.hidden = false;
  window.medstream.playback.error = String(e);
});
