// The broadcast page: the presenter (host) big, co-presenters and promoted speakers on stage,
// everyone else watches and may raise a hand; the host promotes and demotes.

import { Conference } from "./conference.js";
import { mayPublish } from "./room.js";
import { el } from "./ui.js";

const $ = (id) => document.getElementById(id);

function place(tile, p) {
  let target;
  if (p.role === "host") target = $("presenter");
  else if (mayPublish(p.role)) target = $("speakers");
  else target = $("viewer-tiles");  // viewers: listed by name; their (hidden) tile keeps state
  if (tile.root.parentElement !== target) target.append(tile.root);
}

const conf = new Conference({
  page: "broadcast",
  layout: place,
  stateEl: $("state"),
  recordingEl: $("rec"),
  bannerEl: $("banner"),
  ecgContainer: $("ecg"),
  onRoomChange: () => render(),
});

function render() {
  const r = conf.room;
  const self = r.self;
  if (!self) return;
  $("room").textContent = `room ${r.room.id} \u00b7 ${self.name} (${self.role})`;
  const everyone = [self, ...r.participants.values()].filter((p) => p.role !== "monitor");
  const viewers = everyone.filter((p) => !mayPublish(p.role));
  const speakers = everyone.filter((p) => p.role === "speaker" || p.role === "expert");
  $("audience").textContent = `${viewers.length} watching`;
  $("speakers-title").hidden = speakers.length === 0;
  $("hand").hidden = !(self.role === "viewer" || self.role === "expert");
  $("hand").textContent = self.hand_raised ? "Lower hand" : "Raise hand";
  $("hand").classList.toggle("on", self.hand_raised);
  $("pubctl").hidden = !conf.publishing;
  $("mic").textContent = conf.micOff ? "Unmute" : "Mute";
  $("cam").textContent = conf.cameraOff ? "Camera on" : "Camera off";
  $("audioonly").classList.toggle("on", conf.audioOnly);
  $("hostctl").hidden = !r.isModerator;
  $("record").textContent = r.recording.active ? "Stop recording" : "Start recording";
  $("hands-panel").hidden = !r.isModerator;
  $("speakers-panel").hidden = !r.isModerator || speakers.length === 0;
  const hands = everyone.filter((p) => p.hand_raised);
  $("no-hands").hidden = hands.length > 0;
  $("hands").replaceChildren(...hands.map((p) => el("li.hand", { dataset: { participant: p.participant_id } }, p.name,
    el("span.spacer"), p.role === "viewer" ? el("button.primary", { onclick: () => conf.moderate("promote", p) }, "Let speak") : null)));
  $("speaker-list").replaceChildren(...speakers.map((p) => el("li", { dataset: { participant: p.participant_id } }, p.name,
    el("span.role.muted", {}, ` ${p.role}`), el("span.spacer"),
    p.role === "speaker" ? el("button", { onclick: () => conf.moderate("demote", p) }, "Back to audience") : null)));
  $("viewers").replaceChildren(...viewers.map((p) => el("li", {}, p.hand_raised ? el("span.handflag", {}, "hand up") : null, p.name,
    p.participant_id === self.participant_id ? el("span.muted", {}, " (you)") : null)));
}

$("hand").addEventListener("click", () => conf.raiseHand(!conf.room.self.hand_raised));
$("mic").addEventListener("click", () => { conf.toggleMic(); render(); });
$("cam").addEventListener("click", () => { conf.toggleCamera(); render(); });
$("audioonly").addEventListener("click", async () => { await conf.toggleAudioOnly(); render(); });
$("leave").addEventListener("click", () => conf.leave());
$("record").addEventListener("click", () => conf.setRecording(!conf.room.recording.active));
$("end").addEventListener("click", () => { if (confirm("End the broadcast for everyone?")) conf.endRoom(); });
setInterval(render, 1000);

window.medstream.raiseHand = (raised = true) => conf.raiseHand(raised);
window.medstream.promote = (pid) => conf.sig.request({ type: "promote", participant_id: pid });
window.medstream.demote = (pid) => conf.sig.request({ type: "demote", participant_id: pid });
conf.start();
