// The signaling connection (docs/protocol.md): one websocket to /ws, JSON text frames for
// signaling and msgpack binary frames for waveforms. Joins with the token from the page's URL,
// keeps the connection alive with pings and comes back by itself after a network drop: first
// with the `resume` key (same participant, within the grace period), else by joining afresh.
// Before the token runs out (the server's `token_expiring`), it fetches a newer one where the page
// link names a refresh address (`#token=...&refresh=https://booking.example/...`) and hands it to
// the server (`refresh_token`, docs/protocol.md "Expiry and token refresh").

/** The token carried by the page link, or null. Links carry it in the fragment (`#token=...`),
 * which browsers never send to a server or proxy; `?token=` (older links) is still read. Once read
 * it is taken out of the address bar and history, so it is not bookmarked, shared or shown, and
 * kept in this tab's sessionStorage (gone with the tab, never sent anywhere) so a reload rejoins. */
export function tokenFromUrl(loc = window.location, hist = window.history, store = window.sessionStorage) {
  const hash = new URLSearchParams(loc.hash.replace(/^#/, ""));
  const query = new URLSearchParams(loc.search);
  const key = "medstream.token:" + loc.pathname;
  const token = hash.get("token") || query.get("token");
  const refresh = hash.get("refresh");
  try { if (refresh) store.setItem("medstream.refresh:" + loc.pathname, refresh); } catch (e) { /* no storage */ }
  if (token && hist && hist.replaceState) {
    hash.delete("token");
    hash.delete("refresh");
    query.delete("token");
    const q = query.toString(), h = hash.toString();
    hist.replaceState(hist.state, "", loc.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
  }
  try {
    if (token) store.setItem(key, token);
    return token || store.getItem(key);
  } catch (e) {  // storage disabled: the link works once, a reload needs the link again
    return token;
  }
}

/** The refresh address the page link named (`#refresh=`, kept for this tab), or null. */
export function refreshUrlFromUrl(loc = window.location, store = window.sessionStorage) {
  const given = new URLSearchParams(loc.hash.replace(/^#/, "")).get("refresh");
  try { return given || store.getItem("medstream.refresh:" + loc.pathname); } catch (e) { return given; }
}

/** A refresher for `url`: POST with the current token as bearer; the reply is `{"token": ...}`
 * (JSON) or the token as text. The booking system, which signs tokens, answers it. */
export function refresherFor(url) {
  return async (current) => {
    const r = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${current}` } });
    if (!r.ok) throw new Error(`token refresh: ${r.status}`);
    const text = (await r.text()).trim();
    const token = text.startsWith("{") ? JSON.parse(text).token : text;
    if (typeof token !== "string" || !token) throw new Error("token refresh: no token in the reply");
    return token;
  };
}

/** Keep `token` for this tab (what a reload rejoins with), as `tokenFromUrl` does. */
function storeToken(token, loc = window.location, store = window.sessionStorage) {
  try { store.setItem("medstream.token:" + loc.pathname, token); } catch (e) { /* no storage */ }
}

const REFRESH_RETRY_MS = 10000;

/** ws(s)://host/ws for the page's own origin. */
export function defaultSocketUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

/** An error reply of the server, correlated to the request that caused it. */
export class ServerError extends Error {
  constructor(msg) {
    super(`${msg.reason}: ${msg.message}`);
    this.reason = msg.reason;
    this.serverMessage = msg.message;
  }
}

const RECONNECT_DELAYS_S = [0.25, 0.5, 1, 2, 4, 8];
const NO_RECONNECT_CLOSE_REASONS = ["replaced by a resumed connection"];

/**
 * One participant's signaling connection.
 *
 * Server messages are delivered to handlers registered with `on(type, fn)` (types of
 * protocol/signaling.py ServerMessage); binary waveform frames go to `onBinary(ArrayBuffer)`.
 * `onJoined(joined, {resumed, rejoined})` runs after the first join and after every reconnect:
 * `rejoined` means the old participant was gone and this is a new one (media must restart).
 * `onState(state)` reports "connecting", "joined", "reconnecting", "closed" or "ended".
 * `refresh(currentToken)` resolves with a newer token (default: from the link's refresh
 * address, none without one); it runs on `token_expiring` and again every 10 s until the server
 * accepts one or the token has run out. `tokenExpiresAt` is the session's end as last told.
 */
export class Signaling {
  constructor({ token, url = defaultSocketUrl(), media = false, onJoined = () => {},
                onState = () => {}, onBinary = () => {}, onClosed = () => {}, refresh = undefined }) {
    this.token = token;
    if (refresh === undefined) {
      const url = typeof window !== "undefined" ? refreshUrlFromUrl() : null;
      refresh = url ? refresherFor(url) : null;
    }
    this.refresh = refresh;
    this.tokenExpiresAt = null;
    this.refreshError = null;
    this.url = url;
    this.media = media;
    this.onJoined = onJoined;
    this.onState = onState;
    this.onBinary = onBinary;
    this.onClosed = onClosed;
    this.state = "idle";
    this.joined = null;
    this.resumeKey = null;
    this.droppedAt = null;
    this.reconnects = 0;
    this.lastCloseReason = null;
    this.handlers = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.ws = null;
    this.nodeUrl = null;  // the cluster node hosting our room, once redirected there
    this.pingTimer = null;
    this.lastPongAt = 0;
    this.stopped = false;
    this.formerParticipantIds = new Set();  // our own earlier participants (after restart())
    this.on("token_expiring", (m) => { this.tokenExpiresAt = m.expires_at; this._refreshToken(); });
  }

  /** Fetch a newer token and hand it to the server; retried until accepted or too late. */
  async _refreshToken() {
    if (!this.refresh || this._refreshing || this.stopped) return;
    this._refreshing = true;
    try {
      const token = await this.refresh(this.token);
      const reply = await this.request({ type: "refresh_token", token });
      this.token = token;  // the one to reconnect and resume with
      storeToken(token);
      this.tokenExpiresAt = reply.expires_at;
      this.refreshError = null;
    } catch (err) {
      this.refreshError = String(err && err.message || err);
      console.warn("token refresh failed", this.refreshError);
      const left = this.tokenExpiresAt === null ? 0 : this.tokenExpiresAt * 1000 - Date.now();
      if (left > REFRESH_RETRY_MS) setTimeout(() => this._refreshToken(), REFRESH_RETRY_MS);
    } finally {
      this._refreshing = false;
    }
  }

  /** Register `fn(message)` for server messages of `type`. */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
    return this;
  }

  _setState(s) {
    this.state = s;
    this.onState(s);
  }

  /** Connect and join; resolves with the `joined` message, rejects with a ServerError. */
  start() {
    this._setState("connecting");
    return this._connect(null);
  }

  _connect(resumeKey, hops = 0) {
    return new Promise((resolve, reject) => {
      // in a cluster the room's node may send us to its own address (`redirect`); a dropped
      // connection starts over at the address we were given (another node takes the room over)
      const ws = new WebSocket(this.nodeUrl || this.url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let settled = false;
      ws.onopen = () => {
        // JSON.stringify drops `resume: undefined`: a fresh join carries no resume key
        const join = { type: "join", v: 1, token: this.token, media: this.media, resume: resumeKey || undefined };
        this.request(join).then((joined) => {
          settled = true;
          if (joined.type === "redirect" && hops < 3) {
            ws.onclose = null;
            ws.close();
            this.nodeUrl = joined.url;
            this._connect(resumeKey, hops + 1).then(resolve, reject);
            return;
          }
          const resumed = Boolean(joined.resumed);
          const rejoined = this.joined !== null && !resumed;
          this.joined = joined;
          this.resumeKey = joined.resume;
          this.droppedAt = null;
          this._startPings(joined.heartbeat_s || 10);
          this._setState("joined");
          this.onJoined(joined, { resumed, rejoined });
          resolve(joined);
        }, (err) => { settled = true; reject(err); });
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data !== "string") { this.onBinary(ev.data); return; }
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        this._dispatch(msg);
      };
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this._stopPings();
        this.lastCloseReason = ev.reason || String(ev.code);
        for (const [, p] of this.pending) p.reject(new Error(`connection closed (${ev.code})`));
        this.pending.clear();
        if (!settled) { reject(new Error(`connection closed before joining (${ev.code} ${ev.reason})`)); }
        this._closed(ev);
      };
    });
  }

  _dispatch(msg) {
    if (msg.id !== undefined && msg.id !== null && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === "error") p.reject(new ServerError(msg)); else p.resolve(msg);
    }
    if (msg.type === "bye") this.bye = msg;
    if (msg.type === "pong") this.lastPongAt = Date.now();
    for (const fn of this.handlers.get(msg.type) || []) {
      try { fn(msg); } catch (e) { console.error(`handler for ${msg.type} failed`, e); }
    }
  }

  _closed(ev) {
    const final = this.stopped || (this.bye && !this.bye.resume) || this.state === "ended"
      || NO_RECONNECT_CLOSE_REASONS.includes(ev.reason) || ev.code === 1008;
    if (final || this.joined === null) {
      if (this.state !== "ended") this._setState("closed");
      this.onClosed(ev, this.bye);
      return;
    }
    if (this.droppedAt === null) this.droppedAt = Date.now();
    this.nodeUrl = null;
    this._setState("reconnecting");
    this._reconnect(0);
  }

  _reconnect(attempt) {
    const delay = RECONNECT_DELAYS_S[Math.min(attempt, RECONNECT_DELAYS_S.length - 1)];
    setTimeout(async () => {
      if (this.stopped) return;
      this.reconnects += 1;
      const graceMs = (this.joined.resume_grace_s || 0) * 1000;
      const canResume = this.resumeKey && Date.now() - this.droppedAt < graceMs;
      try {
        try {
          await this._connect(canResume ? this.resumeKey : null);
        } catch (err) {
          if (!(err instanceof ServerError) || err.reason !== "resume_failed") throw err;
          // the grace period ran out on the server: come back as a new participant
          this.ws.onclose = null;
          this.ws.close();
          await this._connect(null);
        }
      } catch (err) {
        if (err instanceof ServerError && err.reason !== "rate_limited" && err.reason !== "internal") {
          this.stopped = true;
          this._setState("closed");
          this.onClosed(null, { reason: err.reason, resume: false });
          return;
        }
        if (this.ws) { this.ws.onclose = null; this.ws.close(); }
        this._reconnect(attempt + 1);
      }
    }, delay * 1000);
  }

  _startPings(heartbeatS) {
    this._stopPings();
    this.lastPongAt = Date.now();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastPongAt > 3 * heartbeatS * 1000 && this.ws) {
        this.ws.close(4000, "no pong: reconnecting");  // a silent dead link
        return;
      }
      this.send({ type: "ping" });
    }, heartbeatS * 1000);
  }

  _stopPings() {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  /** Send one message (dropped while disconnected). Returns true if it was written. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Send a request with a fresh id; resolves with the reply, rejects with a ServerError. */
  request(msg) {
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (!this.send({ ...msg, id })) {
        this.pending.delete(id);
        reject(new Error(`not connected: cannot send ${msg.type}`));
      }
    });
  }

  /**
   * Come back as a new participant on a new connection, make before break: the server opens a
   * fresh media session for it (the protocol has no client-initiated ICE restart; the server
   * always offers), and the old participant leaves once the new one has joined. Resolves when
   * joined again; on failure falls back to the ordinary reconnect loop.
   */
  async restart() {
    if (this.stopped || !this.joined) return;
    const old = this.ws;
    const oldPid = this.joined.participant && this.joined.participant.participant_id;
    if (old) { old.onmessage = null; old.onclose = null; }
    this._stopPings();
    for (const [, p] of this.pending) p.reject(new Error("connection restarted"));
    this.pending.clear();
    this.reconnects += 1;
    this._setState("reconnecting");
    if (oldPid) this.formerParticipantIds.add(oldPid);
    const retire = () => {
      if (!old) return;
      if (old.readyState === WebSocket.OPEN) {
        old.send(JSON.stringify({ type: "leave" }));
        setTimeout(() => old.close(1000, "left"), 200);
      } else {
        old.close();
      }
    };
    try {
      await this._connect(null);
    } catch (err) {
      retire();
      // a socket that closed before joining already started the reconnect loop (_closed)
      if (this.stopped || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      this.ws.onclose = null;
      this.ws.close();
      this.droppedAt = Date.now();
      this._reconnect(0);
      return;
    }
    retire();
  }

  /** Leave the room for good (no reconnect). */
  leave() {
    this.stopped = true;
    this.send({ type: "leave" });
    this._stopPings();
    setTimeout(() => { if (this.ws) this.ws.close(1000, "left"); }, 200);
    this._setState("closed");
  }

  /** Mark the session as ended by the server (room_ended): no reconnect. */
  ended() {
    this.stopped = true;
    this._setState("ended");
  }
}
