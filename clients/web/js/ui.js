// Tiny DOM helpers shared by the pages, and plain sentences for the server's error reasons.

import { tOr, has, ref, formatTime } from "./i18n.js";

/** Create an element: el("div.tile#x", {title: "..."}, child, "text", ...). */
export function el(spec, attrs = {}, ...children) {
  const [tagAndId, ...classes] = spec.split(".");
  const [tag, id] = tagAndId.split("#");
  const node = document.createElement(tag || "div");
  if (id) node.id = id;
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Make `nodes` the children of `container`, unless it already shows the same markup.
 *  Pages re-render their lists on a timer and on every room change; replacing a button
 *  between a press and its release loses the click (the browser sends it to the common
 *  ancestor of the two targets, not to the button): a moderator's "Let speak" or "Mute"
 *  did nothing about one press in ten on a tablet. Returns true if the children changed. */
export function setChildren(container, nodes) {
  const probe = document.createElement(container.tagName);
  probe.append(...nodes.map((n) => n.cloneNode(true)));
  if (probe.innerHTML === container.innerHTML) return false;
  container.replaceChildren(...nodes);
  return true;
}

/** Show a transient message in the page's #toast element. */
export function toast(text, ms = 4000) {
  const t = document.getElementById("toast");
  if (!t) return;
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, ms);
}

/** Shared AudioContext (created lazily). With `resume` it asks to run (the browser allows it
 *  after a user gesture, or always under a lenient autoplay policy). */
export function audioContext({ resume = true } = {}) {
  if (!audioContext.ctx) audioContext.ctx = new AudioContext();
  if (resume && audioContext.ctx.state === "suspended") audioContext.ctx.resume().catch(() => {});
  return audioContext.ctx;
}

/** A level meter on a MediaStream's audio: returns () => RMS level 0..1. */
export function levelMeter(stream) {
  const ctx = audioContext();
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  return () => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
    return Math.sqrt(sum / buf.length);
  };
}

/** A plain sentence (what happened, what to do next) for a server error `reason`. */
export function reasonText(reason, vars = {}) {
  return tOr("reason", reason, vars);
}

/** The claims of a JWT access token (not verified: only to show its validity times), or {}. */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch { return {}; }
}

/** A plain sentence, as a translatable {key, vars}, for a failed join: the server's reason (with
 *  the link's validity time in the viewer's own time zone when it expired or is not valid yet),
 *  or an unreachable server. */
export function joinError(err, token) {
  if (err && err.reason) {
    const claims = tokenClaims(token || "");
    const at = err.reason === "token_expired" ? claims.exp : err.reason === "token_not_yet_valid" ? claims.nbf : null;
    const when = typeof at === "number" ? ref("when.at", { time: formatTime(at * 1000, { date: true }) }) : "";
    return ref(has(`reason.${err.reason}`) ? `reason.${err.reason}` : "reason.unknown", { when });
  }
  return ref("reason.closed_before_join");
}
