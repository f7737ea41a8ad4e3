// The consultation page: everyone publishing camera and microphone sees and hears everyone else.

import { ChatPanel } from "./chat.js";
import { Conference } from "./conference.js";
import { el } from "./ui.js";
import { t, tOr, onLanguageChange } from "./i18n.js";
import { tokenFromUrl } from "./signaling.js";
import { showConsultationEcg } from "./ecg12consult.js";

const $ = (id) => document.getElementById(id);

const conf = new Conference({
  page: "consultation",
  layout: (tile) => { if (tile.root.parentElement !== $("tiles")) $("tiles").append(tile.root); },
  stateEl: $("state"),
  recordingEl: $("rec"),
  bannerEl: $("banner"),
  mediaBannerEl: $("mediabanner"),
  contentEl: $("content"),
  ecgContainer: $("ecg"),
  onRoomChange: (what) => render(what),
});

function render(what) {
  const r = conf.room;
  if (conf.chat) conf.chat.render();
  if (r.self) {
    $("room").textContent = t("room.line", { kind: tOr("kind", r.room.kind), room: r.room.id, name: r.self.name,
                                             role: tOr("role", r.self.role) });
  }
  $("hostctl").hidden = !(r.isModerator || r.may("record")) || conf.ended;
  $("record").hidden = !r.may("record");
  $("end").hidden = !r.isModerator;
  $("record").textContent = r.recording.active ? t("btn.record_stop") : t("btn.record_start");
  $("record").classList.toggle("on", r.recording.active);
  $("mic").textContent = conf.micOff ? t("btn.unmute") : t("btn.mute");
  $("mic").classList.toggle("on", conf.micOff);
  $("cam").textContent = conf.cameraOff ? t("btn.cam_on") : t("btn.cam_off");
  $("cam").classList.toggle("on", conf.cameraOff);
  $("audioonly").classList.toggle("on", conf.audioOnly);
  $("share").hidden = !conf.publishing || conf.ended || !r.may("publish_video");
  $("share").textContent = conf.sharing ? t("btn.stop_sharing") : t("btn.share_screen");
  $("share").classList.toggle("on", conf.sharing);
  for (const id of ["mic", "cam", "audioonly", "leave", "mics", "cams"]) $(id).disabled = conf.ended;
  if (what === "devices") fillDevices();
  const q = r.self && r.quality.get(r.self.participant_id);
  const media = conf.health.state;
  $("myquality").textContent = conf.ended ? "" : ["unreachable", "dropped"].includes(media) ? t("quality.no_media")
    : q ? t("quality.mine", { kbps: Math.round(q.bitrate_kbps || 0), loss: (q.loss_pct || 0).toFixed(1), rtt: Math.round(q.rtt_ms || 0) }) : "";
}

async function fillDevices() {
  const d = await conf.devices();
  const current = (kind) => {
    const track = conf.localStream && (kind === "audio" ? conf.localStream.getAudioTracks()[0] : conf.localStream.getVideoTracks()[0]);
    return track ? track.getSettings().deviceId : null;
  };
  $("mics").replaceChildren(...d.audio.map((x, i) => el("option", { value: x.deviceId, selected: x.deviceId === current("audio") }, x.label || t("device.mic_n", { n: i + 1 }))));
  $("cams").replaceChildren(...d.video.map((x, i) => el("option", { value: x.deviceId, selected: x.deviceId === current("video") }, x.label || t("device.cam_n", { n: i + 1 }))));
}

$("mics").addEventListener("change", () => conf.chooseDevices($("mics").value, $("cams").value));
$("cams").addEventListener("change", () => conf.chooseDevices($("mics").value, $("cams").value));
$("mic").addEventListener("click", () => { conf.toggleMic(); render(); });
$("cam").addEventListener("click", () => { conf.toggleCamera(); render(); });
$("audioonly").addEventListener("click", async () => { await conf.toggleAudioOnly(); render(); });
$("share").addEventListener("click", async () => { await (conf.sharing ? conf.stopSharing() : conf.shareScreen()); render(); });
$("leave").addEventListener("click", () => conf.leave());
$("record").addEventListener("click", () => conf.setRecording(!conf.room.recording.active));
$("end").addEventListener("click", () => { if (confirm(t("confirm.end_consultation"))) conf.endRoom(); });
onLanguageChange(() => render("devices"));
setInterval(() => render(), 1000);

const chat = new ChatPanel(conf, $("chat"));
conf.chat = chat;
conf.start();
// a consultation opened from a 12-lead reading request shows that ECG to both sides
const ecgRequest = new URLSearchParams(window.location.search).get("ecg");
if (ecgRequest) window.medstream.ecg12 = showConsultationEcg($("ecg12"), ecgRequest, tokenFromUrl());
