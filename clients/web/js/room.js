// Room state as the server describes it: participants, published tracks, recording, quality.
// Pure bookkeeping fed by signaling messages; pages render from it.

// What we may do comes from the server: `joined.permissions` (signaling/roles.py actions, e.g.
// "publish_video", "moderate", "record", "raise_hand"). The page keeps no permission matrix of
// its own. After a promotion or demotion (`participant_updated` for ourselves) the server is asked
// again by trying: see Conference._maybeRoleChanged.

export class RoomState {
  constructor(sig, onChange = () => {}) {
    this.onChange = onChange;
    this.self = null;
    this.room = null;
    this.participants = new Map();  // participant_id -> participant
    this.tracks = new Map();  // track_id -> track
    this.recording = { active: false, by: null };
    this.quality = new Map();  // participant_id -> {bitrate_kbps, loss_pct, rtt_ms, jitter_ms, at}
    this.permissions = new Set();  // actions the server granted us in `joined`
    this.adapted = new Map();  // track_id -> {state, fps_fraction}: what our weak link lets through
    this.ended = null;
    const changed = (what) => this.onChange(what);
    sig.on("participant_joined", (m) => { this.participants.set(m.participant.participant_id, m.participant); changed("participants"); });
    sig.on("participant_left", (m) => {
      this.participants.delete(m.participant_id);
      for (const [id, t] of this.tracks) if (t.participant_id === m.participant_id) this.tracks.delete(id);
      changed("participants");
    });
    sig.on("participant_updated", (m) => {
      const p = m.participant;
      if (this.self && p.participant_id === this.self.participant_id) { this.self = p; changed("self"); }
      else { this.participants.set(p.participant_id, p); changed("participants"); }
    });
    sig.on("track_published", (m) => { this.tracks.set(m.track.track_id, m.track); changed("tracks"); });
    sig.on("track_updated", (m) => { this.tracks.set(m.track.track_id, m.track); changed("tracks"); });
    sig.on("track_unpublished", (m) => { this.tracks.delete(m.track_id); this.adapted.delete(m.track_id); changed("tracks"); });
    sig.on("recording", (m) => { this.recording = { active: m.active, by: m.by }; changed("recording"); });
    sig.on("quality", (m) => {
      this.quality.set(m.participant_id, { bitrate_kbps: m.bitrate_kbps, loss_pct: m.loss_pct,
                                           rtt_ms: m.rtt_ms, jitter_ms: m.jitter_ms, at: Date.now() });
      changed("quality");
    });
    sig.on("video_adapted", (m) => {
      this.adapted.set(m.track_id, { state: m.state, fps_fraction: m.fps_fraction });
      changed("adapted");
    });
    sig.on("room_ended", (m) => { this.ended = m.reason; changed("ended"); });
  }

  /** Reset from a `joined` message (first join, resume or rejoin). */
  fromJoined(j) {
    this.self = j.participant;
    this.room = j.room;
    this.permissions = new Set(j.permissions || []);
    this.recording = { active: j.room.recording, by: null };
    this.participants = new Map(j.participants.map((p) => [p.participant_id, p]));
    this.tracks = new Map(j.tracks.map((t) => [t.track_id, t]));
    this.onChange("joined");
  }

  /** Whether the server granted us `action` (a signaling/roles.py Action value). */
  may(action) {
    return this.permissions.has(action);
  }

  /** Record what the server decided since `joined` (a publish accepted or refused after a role change). */
  grant(actions, granted) {
    for (const a of actions) { if (granted) this.permissions.add(a); else this.permissions.delete(a); }
  }

  get isModerator() {
    return this.may("moderate");
  }

  get publishAllowed() {
    return this.may("publish_audio") || this.may("publish_video");
  }

  /** Owner of a track id (from the track list, else the SFU's "participant/kind/n" naming). */
  ownerOf(trackId) {
    const t = trackId && this.tracks.get(trackId);
    if (t) return t.participant_id;
    return trackId ? trackId.split("/")[0] : null;
  }

  /** The weakest adaptation state of a participant's camera video to us ("full" if none). */
  adaptedOf(participantId) {
    const order = ["full", "reduced", "paused"];
    let worst = "full";
    for (const t of this.tracksOf(participantId, "video")) {
      const a = this.adapted.get(t.track_id);
      if (t.source !== "screen" && a && order.indexOf(a.state) > order.indexOf(worst)) worst = a.state;
    }
    return worst;
  }

  tracksOf(participantId, kind) {
    return [...this.tracks.values()].filter((t) => t.participant_id === participantId && (!kind || t.kind === kind));
  }

  /** Plain-object snapshot for window.medstream. */
  snapshot() {
    return {
      self: this.self, room: this.room, recording: this.recording, ended: this.ended,
      permissions: [...this.permissions].sort(),
      participants: [...this.participants.values()],
      tracks: [...this.tracks.values()],
      quality: Object.fromEntries(this.quality),
      adapted: Object.fromEntries(this.adapted),
    };
  }
}

/** Quality grade from the server's numbers: "good", "fair", "poor" or "unknown". */
export function grade(q) {
  if (!q || (q.loss_pct == null && q.rtt_ms == null)) return "unknown";
  const loss = q.loss_pct || 0;
  const rtt = q.rtt_ms || 0;
  if (loss > 5 || rtt > 400) return "poor";
  if (loss > 1 || rtt > 150) return "fair";
  return "good";
}
