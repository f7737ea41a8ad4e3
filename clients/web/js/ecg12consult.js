// The ECG of a reading request inside its live consultation (consultation.html?ecg=<request id>):
// both sides see the same 12-lead view, fetched with the consultation token the reading desk
// minted for each of them (it opens that one request, view only, audited like any view).

import { t, setText, onLanguageChange } from "./i18n.js";
import { el } from "./ui.js";
import { ReadingsApi, errorText } from "./readings.js";
import { Ecg12View, measurementRows } from "./ecg12view.js";

/** Show request `requestId`'s ECG in `section` (its canvas, summary line); returns the view state. */
export function showConsultationEcg(section, requestId, token) {
  const canvas = section.querySelector("canvas");
  const info = section.querySelector(".ecg12-summary");
  const view = new Ecg12View(canvas, { pxPerMm: 4 });
  const state = { requestId, drawn: 0, error: null, view };
  const api = new ReadingsApi(token);
  section.hidden = false;
  let ecg = null, request = null;
  const summary = () => {
    if (!request) return;
    info.replaceChildren(...measurementRows(request.measurements).map(([k, v]) => el("span.ecg12-m", {}, `${t(k)} ${v}`)));
  };
  api.ecg(requestId).then((body) => {
    ecg = body.ecg;
    request = body.request;
    view.draw(ecg);
    summary();
    state.drawn += 1;
  }).catch((e) => {
    state.error = e.error || "network";
    setText(info, "rerror.line", errorText(e).vars);
  });
  onLanguageChange(() => { if (ecg) { view.draw(ecg); summary(); } });
  return state;
}
