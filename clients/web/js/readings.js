// The reading desk's HTTP API (/readings, docs/ecg12.md) for the clinic and ECG-centre pages:
// requests with the page's token, errors as translatable sentences, and the live event stream
// (server-sent events, which come back by themselves after a drop; the page then reloads its list).

import { t, has, ref, formatTime } from "./i18n.js";

export class ReadingsApiError extends Error {
  constructor(status, body) {
    super(`${status} ${body.error}: ${body.message}`);
    this.status = status;
    this.error = body.error || "unknown";
    this.detail = body.message || "";
  }
}

/** A translatable sentence for an API error: what happened, and the server's own detail. */
export function errorText(err) {
  if (err instanceof ReadingsApiError) {
    const key = has(`rerror.${err.error}`) ? `rerror.${err.error}` : "rerror.unknown";
    return ref("rerror.line", { what: ref(key), detail: err.detail });
  }
  return ref("rerror.network");
}

export class ReadingsApi {
  constructor(token) { this.token = token; }

  async _call(method, path, body = undefined, asJson = true) {
    const headers = { Authorization: `Bearer ${this.token}` };
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const resp = await fetch(path, { method, headers, body: payload });
    if (!resp.ok) {
      let err = { error: "unknown", message: String(resp.status) };
      try { err = await resp.json(); } catch { /* not JSON */ }
      throw new ReadingsApiError(resp.status, err);
    }
    return asJson ? resp.json() : resp;
  }

  upload(form) { return this._call("POST", "/readings", form); }
  mine() { return this._call("GET", "/readings/mine"); }
  queue() { return this._call("GET", "/readings/queue"); }
  get(id) { return this._call("GET", `/readings/${encodeURIComponent(id)}`); }
  ecg(id) { return this._call("GET", `/readings/${encodeURIComponent(id)}/ecg`); }
  claim(id) { return this._call("POST", `/readings/${encodeURIComponent(id)}/claim`); }
  release(id) { return this._call("POST", `/readings/${encodeURIComponent(id)}/release`); }
  draft(id, report) { return this._call("PUT", `/readings/${encodeURIComponent(id)}/draft`, report); }
  sign(id, report) { return this._call("POST", `/readings/${encodeURIComponent(id)}/sign`, report); }
  consultation(id) { return this._call("POST", `/readings/${encodeURIComponent(id)}/consultation`); }

  /** The signed report's PDF as an object URL (the token never goes into a link). */
  async pdfUrl(id) {
    const resp = await this._call("GET", `/readings/${encodeURIComponent(id)}/report.pdf`, undefined, false);
    return URL.createObjectURL(await resp.blob());
  }

  /** Live events: `onEvent(item)` for each, `onOpen()` at every (re)connection. */
  listen(onEvent, onOpen = () => {}) {
    const source = new EventSource(`/readings/events?token=${encodeURIComponent(this.token)}`);
    source.onopen = () => onOpen();
    source.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (e) { console.warn("bad event", e); } };
    return source;
  }
}

/** "12 min 03 s" style waiting time. */
export function waitingText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return t("ecg12.wait_s", { s });
  if (s < 3600) return t("ecg12.wait_m", { m: Math.floor(s / 60), s: String(s % 60).padStart(2, "0") });
  return t("ecg12.wait_h", { h: Math.floor(s / 3600), m: String(Math.floor((s % 3600) / 60)).padStart(2, "0") });
}

/** A request's time in the viewer's own time zone. */
export function whenText(epochS) { return epochS ? formatTime(epochS * 1000, { date: true }) : "—"; }

/** A flag's rule in the page's language. */
export function ruleText(flag, lang) { return lang === "zh" ? flag.rule_zh : flag.rule_en; }
