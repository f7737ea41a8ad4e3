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
