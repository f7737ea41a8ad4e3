// The clinic's page: send a 12-lead ECG (WFDB .hea + .dat, or a DICOM file) with the referral id,
// follow its requests, and see the signed report arrive live (server-sent events); when the ECG
// centre opens a consultation about one, join it with one click.

import { t, tOr, setText, initI18n, onLanguageChange, language } from "./i18n.js";
import { el, toast } from "./ui.js";
import { tokenFromUrl } from "./signaling.js";
import { ReadingsApi, errorText, whenText, ruleText } from "./readings.js";

const $ = (id) => document.getElementById(id);
const token = tokenFromUrl();
const api = new ReadingsApi(token);
const requests = new Map();      // request id -> request JSON
const consultations = new Map(); // request id -> room
const state = { page: "ecg-clinic", requests, consultations, events: [], live: false, lastError: null };
window.medstream = state;

initI18n();

function render() {
  const list = [...requests.values()].sort((a, b) => b.created_at - a.created_at);
  $("requests").replaceChildren(...list.map(item));
}

function item(r) {
  const flags = r.triage.flags || [];
  const head = el("div.ecg12-head",
    {},
    el("span.pill.prio-" + r.priority, {}, tOr("priority", r.priority)),
    el("strong", {}, r.referral_id),
    el("span", {}, `${r.patient.name || ""} ${r.patient.patient_id}`),
    el("span.muted", {}, whenText(r.created_at)),
    el("span.pill.rstate-" + r.state, { "data-state": r.state }, tOr("rstate", r.state)));
  const flagList = flags.length ? el("ul.ecg12-flags", {}, flags.map((f) => el("li", { title: ruleText(f, language()) },
    tOr("flag", f.kind)))) : null;
  const children = [head, flagList];
  if (r.state === "signed" && r.report) {
    const rep = r.report;
    children.push(el("div.ecg12-report", { "data-request": r.request_id },
      el("div", {}, el("b", {}, t("ecg12.rhythm")), " ", rep.rhythm),
      rep.findings.length ? el("div", {}, el("b", {}, t("ecg12.findings")), el("ul", {}, rep.findings.map((f) => el("li", {}, f)))) : null,
      el("div.conclusion", {}, el("b", {}, t("ecg12.conclusion")), " ", rep.conclusion),
      el("div.muted", {}, t("ecg12.signed_by", { who: r.signed_by, when: whenText(r.signed_at) })),
      el("button", { onclick: () => openPdf(r.request_id) }, t("ecg12.open_pdf"))));
  }
  if (consultations.has(r.request_id)) {
    children.push(el("button.primary.join-consultation", { onclick: () => joinConsultation(r.request_id) }, t("ecg12.join_consultation")));
  }
  return el("li.ecg12-request", { "data-request": r.request_id }, ...children);
}

async function openPdf(id) {
  try { window.open(await api.pdfUrl(id), "_blank"); } catch (e) { showError(e); }
}

async function joinConsultation(id) {
  try {
    const c = await api.consultation(id);
    state.lastConsultation = c;
    window.open(c.url, "_blank");
  } catch (e) { showError(e); }
}

function showError(e) {
  state.lastError = e.error || "network";
  const b = $("banner");
  b.hidden = false;
  setText(b, "rerror.line", errorText(e).vars);
}

async function reload() {
  try {
    const body = await api.mine();
    setText($("who"), "ecg12.clinic_line", { clinic: body.clinic });
    requests.clear();
    for (const r of body.requests) requests.set(r.request_id, r);
    render();
  } catch (e) { showError(e); }
}

$("upload").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData();
  for (const name of ["referral_id", "patient_id", "name", "sex", "age"]) form.append(name, $("upload").elements[name].value);
  for (const f of $("files").files) form.append("file", f, f.name);
  $("send").disabled = true;
  setText($("status"), "ecg12.sending");
  try {
    const body = await api.upload(form);
    requests.set(body.request.request_id, body.request);
    setText($("status"), "ecg12.sent", { priority: { key: `priority.${body.request.priority}` } });
    $("banner").hidden = true;
    render();
  } catch (e) {
    setText($("status"), "ecg12.not_sent");
    showError(e);
  } finally { $("send").disabled = false; }
});

function onEvent(e) {
  state.events.push(e.type);
  if (e.type === "consultation") {
    consultations.set(e.request_id, e.room);
    toast(t("ecg12.consultation_opened", { who: e.by }));
  }
  if (e.request) requests.set(e.request.request_id, e.request);
  if (e.type === "signed") toast(t("ecg12.report_arrived", { referral: e.request.referral_id }));
  render();
}

if (!token) {
  $("banner").hidden = false;
  setText($("banner"), "banner.no_token", { page: "ecg-clinic" });
} else {
  api.listen(onEvent, () => { state.live = true; setText($("live"), "ecg12.live_on"); $("live").className = "pill state-joined"; reload(); });
  reload();
}
onLanguageChange(() => render());
