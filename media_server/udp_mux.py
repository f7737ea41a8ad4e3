"""One UDP port for every WebRTC peer (ICE/UDP mux), as mediasoup's WebRtcServer, LiveKit's
`rtc.udp_port` and pion's UDPMux do.

Why (issue 17): a hospital firewall opens one UDP port, not a range; and a socket (with its
descriptor, kernel buffers and asyncio reader) per subscriber made the 1x100 set-up fragile.
With a mux every aioice connection's host candidate is the same `address:port`, and:

- a STUN request is routed by the local ufrag of its USERNAME (`local:remote`) to the
  connection that owns it, and only if its MESSAGE-INTEGRITY checks with that connection's
  password; the request's source address is then bound to that connection;
- a STUN response goes to the connection whose transaction it answers (the mux notes the
  transaction id of each request a connection sends: 96 random bits only the addressee has
  seen), which also binds its source address;
- everything else (DTLS 20-63, SRTP/SRTCP 128-191, RFC 7983) is routed by source address
  alone; a datagram from an address no authenticated check came from is dropped.

A connection is told apart by the remote address once checked, so two connections from one
address and port (another SFU on its own shared port) cannot share the mux: cluster
upstreams (`Sfu.open_upstream`) keep a socket of their own.

Bad input (garbage, unknown ufrag, failed integrity, media from a spoofed address) is dropped
and counted (`UdpMux.dropped`), with one log line per reason per port; it reaches no
connection. A spoofer who does not know a connection's ICE password (sent over signaling, TLS)
cannot bind an address to it.

Seam into aioice 0.13 (pinned with aiortc 1.16): inside `serving(muxes)` (entered around
`setLocalDescription()`, where aiortc gathers) `Connection.get_component_candidates` gives the
connection, instead of one socket per host address, one `StunProtocol` per mux whose transport
is a `_MuxTransport` (a view of the shared socket); TURN candidates still come from aioice.
The protocol is aioice's own class, so aioice (checks, consent, close) and our forwarder
(`forwarding.ForwardTrack._bind`, `batching.SendBatcher`) use it as before. `install()` checks
the version and the hooks; `tests/media_server/test_udp_mux.py` checks the seam.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import errno
import itertools
import logging
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import aioice
import aioice.ice
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

logger = logging.getLogger(__name__)

SUPPORTED_AIOICE = ("0.13.",)
# every peer's datagrams arrive in one kernel buffer (a socket per peer had 4 MiB each): a
# keyframe from each of a few publishers while the loop is busy must fit
RECEIVE_BUFFER_BYTES = 16 << 20
SEND_BUFFER_BYTES = 32 << 20  # a keyframe to every subscriber (7,000 datagrams at 1x100) leaves through it
_SO_RCVBUFFORCE, _SO_SNDBUFFORCE = 33, 32  # asm-generic/socket.h; not exported by Python
READ_BATCH = 512  # datagrams read per wake-up at most (then other work runs, and reading goes on)
MAX_TRANSACTIONS = 8192  # STUN transactions of ours remembered for routing answers (~15 s of checks at 1,000 peers)

_MUXES: contextvars.ContextVar[tuple[UdpMux, ...]] = contextvars.ContextVar(
    "medstream_udp_muxes", default=())
_ORIGINAL_CANDIDATES = aioice.ice.Connection.get_component_candidates


class _MuxTransport:
    """One connection's view of the shared socket: what aioice's StunProtocol and our
    SendBatcher use of an asyncio DatagramTransport. Closing it detaches the connection from
    the mux (the shared socket stays open)."""

    __slots__ = ("_closing", "_mux", "_protocol", "shared_socket")

    def __init__(self, mux: UdpMux, protocol: aioice.ice.StunProtocol) -> None:
        self._mux = mux
        self._protocol = protocol
        self._closing = False
        self.shared_socket = mux.socket  # SendBatcher: send on it directly, no descriptor of its own

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if not self._closing:
            if data[:2] == b"\x00\x01":  # a Binding request (check, consent): its answer comes back here
                self._mux.expect(data[8:20], self._protocol)
            self._mux.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._mux.sockname
        transport = self._mux.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def get_write_buffer_size(self) -> int:
        transport = self._mux.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def is_closing(self) -> bool:
        return self._closing or self._mux.transport is None

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._mux.detach(self._protocol)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    abort = close


class _Endpoint:
    """The shared socket on the event loop: reads until it is empty on each wake-up (at most
    READ_BATCH datagrams), sends at once, queues what the kernel refuses (EAGAIN).

    Why not the loop's own UDP transport: uvloop (libuv) reads 32 datagrams per socket and loop
    iteration, asyncio one; with every peer on one socket, a publisher's packets would wait in
    one queue behind every subscriber's RTCP, 32 per iteration, and iterations are a paced
    fan-out slice (~2-4 ms) apart. With a socket per peer the publisher had its own 32.
    """

    def __init__(self, mux: UdpMux, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._mux = mux
        self._sock = sock
        self._loop = loop
        self._buffer = bytearray(1 << 16)
        self._view = memoryview(self._buffer)
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._queued = 0
        self._closed = False
        loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        receive, view, deliver = self._sock.recvfrom_into, self._view, self._mux.datagram_received
        for _ in range(READ_BATCH):
            try:
                n, addr = receive(self._buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier send: read on
                self._mux.error_received(exc)
                continue
            try:
                deliver(bytes(view[:n]), addr)
            except Exception:  # one peer's datagram must not stop the others'
                logger.exception("UDP mux: handling a datagram from %s failed", addr)

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self._closed:
            return
        if not self._queue:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._sock.fileno(), self._write)
            except OSError as exc:
                self._mux.error_received(exc)
                return
        self._queue.append((bytes(data), addr))
        self._queued += len(data)

    def _write(self) -> None:
        queue = self._queue
        while queue:
            data, addr = queue[0]
            try:
                self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._mux.error_received(exc)
            queue.popleft()
            self._queued -= len(data)
        self._loop.remove_writer(self._sock.fileno())

    def get_write_buffer_size(self) -> int:
        return self._queued

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        fd = self._sock.fileno()
        self._loop.remove_reader(fd)
        if self._queue:
            self._loop.remove_writer(fd)
        self._queue.clear()
        self._queued = 0
        self._sock.close()
        self._loop.call_soon(self._mux.connection_lost, None)


class UdpMux(asyncio.DatagramProtocol):
    """The shared socket of one host address and port, and its routing tables.

    The socket is bound in the constructor (a port in use fails at start-up, with OSError);
    `start()` hands it to the event loop; `close()` detaches every connection.
    """

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for force, option, size in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES),
                                        (_SO_SNDBUFFORCE, socket.SO_SNDBUF, SEND_BUFFER_BYTES)):
                try:  # beyond net.core.[rw]mem_max where allowed (CAP_NET_ADMIN), else up to it
                    sock.setsockopt(socket.SOL_SOCKET, force, size)
                except OSError:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, option, size)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            # what `medstream serve` needs to name the failing option (serve.listen_error)
            exc.host, exc.port, exc.option, exc.host_option = host, port, "--udp-port", "--ice-host"  # type: ignore[attr-defined]
            raise
        self.socket = sock
        self.sockname: tuple[str, int] = sock.getsockname()[:2]
        self.transport: _Endpoint | None = None
        self._by_ufrag: dict[str, list[aioice.ice.StunProtocol]] = {}
        self._by_addr: dict[tuple[str, int], aioice.ice.StunProtocol] = {}
        # the fast path's view of _by_addr: (the connection's data_received, its component)
        self._media: dict[tuple[str, int], tuple[Any, int]] = {}
        self._addrs: dict[aioice.ice.StunProtocol, set[tuple[str, int]]] = {}
        self._tids: dict[bytes, aioice.ice.StunProtocol] = {}  # our requests' transaction ids, oldest first
        self.dropped: dict[str, int] = {}
        self.late_responses = 0
        self.moved = 0  # addresses that passed a check for another live connection than before

    @property
    def host(self) -> str:
        return self.sockname[0]

    @property
    def port(self) -> int:
        return self.sockname[1]

    async def start(self) -> None:
        """Start receiving (idempotent)."""
        if self.transport is None:
            self.transport = _Endpoint(self, self.socket, asyncio.get_running_loop())

    def close(self) -> None:
        """Close the socket; the connections still attached see their transport closed."""
        for protocol in list(self._addrs):
            protocol.transport.close()
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
        else:
            self.socket.close()

    # ---- connections --------------------------------------------------------------------------

    def attach(self, connection: aioice.ice.Connection, component: int) -> aioice.ice.StunProtocol:
        """A protocol of `connection` on this port, its host candidate set (gathering)."""
        protocol = aioice.ice.StunProtocol(connection)
        protocol.connection_made(_MuxTransport(self, protocol))  # type: ignore[arg-type]
        host, port = self.sockname
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component,
            transport="udp", priority=candidate_priority(component, "host"),
            host=host, port=port, type="host")
        self._by_ufrag.setdefault(connection.local_username, []).append(protocol)
        self._addrs[protocol] = set()
        return protocol

    def detach(self, protocol: aioice.ice.StunProtocol) -> None:
        """Forget `protocol`: its ufrag and every address bound to it."""
        for addr in self._addrs.pop(protocol, ()):
            if self._by_addr.get(addr) is protocol:
                del self._by_addr[addr]
                del self._media[addr]
        ufrag = protocol.receiver.local_username
        owners = self._by_ufrag.get(ufrag)
        if owners is not None:
            with contextlib.suppress(ValueError):
                owners.remove(protocol)
            if not owners:
                del self._by_ufrag[ufrag]

    @property
    def connections(self) -> int:
        return len(self._addrs)

    def expect(self, tid: bytes, protocol: aioice.ice.StunProtocol) -> None:
        """`protocol` sent a STUN request with transaction id `tid` (answers are routed by it)."""
        tids = self._tids
        tids[tid] = protocol
        if len(tids) > MAX_TRANSACTIONS:  # answered or timed out long ago: forget the oldest
            for old in list(itertools.islice(tids, len(tids) - MAX_TRANSACTIONS // 2)):
                del tids[old]

    def _bind(self, addr: tuple[str, int], protocol: aioice.ice.StunProtocol) -> None:
        previous = self._by_addr.get(addr)
        if previous is protocol:
            return
        if previous is not None:  # the address now checks for another connection (port reused)
            self._addrs.get(previous, set()).discard(addr)
            self.moved += 1
            if self.moved == 1:
                logger.info("UDP mux %s:%d: %s now checks for another connection (a port reused, or "
                            "two connections from one address: only the newest gets its media)",
                            self.sockname[0], self.sockname[1], addr)
        self._by_addr[addr] = protocol
        self._media[addr] = (protocol.receiver.data_received, protocol.local_candidate.component)
        self._addrs[protocol].add(addr)

    # ---- datagrams ------------------------------------------------------------------------------

    def sendto(self, data: bytes, addr: Any) -> None:
        transport = self.transport
        if transport is not None:
            transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:  # type: ignore[override]
        if len(addr) > 2:
            addr = (addr[0], addr[1])
        first = data[0] if data else 256
        if 128 <= first < 192 or 20 <= first < 64:  # SRTP/SRTCP, DTLS: by source address
            route = self._media.get(addr)
            if route is None:
                self._drop("media from an address no ICE check came from", addr)
                return
            route[0](data, route[1])
            return
        if first >= 4:
            self._drop("not STUN, DTLS or RTP", addr)
            return
        try:
            message = stun.parse_message(data)
        except ValueError:
            self._drop("malformed STUN", addr)
            return
        if message.message_class == stun.Class.REQUEST:
            self._request(message, addr)
        elif message.message_class in (stun.Class.RESPONSE, stun.Class.ERROR):
            self._response(message, addr)
        else:
            self._drop("STUN indication", addr)

    def _request(self, message: stun.Message, addr: tuple[str, int]) -> None:
        username = message.attributes.get("USERNAME")
        if not isinstance(username, str) or ":" not in username:
            self._drop("STUN request without USERNAME", addr)
            return
        owners = self._by_ufrag.get(username.partition(":")[0])
        if not owners:
            self._drop("STUN request for an unknown ufrag", addr)
            return
        for protocol in owners:  # several only if two connections drew the same 4-character ufrag
            connection = protocol.receiver
            if message.check_message_integrity(connection.local_password.encode("utf8")):
                self._bind(addr, protocol)
                connection.request_received(message, addr, protocol)
                return
        self._drop("STUN request failing MESSAGE-INTEGRITY", addr)

    def _response(self, message: stun.Message, addr: tuple[str, int]) -> None:
        tid = message.transaction_id
        protocol = self._tids.get(tid)
        if protocol is not None and tid not in protocol.transactions:
            self.late_responses += 1  # an answer to a retransmission of a check already done: harmless
            return
        if protocol is None:
            self._drop("STUN response to no transaction of ours", addr)
            return
        self._bind(addr, protocol)
        protocol.transactions[tid].response_received(message, addr)

    def error_received(self, exc: Exception) -> None:
        if getattr(exc, "errno", None) != errno.ECONNREFUSED:  # a peer gone: ICE consent notices
            self._drop(f"socket error {exc}", None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for protocol in list(self._addrs):
            protocol.transport.close()

    def _drop(self, reason: str, addr: Any) -> None:
        count = self.dropped.get(reason, 0)
        self.dropped[reason] = count + 1
        if not count:  # one line per reason and port; the counters tell the rest
            logger.info("UDP mux %s:%d drops %s (from %s; a peer that left sends a few of these too); "
                        "further ones are only counted",
                        self.sockname[0], self.sockname[1], reason, addr)


async def _get_component_candidates(self: aioice.ice.Connection, component: int,
                                    addresses: list[str], timeout: int = 5) -> list[Candidate]:
    """aioice's gatherer, with the host candidates on the muxes of `serving()` when inside it."""
    muxes = _MUXES.get()
    if not muxes:
        return await _ORIGINAL_CANDIDATES(self, component, addresses, timeout)
    protocols = [mux.attach(self, component) for mux in muxes]
    self._protocols += protocols
    candidates = [p.local_candidate for p in protocols]
    # server-reflexive and relayed candidates: aioice's own (no host sockets of its own)
    return candidates + await _ORIGINAL_CANDIDATES(self, component, [], timeout)


def install() -> None:
    """Install the gathering hook (idempotent). Raises RuntimeError on an aioice we do not know."""
    version = getattr(aioice, "__version__", "")
    if not version.startswith(SUPPORTED_AIOICE):
        raise RuntimeError(f"the UDP mux is written against aioice {SUPPORTED_AIOICE}, found {version!r}")
    current = aioice.ice.Connection.get_component_candidates
    if current is _get_component_candidates:
        return
    if current is not _ORIGINAL_CANDIDATES:
        raise RuntimeError(f"aioice.ice.Connection.get_component_candidates was replaced: {current!r}")
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


@contextlib.contextmanager
def serving(muxes: Sequence[UdpMux]) -> Iterator[None]:
    """Within this block, ICE gathering puts host candidates on `muxes` (empty: aioice's own
    sockets). Enter it around `setLocalDescription()`, with `ice.host_addresses`."""
    install()
    token = _MUXES.set(tuple(muxes))
    try:
        yield
    finally:
        _MUXES.reset(token)
