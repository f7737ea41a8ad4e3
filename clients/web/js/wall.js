// The monitoring wall: every waveform stream of a monitoring room, drawn like bedside monitors,
// with heart rate, numerics, beat markers, prioritised alarms with tone and acknowledge.

import { Signaling, tokenFromUrl } from "./signaling.js";
import { WaveformStore, BedTile, AlarmCenter, animate } from "./waveforms.js";
import { RoomState } from "./room.js";
import { el } from "./ui.js";

const $ = (id) => document.getElementById(id);
const tiles = new Map();  // stream id -> BedTile
const alarms = new AlarmCenter();

const store = new WaveformStore((stream, what, beats) => {
  let tile = tiles.get(stream.id);
  if (!tile) {
    tile = new BedTile(stream, $("beds"), { name: stream.id, heightMm: 32 });
    tiles.set(stream.id, tile);
    $("empty").hidden = true;
  }
  if (what === "analysis") {
    tile.view.addBeats(beats || []);
    alarms.setStreamAlarms(stream.id, stream.alarms);
    renderAlarms();
  } else if (what === "ended") {
    alarms.setStreamAlarms(stream.id, []);
    renderAlarms();
  }
  if (what !== "chunk") tile.update();
});

function renderAlarms() {
  const list = alarms.list();
  const box = $("alarms");
  box.replaceChildren(...(list.length ? list.map((a) => el(`span.alarm.${a.priority}${a.acknowledged ? "" : ".unacked"}`,
    { dataset: { kind: a.kind, stream: a.stream } }, `${a.stream}: ${a.message || a.kind}`)) : [el("span.muted", {}, "none")]));
  for (const [id, tile] of tiles) {
    const unacked = list.some((a) => a.stream === id && !a.acknowledged);
    tile.root.classList.toggle("unacked", unacked);
  }
}

$("ack").addEventListener("click", () => { alarms.acknowledge(); renderAlarms(); });

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
  acknowledge() { alarms.acknowledge(); renderAlarms(); },
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
