// The ECG centre's page: the queue (suspected STEMI first, then by waiting time), a request
// opened in the 12-lead view with its measurements and triage flags (each with its rule), the
// structured report (rhythm, findings, conclusion; Chinese by default), signing, and one action
// that opens a live consultation with the inviting clinic, the ECG shown on both sides.

import { t, tOr, setText, initI18n, onLanguageChange, language } from "./i18n.js";
import { el, toast, tokenClaims } from "./ui.js";
import { tokenFromUrl } from "./signaling.js";
import { ReadingsApi, errorText, waitingText, whenText, ruleText } from "./readings.js";
import { Ecg12View, measurementRows } from "./ecg12view.js";

const $ = (id) => document.getElementById(id);
const token = tokenFromUrl();
const me = tokenClaims(token || "").sub;
const api = new ReadingsApi(token);
const view = new Ecg12View($("ecg"), { pxPerMm: 4, onCaliper: (r) => showCaliper(r) });
const state = { page: "ecg-reading", queue: [], loadedAt: 0, current: null, view, events: [], live: false, drawn: 0, lastError: null };
window.medstream = state;
const RHYTHMS = ["ecg12.rhythm_sinus", "ecg12.rhythm_af", "ecg12.rhythm_flutter", "ecg12.rhythm_brady", "ecg12.rhythm_tachy", "ecg12.rhythm_paced"];

initI18n();

function showError(e) {
  state.lastError = e.error || "network";
  $("banner").hidden = false;
  setText($("banner"), "rerror.line", errorText(e).vars);
}

function renderQueue() {
  const since = (Date.now() - state.loadedAt) / 1000;
  $("empty").hidden = state.queue.length > 0;
  $("queue").replaceChildren(...state.queue.map((e) => el("li.ecg12-entry" + (state.current && state.current.request_id === e.request_id ? ".selected" : ""),
    { "data-request": e.request_id, "data-priority": e.priority, onclick: () => openRequest(e.request_id) },
    el("span.pill.prio-" + e.priority, {}, tOr("priority", e.priority)),
    el("span.ecg12-entry-main", {},
      el("strong", {}, `${e.patient.name || e.patient.patient_id}`),
      el("span.muted", {}, ` ${e.clinic_id} · ${e.referral_id}`),
      el("br"),
      el("span.flags", {}, (e.triage.flags || []).map((f) => tOr("flag", f.kind)).join(" · ") || t("ecg12.no_flags"))),
    el("span.wait", { "data-waiting": e.waiting_s, "data-claimed": e.state === "claimed" ? e.claimed_by : "" },
      e.state === "claimed" ? t("ecg12.claimed_by", { who: e.claimed_by }) : waitingText(e.waiting_s + since)))));
}

/** Waiting times tick every second without rebuilding the list (a click is never lost). */
function tickWaits() {
  const since = (Date.now() - state.loadedAt) / 1000;
  for (const span of document.querySelectorAll("#queue .wait")) {
    if (!span.dataset.claimed) span.textContent = waitingText(Number(span.dataset.waiting) + since);
  }
}

async function reloadQueue() {
  try {
    const body = await api.queue();
    state.queue = body.entries;
    state.loadedAt = Date.now();
    setText($("who"), "ecg12.reader_line", { centre: body.centre, who: me || "" });
    renderQueue();
  } catch (e) { showError(e); }
}

async function openRequest(id) {
  try {
    let req;
    try { req = (await api.claim(id)).request; } catch (e) {
      if (e.error !== "conflict" && e.error !== "forbidden" && e.error !== "invalid_state") throw e;
      toast(t("rerror.line", errorText(e).vars));
      req = null;
    }
    const body = await api.ecg(id);
    state.current = req || body.request;
    state.ecg = body.ecg;
    $("reading").hidden = false;
    view.calipers = [];
    view.draw(body.ecg);
    state.drawn += 1;
    renderRequest();
    fillReport(state.current.report);
    renderQueue();
  } catch (e) { showError(e); }
}

function renderRequest() {
  const r = state.current;
  if (!r) return;
  const p = r.patient;
  $("title").replaceChildren(
    el("span.pill.prio-" + r.priority, {}, tOr("priority", r.priority)),
    el("strong", {}, `${p.name || ""} ${p.patient_id}`),
    el("span", {}, t("ecg12.patient_line", { sex: tOr("sex", (p.sex || "u").toLowerCase()), age: p.age_years == null ? "—" : Math.round(p.age_years) })),
    el("span.muted", {}, `${r.clinic_id} · ${r.referral_id} · ${whenText(r.created_at)}`),
    el("span.pill.rstate-" + r.state, { "data-state": r.state }, tOr("rstate", r.state)));
  const m = r.measurements;
  $("measurements").replaceChildren(...measurementRows(m).map(([k, v]) => el("tr", {}, el("th", {}, t(k)), el("td", { "data-m": k }, v))));
  const leads = m.leads || {};
  $("st").replaceChildren(el("tr", {}, el("th", {}, t("ecg12.lead")), el("th", {}, t("ecg12.st_j")), el("th", {}, t("ecg12.st_j60")),
    el("th", {}, t("ecg12.r_amp")), el("th", {}, t("ecg12.s_amp"))),
    ...Object.entries(leads).map(([name, a]) => el("tr", {}, el("th", {}, name), el("td", {}, a.st_j_mv.toFixed(2)),
      el("td", {}, a.st_j60_mv.toFixed(2)), el("td", {}, a.r_mv.toFixed(2)), el("td", {}, a.s_mv.toFixed(2)))));
  const flags = r.triage.flags || [];
  $("flags").replaceChildren(...(flags.length ? flags.map((f) => el("li.ecg12-flag" + (f.urgent ? ".urgent" : ""), { "data-flag": f.kind },
    el("b", {}, tOr("flag", f.kind)), el("div.rule", {}, ruleText(f, language())),
    el("div.muted", {}, Object.entries(f.values).map(([k, v]) => `${k} = ${v}`).join(", ")))) : [el("li.muted", {}, t("ecg12.no_flags"))]));
  const mine = r.state === "claimed" && r.claimed_by === me;
  for (const id of ["save", "sign", "release"]) $(id).disabled = !mine;
  $("claim").disabled = r.state !== "queued";
  for (const id of ["rhythm", "findings", "conclusion"]) $(id).disabled = !mine;
}

function fillReport(rep) {
  $("rhythm").value = rep ? rep.rhythm : "";
  $("findings").value = rep ? rep.findings.join("\n") : "";
  $("conclusion").value = rep ? rep.conclusion : "";
}

function reportBody() {
  return { rhythm: $("rhythm").value, findings: $("findings").value.split("\n").map((s) => s.trim()).filter(Boolean),
           conclusion: $("conclusion").value, language: language() === "zh" ? "zh-CN" : "en" };
}

function showCaliper(r) {
  $("caliper").textContent = r ? t("ecg12.caliper", { ms: r.ms, bpm: r.bpm ?? "—", mv: r.mv.toFixed(2) }) : "";
  state.caliper = r;
}

async function act(fn, doneKey) {
  try {
    const body = await fn();
    if (body && body.request) state.current = body.request;
    setText($("rstatus"), doneKey);
    renderRequest();
    reloadQueue();
  } catch (e) { showError(e); }
}

$("claim").addEventListener("click", () => act(() => api.claim(state.current.request_id), "ecg12.claimed"));
$("save").addEventListener("click", () => act(() => api.draft(state.current.request_id, reportBody()), "ecg12.draft_saved"));
$("sign").addEventListener("click", () => act(() => api.sign(state.current.request_id, reportBody()), "ecg12.signed_done"));
$("release").addEventListener("click", () => act(() => api.release(state.current.request_id), "ecg12.released"));
$("consult").addEventListener("click", async () => {
  try {
    const c = await api.consultation(state.current.request_id);
    state.lastConsultation = c;
    window.open(c.url, "_blank");
  } catch (e) { showError(e); }
});

function fillRhythms() {
  $("rhythms").replaceChildren(...RHYTHMS.map((k) => el("option", { value: t(k) })));
}

function onEvent(e) {
  state.events.push(e.type);
  if (state.current && e.request && e.request.request_id === state.current.request_id && e.type !== "consultation") {
    state.current = e.request;
    renderRequest();
  }
  reloadQueue();
}

if (!token) {
  $("banner").hidden = false;
  setText($("banner"), "banner.no_token", { page: "ecg-reading" });
} else {
  api.listen(onEvent, () => { state.live = true; setText($("live"), "ecg12.live_on"); $("live").className = "pill state-joined"; reloadQueue(); });
  reloadQueue();
}
fillRhythms();
setInterval(tickWaits, 1000);
onLanguageChange(() => { fillRhythms(); renderQueue(); renderRequest(); if (state.ecg) view.draw(state.ecg); });
