// The monitoring wall: every waveform stream of a monitoring room, drawn like bedside monitors,
// with heart rate, numerics, beat markers, prioritised alarms with tone and acknowledge.

import { Signaling, tokenFromUrl } from "./signaling.js";
import { WaveformStore, BedTile, AlarmCenter, animate } from "./waveforms.js";
import { RoomState } from "./room.js";
import { el } from "./ui.js";

const $ = (id) => document.getElementById(id);
const tiles = new Map();  // stream id -> BedTile
const alarms = new AlarmCenter();

// Wall text for alarm kinds that need a fixed, short label (others show the analyzer's message).
const ALARM_TEXT = {
  ventricular_fibrillation: "VF / flutter",
  ventricular_tachycardia: "V-tach",
  noise: "ECG noisy / cannot analyse",
  latched: "ended, not acknowledged",
  history: "Alarm history",
};
const alarmText = (a) => ALARM_TEXT[a.kind] || a.message || a.kind;

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
  alarms.setStreamAlarms(streamId, [...active, ...held.map((a) => ({ ...a, message: `${alarmText(a)} (${ALARM_TEXT.latched})` }))]);
}

function renderHistory(streamId, tile) {
  let box = tile.root.querySelector(".bed-history");
  if (!box) {
    box = el("details.bed-history", {}, el("summary", {}, ALARM_TEXT.history), el("ol"));
    tile.root.append(box);
  }
  const fmt = (t) => new Date(t).toLocaleTimeString();
  box.querySelector("ol").replaceChildren(...(history.get(streamId) || []).map((e) => el(`li.${e.priority}`,
    { dataset: { kind: e.kind } }, `${fmt(e.raised)}${e.cleared ? `\u2013${fmt(e.cleared)}` : ""} ${e.text}`)));
}

const store = new WaveformStore((stream, what, beats) => {
  let tile = tiles.get(stream.id);
  if (!tile) {
    tile = new BedTile(stream, $("beds"), { name: stream.id, heightMm: 32 });
    tiles.set(stream.id, tile);
    $("empty").hidden = true;
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

function renderAlarms() {
  const list = alarms.list();
  const box = $("alarms");
  box.replaceChildren(...(list.length ? list.map((a) => el(`span.alarm.${a.priority}${a.acknowledged ? "" : ".unacked"}`,
    { dataset: { kind: a.kind, stream: a.stream } }, `${a.stream}: ${a.message && a.message.endsWith(`(${ALARM_TEXT.latched})`) ? a.message : alarmText(a)}`)) : [el("span.muted", {}, "none")]));
  for (const [id, tile] of tiles) {
    const unacked = list.some((a) => a.stream === id && !a.acknowledged);
    tile.root.classList.toggle("unacked", unacked);
  }
}

function acknowledge() {
  alarms.acknowledge();
  const streams = new Set([...latched.keys()].map((key) => key.slice(0, key.lastIndexOf("/"))));
  latched.clear();  // acknowledged: latched alarms whose condition ended go away
  for (const id of streams) trackAlarms(id, [...(lastActive.get(id) || new Map()).values()]);
  renderAlarms();
}

$("ack").addEventListener("click", acknowledge);

const token = tokenFromUrl();
const sig = new Signaling({ token, media: false, onBinary: (buf) => store.onFrame(buf),
                            onState: (s) => { $("state").textContent = s; $("state").className = `pill state-${s}`; } });
const room = new RoomState(sig);
sig.onJoined = (j) => {
  room.fromJoined(j);
  $("room").textContent = `room ${j.room.id} \u00b7 ${j.participant.name} (${j.participant.role})`;
};
sig.on("room_ended", () => { sig.ended(); $("banner").textContent = "The monitoring session has ended."; $("banner").hidden = false; });

setInterval(() => {
  $("clock").textContent = new Date().toLocaleTimeString();
  for (const tile of tiles.values()) tile.update();  // notes age out
}, 1000);

animate(() => [...tiles.values()].map((t) => t.view));

window.medstream = {
  page: "wall",
  get state() { return sig.state; },
  get participant() { return room.self; },
  get room() { return room.snapshot(); },
  get streams() { return store.snapshot(); },
  get alarms() { return alarms.snapshot(); },
  acknowledge,
  get latched() { return [...latched.entries()].map(([key, a]) => ({ key, kind: a.kind, priority: a.priority })); },
  alarmHistory(streamId) { return (history.get(streamId) || []).map((e) => ({ ...e })); },
  heartRate(streamId) { const s = store.streams.get(streamId); return s ? s.heartRateBpm : null; },
  get frames() { return store.frames; },
  get decodeErrors() { return store.errors; },
  get reconnects() { return sig.reconnects; },
};

if (!token) {
  $("banner").textContent = "This link has no token: open the wall from the link you were given (wall.html?token=...).";
  $("banner").hidden = false;
} else {
  sig.start().catch((e) => { $("banner").textContent = `Cannot join: ${e.message}`; $("banner").hidden = false; });
}
