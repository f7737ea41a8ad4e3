"""SRTP protection of forwarded packets without pylibsrtp's per-call wrapper.

Why (issue 17): every forwarded packet is protected once per subscriber, and pylibsrtp's
`Session.protect` allocates an `int *` and runs its generic `__process` each time: ~3.2 µs
per 1.2 kB packet here, of which libsrtp itself (AES-GCM with AES-NI) is ~2.2. `protector()`
calls the same `srtp_protect` of the same session with a buffer allocated once. Pinned to
pylibsrtp 1.0 internals (`Session._srtp`, `pylibsrtp._binding`); with anything else it returns
`Session.protect` itself, and `tests/media_server/test_srtp.py` checks both give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (buffer pointer, offset, length) -> protected length: a packet protected where it lies
InPlaceProtect = Callable[[Any, int, int], int]

_CAPACITY = 1500  # pylibsrtp's own buffer size
_TRAILER = 16 + 128  # SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN, room libsrtp may append
TRAILER = _TRAILER


def protector(session: Any) -> Callable[[bytes], bytes]:
    """A function protecting RTP packets with `session` (a pylibsrtp Session), as its `protect`."""
    try:
        from pylibsrtp import ERRORS, Error
        from pylibsrtp._binding import ffi, lib

        ctx = session._srtp[0]
    except (ImportError, AttributeError, TypeError):
        return session.protect  # type: ignore[no-any-return]
    cdata = ffi.new("char[]", _CAPACITY)
    view = ffi.buffer(cdata)
    length = ffi.new("int *")
    protect = lib.srtp_protect
    fallback = session.protect
    limit = _CAPACITY - _TRAILER

    def fast_protect(data: bytes) -> bytes:
        n = len(data)
        if n > limit or type(data) is not bytes:
            return fallback(data)  # type: ignore[no-any-return]  # its own errors
        view[0:n] = data
        length[0] = n
        rc = protect(ctx, cdata, length)
        if rc:
            raise Error(ERRORS[rc] if 0 <= rc < len(ERRORS) else f"libsrtp error {rc}")
        return view[0 : length[0]]  # type: ignore[no-any-return]

    fast_protect.session = session  # type: ignore[attr-defined]  # keeps the srtp_t alive
    return fast_protect


def buffer_pointer(buf: bytearray) -> Any | None:
    """A C pointer to `buf` for `in_place_protector` (None without pylibsrtp's cffi binding).

    `buf` must keep its size while the pointer is in use (a bytearray with an exported
    buffer refuses to resize)."""
    try:
        from pylibsrtp._binding import ffi
    except ImportError:
        return None
    return ffi.from_buffer(buf)


def in_place_protector(session: Any) -> InPlaceProtect | None:
    """`protect(pointer, offset, n)`: SRTP-protect the `n`-byte RTP packet at `offset` of the
    buffer behind `pointer` (from `buffer_pointer`) where it lies, and return its protected
    length; TRAILER bytes after it must be free. None where pylibsrtp's internals differ.

    Why (issue 17, third pass): the forwarder writes each subscriber's header and the payload
    straight into its send buffer (`batching.SendBatcher.reserve`), so the packet is protected
    there and sent from there: no bytes object per header, per packet, per protected packet,
    and no join for the GSO send. Same `srtp_protect` call, same bytes
    (`tests/media_server/test_srtp.py`)."""
    parts = in_place_parts(session)
    if parts is None:
        return None
    ctx, length, protect = parts

    def protect_at(pointer: Any, offset: int, n: int) -> int:
        length[0] = n
        rc = protect(ctx, pointer + offset, length)
        if rc:
            raise srtp_error(rc)
        return length[0]  # type: ignore[no-any-return]

    protect_at.session = session  # type: ignore[attr-defined]  # keeps the srtp_t alive
    return protect_at


def in_place_parts(session: Any) -> tuple[Any, Any, Callable[[Any, Any, Any], int]] | None:
    """(srtp_t, an `int *` of its own, libsrtp's `srtp_protect`) for `session`, or None: what
    `in_place_protector` calls, for a loop that calls it itself (`ForwardTrack.forward_entries`:
    one Python call less per packet and subscriber). The caller keeps `session` alive."""
    try:
        from pylibsrtp._binding import ffi, lib

        ctx = session._srtp[0]
    except (ImportError, AttributeError, TypeError):
        return None
    return ctx, ffi.new("int *"), lib.srtp_protect


def srtp_error(rc: int) -> Exception:
    """pylibsrtp's exception for libsrtp status `rc`."""
    from pylibsrtp import ERRORS, Error

    return Error(ERRORS[rc] if 0 <= rc < len(ERRORS) else f"libsrtp error {rc}")
