// The participant's one RTCPeerConnection with the server. The server always offers
// (docs/protocol.md): `recvonly` m-lines in its offer are receive slots for what we publish,
// `sendonly` ones carry another participant's track. We answer, trickle our candidates and keep
// a map mid -> track so every received track is tied to the participant who publishes it.

/** Per-m-line facts of an SDP: mid -> {kind, direction, trackId, slot}. `slot` is what a
 *  receive slot is for: audio, video (the camera) or screen (`a=content:slides`, RFC 4796). */
export function parseSections(sdp) {
  const out = new Map();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const kind = section.split(" ", 1)[0];
    const mid = (section.match(/\r?\na=mid:(\S+)/) || [])[1];
    const direction = (section.match(/\r?\na=(sendrecv|sendonly|recvonly|inactive)\b/) || [])[1] || "sendrecv";
    const msid = section.match(/\r?\na=msid:(\S+) (\S+)/);
    const content = (section.match(/\r?\na=content:(\S+)/) || [])[1];
    const slot = content === "slides" ? "screen" : kind;
    if (mid !== undefined) out.set(mid, { kind, direction, trackId: msid ? msid[2] : null, slot });
  }
  return out;
}

function normaliseCandidate(text) {
  let c = (text || "").trim();
  if (c.startsWith("a=")) c = c.slice(2);
  if (c && !c.startsWith("candidate:")) c = `candidate:${c}`;
  return c;
}

/**
 * Media of one participant: answers offers, publishes local tracks into the receive slots,
 * reports remote tracks (`onRemoteTrack({trackId, kind, track, stream, mid})`) and summarises
 * getStats() for automation (`stats()`).
 */
export class MediaSession {
  constructor(sig, { onRemoteTrack = () => {}, onConnectionState = () => {} } = {}) {
    this.sig = sig;
    this.onRemoteTrack = onRemoteTrack;
    this.onConnectionState = onConnectionState;
    this.pc = null;
    this.iceServers = [];
    this.localTracks = { audio: null, video: null, screen: null };
    this.wanted = { audio: false, video: false, screen: false };
    this.byMid = new Map();
    this.chain = Promise.resolve();
    this.offers = 0;
    this.lastError = null;
    sig.on("sdp", (m) => this._enqueue(() => this._onOffer(m.sdp)));
    sig.on("candidate", (m) => this._enqueue(() => this._onCandidate(m)));
  }

  _enqueue(fn) {
    this.chain = this.chain.then(fn).catch((e) => {
      this.lastError = String(e);
      console.error("media:", e);
    });
    return this.chain;
  }

  /** ICE servers from `joined` (empty on a loopback test server: nothing else is contacted). */
  setIceServers(servers) {
    this.iceServers = (servers || []).map((s) => ({ urls: s.urls, username: s.username || undefined,
                                                     credential: s.credential || undefined }));
  }

  _newPc() {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    pc.onicecandidate = (e) => {
      const c = e.candidate;
      this.sig.send({ type: "candidate", candidate: c ? c.candidate : "",
                      sdp_mid: c ? c.sdpMid : null, sdp_mline_index: c ? c.sdpMLineIndex : null });
    };
    pc.ontrack = (e) => {
      const mid = e.transceiver.mid;
      const info = this.byMid.get(mid) || {};
      // one stream per track: aiortc puts every sender of a peer connection in the same msid
      // stream, so e.streams[0] would mix all participants' tracks
      const stream = new MediaStream([e.track]);
      const entry = { mid, kind: e.track.kind, track: e.track, stream, trackId: info.trackId };
      this.byMid.set(mid, { ...info, ...entry });
      this.onRemoteTrack(this.byMid.get(mid));
    };
    pc.onconnectionstatechange = () => { if (this.pc === pc) this.onConnectionState(pc.connectionState); };
    this.pc = pc;
    this.onConnectionState(pc.connectionState);  // "new": the media-health clock starts now
    return pc;
  }

  /** Forget the peer connection (after a fresh rejoin the server starts a new one). */
  reset() {
    if (this.pc) this.pc.close();
    this.pc = null;
    this.byMid.clear();
  }

  /** Use `track` for `slot` (audio, video, screen): replaces the track on an existing sender
   *  (device change, a new shared screen). */
  async setLocalTrack(slot, track) {
    this.localTracks[slot] = track;
    if (!this.pc) return;
    for (const t of this.pc.getTransceivers()) {
      const info = this.byMid.get(t.mid);
      if (info && info.publish && info.slot === slot) await t.sender.replaceTrack(track);
    }
  }

  /** Ask the server for receive slots; tracks are attached when its offer arrives. */
  async publish({ audio = false, video = false, screen = false }) {
    this.wanted = { audio: audio || this.wanted.audio, video: video || this.wanted.video,
                    screen: screen || this.wanted.screen };
    return this.sig.request({ type: "publish", audio, video, screen });
  }

  /** Stop sending the shared screen and give its slot back. */
  async unpublishScreen() {
    this.wanted.screen = false;
    this.localTracks.screen = null;
    if (this.pc) {
      for (const t of this.pc.getTransceivers()) {
        const info = this.byMid.get(t.mid);
        if (info && info.publish && info.slot === "screen" && t.sender.track) await t.sender.replaceTrack(null);
      }
    }
    return this.sig.request({ type: "unpublish", kind: "screen" });
  }

  /** Stop sending (locally) after the server stopped our tracks (demotion, unpublish). */
  stopPublishing() {
    this.wanted = { audio: false, video: false, screen: false };
    if (!this.pc) return;
    for (const t of this.pc.getTransceivers()) {
      const info = this.byMid.get(t.mid);
      if (info && info.publish && t.sender.track) t.sender.replaceTrack(null);
    }
  }

  async _onOffer(sdp) {
    if (!this.pc || ["failed", "closed"].includes(this.pc.connectionState)) {
      if (this.pc) this.reset();
      this._newPc();
    }
    const pc = this.pc;
    const sections = parseSections(sdp);
    for (const [mid, s] of sections) {
      const old = this.byMid.get(mid) || {};
      this.byMid.set(mid, { ...old, kind: s.kind, direction: s.direction, slot: s.slot,
                            trackId: s.trackId || old.trackId, publish: s.direction === "recvonly" });
    }
    await pc.setRemoteDescription({ sdp, type: "offer" });  // a WebRTC description, not a wire message
    for (const t of pc.getTransceivers()) {
      const s = sections.get(t.mid);
      if (!s) continue;
      if (s.direction === "recvonly") {  // a receive slot for what we publish
        const track = this.localTracks[s.slot];
        if (track && this.wanted[s.slot]) {
          t.direction = "sendonly";
          if (t.sender.track !== track) await t.sender.replaceTrack(track);
        } else {
          t.direction = "inactive";
        }
      } else if (s.direction === "sendonly") {
        t.direction = "recvonly";
      } else if (s.direction === "inactive") {
        t.direction = "inactive";
      }
    }
    await pc.setLocalDescription(await pc.createAnswer());
    this.sig.send({ type: "sdp", sdp_type: "answer", sdp: pc.localDescription.sdp });
    for (const t of pc.getTransceivers()) {
      const s = sections.get(t.mid);
      if (s && s.direction === "recvonly" && s.slot === "video" && t.sender.track) await requestTemporalLayers(t.sender);
    }
    this.offers += 1;
  }

  async _onCandidate(m) {
    if (!this.pc) return;
    const candidate = normaliseCandidate(m.candidate);
    if (!candidate) return;
    await this.pc.addIceCandidate({ candidate, sdpMid: m.sdp_mid ?? undefined,
                                    sdpMLineIndex: m.sdp_mline_index ?? undefined });
  }

  /** Remote track entries currently received (mid, kind, trackId, track, stream). */
  remoteTracks() {
    return [...this.byMid.values()].filter((e) => e.track && !e.publish && e.direction === "sendonly");
  }

  /**
   * getStats() summary: {inbound: [...], outbound: [...], candidatePair} with framesDecoded,
   * packetsLost, totalAudioEnergy, audioLevel, bytesReceived per received track (tied to its
   * trackId) and bytesSent/framesEncoded per sent one; rttMs of the selected candidate pair.
   */
  async stats() {
    const out = { connectionState: this.pc ? this.pc.connectionState : "none", inbound: [],
                  outbound: [], candidatePair: null };
    if (!this.pc) return out;
    const report = await this.pc.getStats();
    let selectedPairId = null;
    report.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) selectedPairId = s.selectedCandidatePairId; });
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        const info = this.byMid.get(s.mid) || {};
        out.inbound.push({
          kind: s.kind, mid: s.mid, trackId: info.trackId || null,
          framesDecoded: s.framesDecoded || 0, framesPerSecond: s.framesPerSecond || 0,
          frameWidth: s.frameWidth || 0, packetsReceived: s.packetsReceived || 0,
          packetsLost: s.packetsLost || 0, bytesReceived: s.bytesReceived || 0,
          totalAudioEnergy: s.totalAudioEnergy || 0, audioLevel: s.audioLevel || 0,
          jitterMs: (s.jitter || 0) * 1000,
        });
      } else if (s.type === "outbound-rtp") {
        out.outbound.push({ kind: s.kind, mid: s.mid, bytesSent: s.bytesSent || 0,
                            packetsSent: s.packetsSent || 0, framesEncoded: s.framesEncoded || 0 });
      } else if (s.type === "candidate-pair" && s.id === selectedPairId) {
        out.candidatePair = { state: s.state, rttMs: (s.currentRoundTripTime || 0) * 1000,
                              availableOutgoingBitrate: s.availableOutgoingBitrate || null };
      }
    });
    return out;
  }
}


/** Ask the browser to send the camera as VP8 with three temporal layers (L1T3: 7.5/15/30 fps),
 *  so the server can give a weak link fewer frames instead of none (media_server/adaptation.py).
 *  Browsers without scalabilityMode in RTCRtpEncodingParameters keep one layer: the server then
 *  pauses or forwards the whole video. */
async function requestTemporalLayers(sender) {
  try {
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) params.encodings = [{}];
    if (params.encodings[0].scalabilityMode === "L1T3") return;
    params.encodings[0].scalabilityMode = "L1T3";
    await sender.setParameters(params);
  } catch (err) {
    console.info("temporal layers not available:", err && err.message);
  }
}
