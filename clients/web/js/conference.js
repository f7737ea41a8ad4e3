// What the consultation and broadcast pages share: joining with media, local camera/microphone,
// one tile per participant (video, name, role, speaking indicator, quality), moderator actions,
// the recording indicator, reconnection, an ECG panel for waveform streams, and window.medstream.

import { Signaling, tokenFromUrl, ServerError } from "./signaling.js";
import { MediaSession } from "./rtc.js";
import { RoomState, grade, mayPublish } from "./room.js";
import { WaveformStore, BedTile, animate } from "./waveforms.js";
import { el, toast, levelMeter } from "./ui.js";

const SPEAKING_LEVEL = 0.02;  // getStats audioLevel (0..1) above which a participant is speaking
const STATS_INTERVAL_MS = 300;

/** One participant's tile. */
export class Tile {
  constructor(participant, { self = false, onModerate = null } = {}) {
    this.participantId = participant.participant_id;
    this.self = self;
    this.video = el("video", { autoplay: true, playsinline: true, muted: true });
    this.video.muted = true;  // audio plays through the <audio> element (and never our own)
    this.audio = el("audio", { autoplay: true });
    this.levelBar = el("i");
    this.name = el("span.name");
    this.role = el("span.role");
    this.flags = el("span.flags");
    this.quality = el("span.quality.q-unknown", { title: "connection quality" }, "\u2014");
    this.avatar = el("div.avatar");
    this.mod = el("div.mod");
    this.root = el("div.tile.novideo", { dataset: { participant: this.participantId } },
      this.video, this.avatar, this.audio, this.quality, this.mod,
      el("div.label", {}, this.name, this.role, el("span.level", { title: "speaking" }, this.levelBar), this.flags));
    this.level = 0;
    this.hasVideo = false;
    this.onModerate = onModerate;
    this.update(participant, []);
  }

  update(p, tracks, { moderator = false, cameraOff = false, micOff = false } = {}) {
    this.participant = p;
    this.name.textContent = p.name + (this.self ? " (you)" : "");
    this.role.textContent = p.role;
    this.avatar.textContent = (p.name || "?").slice(0, 1).toUpperCase();
    const muted = (kind) => tracks.some((t) => t.kind === kind && t.muted);
    const flags = [];
    if (muted("audio")) flags.push("mic muted by host");
    if (muted("video")) flags.push("camera stopped by host");
    if (this.self && micOff) flags.push("mic off");
    if (this.self && cameraOff) flags.push("camera off");
    if (p.hand_raised) flags.push("hand raised");
    this.flags.textContent = flags.join(" \u00b7 ");
    this.root.classList.toggle("offline", p.connected === false);
    this.root.classList.toggle("novideo", !this.hasVideo || (this.self && cameraOff) || muted("video"));
    this.mod.replaceChildren();
    if (moderator && !this.self && this.onModerate) {
      const has = (kind) => tracks.some((t) => t.kind === kind);
      if (has("audio")) this.mod.append(el("button", { onclick: () => this.onModerate("mute", p, "audio", !muted("audio")) }, muted("audio") ? "unmute" : "mute"));
      if (has("video")) this.mod.append(el("button", { onclick: () => this.onModerate("mute", p, "video", !muted("video")) }, muted("video") ? "camera on" : "camera off"));
      this.mod.append(el("button.danger", { onclick: () => this.onModerate("remove", p) }, "remove"));
    }
  }

  setStream(kind, stream) {
    if (kind === "video") {
      this.video.srcObject = stream;
      this.hasVideo = Boolean(stream);
      this.root.classList.toggle("novideo", !stream);
      this.video.play().catch(() => {});
    } else if (!this.self) {
      this.audio.srcObject = stream;
      this.audio.play().catch(() => {});
    }
  }

  setLevel(level) {
    this.level = level;
    this.levelBar.style.width = `${Math.min(100, Math.round(level * 300))}%`;
    this.root.classList.toggle("speaking", level > SPEAKING_LEVEL);
  }

  setQuality(q) {
    const g = grade(q);
    this.quality.className = `quality q-${g}`;
    this.quality.textContent = q ? `${g} \u00b7 ${q.bitrate_kbps == null ? "?" : Math.round(q.bitrate_kbps)} kbps \u00b7 ${q.loss_pct == null ? "?" : q.loss_pct.toFixed(1)}% loss \u00b7 ${q.rtt_ms == null ? "?" : Math.round(q.rtt_ms)} ms` : "\u2014";
  }

  /** Mean colour of the current video frame, [r, g, b] (tests tell peers apart by it). */
  videoColor() {
    if (!this.video.videoWidth) return null;
    const c = document.createElement("canvas");
    c.width = 32; c.height = 24;
    const g = c.getContext("2d", { willReadFrequently: true });
    g.drawImage(this.video, 0, 0, 32, 24);
    const d = g.getImageData(0, 0, 32, 24).data;
    let r = 0, gg = 0, b = 0;
    for (let i = 0; i < d.length; i += 4) { r += d[i]; gg += d[i + 1]; b += d[i + 2]; }
    const n = d.length / 4;
    return [r / n, gg / n, b / n];
  }
}

/**
 * A conference page controller. `layout(tile, participant)` places each tile (page-specific);
 * `onRoomChange(what)` lets the page render extra UI.
 */
export class Conference {
  constructor({ page, layout, onRoomChange = () => {}, publishOnJoin = (role) => mayPublish(role),
                ecgContainer = null, stateEl = null, recordingEl = null, bannerEl = null }) {
    this.page = page;
    this.layout = layout;
    this.onRoomChange = onRoomChange;
    this.publishOnJoin = publishOnJoin;
    this.stateEl = stateEl;
    this.recordingEl = recordingEl;
    this.bannerEl = bannerEl;
    this.ecgContainer = ecgContainer;
    this.token = tokenFromUrl();
    this.tiles = new Map();
    this.localStream = null;
    this.micOff = false;
    this.cameraOff = false;
    this.audioOnly = false;
    this.publishing = false;
    this.errors = [];
    this.sig = new Signaling({
      token: this.token, media: true,
      onState: (s) => this._state(s),
      onBinary: (buf) => this.waveforms.onFrame(buf),
      onClosed: (ev, bye) => this._closed(bye),
    });
    this.room = new RoomState(this.sig, (what) => this._roomChanged(what));
    this.media = new MediaSession(this.sig, {
      onRemoteTrack: (e) => this._remoteTrack(e),
      onConnectionState: (s) => this._pcState(s),
    });
    this.sig.onJoined = (j, how) => this._joined(j, how);
    this.sig.on("error", (m) => {
      if (m.id === null || m.id === undefined) { this.errors.push(m); toast(`${m.reason}: ${m.message}`); }
    });
    this.sig.on("bye", (m) => this._banner(m.reason === "removed" ? "You were removed from this session by the host." : `Disconnected: ${m.reason}`));
    this.sig.on("room_ended", () => { this.sig.ended(); this._banner("The session has ended."); this._stopLocal(); });
    this.sig.on("participant_updated", (m) => this._maybeRoleChanged(m.participant));
    this.bedTiles = new Map();
    this.waveforms = new WaveformStore((s, what, beats) => this._waveform(s, what, beats));
    animate(() => [...this.bedTiles.values()].map((t) => t.view));
    setInterval(() => this._pollStats(), STATS_INTERVAL_MS);
    this._expose();
  }

  async start() {
    if (!this.token) { this._banner(`This link has no token: open the ${this.page} from the link you were given (${this.page}.html?token=...).`); return; }
    try {
      await this.sig.start();
    } catch (e) {
      this._banner(`Cannot join: ${e.message}`);
    }
  }

  _banner(text) {
    if (!this.bannerEl) return;
    this.bannerEl.textContent = text;
    this.bannerEl.hidden = !text;
  }

  _state(s) {
    if (this.stateEl) { this.stateEl.textContent = s; this.stateEl.className = `pill state-${s}`; }
    if (s === "reconnecting") this._banner("Connection lost: reconnecting\u2026");
    if (s === "joined") this._banner("");
  }

  _closed(bye) {
    if (bye && bye.reason && bye.reason !== "left") this._banner(`Disconnected: ${bye.reason}`);
    this._stopLocal();
  }

  async _joined(j, { resumed, rejoined }) {
    this.room.fromJoined(j);
    this.media.setIceServers(j.ice_servers);
    if (rejoined) {  // a new participant: the server starts a new peer connection
      this.media.reset();
      for (const [pid, tile] of this.tiles) { tile.root.remove(); this.tiles.delete(pid); }
      this.publishing = false;
    }
    this._render();
    if (!resumed && this.publishOnJoin(j.participant.role)) await this.startPublishing();
  }

  _maybeRoleChanged(p) {
    if (!this.room.self || p.participant_id !== this.room.self.participant_id) return;
    if (mayPublish(p.role) && !this.publishing) this.startPublishing();
    if (!mayPublish(p.role) && this.publishing) { this.publishing = false; this.media.stopPublishing(); this._stopLocal(); this._render(); }
  }

  /** Open camera and microphone (chosen devices) and publish them. */
  async startPublishing() {
    this.publishing = true;
    try {
      await this._openLocal();
      await this.media.publish({ audio: true, video: true });
    } catch (e) {
      this.publishing = false;
      toast(`Cannot publish: ${e.message}`);
      this.errors.push({ reason: e.reason || "local", message: String(e.message || e) });
    }
    this._render();
  }

  async _openLocal(audioDevice = null, videoDevice = null) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: audioDevice ? { deviceId: { exact: audioDevice } } : true,
      video: videoDevice ? { deviceId: { exact: videoDevice } } : { width: 640, height: 480 },
    });
    const old = this.localStream;
    this.localStream = stream;
    for (const kind of ["audio", "video"]) {
      const track = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
      if (track) {
        track.enabled = kind === "audio" ? !this.micOff : !this.cameraOff;
        await this.media.setLocalTrack(kind, track);
      }
    }
    if (old) old.getTracks().forEach((t) => t.stop());
    this.localLevel = levelMeter(stream);
    this._render();
    const tile = this.tiles.get(this.room.self.participant_id);
    if (tile) tile.setStream("video", stream);
    this.onRoomChange("devices");
  }

  _stopLocal() {
    if (this.localStream) this.localStream.getTracks().forEach((t) => t.stop());
    this.localStream = null;
    this.localLevel = null;
    const tile = this.room.self && this.tiles.get(this.room.self.participant_id);
    if (tile) tile.setStream("video", null);
  }

  /** Switch microphone or camera to another device while publishing. */
  async chooseDevices(audioDevice, videoDevice) {
    if (!this.publishing) return;
    await this._openLocal(audioDevice || null, videoDevice || null);
  }

  async devices() {
    const all = await navigator.mediaDevices.enumerateDevices();
    return { audio: all.filter((d) => d.kind === "audioinput"), video: all.filter((d) => d.kind === "videoinput") };
  }

  toggleMic() {
    this.micOff = !this.micOff;
    if (this.localStream) this.localStream.getAudioTracks().forEach((t) => { t.enabled = !this.micOff; });
    this._render();
    return this.micOff;
  }

  toggleCamera() {
    this.cameraOff = !this.cameraOff;
    if (this.localStream) this.localStream.getVideoTracks().forEach((t) => { t.enabled = !this.cameraOff; });
    this._render();
    return this.cameraOff;
  }

  /** Audio-only mode for weak links: the server stops forwarding video to us. */
  async toggleAudioOnly() {
    const paused = !this.audioOnly;
    await this.sig.request({ type: "set_video_paused", paused });
    this.audioOnly = paused;
    this._render();
    return paused;
  }

  leave() {
    this.sig.leave();
    this.media.reset();
    this._stopLocal();
    this._banner("You left the session.");
  }

  async moderate(action, p, kind, muted) {
    try {
      if (action === "mute") await this.sig.request({ type: "mute", participant_id: p.participant_id, kind, muted });
      else if (action === "remove") await this.sig.request({ type: "remove", participant_id: p.participant_id });
      else if (action === "promote") await this.sig.request({ type: "promote", participant_id: p.participant_id });
      else if (action === "demote") await this.sig.request({ type: "demote", participant_id: p.participant_id });
    } catch (e) {
      toast(e instanceof ServerError ? `${e.reason}: ${e.serverMessage}` : String(e));
    }
  }

  async setRecording(on) {
    try {
      await this.sig.request(on ? { type: "start_recording" } : { type: "stop_recording" });
    } catch (e) { toast(`${e.reason || "error"}: ${e.serverMessage || e.message}`); }
  }

  async endRoom() {
    try { await this.sig.request({ type: "end_room" }); } catch (e) { /* the room ending closes the socket */ }
  }

  async raiseHand(raised) {
    await this.sig.request({ type: "raise_hand", raised });
  }

  _pcState(s) {
    this.pcState = s;
    if (s === "failed" && this.sig.state === "joined") {
      // the server dropped our peer too: publishing (or subscribing) again opens a new one
      this.media.reset();
      if (this.publishing) this.media.publish({ audio: true, video: true }).catch(() => {});
      else if (this.room.tracks.size) this.sig.request({ type: "subscribe", track_ids: [...this.room.tracks.keys()] }).catch(() => {});
    }
    this.onRoomChange("media");
  }

  _remoteTrack(e) {
    const owner = this.room.ownerOf(e.trackId);
    const tile = owner && this.tiles.get(owner);
    if (tile) tile.setStream(e.kind, e.stream);
    e.track.addEventListener("ended", () => this._render());
  }

  _roomChanged(what) {
    if (what === "recording" && this.recordingEl) this.recordingEl.hidden = !this.room.recording.active;
    if (what === "tracks") this._attachAll();
    this._render();
    this.onRoomChange(what);
  }

  _attachAll() {
    for (const e of this.media.remoteTracks()) {
      const owner = this.room.ownerOf(e.trackId);
      const tile = owner && this.tiles.get(owner);
      const published = this.room.tracks.get(e.trackId);
      if (tile && published) {
        if (e.kind === "video" && tile.video.srcObject !== e.stream) tile.setStream("video", e.stream);
        if (e.kind === "audio" && tile.audio.srcObject !== e.stream) tile.setStream("audio", e.stream);
      }
    }
    // drop video of tracks that were unpublished
    for (const tile of this.tiles.values()) {
      if (tile.self) continue;
      if (!this.room.tracksOf(tile.participantId, "video").length && tile.hasVideo) tile.setStream("video", null);
    }
  }

  _render() {
    const self = this.room.self;
    if (!self) return;
    const everyone = [self, ...this.room.participants.values()].filter((p) => p.role !== "monitor");
    const seen = new Set();
    for (const p of everyone) {
      seen.add(p.participant_id);
      let tile = this.tiles.get(p.participant_id);
      if (!tile) {
        tile = new Tile(p, { self: p.participant_id === self.participant_id, onModerate: (...a) => this.moderate(...a) });
        this.tiles.set(p.participant_id, tile);
        if (tile.self && this.localStream) tile.setStream("video", this.localStream);
      }
      tile.update(p, this.room.tracksOf(p.participant_id), { moderator: this.room.isModerator,
                                                             cameraOff: this.cameraOff, micOff: this.micOff });
      tile.setQuality(this.room.quality.get(p.participant_id));
      this.layout(tile, p);
    }
    for (const [pid, tile] of this.tiles) {
      if (!seen.has(pid)) { tile.root.remove(); this.tiles.delete(pid); }
    }
    this._attachAllQuiet();
    if (this.recordingEl) this.recordingEl.hidden = !this.room.recording.active;
  }

  _attachAllQuiet() {
    for (const e of this.media.remoteTracks()) {
      const owner = this.room.ownerOf(e.trackId);
      const tile = owner && this.tiles.get(owner);
      if (!tile) continue;
      if (e.kind === "video" && !tile.hasVideo && this.room.tracks.has(e.trackId)) tile.setStream("video", e.stream);
      if (e.kind === "audio" && !tile.audio.srcObject) tile.setStream("audio", e.stream);
    }
  }

  async _pollStats() {
    if (!this.room.self) return;
    const selfTile = this.tiles.get(this.room.self.participant_id);
    if (selfTile) selfTile.setLevel(this.localLevel && !this.micOff ? this.localLevel() : 0);
    if (!this.media.pc) return;
    let s;
    try { s = await this.media.stats(); } catch { return; }
    this.lastStats = s;
    const levels = new Map();
    for (const i of s.inbound) {
      if (i.kind !== "audio") continue;
      const owner = this.room.ownerOf(i.trackId);
      if (owner) levels.set(owner, Math.max(levels.get(owner) || 0, i.audioLevel));
    }
    for (const [pid, tile] of this.tiles) if (!tile.self) tile.setLevel(levels.get(pid) || 0);
  }

  _waveform(stream, what, beats) {
    if (!this.ecgContainer) return;
    let tile = this.bedTiles.get(stream.id);
    if (!tile) {
      this.ecgContainer.hidden = false;
      tile = new BedTile(stream, this.ecgContainer.querySelector(".beds"), { heightMm: 25 });
      this.bedTiles.set(stream.id, tile);
    }
    if (what === "analysis") tile.view.addBeats(beats || []);
    if (what !== "chunk") tile.update();
  }

  /** Summarised getStats with the owner of each received track. */
  async stats() {
    const s = await this.media.stats();
    for (const i of s.inbound) i.participantId = this.room.ownerOf(i.trackId);
    return s;
  }

  _expose() {
    const conf = this;
    window.medstream = {
      page: this.page,
      conference: conf,
      get state() { return conf.sig.state; },
      get participant() { return conf.room.self; },
      get participants() { return [...conf.room.participants.values()]; },
      get room() { return conf.room.snapshot(); },
      get recording() { return conf.room.recording.active; },
      get tracks() { return conf.media.remoteTracks().map((e) => ({ mid: e.mid, kind: e.kind, trackId: e.trackId, participantId: conf.room.ownerOf(e.trackId), readyState: e.track.readyState })); },
      get pc() { return conf.media.pc; },
      get publishing() { return conf.publishing; },
      get reconnects() { return conf.sig.reconnects; },
      get errors() { return conf.errors; },
      get speaking() { return Object.fromEntries([...conf.tiles].map(([pid, t]) => [pid, t.level])); },
      get streams() { return conf.waveforms.snapshot(); },
      stats: () => conf.stats(),
      videoColor: (pid) => { const t = conf.tiles.get(pid); return t ? t.videoColor() : null; },
    };
  }
}
