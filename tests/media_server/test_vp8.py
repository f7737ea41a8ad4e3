"""The VP8 payload descriptor reader against aiortc's writer and RFC 7741's examples."""

from __future__ import annotations

import itertools

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor

from media_server.vp8 import (
    PictureIdRewriter,
    TemporalLayerFilter,
    Vp8DescriptorError,
    parse_descriptor,
    temporal_layer,
)


@pytest.mark.parametrize("picture_id", [None, 5, 0x7F, 0x80, 0x7FFF])
@pytest.mark.parametrize("tl0", [None, 0, 200])
@pytest.mark.parametrize("tid", [None, (0, 0), (1, 1), (2, 0)])
@pytest.mark.parametrize("keyidx", [None, 17])
def test_reads_what_aiortc_writes(picture_id, tl0, tid, keyidx) -> None:
    written = bytes(VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=picture_id,
                                         tl0picidx=tl0, tid=tid, keyidx=keyidx))
    payload = written + b"\x10\x02\x00"  # a delta frame's first bytes (P bit 1... set below)
    d = parse_descriptor(payload)
    assert d.size == len(written)
    assert d.begins_frame and d.partition_id == 0
    assert d.tl0_pic_idx == tl0
    assert d.key_idx == keyidx
    if tid is None:
        assert d.tid is None and d.temporal_layer == 0 and not d.layer_sync
    else:
        assert (d.tid, d.layer_sync) == (tid[0], bool(tid[1]))
    assert temporal_layer(payload) == (0 if tid is None else tid[0])
    if picture_id is not None:
        # aiortc always writes 15 bits; short ids come back as written
        assert d.picture_id == picture_id


def test_seven_bit_picture_id_and_keyframe_bit() -> None:
    # X=1 S=1 PID=0 | I=1 T=1 | M=0 PictureID=0x55 | TID=2 Y=1 | VP8 header: P=0 (key frame)
    payload = bytes([0x90, 0xA0, 0x55, 0xA0, 0x00, 0x9D, 0x01, 0x2A])
    d = parse_descriptor(payload)
    assert (d.picture_id, d.tid, d.layer_sync, d.size, d.keyframe) == (0x55, 2, True, 4, True)
    assert temporal_layer(payload) == 2
    # not the start of the frame: no keyframe claim even if the byte looks like one
    assert not parse_descriptor(bytes([0x80, 0xA0, 0x55, 0xA0, 0x00])).keyframe
    # no extension: a single-layer stream
    d = parse_descriptor(bytes([0x30, 0x01]))
    assert d.non_reference and d.tid is None and d.size == 1 and not d.keyframe


@pytest.mark.parametrize("payload", [b"", b"\x80", b"\x90\x80", b"\x90\x80\x80", b"\x90\x40", b"\x90\x20"])
def test_truncated_descriptors_are_refused(payload: bytes) -> None:
    with pytest.raises(Vp8DescriptorError):
        parse_descriptor(payload)
    assert temporal_layer(payload) == 0  # the fast path never raises


class _Packet:
    def __init__(self, timestamp: int, tid: int, sync: bool, key: bool = False, start: bool = True) -> None:
        self.timestamp = timestamp
        descr = bytes(VpxPayloadDescriptor(partition_start=int(start), partition_id=0, picture_id=timestamp,
                                           tl0picidx=0, tid=(tid, int(sync))))
        self.payload = descr + (b"\x00" if key else b"\x01") + b"\x00" * 10


def test_temporal_layer_filter_drops_upper_layers_and_climbs_at_sync_frames() -> None:
    from media_server.vp8 import TemporalLayerFilter

    pattern = [(0, True), (2, True), (1, True), (2, False)] * 4  # L1T3 as browsers send it
    gate = TemporalLayerFilter()
    assert all(gate(_Packet(i, *pattern[i])) for i in range(4))  # everything by default
    gate.set_max_layer(0)
    passed = [i for i in range(4, 16) if gate(_Packet(i, *pattern[i]))]
    assert passed == [4, 8, 12] and gate.frames_skipped == 9
    # a frame's later packets follow its first
    assert not gate(_Packet(13, 2, True, start=False))
    gate.set_max_layer(2)  # up one layer at a time, each at a frame with the sync bit
    passed = [i for i in range(16, 32) if gate(_Packet(i, *pattern[i % 16]))]
    assert passed[:3] == [16, 17, 18] or passed[:2] == [16, 18]
    assert passed[-4:] == [28, 29, 30, 31]
    gate.set_max_layer(0)
    gate.set_max_layer(2)
    assert gate(_Packet(40, 0, False, key=True)) and gate.max_layer == 2  # a keyframe: all wanted at once


class _Pkt:
    def __init__(self, payload: bytes, timestamp: int) -> None:
        self.payload, self.timestamp = payload, timestamp


def _l1t3_stream(frames: int, first_pid: int, pid_bits: int = 15) -> list[tuple[int, list[bytes]]]:
    """(timestamp, packets) of an L1T3 stream as a browser sends it: two packets per frame,
    PictureID +1 per frame, TL0PICIDX +1 per base-layer frame, a keyframe first."""
    out = []
    tl0 = 7
    for i in range(frames):
        layer = (0, 2, 1, 2)[i % 4]
        if layer == 0:
            tl0 = (tl0 + 1) % 256
        pid = (first_pid + i) % (1 << pid_bits)
        pid_bytes = bytes([0x80 | pid >> 8, pid & 0xFF]) if pid_bits == 15 else bytes([pid])
        vp8 = b"\x00\x9d\x01\x2a" if i == 0 else b"\x01\x00\x00\x00"  # P=0: keyframe
        first = bytes([0x90, 0xE0]) + pid_bytes + bytes([tl0, layer << 6 | (0x20 if layer else 0)]) + vp8
        rest = bytes([0x80, 0xE0]) + pid_bytes + bytes([tl0, layer << 6]) + b"\x00" * 4
        out.append((3000 * i, [first, rest]))
    return out


@pytest.mark.parametrize("pid_bits", [7, 15])
def test_picture_ids_stay_continuous_over_cut_layers_and_a_pause(pid_bits: int) -> None:
    """What one subscriber gets after upper layers are cut and its video paused and resumed:
    PictureID +1 per frame it got, TL0PICIDX +1 per base frame it got (before: gaps of 1-3 per
    cut frame and tens over a pause, which a receiver reads as lost frames), and a resent
    packet keeps the numbers it was first sent with."""
    stream = _l1t3_stream(300, first_pid=(1 << pid_bits) - 40, pid_bits=pid_bits)  # wraps
    gate, ids = TemporalLayerFilter(), PictureIdRewriter()
    sent: list[bytes] = []
    first_sent: dict[int, bytes] = {}
    for i, (ts, packets) in enumerate(stream):
        if i == 60:
            gate.set_max_layer(0)  # 7.5 fps of 30
        if i == 150:
            gate.set_max_layer(None)
        paused = 200 <= i < 240  # for this subscriber alone; it resumes at a base frame
        for n, payload in enumerate(packets):
            if paused or not gate(_Pkt(payload, ts)):
                ids.dropped(payload)
                continue
            out = ids.rewrite(payload)
            if n == 0:
                sent.append(out)
                first_sent[i] = out
        if i == 241:  # a NACK for an older frame's first packet: the numbers it was sent with
            assert ids.rewrite(stream[120][1][0], resend=True) == first_sent[120]
    descs = [parse_descriptor(p) for p in sent]
    pids = [d.picture_id for d in descs]
    assert all((b - a) % (1 << pid_bits) == 1 for a, b in itertools.pairwise(pids)), pids
    tl0s = [(d.tl0_pic_idx, d.temporal_layer) for d in descs]
    for (a, _), (b, layer) in itertools.pairwise(tl0s):
        assert (b - a) % 256 == (1 if layer == 0 else 0), tl0s
    assert ids.frames_left_out > 100
    # untouched while nothing was left out: the payload itself
    fresh = PictureIdRewriter()
    assert all(fresh.rewrite(p) is p for _, packets in stream[:8] for p in packets)

