"""The VP8 RTP payload descriptor (RFC 7741 section 4.2), read without decoding (sans-I/O).

A relay needs three things from it: where a frame starts (S bit, partition 0), which temporal
layer a packet belongs to (TID) and whether an upper layer may be switched to here (Y). With
temporal scalability (browsers: `scalabilityMode: "L1T3"`) layer 0 runs at a quarter of the frame
rate, layers 0-1 at half, 0-2 at the full rate, and no frame refers to a frame of a higher
layer: dropping every packet with TID above a limit leaves a stream the decoder takes as is.

```
       0 1 2 3 4 5 6 7
      +-+-+-+-+-+-+-+-+
      |X|R|N|S|R| PID | (REQUIRED)
      +-+-+-+-+-+-+-+-+
 X:   |I|L|T|K| RSV   | (OPTIONAL)
      +-+-+-+-+-+-+-+-+
 I:   |M| PictureID   | (OPTIONAL, 7 or 15 bits)
      +-+-+-+-+-+-+-+-+
 L:   |   TL0PICIDX   | (OPTIONAL)
      +-+-+-+-+-+-+-+-+
 T/K: |TID|Y| KEYIDX  | (OPTIONAL)
      +-+-+-+-+-+-+-+-+
```
"""

from __future__ import annotations

from dataclasses import dataclass


class Vp8DescriptorError(ValueError):
    """The payload is too short for the descriptor its own bits announce."""


@dataclass(frozen=True, slots=True)
class Vp8Descriptor:
    """One packet's payload descriptor.

    `tid` is None when the publisher sends no temporal layer index (one layer: treat as 0);
    `picture_id` carries 7 or 15 bits as sent; `size` is the descriptor's length in bytes (the
    VP8 payload starts there). `keyframe` is read from the VP8 payload header and is only known
    on the first packet of a frame (`start` and `partition_id == 0`), else False.
    """

    non_reference: bool
    start: bool
    partition_id: int
    picture_id: int | None
    tl0_pic_idx: int | None
    tid: int | None
    layer_sync: bool
    key_idx: int | None
    size: int
    keyframe: bool

    @property
    def begins_frame(self) -> bool:
        """True on the first packet of a frame (start of partition 0)."""
        return self.start and self.partition_id == 0

    @property
    def temporal_layer(self) -> int:
        """The packet's temporal layer; 0 when the publisher sends none."""
        return 0 if self.tid is None else self.tid


def parse_descriptor(payload: bytes) -> Vp8Descriptor:
    """Read the descriptor at the start of one VP8 RTP payload.

    Raises Vp8DescriptorError if `payload` ends inside the descriptor its bits announce.
    """
    n = len(payload)
    if n < 1:
        raise Vp8DescriptorError("VP8 payload must hold at least 1 descriptor byte, got 0")
    b0 = payload[0]
    extended = bool(b0 & 0x80)
    non_reference = bool(b0 & 0x20)
    start = bool(b0 & 0x10)
    partition_id = b0 & 0x0F
    picture_id = tl0 = tid = key_idx = None
    layer_sync = False
    pos = 1
    if extended:
        if n < 2:
            raise Vp8DescriptorError("VP8 descriptor announces an extension byte (X=1), payload ends")
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: PictureID
            if pos >= n:
                raise Vp8DescriptorError("VP8 descriptor announces a PictureID (I=1), payload ends")
            if payload[pos] & 0x80:  # M: 15 bits
                if pos + 1 >= n:
                    raise Vp8DescriptorError("VP8 descriptor announces a 15-bit PictureID, payload ends")
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pos += 2
            else:
                picture_id = payload[pos] & 0x7F
                pos += 1
        if x & 0x40:  # L: TL0PICIDX
            if pos >= n:
                raise Vp8DescriptorError("VP8 descriptor announces TL0PICIDX (L=1), payload ends")
            tl0 = payload[pos]
            pos += 1
        if x & 0x30:  # T and/or K: one shared byte
            if pos >= n:
                raise Vp8DescriptorError("VP8 descriptor announces TID/KEYIDX (T/K=1), payload ends")
            tk = payload[pos]
            pos += 1
            if x & 0x20:
                tid = tk >> 6
                layer_sync = bool(tk & 0x20)
            if x & 0x10:
                key_idx = tk & 0x1F
    keyframe = start and partition_id == 0 and pos < n and (payload[pos] & 0x01) == 0
    return Vp8Descriptor(non_reference, start, partition_id, picture_id, tl0, tid, layer_sync,
                         key_idx, pos, keyframe)


def temporal_layer(payload: bytes) -> int:
    """The temporal layer of one VP8 RTP payload (0 when it carries none or is malformed).

    The per-packet fast path: reads only the bytes it needs.
    """
    if len(payload) < 2 or not payload[0] & 0x80:
        return 0
    x = payload[1]
    if not x & 0x20:
        return 0
    pos = 2
    if x & 0x80:
        if len(payload) <= pos:
            return 0
        pos += 2 if payload[pos] & 0x80 else 1
    if x & 0x40:
        pos += 1
    return payload[pos] >> 6 if pos < len(payload) else 0


__all__ = ["Vp8Descriptor", "Vp8DescriptorError", "parse_descriptor", "temporal_layer"]


_ALL_LAYERS = 1 << 8


class TemporalLayerFilter:
    """One subscriber's cut of a VP8 stream's temporal layers: a per-packet gate (sans-I/O).

    Called with every RTP packet of the producer (an object with `payload` and `timestamp`);
    returns False for packets to leave out, and the forwarder closes the sequence over them.
    The decision is made once per frame, at its first packet seen. Going down takes effect at
    the next frame; going up waits for a frame of the next layer with the layer sync bit (Y: it
    depends on layer 0 only) or a keyframe, one layer at a time, so the subscriber's decoder never
    gets a frame whose reference it did not get. PictureID and TL0PICIDX pass unchanged: their
    gaps are what a receiver of a layer-dropping SFU expects (RFC 7741 section 4.5.2).
    """

    def __init__(self) -> None:
        self._limit = _ALL_LAYERS
        self._wanted = _ALL_LAYERS
        self._frame_ts: int | None = None
        self._frame_pass = True
        self.frames_skipped = 0

    def set_max_layer(self, layer: int | None) -> None:
        """Forward temporal layers 0..`layer` only (None: all)."""
        self._wanted = _ALL_LAYERS if layer is None else max(0, layer)
        if self._wanted < self._limit:
            self._limit = self._wanted

    @property
    def max_layer(self) -> int | None:
        """The highest temporal layer forwarded now (None: all)."""
        return None if self._limit >= _ALL_LAYERS else self._limit

    def __call__(self, packet: object) -> bool:
        timestamp: int = packet.timestamp  # type: ignore[attr-defined]
        if timestamp == self._frame_ts:
            return self._frame_pass
        self._frame_ts = timestamp
        try:
            d = parse_descriptor(packet.payload)  # type: ignore[attr-defined]
        except Vp8DescriptorError:
            self._frame_pass = True
            return True
        layer = d.temporal_layer
        if d.keyframe:
            self._limit = self._wanted
            ok = True
        elif layer <= self._limit:
            ok = True
        elif d.layer_sync and layer == self._limit + 1 and layer <= self._wanted:
            self._limit = layer
            ok = True
        else:
            ok = False
            self.frames_skipped += 1
        self._frame_pass = ok
        return ok


__all__ += ["TemporalLayerFilter"]


def picture_fields(payload: bytes) -> tuple[int, int, int, int]:
    """(PictureID, its width in bits, TL0PICIDX or -1, TID or -1) of one payload; PictureID -1
    when the packet carries none (or is malformed). The per-packet fast path: what
    `PictureIdRewriter` reads, and what a producer reads once per packet for all subscribers."""
    n = len(payload)
    if n < 3 or not payload[0] & 0x80:
        return -1, 0, -1, -1
    x = payload[1]
    if not x & 0x80:
        return -1, 0, -1, -1
    pos = 2
    if payload[pos] & 0x80:
        if n < 4:
            return -1, 0, -1, -1
        pid, bits = ((payload[pos] & 0x7F) << 8) | payload[pos + 1], 15
        pos += 2
    else:
        pid, bits = payload[pos] & 0x7F, 7
        pos += 1
    tl0 = tid = -1
    if x & 0x40:
        if pos >= n:
            return -1, 0, -1, -1
        tl0 = payload[pos]
        pos += 1
    if x & 0x20 and pos < n:
        tid = payload[pos] >> 6
    return pid, bits, tl0, tid


class PictureIdRewriter:
    """One subscriber's PictureID and TL0PICIDX, continuous over the frames it is not given
    (sans-I/O; mediasoup and Janus do the same).

    A receiver takes a gap in PictureID for lost frames: Chromium's VP8 reference finder holds
    back a frame whose PictureID says a frame before it is missing, unless TL0PICIDX and the
    temporal layer prove it refers only to frames that came (RFC 7741 section 4.5.2). A layer cut
    is thereby told apart, but a pause, or a frame left out while waiting for a keyframe, leaves
    a gap that looks like loss. So every frame this subscriber does not get moves its later
    PictureIDs down by one (and a left-out base-layer frame its TL0PICIDX): a frame lost *before*
    the relay still shows as a gap. The width (7 or 15 bits) stays the publisher's.

    `dropped(payload)` for every packet of the producer not forwarded, `rewrite(payload)` for
    every packet sent (retransmissions too: a picture keeps the number it was first sent with).
    While nothing was left out, `rewrite` returns the payload itself (no copy); the cost per
    packet is reading the descriptor's first bytes, and one dict entry per frame.
    """

    _REMEMBER = 256  # pictures whose numbers are kept for retransmissions

    def __init__(self) -> None:
        self._pid_shift = 0
        self._tl0_shift = 0
        self._dropped_pid = -1
        self._dropped_tl0 = -1
        self._sent: dict[int, tuple[int, int]] = {}  # in PictureID -> (out PictureID, out TL0PICIDX)
        self._last_pid = -1
        self.frames_left_out = 0
        # the picture whose packets go out unchanged (its numbers kept), -2 if none: lets the
        # fan-out skip `rewrite` for the packets after a picture's first (`ForwardTrack`)
        self.passthrough_pid = -2

    def dropped(self, payload: bytes, fields: tuple[int, int, int, int] | None = None) -> None:
        """A packet of the producer this subscriber is not given (`fields`: its
        `picture_fields`, if the producer read them already)."""
        pid, _, tl0, tid = fields or picture_fields(payload)
        if pid < 0 or pid == self._last_pid or self._last_pid < 0:
            return  # the rest of a frame begun (its number is given), or before the first frame

        if pid != self._dropped_pid:
            self._dropped_pid = pid
            self._pid_shift += 1
            self.frames_left_out += 1
        if tl0 >= 0 and tid <= 0 and tl0 != self._dropped_tl0:
            self._dropped_tl0 = tl0
            self._tl0_shift += 1

    def rewrite(self, payload: bytes, resend: bool = False,
                fields: tuple[int, int, int, int] | None = None) -> bytes:
        """The payload to send: its PictureID (and TL0PICIDX) moved down over what was left out.
        `resend`: a retransmission (the number the picture was first sent with); `fields`: the
        payload's `picture_fields`, read once per packet by the producer for all subscribers."""
        pid, bits, tl0, _ = fields or picture_fields(payload)
        if pid < 0:
            return payload
        known = self._sent.get(pid) if resend or pid == self._last_pid else None
        if known is not None:
            out_pid, out_tl0 = known
        else:
            out_pid = (pid - self._pid_shift) % (1 << bits)
            out_tl0 = (tl0 - self._tl0_shift) % 256 if tl0 >= 0 else -1
            if not resend:  # a new picture (once per frame; a 7-bit PictureID recurs every 128)
                self._sent.pop(pid, None)
                self._sent[pid] = (out_pid, out_tl0)
                self._last_pid = pid
                self.passthrough_pid = pid if (out_pid == pid and out_tl0 == tl0) else -2
                if len(self._sent) > self._REMEMBER:
                    del self._sent[next(iter(self._sent))]
        if out_pid == pid and out_tl0 == tl0:
            return payload
        buf = bytearray(payload)
        if bits == 15:
            buf[2], buf[3] = 0x80 | (out_pid >> 8), out_pid & 0xFF
            pos = 4
        else:
            buf[2] = out_pid
            pos = 3
        if tl0 >= 0:
            buf[pos] = out_tl0
        return bytes(buf)


__all__ += ["PictureIdRewriter", "picture_fields"]
