"""Per-subscriber RTP rewriting, sans-I/O: sequence numbers, keyframe starts, header bytes.

A forwarded packet keeps its payload byte for byte; what changes per subscriber is the header:
the subscriber's SSRC and payload type, a sequence number space of its own (continuous across
a late start, a pause, or packets a gate drops, so the subscriber never NACKs what was never
meant for it), a timestamp offset, and the header extensions it negotiated (mid,
abs-send-time, audio level). Nothing here touches a socket; `ForwardTrack` drives it.
"""

from __future__ import annotations

from struct import Struct

_HEADER = Struct("!BBHII")
_U16 = 0xFFFF
_HALF = 0x8000

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

# seconds between the NTP epoch (1900) and the Unix epoch (1970)
NTP_EPOCH_OFFSET_S = 2208988800


def abs_send_time(unix_s: float) -> bytes:
    """The 3-byte abs-send-time value (6.18 fixed-point seconds of NTP time, wrapping at 64 s)."""
    return (int((unix_s + NTP_EPOCH_OFFSET_S) * 262144) & 0xFFFFFF).to_bytes(3, "big")


def starts_keyframe(codec: str, payload: bytes, depayloaded: bytes, new_timestamp: bool) -> bool:
    """True if this RTP packet is the first packet of a keyframe (a subscriber may start here).

    VP8 (RFC 7741): the descriptor's S bit with partition index 0, and the frame tag's P bit 0
    in the payload that follows. H.264: the first packet of a new timestamp whose NAL units
    (depayloaded to Annex-B by aiortc) hold an IDR slice or an SPS. Audio: every packet.
    """
    if codec == "VP8":
        if not payload or (payload[0] & 0x17) != 0x10 or not depayloaded:
            return False
        return (depayloaded[0] & 0x01) == 0
    if codec == "H264":
        if not new_timestamp:
            return False
        from .keyframes import is_keyframe

        return is_keyframe("H264", depayloaded)
    return True


class SequenceRewriter:
    """Maps a producer's sequence numbers onto one subscriber's continuous sequence.

    `start(seq)` (at a keyframe, after a pause) continues the subscriber's sequence after the
    last number it was sent; `map(seq)` returns the subscriber's number, or None for a packet
    that cannot be placed (older than the last start or drop, or a duplicate of the newest);
    `drop(seq)` removes a newer packet from the subscriber's sequence (the following packets
    move down by one, closing the gap). 16-bit arithmetic, wrap-around included.
    """

    __slots__ = ("_floor", "_high", "_offset", "next_out", "started")

    def __init__(self, first_out: int) -> None:
        self._offset = 0
        self._high = 0
        self._floor = 0
        self.next_out = first_out & _U16
        self.started = False

    def start(self, seq: int) -> None:
        """Begin (again) at `seq`: it gets the next number of the subscriber's sequence."""
        self._offset = (self.next_out - seq) & _U16
        self._high = (seq - 1) & _U16
        self._floor = seq
        self.started = True

    def map(self, seq: int) -> int | None:
        """The subscriber's sequence number for producer packet `seq`, or None (not forwarded).

        Never started (audio, which needs no keyframe): the first packet mapped is the start.
        Measured: without it a subscriber's reference was 0, so one that arrived when the
        publisher's numbers were 32768 or more (half the 16-bit range ahead) was sent none of
        its audio until they wrapped, up to 11 minutes: an expert joining a consultation some
        minutes in heard nobody, the later the likelier."""
        if not self.started:
            self.start(seq)
        d = (seq - self._high) & _U16
        if d == 0:
            return None
        if d < _HALF:
            self._high = seq
            out = (seq + self._offset) & _U16
            self.next_out = (out + 1) & _U16
            return out
        if ((seq - self._floor) & _U16) >= _HALF:
            return None  # from before the last start/drop: its number is taken
        return (seq + self._offset) & _U16

    def drop(self, seq: int) -> None:
        """Leave producer packet `seq` out of the subscriber's sequence, without a gap."""
        if not self.started:
            return  # nothing sent yet: there is no gap to close
        d = (seq - self._high) & _U16
        if d == 0 or d >= _HALF:
            return  # late or duplicate: it never had a number of its own
        self._high = seq
        self._offset = (self._offset - 1) & _U16
        self._floor = (seq + 1) & _U16


class HeaderWriter:
    """Writes one subscriber's RTP header: its SSRC, payload type and header extension ids.

    `ext_ids` maps extension URIs to the ids this subscriber negotiated; mid, abs-send-time
    and audio level are written (one-byte form, RFC 8285), others are left out.
    """

    __slots__ = (
        "_abs",
        "_b0",
        "_ext_head",
        "_ext_head_level",
        "_ext_pad",
        "_ext_pad_level",
        "_level_id",
        "_pack_level",
        "_pack_plain",
        "_prefix",
        "_prefix_level",
        "length",
        "length_level",
        "payload_type",
        "ssrc",
    )

    def __init__(self, ssrc: int, payload_type: int, mid: str | None,
                 ext_ids: dict[str, int]) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        mid_id = ext_ids.get(URI_MID)
        abs_id = ext_ids.get(URI_ABS_SEND_TIME)
        level_id = ext_ids.get(URI_AUDIO_LEVEL)
        fixed = b""
        if mid_id and mid:
            raw = mid.encode()
            fixed += bytes([(mid_id << 4) | (len(raw) - 1)]) + raw
        self._abs = abs_id is not None and abs_id > 0
        if self._abs:
            fixed += bytes([(abs_id << 4) | 2])  # type: ignore[operator]  # value follows per packet
        self._level_id = level_id or 0
        size = len(fixed) + (3 if self._abs else 0)
        self._ext_head, self._ext_pad = self._block(fixed, size)
        self._ext_head_level, self._ext_pad_level = self._block(fixed, size + 2)
        self._b0 = 0x90 if (size or self._level_id) else 0x80
        # write_into: the whole header in one struct call; what is the same for every packet
        # (extension block head, mid, padding) is one constant field
        self._prefix = self._ext_head if self._b0 == 0x90 else b""
        self._prefix_level = self._ext_head_level
        tail = "3s" if self._abs else ""
        self._pack_plain = Struct(f"!BBHII{len(self._prefix)}s{tail}{len(self._ext_pad)}x")
        self._pack_level = Struct(f"!BBHII{len(self._prefix_level)}s{tail}BB{len(self._ext_pad_level)}x")
        self.length = self._pack_plain.size  # header bytes of a packet without audio level
        self.length_level = self._pack_level.size if self._level_id else self.length

    @staticmethod
    def _block(fixed: bytes, size: int) -> tuple[bytes, bytes]:
        words = (size + 3) // 4
        return b"\xbe\xde" + words.to_bytes(2, "big") + fixed, b"\x00" * (4 * words - size)

    def header(self, seq: int, timestamp: int, marker: int, abs3: bytes,
               level: tuple[bool, int] | None, payload_type: int | None = None,
               ssrc: int | None = None) -> bytes:
        """Header bytes (extensions included) for one packet to this subscriber."""
        b1 = (marker << 7) | (self.payload_type if payload_type is None else payload_type)
        fixed = _HEADER.pack(self._b0, b1, seq, timestamp, self.ssrc if ssrc is None else ssrc)
        if self._b0 == 0x80:
            return fixed
        if level is not None and self._level_id:
            tail = abs3 if self._abs else b""
            element = bytes([self._level_id << 4, (0x80 if level[0] else 0) | level[1]])
            return fixed + self._ext_head_level + tail + element + self._ext_pad_level
        if self._abs:
            return fixed + self._ext_head + abs3 + self._ext_pad
        return fixed + self._ext_head + self._ext_pad

    def write_into(self, buf: bytearray, offset: int, seq: int, timestamp: int, marker: int,
                   abs3: bytes, level: tuple[bool, int] | None) -> int:
        """`header(...)` written into `buf` at `offset`; returns its length (`length`, or
        `length_level` with an audio level)."""
        b1 = (marker << 7) | self.payload_type
        if level is not None and self._level_id:
            v = (0x80 if level[0] else 0) | level[1]
            if self._abs:
                self._pack_level.pack_into(buf, offset, self._b0, b1, seq, timestamp, self.ssrc,
                                           self._prefix_level, abs3, self._level_id << 4, v)
            else:
                self._pack_level.pack_into(buf, offset, self._b0, b1, seq, timestamp, self.ssrc,
                                           self._prefix_level, self._level_id << 4, v)
            return self.length_level
        if self._abs:
            self._pack_plain.pack_into(buf, offset, self._b0, b1, seq, timestamp, self.ssrc,
                                       self._prefix, abs3)
        else:
            self._pack_plain.pack_into(buf, offset, self._b0, b1, seq, timestamp, self.ssrc,
                                       self._prefix)
        return self.length
