// What the consultation and broadcast pages share: joining with media, local camera/microphone,
// one tile per participant (video, name, role, speaking indicator, quality), moderator actions,
// the recording indicator, reconnection, media health (a media connection that does not come up
// or drops is said in plain words and retried), an ECG panel for waveform streams, the end of the
// session (everything stops and clears), and window.medstream.

import { Signaling, tokenFromUrl, ServerError } from "./signaling.js";
import { MediaSession } from "./rtc.js";
import { RoomState, grade } from "./room.js";
import { WaveformStore, BedTile, animate } from "./waveforms.js";
import { el, setChildren, toast, levelMeter, reasonText, joinError } from "./ui.js";
import { t, tOr, has, ref, setText, initI18n, onLanguageChange } from "./i18n.js";

const SPEAKING_LEVEL = 0.02;  // getStats audioLevel (0..1) above which a participant is speaking
const STATS_INTERVAL_MS = 300;
const MEDIA_CONNECT_TIMEOUT_MS = 5000;  // a peer connection not connected by then: say so
const MEDIA_DROP_GRACE_MS = 4000;  // "disconnected" this long counts as dropped (brief blips recover)
const MEDIA_RESTART_DELAYS_MS = [0, 10000, 30000, 60000];  // between fresh-session attempts
const NO_MEDIA_AFTER_MS = 4000;  // published tracks with no bytes received for this long: "no media"
const ROLE_PUBLISH_ACTIONS = ["publish_audio", "publish_video"];

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
    this.quality = el("span.quality.q-unknown", { "data-i18n-title": "tip.quality", title: t("tip.quality") }, "\u2014");
    this.avatar = el("div.avatar");
    this.mod = el("div.mod");
    this.weak = el("div.weak");  // the server paused or thinned this video for our weak link
    this.weak.hidden = true;
    this.root = el("div.tile.novideo", { dataset: { participant: this.participantId } },
      this.video, this.avatar, this.audio, this.quality, this.weak, this.mod,
      el("div.label", {}, this.name, this.role,
        el("span.level", { "data-i18n-title": "tip.speaking", title: t("tip.speaking") }, this.levelBar), this.flags));
    this.level = 0;
    this.hasVideo = false;
    this.onModerate = onModerate;
    this.update(participant, []);
  }

  update(p, tracks, { moderator = false, cameraOff = false, micOff = false } = {}) {
    this.participant = p;
    this.name.textContent = p.name + (this.self ? t("you") : "");
    this.role.textContent = tOr("role", p.role);
    this.avatar.textContent = (p.name || "?").slice(0, 1).toUpperCase();
    const muted = (kind) => tracks.some((x) => x.kind === kind && x.muted);
    const flags = [];
    if (muted("audio")) flags.push(t("flag.mic_muted_by_host"));
    if (muted("video")) flags.push(t("flag.cam_stopped_by_host"));
    if (this.self && micOff) flags.push(t("flag.mic_off"));
    if (this.self && cameraOff) flags.push(t("flag.cam_off"));
    if (p.hand_raised) flags.push(t("flag.hand_raised"));
    if (p.connected === false) flags.push(t("flag.reconnecting"));
    this.flags.textContent = flags.join(" \u00b7 ");
    this.root.classList.toggle("offline", p.connected === false);
    this.root.classList.toggle("novideo", !this.hasVideo || (this.self && cameraOff) || muted("video"));
    const buttons = [];
    if (moderator && !this.self && this.onModerate) {
      const publishes = (kind) => tracks.some((x) => x.kind === kind);
      if (publishes("audio")) buttons.push(el("button", { onclick: () => this.onModerate("mute", p, "audio", !muted("audio")) }, muted("audio") ? t("mod.unmute") : t("mod.mute")));
      if (publishes("video")) buttons.push(el("button", { onclick: () => this.onModerate("mute", p, "video", !muted("video")) }, muted("video") ? t("mod.cam_on") : t("mod.cam_off")));
      buttons.push(el("button.danger", { onclick: () => this.onModerate("remove", p) }, t("mod.remove")));
    }
    setChildren(this.mod, buttons);
  }

  setStream(kind, stream) {
    if (kind === "video") {
      if (!stream && this.video.srcObject) this.video.pause();
      this.video.srcObject = stream;
      this.hasVideo = Boolean(stream);
      this.root.classList.toggle("novideo", !stream);
      if (stream) this.video.play().catch(() => {});
    } else if (!this.self) {
      if (!stream && this.audio.srcObject) this.audio.pause();
      this.audio.srcObject = stream;
      if (stream) this.audio.play().catch(() => {});
    }
  }

  /** Drop video and audio: an ended session shows no frozen frame. */
  clear() {
    this.setStream("video", null);
    this.setStream("audio", null);
    this.setLevel(0);
    this.quality.className = "quality q-none";
    this.quality.textContent = t("quality.no_media");
  }

  /** What the server lets through of this tile's video for our link: "full", "reduced", "paused". */
  setAdapted(state) {
    this.weak.hidden = !state || state === "full";
    this.weak.dataset.state = state || "full";
    this.weak.textContent = state === "paused" ? t("video.weak_paused") : state === "reduced" ? t("video.weak_reduced") : "";
  }

  setLevel(level) {
    this.level = level;
    this.levelBar.style.width = `${Math.min(100, Math.round(level * 300))}%`;
    this.root.classList.toggle("speaking", level > SPEAKING_LEVEL);
  }

  /** The badge: the server's quality numbers, but "no media" whenever nothing gets through
   *  (`media`: "ok", "none" or "connecting") - never "good" over a dead connection. */
  setQuality(q, media = "ok") {
    if (media !== "ok") {
      this.quality.className = `quality q-${media === "connecting" ? "unknown" : "none"}`;
      this.quality.dataset.grade = media === "connecting" ? "connecting" : "no_media";
      this.quality.textContent = t(media === "connecting" ? "quality.connecting" : "quality.no_media");
      return;
    }
    const g = grade(q);
    this.quality.className = `quality q-${g}`;
    this.quality.dataset.grade = g;
    const num = (v, f) => (v == null ? "?" : f(v));
    this.quality.textContent = q ? t("quality.detail", {
      grade: t(`quality.${g}`), kbps: num(q.bitrate_kbps, Math.round), loss: num(q.loss_pct, (v) => v.toFixed(1)),
      rtt: num(q.rtt_ms, Math.round),
    }) : "\u2014";
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
  constructor({ page, layout, onRoomChange = () => {}, ecgContainer = null, stateEl = null,
                recordingEl = null, bannerEl = null, mediaBannerEl = null, contentEl = null }) {
    initI18n();
    this.page = page;
    this.layout = layout;
    this.onRoomChange = onRoomChange;
    this.stateEl = stateEl;
    this.recordingEl = recordingEl;
    this.bannerEl = bannerEl;
    this.mediaBannerEl = mediaBannerEl;
    this.ecgContainer = ecgContainer;
    this.contentEl = contentEl;
    if (contentEl) {
      this.contentVideo = el("video", { autoplay: true, playsinline: true, muted: true });
      this.contentVideo.muted = true;
      this.contentLabel = el("div.content-label");
      contentEl.replaceChildren(this.contentVideo, this.contentLabel);
    }
    this.content = null;
    this.sharing = false;
    this.screenStream = null;
    this.token = tokenFromUrl();
    this.tiles = new Map();
    this.localStream = null;
    this.micOff = false;
    this.cameraOff = false;
    this.audioOnly = false;
    this.publishing = false;
    this.ended = false;
    this.errors = [];
    this.health = { state: "none", since: Date.now(), restarts: 0, nextRestartAt: 0, connectedOnce: false,
                    pc: null, pcSince: 0, badSince: null, message: null, history: [] };
    this.inboundSeen = new Map();  // participant id -> {bytes, at}: when media from them last grew
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
      if (m.id === null || m.id === undefined) { this.errors.push(m); toast(reasonText(m.reason)); }
      // a lecture's media carried by another cluster node that went away: a fresh session places it anew
      if (m.reason === "media_lost" && !this.health.restarting) {
        this.health.restarting = true;
        this.sig.restart().finally(() => { this.health.restarting = false; });
      }
    });
    this.sig.on("bye", (m) => {
      if (m.reason === "removed") this._banner("banner.removed");
      // the server may close with `bye` (room_ended) and no `room_ended` before it: same end
      if (m.reason === "room_ended") this._end(null);
    });
    this.sig.on("room_ended", (m) => this._end(m.reason));
    this.sig.on("participant_updated", (m) => this._maybeRoleChanged(m.participant));
    this.bedTiles = new Map();
    this.waveforms = new WaveformStore((s, what, beats) => this._waveform(s, what, beats));
    this.stopAnimation = animate(() => [...this.bedTiles.values()].map((x) => x.view));
    this.statsTimer = setInterval(() => this._pollStats(), STATS_INTERVAL_MS);
    onLanguageChange(() => { this._state(this.sig.state); this._render(); for (const b of this.bedTiles.values()) b.update(); });
    this._expose();
  }

  async start() {
    if (!this.token) { this._banner("banner.no_token", { page: this.page }); return; }
    try {
      await this.sig.start();
    } catch (e) {
      this._banner("banner.cannot_join", { reason: joinError(e, this.token) });
    }
  }

  _banner(key, vars = {}) {
    if (!this.bannerEl) return;
    if (!key) { this.bannerEl.hidden = true; delete this.bannerEl.dataset.i18n; this.bannerEl.textContent = ""; return; }
    setText(this.bannerEl, key, vars);
    this.bannerEl.hidden = false;
  }

  _mediaBanner(key, vars = {}) {
    const b = this.mediaBannerEl;
    this.health.message = key ? t(key, vars) : null;
    if (!b) return;
    if (!key) { b.hidden = true; delete b.dataset.i18n; b.textContent = ""; return; }
    setText(b, key, vars);
    b.hidden = false;
  }

  _state(s) {
    if (this.stateEl) {
      const noMedia = s === "joined" && ["unreachable", "dropped"].includes(this.health.state);
      setText(this.stateEl, noMedia ? "state.no_media" : `state.${s}`);
      this.stateEl.className = `pill state-${noMedia ? "no-media" : s}`;
    }
    if (this.ended) return;
    // a media restart reconnects on purpose: its own banner already says why
    if (s === "reconnecting" && !this.health.restarting) this._banner("banner.reconnecting");
    if (s === "joined" && this.bannerEl && this.bannerEl.dataset.i18n === "banner.reconnecting") this._banner(null);
  }

  _closed(bye) {
    if (!this.ended && bye && bye.reason && !["left", "removed", "room_ended"].includes(bye.reason)) {
      this._banner("banner.disconnected", { reason: ref(byeKey(bye.reason)) });
    }
    this._stopLocal();
  }

  /** The session ended (`room_ended`): stop and clear every medium, say why. Idempotent. */
  _end(reason) {
    if (this.ended) return;
    this.ended = true;
    this.sig.ended();
    this._banner(has(`ended.${reason}`) ? `ended.${reason}` : "ended.unknown");
    this._mediaBanner(null);
    this.publishing = false;
    this._stopLocal();
    this._stopScreenLocal();
    this._hideContent();
    for (const tile of this.tiles.values()) tile.clear();
    this.media.reset();
    for (const b of this.bedTiles.values()) b.end();
    this.stopAnimation();
    this.health.state = "ended";
    this._state(this.sig.state);
  }

  async _joined(j, { resumed, rejoined }) {
    this.room.fromJoined(j);
    this._lastRole = j.participant.role;
    this.media.setIceServers(j.ice_servers);
    if (rejoined) {  // a new participant: the server starts a new peer connection
      this.media.reset();
      for (const [pid, tile] of this.tiles) { tile.root.remove(); this.tiles.delete(pid); }
      this.publishing = false;
    }
    this._render();
    if (!resumed && this.room.publishAllowed) await this.startPublishing();
  }

  /**
   * A promotion or demotion of ourselves. The page keeps no role matrix: promoted, it tries to
   * publish and the server says yes or `forbidden`; demoted, the server stops our tracks, and
   * when they are gone we stop sending (see _roomChanged).
   */
  async _maybeRoleChanged(p) {
    if (!this.room.self || p.participant_id !== this.room.self.participant_id || this.ended) return;
    if (this._lastRole === p.role) return;
    this._lastRole = p.role;
    if (this.publishing) { this._roleChangedWhilePublishing = true; return; }
    await this.startPublishing({ probe: true });
  }

  /** Open camera and microphone (chosen devices) and publish them. With `probe`, a `forbidden`
   *  reply only means we may not publish (after a role change): no message, local media closed. */
  async startPublishing({ probe = false } = {}) {
    this.publishing = true;
    this._roleChangedWhilePublishing = false;
    try {
      await this._openLocal();
      await this.media.publish({ audio: true, video: true });
      this.room.grant(ROLE_PUBLISH_ACTIONS, true);
    } catch (e) {
      this.publishing = false;
      if (probe && e instanceof ServerError && e.reason === "forbidden") {
        this.room.grant(ROLE_PUBLISH_ACTIONS, false);
        this.media.stopPublishing();
        this._stopLocal();
      } else {
        const detail = e instanceof ServerError ? reasonText(e.reason) : cameraErrorText(e);
        toast(t("err.publish", { detail }));
        this.errors.push({ reason: e.reason || "local", message: String(e.message || e) });
      }
    }
    this._render();
  }

  async _openLocal(audioDevice = null, videoDevice = null) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: audioDevice ? { deviceId: { exact: audioDevice } } : true,
      video: videoDevice ? { deviceId: { exact: videoDevice } } : { width: 640, height: 480 },
    });
    if (this.ended) { stream.getTracks().forEach((x) => x.stop()); return; }
    const old = this.localStream;
    this.localStream = stream;
    for (const kind of ["audio", "video"]) {
      const track = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
      if (track) {
        track.enabled = kind === "audio" ? !this.micOff : !this.cameraOff;
        await this.media.setLocalTrack(kind, track);
      }
    }
    if (old) old.getTracks().forEach((x) => x.stop());
    this.localLevel = levelMeter(stream);
    this._render();
    const tile = this.tiles.get(this.room.self.participant_id);
    if (tile) tile.setStream("video", stream);
    this.onRoomChange("devices");
  }

  _stopLocal() {
    if (this.localStream) this.localStream.getTracks().forEach((x) => x.stop());
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
    if (this.localStream) this.localStream.getAudioTracks().forEach((x) => { x.enabled = !this.micOff; });
    this._render();
    return this.micOff;
  }

  toggleCamera() {
    this.cameraOff = !this.cameraOff;
    if (this.localStream) this.localStream.getVideoTracks().forEach((x) => { x.enabled = !this.cameraOff; });
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
    for (const tile of this.tiles.values()) tile.clear();
    this._mediaBanner(null);
    this._banner("banner.left");
  }

  async moderate(action, p, kind, muted) {
    try {
      if (action === "mute") await this.sig.request({ type: "mute", participant_id: p.participant_id, kind, muted });
      else if (action === "remove") await this.sig.request({ type: "remove", participant_id: p.participant_id });
      else if (action === "promote") await this.sig.request({ type: "promote", participant_id: p.participant_id });
      else if (action === "demote") await this.sig.request({ type: "demote", participant_id: p.participant_id });
    } catch (e) {
      toast(e instanceof ServerError ? reasonText(e.reason) : t("reason.unknown"));
    }
  }

  async setRecording(on) {
    try {
      await this.sig.request(on ? { type: "start_recording" } : { type: "stop_recording" });
    } catch (e) { toast(e instanceof ServerError ? reasonText(e.reason) : t("reason.unknown")); }
  }

  async endRoom() {
    try { await this.sig.request({ type: "end_room" }); } catch (e) { /* the room ending closes the socket */ }
  }

  async raiseHand(raised) {
    await this.sig.request({ type: "raise_hand", raised });
  }

  _pcState(s) {
    this.pcState = s;
    this._checkMedia();
    this.onRoomChange("media");
  }

  /**
   * Media health, checked on every peer-connection state change and stats poll: a peer
   * connection that is not connected MEDIA_CONNECT_TIMEOUT_MS after it was created, or that
   * fails or stays disconnected after having worked, is said in plain words and retried with a
   * fresh session (signaling restart: new participant, new server peer, new ICE).
   */
  _checkMedia() {
    const h = this.health;
    if (this.ended || this.sig.state !== "joined") return;
    const pc = this.media.pc;
    const now = Date.now();
    if (pc !== h.pc) { h.pc = pc; h.pcSince = now; h.badSince = null; }
    const before = h.state;
    if (!pc) {
      if (!["unreachable", "dropped"].includes(h.state)) h.state = "none";  // nothing negotiated yet
    } else if (pc.connectionState === "connected") {
      h.state = "connected";
      h.connectedOnce = true;
      h.badSince = null;
    } else if (pc.connectionState === "failed") {
      h.state = h.connectedOnce ? "dropped" : "unreachable";
    } else if (pc.connectionState === "disconnected") {
      if (h.badSince === null) h.badSince = now;
      if (now - h.badSince >= MEDIA_DROP_GRACE_MS) h.state = "dropped";
    } else if (now - h.pcSince >= MEDIA_CONNECT_TIMEOUT_MS) {  // new / connecting for too long
      h.state = h.connectedOnce ? "dropped" : "unreachable";
    } else if (!["unreachable", "dropped"].includes(h.state)) {
      h.state = "connecting";
    }
    if (h.state !== before) {
      h.since = now;
      h.history.push({ state: h.state, at: now });
      if (h.state === "connected" && ["unreachable", "dropped"].includes(before)) {
        this._mediaBanner(null);
        toast(t("media.restored"));
      }
      this._state(this.sig.state);
      this._render();
    }
    if ((h.state === "unreachable" || h.state === "dropped") && pc && pc.connectionState !== "connected"
        && now >= h.nextRestartAt) {
      h.restarts += 1;
      h.nextRestartAt = now + MEDIA_RESTART_DELAYS_MS[Math.min(h.restarts, MEDIA_RESTART_DELAYS_MS.length - 1)];
      this._mediaBanner(h.state === "unreachable" ? "media.unreachable" : "media.dropped", { n: h.restarts });
      h.history.push({ state: h.state, at: now, restart: h.restarts, message: h.message });
      h.restarting = true;
      this.sig.restart().finally(() => { h.restarting = false; });
    }
  }

  /** "ok", "connecting" or "none": whether media from `pid` (or ours, for our own tile) gets through. */
  _mediaOf(pid, self) {
    const h = this.health.state;
    if (h === "unreachable" || h === "dropped" || h === "ended") return "none";
    const published = this.room.tracksOf(pid).length > 0;
    if (self) return this.publishing ? (h === "connected" ? "ok" : "connecting") : "ok";
    if (!published) return "ok";
    if (h !== "connected") return "connecting";
    const seen = this.inboundSeen.get(pid);
    if (!seen) return Date.now() - this.health.since > NO_MEDIA_AFTER_MS ? "none" : "connecting";
    return Date.now() - seen.at > NO_MEDIA_AFTER_MS ? "none" : "ok";
  }

  _remoteTrack(e) {
    if (this.ended) return;
    if (this._isScreen(e.trackId)) { this._showContent(e); return; }
    const owner = this.room.ownerOf(e.trackId);
    const tile = owner && this.tiles.get(owner);
    if (tile) tile.setStream(e.kind, e.stream);
    e.track.addEventListener("ended", () => this._render());
  }

  _roomChanged(what) {
    if (what === "recording" && this.recordingEl) this.recordingEl.hidden = !this.room.recording.active;
    if (what === "tracks") {
      const mine = this.room.self ? this.room.tracksOf(this.room.self.participant_id).length : 0;
      if (mine > 0) this._ownTracksSeen = true;
      if (mine === 0 && this._ownTracksSeen && this.publishing && this._roleChangedWhilePublishing) {
        // demoted: the server stopped our tracks
        this._ownTracksSeen = false;
        this.publishing = false;
        this.room.grant(ROLE_PUBLISH_ACTIONS, false);
        this.media.stopPublishing();
        this._stopLocal();
      }
      this._attachAll();
    }
    this._render();
    this.onRoomChange(what);
  }

  _attachAll() {
    if (this.ended) return;
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

  /** Everyone to show: not monitors, not our own earlier participants (after a media restart). */
  everyone() {
    const self = this.room.self;
    if (!self) return [];
    return [self, ...this.room.participants.values()].filter((p) => p.role !== "monitor"
      && !this.sig.formerParticipantIds.has(p.participant_id));
  }

  _isScreen(trackId) {
    const t = trackId && this.room.tracks.get(trackId);
    return Boolean(t && t.source === "screen");
  }

  /** A shared screen (or second camera), shown large to everyone, above the tiles. */
  _showContent(e) {
    const box = this.contentEl;
    if (!box) return;
    const owner = this.room.participants.get(this.room.ownerOf(e.trackId));
    this.content = { trackId: e.trackId, participantId: owner ? owner.participant_id : null };
    this.contentVideo.srcObject = e.stream;
    this.contentVideo.play().catch(() => {});
    setText(this.contentLabel, "content.shared_by", { name: owner ? owner.name : "?" });
    box.hidden = false;
  }

  _hideContent() {
    if (!this.contentEl) return;
    this.content = null;
    if (this.contentVideo.srcObject) this.contentVideo.pause();
    this.contentVideo.srcObject = null;
    this.contentEl.hidden = true;
  }

  /** Share a screen, or a second camera when `deviceId` is given, as a second video track of up
   *  to 1920x1080 (forwarded as is, recorded like any track). */
  async shareScreen({ deviceId = null } = {}) {
    if (this.ended || this.sharing) return;
    const size = { width: { ideal: 1920, max: 1920 }, height: { ideal: 1080, max: 1080 } };
    let stream;
    try {
      stream = deviceId
        ? await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: deviceId }, ...size } })
        : await navigator.mediaDevices.getDisplayMedia({ video: { ...size, frameRate: { ideal: 15 } }, audio: false });
    } catch (e) {
      toast(t("err.share", { detail: cameraErrorText(e) }));
      return;
    }
    const track = stream.getVideoTracks()[0];
    this.screenStream = stream;
    this.sharing = true;
    track.addEventListener("ended", () => this.stopSharing());  // the browser's own "stop sharing"
    try {
      await this.media.setLocalTrack("screen", track);
      await this.media.publish({ screen: true });
    } catch (e) {
      toast(t("err.share", { detail: e instanceof ServerError ? reasonText(e.reason) : String(e.message || e) }));
      this._stopScreenLocal();
    }
    this._render();
    this.onRoomChange("sharing");
  }

  async stopSharing() {
    if (!this.sharing) return;
    this._stopScreenLocal();
    try { await this.media.unpublishScreen(); } catch (e) { /* already gone (room ended, demoted) */ }
    this._render();
    this.onRoomChange("sharing");
  }

  _stopScreenLocal() {
    this.sharing = false;
    if (this.screenStream) this.screenStream.getTracks().forEach((x) => x.stop());
    this.screenStream = null;
  }

  _render() {
    const self = this.room.self;
    if (!self) return;
    if (this.content && !this.room.tracks.has(this.content.trackId)) this._hideContent();
    const seen = new Set();
    for (const p of this.everyone()) {
      seen.add(p.participant_id);
      let tile = this.tiles.get(p.participant_id);
      if (!tile) {
        tile = new Tile(p, { self: p.participant_id === self.participant_id, onModerate: (...a) => this.moderate(...a) });
        this.tiles.set(p.participant_id, tile);
        if (tile.self && this.localStream) tile.setStream("video", this.localStream);
      }
      tile.update(p, this.room.tracksOf(p.participant_id), { moderator: this.room.isModerator && !this.ended,
                                                             cameraOff: this.cameraOff, micOff: this.micOff });
      if (this.ended) tile.clear();
      else tile.setQuality(this.room.quality.get(p.participant_id), this._mediaOf(p.participant_id, tile.self));
      if (!tile.self) tile.setAdapted(this.ended ? "full" : this.room.adaptedOf(p.participant_id));
      this.layout(tile, p);
    }
    for (const [pid, tile] of this.tiles) {
      if (!seen.has(pid)) { tile.root.remove(); this.tiles.delete(pid); }
    }
    this._attachAllQuiet();
    if (this.recordingEl) this.recordingEl.hidden = !this.room.recording.active || this.ended;
  }

  _attachAllQuiet() {
    if (this.ended) return;
    for (const e of this.media.remoteTracks()) {
      const owner = this.room.ownerOf(e.trackId);
      const tile = owner && this.tiles.get(owner);
      if (this._isScreen(e.trackId)) { if (!this.content || this.content.trackId !== e.trackId) this._showContent(e); continue; }
      if (!tile) continue;
      if (e.kind === "video" && !tile.hasVideo && this.room.tracks.has(e.trackId)) tile.setStream("video", e.stream);
      if (e.kind === "audio" && !tile.audio.srcObject) tile.setStream("audio", e.stream);
    }
  }

  async _pollStats() {
    if (!this.room.self || this.ended) return;
    this._checkMedia();
    const selfTile = this.tiles.get(this.room.self.participant_id);
    if (selfTile) selfTile.setLevel(this.localLevel && !this.micOff ? this.localLevel() : 0);
    if (!this.media.pc) return;
    let s;
    try { s = await this.media.stats(); } catch { return; }
    if (this.ended) return;
    this.lastStats = s;
    const levels = new Map();
    const bytes = new Map();
    for (const i of s.inbound) {
      const owner = this.room.ownerOf(i.trackId);
      if (!owner) continue;
      bytes.set(owner, (bytes.get(owner) || 0) + i.bytesReceived);
      if (i.kind === "audio") levels.set(owner, Math.max(levels.get(owner) || 0, i.audioLevel));
    }
    const now = Date.now();
    for (const [pid, b] of bytes) {
      const old = this.inboundSeen.get(pid);
      if (!old || b > old.bytes) this.inboundSeen.set(pid, { bytes: b, at: b > 0 ? now : (old ? old.at : 0) });
      if (b === 0 && !old) this.inboundSeen.delete(pid);
    }
    for (const [pid, tile] of this.tiles) if (!tile.self) tile.setLevel(levels.get(pid) || 0);
  }

  _waveform(stream, what, beats) {
    if (!this.ecgContainer || this.ended) return;
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
      get ended() { return conf.ended; },
      get sharing() { return conf.sharing; },
      get content() {
        const v = conf.contentVideo;
        return conf.content ? { ...conf.content, width: v ? v.videoWidth : 0, height: v ? v.videoHeight : 0 } : null;
      },
      get chat() { return conf.chat ? conf.chat.messages.map((m) => ({ ...m })) : []; },
      get media() {
        const h = conf.health;
        return { state: h.state, restarts: h.restarts, message: h.message, history: h.history,
                 connectionState: conf.media.pc ? conf.media.pc.connectionState : "none" };
      },
      get speaking() { return Object.fromEntries([...conf.tiles].map(([pid, x]) => [pid, x.level])); },
      get streams() { return conf.waveforms.snapshot(); },
      stats: () => conf.stats(),
      videoColor: (pid) => { const x = conf.tiles.get(pid); return x ? x.videoColor() : null; },
    };
  }
}

/** A plain sentence for a getUserMedia failure. */
function cameraErrorText(e) {
  const name = e && e.name;
  if (name === "NotAllowedError" || name === "SecurityError") return t("err.camera_denied");
  if (name === "NotFoundError" || name === "OverconstrainedError") return t("err.camera_missing");
  if (name === "NotReadableError" || name === "AbortError") return t("err.camera_busy");
  return t("reason.local", { detail: String((e && e.message) || e) });
}

/** The key of a plain sentence for a `bye` or close reason (never the raw code). */
function byeKey(reason) {
  if (has(`bye.${reason}`)) return `bye.${reason}`;
  if (has(`reason.${reason}`)) return `reason.${reason}`;
  return "bye.unknown";
}
