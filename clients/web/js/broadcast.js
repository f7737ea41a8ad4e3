// The broadcast page: the presenter (host) big, co-presenters and promoted speakers on stage,
// everyone else watches and may raise a hand; the host promotes and demotes. Who is on stage is
// read from what they publish (the server decides who may), not from a copy of the role matrix.

import { ChatPanel } from "./chat.js";
import { Conference } from "./conference.js";
import { el, setChildren } from "./ui.js";
import { t, tOr, onLanguageChange } from "./i18n.js";

const $ = (id) => document.getElementById(id);

/** Whether `p` is on stage: it publishes tracks, or it is ourselves publishing. */
function onStage(p) {
  if (conf.room.self && p.participant_id === conf.room.self.participant_id) return conf.publishing;
  return conf.room.tracksOf(p.participant_id).length > 0;
}

function place(tile, p) {
  let target;
  if (p.role === "host") target = $("presenter");  // the host is the presenter (layout, not permission)
  else if (onStage(p)) target = $("speakers");
  else target = $("viewer-tiles");  // viewers: listed by name; their (hidden) tile keeps state
  if (tile.root.parentElement !== target) target.append(tile.root);
}

const conf = new Conference({
  page: "broadcast",
  layout: place,
  stateEl: $("state"),
  recordingEl: $("rec"),
  bannerEl: $("banner"),
  mediaBannerEl: $("mediabanner"),
  contentEl: $("content"),
  ecgContainer: $("ecg"),
  onRoomChange: () => render(),
});

let renders = 0;  // window.medstream.renders: lets a test press a button across a re-render

function render() {
  renders += 1;
  const r = conf.room;
  if (conf.chat) conf.chat.render();
  const self = r.self;
  if (!self) return;
  $("room").textContent = t("room.line", { kind: tOr("kind", r.room.kind), room: r.room.id, name: self.name,
                                           role: tOr("role", self.role) });
  const everyone = conf.everyone();
  const speakers = everyone.filter((p) => p.role !== "host" && onStage(p));
  const viewers = everyone.filter((p) => p.role !== "host" && !onStage(p));
  $("audience").textContent = t("audience.watching", { n: viewers.length });
  $("speakers-title").hidden = speakers.length === 0;
  $("hand").hidden = !r.may("raise_hand") || conf.ended;
  $("hand").textContent = self.hand_raised ? t("btn.lower_hand") : t("btn.raise_hand");
  $("hand").classList.toggle("on", self.hand_raised);
  $("pubctl").hidden = !conf.publishing;
  $("mic").textContent = conf.micOff ? t("btn.unmute") : t("btn.mute");
  $("cam").textContent = conf.cameraOff ? t("btn.cam_on") : t("btn.cam_off");
  $("audioonly").classList.toggle("on", conf.audioOnly);
  $("share").textContent = conf.sharing ? t("btn.stop_sharing") : t("btn.share_screen");
  $("share").classList.toggle("on", conf.sharing);
  for (const id of ["audioonly", "leave"]) $(id).disabled = conf.ended;
  $("hostctl").hidden = !(r.isModerator || r.may("record")) || conf.ended;
  $("record").hidden = !r.may("record");
  $("end").hidden = !r.isModerator;
  $("record").textContent = r.recording.active ? t("btn.record_stop") : t("btn.record_start");
  $("hands-panel").hidden = !r.isModerator;
  $("speakers-panel").hidden = !r.isModerator || speakers.length === 0;
  const hands = everyone.filter((p) => p.hand_raised);
  $("no-hands").hidden = hands.length > 0;
  setChildren($("hands"), hands.map((p) => el("li", { dataset: { participant: p.participant_id } },
    el("span.handflag", {}, t("hand.up")), p.name, el("span.spacer"),
    !onStage(p) ? el("button.primary", { onclick: () => conf.moderate("promote", p) }, t("btn.let_speak")) : null)));
  setChildren($("speaker-list"), speakers.map((p) => el("li", { dataset: { participant: p.participant_id } }, p.name,
    el("span.role.muted", {}, ` ${tOr("role", p.role)}`), el("span.spacer"),
    p.role === "speaker" ? el("button", { onclick: () => conf.moderate("demote", p) }, t("btn.back_to_audience")) : null)));
  setChildren($("viewers"), viewers.map((p) => el("li", {}, p.hand_raised ? el("span.handflag", {}, t("hand.up")) : null, p.name,
    p.participant_id === self.participant_id ? el("span.muted", {}, t("you")) : null)));
}

$("hand").addEventListener("click", () => conf.raiseHand(!conf.room.self.hand_raised));
$("mic").addEventListener("click", () => { conf.toggleMic(); render(); });
$("cam").addEventListener("click", () => { conf.toggleCamera(); render(); });
$("audioonly").addEventListener("click", async () => { await conf.toggleAudioOnly(); render(); });
$("share").addEventListener("click", async () => { await (conf.sharing ? conf.stopSharing() : conf.shareScreen()); render(); });
$("leave").addEventListener("click", () => conf.leave());
$("record").addEventListener("click", () => conf.setRecording(!conf.room.recording.active));
$("end").addEventListener("click", () => { if (confirm(t("confirm.end_broadcast"))) conf.endRoom(); });
onLanguageChange(render);
setInterval(render, 1000);

window.medstream.raiseHand = (raised = true) => conf.raiseHand(raised);
Object.defineProperty(window.medstream, "renders", { get: () => renders });
window.medstream.promote = (pid) => conf.sig.request({ type: "promote", participant_id: pid });
window.medstream.demote = (pid) => conf.sig.request({ type: "demote", participant_id: pid });
const chat = new ChatPanel(conf, $("chat"));
conf.chat = chat;
conf.start();
