"""The forwarder's SRTP protection gives exactly pylibsrtp's bytes, errors included."""

from __future__ import annotations

import os

import pytest
from pylibsrtp import Error, Policy, Session

from media_server.srtp import protector


def _pair() -> tuple[Session, Session, Session]:
    key = os.urandom(44)
    profile = Policy.SRTP_PROFILE_AEAD_AES_256_GCM

    def session(direction: int) -> Session:
        return Session(Policy(key=key, ssrc_type=direction, srtp_profile=profile))

    return (session(Policy.SSRC_ANY_OUTBOUND), session(Policy.SSRC_ANY_OUTBOUND),
            session(Policy.SSRC_ANY_INBOUND))


def _rtp(seq: int, size: int) -> bytes:
    return bytes([0x80, 0x60]) + seq.to_bytes(2, "big") + (seq * 3000).to_bytes(4, "big") + \
        b"\x00\x00\x12\x34" + os.urandom(size - 12)


def test_same_bytes_as_pylibsrtp_and_the_peer_decrypts_them() -> None:
    ours, theirs, peer = _pair()
    protect = protector(ours)
    assert protect is not ours.protect  # the fast path is in use (pylibsrtp 1.0 internals)
    for seq, size in ((1, 1200), (2, 60), (3, 1356)):  # 1,356: the largest pylibsrtp takes
        packet = _rtp(seq, size)
        protected = protect(packet)
        assert protected == theirs.protect(packet)
        assert peer.unprotect(protected) == packet
    with pytest.raises(ValueError, match="too long"):
        protect(_rtp(4, 1400))


def test_errors_are_pylibsrtps() -> None:
    ours, _, _ = _pair()
    protect = protector(ours)
    packet = _rtp(7, 200)
    protect(packet)
    with pytest.raises(Error, match="replay"):
        protect(packet)  # the same index twice
    with pytest.raises(TypeError):
        protect(bytearray(packet))  # type: ignore[arg-type]


def test_unknown_sessions_get_their_own_protect() -> None:
    class Other:
        def protect(self, data: bytes) -> bytes:
            return data[::-1]

    other = Other()
    assert protector(other)(b"ab") == b"ba"


def test_in_place_protection_gives_the_same_bytes() -> None:
    """The forwarder protects each packet where it lies in the subscriber's send buffer."""
    from media_server.srtp import TRAILER, buffer_pointer, in_place_protector

    ours, theirs, peer = _pair()
    protect_at = in_place_protector(ours)
    assert protect_at is not None
    buf = bytearray(4096)
    pointer = buffer_pointer(buf)
    off = 0
    for seq, size in ((1, 1200), (2, 60), (3, 1356)):
        packet = _rtp(seq, size)
        assert off + size + TRAILER <= len(buf)
        buf[off : off + size] = packet
        n = protect_at(pointer, off, size)
        assert bytes(buf[off : off + n]) == theirs.protect(packet)
        assert peer.unprotect(bytes(buf[off : off + n])) == packet
        off += n
    buf[off : off + 200] = _rtp(1, 200)
    with pytest.raises(Error, match="replay"):
        protect_at(pointer, off, 200)  # an index used before: pylibsrtp's error
