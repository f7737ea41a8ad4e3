// The monitoring wall: every waveform stream of a monitoring room, drawn like bedside monitors,
// with heart rate, numerics, beat markers, prioritised alarms with tone and acknowledge. The beds
// are laid out to fill the screen (every bed of a ward visible without scrolling where they fit),
// the wall asks for the click that lets it sound, and an ended session stops and clears.

import { Signaling, tokenFromUrl } from "./signaling.js";
import { WaveformStore, BedTile, AlarmCenter, animate, alarmText } from "./waveforms.js";
import { RoomState } from "./room.js";
import { el, setChildren, joinError } from "./ui.js";
import { t, refOr, setText, initI18n, onLanguageChange, formatTime } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const tiles = new Map();  // stream id -> BedTile
const alarms = new AlarmCenter();
const MIN_BED_W_PX = 300;  // narrower and the numerics squeeze the sweep
const MIN_BED_H_PX = 150;  // head + a readable sweep + notes
let ended = false;

initI18n();

// IEC 60601-1-8 latching: a high-priority alarm stays on the wall after its condition ends,
// until a nurse acknowledges it. `latched`: `${stream}/${kind}` -> the alarm as last seen.
const latched = new Map();
const lastActive = new Map();  // stream id -> Map(kind -> alarm) of its previous analysis
const history = new Map();  // stream id -> [{kind, priority, text, raised, cleared}], newest first
const HISTORY_LENGTH = 20;

function trackAlarms(streamId, active) {
  const before = lastActive.get(streamId) || new Map();
  const now = new Map(active.map((a) => [a.kind, a]));
  const events = history.get(streamId) || [];
  for (const [kind, a] of now) {
    if (!before.has(kind)) events.unshift({ kind, priority: a.priority, text: alarmText(a), raised: Date.now(), cleared: null });
    latched.delete(`${streamId}/${kind}`);
  }
  for (const [kind, a] of before) {
    if (now.has(kind)) continue;
    const open = events.find((e) => e.kind === kind && e.cleared === null);
    if (open) open.cleared = Date.now();
    const shown = alarms.active.get(`${streamId}/${kind}`);
    if (a.priority === "high" && !(shown && shown.acknowledged)) latched.set(`${streamId}/${kind}`, { ...a, latched: true });
  }
  history.set(streamId, events.slice(0, HISTORY_LENGTH));
  lastActive.set(streamId, now);
  const held = [...latched.entries()].filter(([key]) => key.startsWith(`${streamId}/`)).map(([, a]) => a);
  alarms.setStreamAlarms(streamId, [...active, ...held.map((a) => ({ ...a, latched: true }))]);
}

function renderHistory(streamId, tile) {
  let box = tile.root.querySelector(".bed-history");
  if (!box) {
    box = el("details.bed-history", {}, el("summary", {}), el("ol"));
    tile.root.append(box);
  }
  box.querySelector("summary").textContent = t("wall.alarm_history");
  const fmt = (when) => formatTime(when);
  setChildren(box.querySelector("ol"), (history.get(streamId) || []).map((e) => el(`li.${e.priority}`,
    { dataset: { kind: e.kind } }, `${fmt(e.raised)}${e.cleared ? `\u2013${fmt(e.cleared)}` : ""} ${alarmText(e)}`)));
}

const store = new WaveformStore((stream, what, beats) => {
  if (ended) return;
  let tile = tiles.get(stream.id);
  if (!tile) {
    tile = new BedTile(stream, $("beds"), { name: stream.id, heightMm: 20 });
    tiles.set(stream.id, tile);
    $("empty").hidden = true;
    layout();
  }
  if (what === "analysis") {
    tile.view.addBeats(beats || []);
    trackAlarms(stream.id, stream.alarms);
    renderHistory(stream.id, tile);
    renderAlarms();
  } else if (what === "ended") {
    trackAlarms(stream.id, []);
    renderHistory(stream.id, tile);
    renderAlarms();
  }
  if (what !== "chunk") tile.update();
});

/** Columns for `n` beds in the space of #beds: the layout with the largest beds that fit
 *  (no bed narrower than MIN_BED_W_PX); rows share the height, so 4 beds fit a tablet. */
function layout() {
  const box = $("beds");
  const n = Math.max(1, tiles.size);
  const w = box.clientWidth;
  const h = Math.max(MIN_BED_H_PX, box.clientHeight);
  let best = 1;
  let bestScore = -1;
  for (let cols = 1; cols <= n; cols++) {
    const bedW = w / cols;
    if (cols > 1 && bedW < MIN_BED_W_PX) break;
    const rows = Math.ceil(n / cols);
    const bedH = h / rows;
    const fits = bedH >= MIN_BED_H_PX;
    // prefer layouts where all beds fit; among them the bed area, weighted to a monitor's shape
    const score = (fits ? 1e9 : 0) + Math.min(bedW, bedH * 3) * Math.min(bedH, bedW / 1.5);
    if (score > bestScore) { bestScore = score; best = cols; }
  }
  const rows = Math.ceil(n / best);
  box.style.setProperty("--cols", String(best));
  box.style.setProperty("--rows", String(rows));
  box.classList.toggle("fill", h / rows >= MIN_BED_H_PX);
}

function renderAlarms() {
  const list = ended ? [] : alarms.list();
  const box = $("alarms");
  setChildren(box, (list.length ? list.map((a) => el(`span.alarm.${a.priority}${a.acknowledged ? "" : ".unacked"}`,
    { dataset: { kind: a.kind, stream: a.stream }, title: a.message || "" },
    `${a.stream}: ${alarmText(a)}${a.latched ? ` (${t("wall.latched")})` : ""}`))
    : [el("span.muted", {}, t("wall.no_alarms"))]));
  for (const [id, tile] of tiles) {
    const unacked = list.some((a) => a.stream === id && !a.acknowledged);
    tile.root.classList.toggle("unacked", unacked);
  }
}

const soundLog = [];  // changes of what the wall shows about sound (automation: window.medstream)

function renderSound() {
  const state = ended ? "off" : alarms.soundState();
  $("sound").hidden = state !== "off" || ended;
  const pill = $("soundstate");
  pill.hidden = ended;
  pill.className = `pill sound-${state}`;
  pill.dataset.state = state;
  if (state === "silenced") setText(pill, "sound.silenced", { time: formatTime(alarms.silencedUntil) });
  else setText(pill, state === "on" ? "sound.on" : "sound.off");
  const last = soundLog[soundLog.length - 1];
  const button = !$("sound").hidden;
  if (!last || last.state !== state || last.button !== button) {
    soundLog.push({ state, button, buttonText: $("sound").textContent, pill: pill.textContent, at: Date.now(),
                    userActivated: navigator.userActivation ? navigator.userActivation.hasBeenActive : null });
  }
}

function renderState(s) {
  setText($("state"), `state.${s}`);
  $("state").className = `pill state-${s}`;
}

/** Acknowledge: silence, and let go of latched alarms whose condition has ended. A click too, so
 *  the tone may sound from then on. */
function acknowledge() {
  alarms.acknowledge();
  const streams = new Set([...latched.keys()].map((key) => key.slice(0, key.lastIndexOf("/"))));
  latched.clear();
  for (const id of streams) trackAlarms(id, [...(lastActive.get(id) || new Map()).values()]);
  alarms.enableSound().catch(() => {});
  renderAlarms();
  renderSound();
}

$("ack").addEventListener("click", acknowledge);
$("sound").addEventListener("click", async () => { await alarms.enableSound().catch(() => {}); renderSound(); });

const token = tokenFromUrl();
const sig = new Signaling({ token, media: false, onBinary: (buf) => store.onFrame(buf), onState: renderState });
const room = new RoomState(sig);
let roomLine = null;
sig.onJoined = (j) => {
  room.fromJoined(j);
  roomLine = { kind: refOr("kind", j.room.kind), room: j.room.id, name: j.participant.name, role: refOr("role", j.participant.role) };
  setText($("room"), "room.line", roomLine);
};

/** The session ended: every sweep stops and blanks, numbers and alarms clear, tone stops. */
function end(reason) {
  if (ended) return;
  ended = true;
  sig.ended();
  stopAnimation();
  for (const tile of tiles.values()) tile.end();
  alarms.clear();
  renderAlarms();
  renderSound();
  $("ack").disabled = true;
  setText($("banner"), ["ended_by_host", "empty"].includes(reason) ? `ended.${reason}` : "ended.unknown");
  $("banner").hidden = false;
}
sig.on("room_ended", (m) => end(m.reason));
// the server may close with `bye` (reason room_ended) without a `room_ended` first: same end
sig.on("bye", (m) => { if (m.reason === "room_ended") end(null); });

setInterval(() => {
  $("clock").textContent = formatTime(Date.now());
  if (!ended) for (const tile of tiles.values()) tile.update();  // notes age out
  renderSound();
}, 1000);

const stopAnimation = animate(() => [...tiles.values()].map((x) => x.view));
// the beds' area changes with the window, a rotation, a banner or a wrapped header
if (window.ResizeObserver) new ResizeObserver(() => layout()).observe($("beds"));
else window.addEventListener("resize", layout);
onLanguageChange(() => { renderAlarms(); renderSound(); for (const tile of tiles.values()) tile.update(); });
renderAlarms();
renderSound();

window.medstream = {
  page: "wall",
  get state() { return sig.state; },
  get participant() { return room.self; },
  get room() { return room.snapshot(); },
  get streams() { return store.snapshot(); },
  get alarms() { return alarms.snapshot(); },
  get ended() { return ended; },
  get tokenExpiresAt() { return sig.tokenExpiresAt; },
  get refreshError() { return sig.refreshError; },
  get soundLog() { return soundLog; },
  acknowledge,
  get latched() { return [...latched.entries()].map(([key, a]) => ({ key, kind: a.kind, priority: a.priority })); },
  alarmHistory(streamId) { return (history.get(streamId) || []).map((e) => ({ ...e })); },
  heartRate(streamId) { const s = store.streams.get(streamId); return s ? s.heartRateBpm : null; },
  /** Ink on each bed's trace canvas: {stream: {columns: fraction of x with ink, redraws}}. */
  traceInk() {
    const out = {};
    for (const [id, tile] of tiles) {
      const c = tile.view.trace;
      const g = c.getContext("2d", { willReadFrequently: true });
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let cols = 0;
      for (let x = 0; x < c.width; x++) {
        for (let y = 0; y < c.height; y++) { if (d[(y * c.width + x) * 4 + 3] > 0) { cols += 1; break; } }
      }
      out[id] = { columns: cols / c.width, width: c.width, redraws: tile.view.redraws, drawn: tile.view.drawn,
                  firstDrawn: tile.view.firstDrawn, newest: tile.stream.newest,
                  drawnPx: tile.view.drawn === null ? 0 : (tile.view.drawn - tile.view.firstDrawn) / tile.stream.fs * 25 * 96 / 25.4 };
    }
    return out;
  },
  get frames() { return store.frames; },
  get decodeErrors() { return store.errors; },
  get reconnects() { return sig.reconnects; },
};

if (!token) {
  setText($("banner"), "banner.no_token_wall");
  $("banner").hidden = false;
} else {
  sig.start().catch((e) => {
    setText($("banner"), "banner.cannot_join", { reason: joinError(e, token) });
    $("banner").hidden = false;
  });
}
