// The consultation page: everyone publishing camera and microphone sees and hears everyone else.

import { Conference } from "./conference.js";
import { el } from "./ui.js";

const $ = (id) => document.getElementById(id);

const conf = new Conference({
  page: "consultation",
  layout: (tile) => { if (tile.root.parentElement !== $("tiles")) $("tiles").append(tile.root); },
  stateEl: $("state"),
  recordingEl: $("rec"),
  bannerEl: $("banner"),
  ecgContainer: $("ecg"),
  onRoomChange: (what) => render(what),
});

function render(what) {
  const r = conf.room;
  if (r.self) $("room").textContent = `room ${r.room.id} \u00b7 ${r.self.name} (${r.self.role})`;
  $("hostctl").hidden = !r.isModerator;
  $("record").textContent = r.recording.active ? "Stop recording" : "Start recording";
  $("record").classList.toggle("on", r.recording.active);
  $("mic").textContent = conf.micOff ? "Unmute" : "Mute";
  $("mic").classList.toggle("on", conf.micOff);
  $("cam").textContent = conf.cameraOff ? "Camera on" : "Camera off";
  $("cam").classList.toggle("on", conf.cameraOff);
  $("audioonly").classList.toggle("on", conf.audioOnly);
  if (what === "devices") fillDevices();
  const q = r.self && r.quality.get(r.self.participant_id);
  $("myquality").textContent = q ? `your link: ${Math.round(q.bitrate_kbps || 0)} kbps, ${(q.loss_pct || 0).toFixed(1)}% loss, ${Math.round(q.rtt_ms || 0)} ms` : "";
}

async function fillDevices() {
  const d = await conf.devices();
  const current = (kind) => {
    const t = conf.localStream && (kind === "audio" ? conf.localStream.getAudioTracks()[0] : conf.localStream.getVideoTracks()[0]);
    return t ? t.getSettings().deviceId : null;
  };
  $("mics").replaceChildren(...d.audio.map((x, i) => el("option", { value: x.deviceId, selected: x.deviceId === current("audio") }, x.label || `microphone ${i + 1}`)));
  $("cams").replaceChildren(...d.video.map((x, i) => el("option", { value: x.deviceId, selected: x.deviceId === current("video") }, x.label || `camera ${i + 1}`)));
}

$("mics").addEventListener("change", () => conf.chooseDevices($("mics").value, $("cams").value));
$("cams").addEventListener("change", () => conf.chooseDevices($("mics").value, $("cams").value));
$("mic").addEventListener("click", () => { conf.toggleMic(); render(); });
$("cam").addEventListener("click", () => { conf.toggleCamera(); render(); });
$("audioonly").addEventListener("click", async () => { await conf.toggleAudioOnly(); render(); });
$("leave").addEventListener("click", () => conf.leave());
$("record").addEventListener("click", () => conf.setRecording(!conf.room.recording.active));
$("end").addEventListener("click", () => { if (confirm("End the consultation for everyone?")) conf.endRoom(); });
setInterval(() => render(), 1000);

conf.start();
