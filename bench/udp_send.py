"""One loop pass's datagrams to S subscribers: a socket each vs one shared socket vs sendmmsg.

    python -m bench.udp_send --subscribers 100 --packets 1,4,70 --json bench/results/udp_send.json

Why (issue 17): with every subscriber on one shared UDP socket (`media_server.udp_mux`), the
datagrams a pass produced for all of them could leave in one `sendmmsg()` instead of one GSO
`sendmsg()` per subscriber (what `batching.SendBatcher` does). Python's socket module has no
sendmmsg, so `MultiSender` below binds libc's through cffi (pylibsrtp's dependency) in ABI
mode, nothing compiled; its C structures live in bytearrays written by `struct.pack_into`.
Modes, each sending `packets` datagrams of 1,150 bytes to each of S receiving sockets on
127.0.0.1 (drained between passes, outside the measurement):
- `own-sockets`: a socket per subscriber, one GSO sendmsg each (a socket per peer, as before);
- `shared-sendmsg`: one socket, one GSO sendmsg per subscriber (the mux as built);
- `shared-sendmmsg`: one socket, one sendmmsg for every subscriber of the pass.
Figures: user and system CPU of this thread (getrusage RUSAGE_THREAD) per datagram and per
subscriber-pass, medians over rounds; modes interleaved. Prints and writes JSON; never asserts.
On loopback the kernel delivers each datagram to its receiver inside the sender's system call,
so system time includes the receivers' side as well.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

UDP_SEGMENT = 103  # linux/udp.h
SOL_UDP = 17
_CDEF = """
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr { void *msg_name; uint32_t msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
                void *msg_control; size_t msg_controllen; int msg_flags; };
struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
struct gso_cmsg { size_t len; int level; int type; uint16_t segment; uint16_t pad[3]; };
int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
"""
_LIB: Any = None
_FFI: Any = None
_MSG_DONTWAIT = 0x40


def _load() -> bool:
    global _LIB, _FFI
    if _LIB is not None:
        return True
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8:
        return False
    try:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        lib = ffi.dlopen(None)
        lib.sendmmsg  # noqa: B018 (raises AttributeError without it)
    except Exception:
        return False
    _FFI, _LIB = ffi, lib
    return True


def available() -> bool:
    """Whether sendmmsg could be bound (Linux, 64-bit, cffi)."""
    return _load()


def address_of(buffer: bytearray) -> int:
    """The address of `buffer`'s bytes (it must keep its size while used)."""
    assert _load()
    return int(_FFI.cast("uintptr_t", _FFI.from_buffer(buffer)))


_MSGHDR = struct.Struct("=QI4xQQQQi4xI4x")  # struct mmsghdr (x86-64/aarch64 LP64 layout), 64 bytes
_IOVEC = struct.Struct("=QQ")
_GSO_CMSG = struct.Struct("=QiiH6x")  # cmsghdr + u16 segment size, CMSG_SPACE(2) = 24 bytes
_NAME_BYTES = 28  # room for a sockaddr_in6


class MultiSender:
    """A batch of messages for one socket: `add()` them, then `send(fd)`.

    Each message is `length` bytes at address `base + offset` to `addr`; with `segment` > 0 the
    kernel cuts it into datagrams of `segment` bytes (UDP GSO, the last may be shorter). The C
    structures live in bytearrays written with `struct.pack_into` (one C call each, cheaper than
    cffi attribute access); their addresses are taken once.
    """

    def __init__(self, capacity: int = 1024, addresses: int = 4096) -> None:
        if not _load():
            raise RuntimeError("sendmmsg is not available here")
        self.capacity = capacity
        self._msgs = bytearray(_MSGHDR.size * capacity)
        self._iov = bytearray(_IOVEC.size * capacity)
        self._cmsg = bytearray(_GSO_CMSG.size * capacity)
        self._names = bytearray(_NAME_BYTES * addresses)
        self._msgs_ptr = _FFI.from_buffer("struct mmsghdr[]", self._msgs)
        self._iov_at = address_of(self._iov)
        self._cmsg_at = address_of(self._cmsg)
        self._names_at = address_of(self._names)
        self._name_slots = addresses
        self._name_of: dict[Any, tuple[int, int]] = {}
        self.count = 0

    def _name(self, addr: Any) -> tuple[int, int]:
        name = self._name_of.get(addr)
        if name is None:
            host, port = addr[0], addr[1]
            if ":" in host:
                raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + \
                    socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", 0)
            else:
                raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + \
                    socket.inet_aton(host) + bytes(8)
            if len(self._name_of) >= self._name_slots:
                self._name_of.clear()  # (nothing queued refers to them: callers send before this)
            slot = len(self._name_of) * _NAME_BYTES
            self._names[slot : slot + len(raw)] = raw
            name = self._name_of[addr] = (self._names_at + slot, len(raw))
        return name

    def add(self, addr: Any, base: int, offset: int, length: int, segment: int) -> bool:
        """Queue one message; False if the batch is full (send it first)."""
        i = self.count
        if i >= self.capacity:
            return False
        name, namelen = self._name_of.get(addr) or self._name(addr)
        _IOVEC.pack_into(self._iov, 16 * i, base + offset, length)
        if segment:
            _GSO_CMSG.pack_into(self._cmsg, 24 * i, 18, SOL_UDP, UDP_SEGMENT, segment)
            _MSGHDR.pack_into(self._msgs, 64 * i, name, namelen, self._iov_at + 16 * i, 1,
                              self._cmsg_at + 24 * i, 24, 0, 0)
        else:
            _MSGHDR.pack_into(self._msgs, 64 * i, name, namelen, self._iov_at + 16 * i, 1, 0, 0, 0, 0)
        self.count = i + 1
        return True

    def send(self, fd: int, start: int = 0) -> tuple[int, int]:
        """sendmmsg the queued messages from `start`: (messages sent, errno or 0). Does not
        clear the batch (`clear()`): the caller decides what to do with the unsent ones."""
        n = self.count - start
        if n <= 0:
            return 0, 0
        sent = _LIB.sendmmsg(fd, self._msgs_ptr + start, n, _MSG_DONTWAIT)
        if sent < 0:
            return 0, _FFI.errno
        return sent, 0

    def clear(self) -> None:
        self.count = 0


# --------------------------------------------------------------------------- the benchmark

PACKET_BYTES = 1150


def _rusage() -> tuple[float, float]:
    import resource

    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime, r.ru_stime


def run(subscribers: int, packets: int, rounds: int) -> dict[str, Any]:
    import os
    import statistics

    rx = []
    for _ in range(subscribers):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        r.setblocking(False)
        rx.append(r)
    addrs = [r.getsockname() for r in rx]

    def sender() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setblocking(False)
        return s

    own = [sender() for _ in range(subscribers)]
    shared = sender()
    bufs = [bytearray(os.urandom(packets * PACKET_BYTES)) for _ in range(subscribers)]
    bases = [address_of(b) for b in bufs]
    gso = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", PACKET_BYTES))]
    multi = MultiSender(max(1024, subscribers))

    per_run = min(64, 65000 // PACKET_BYTES)  # GSO limits, as batching.runs
    spans = [(i * PACKET_BYTES, min(packets, i + per_run) * PACKET_BYTES) for i in range(0, packets, per_run)]
    views = [[memoryview(b)[x:y] for x, y in spans] for b in bufs]

    def own_sockets() -> None:
        for s, vs, a in zip(own, views, addrs, strict=True):
            for v in vs:
                if len(v) == PACKET_BYTES:
                    s.sendto(v, a)
                else:
                    s.sendmsg([v], gso, 0, a)

    def shared_sendmsg() -> None:
        for vs, a in zip(views, addrs, strict=True):
            for v in vs:
                if len(v) == PACKET_BYTES:
                    shared.sendto(v, a)
                else:
                    shared.sendmsg([v], gso, 0, a)

    def shared_sendmmsg() -> None:
        multi.clear()
        for base, a in zip(bases, addrs, strict=True):
            for x, y in spans:
                multi.add(a, base, x, y - x, PACKET_BYTES if y - x > PACKET_BYTES else 0)
        sent, err = multi.send(shared.fileno())
        if sent != multi.count:
            raise OSError(err, f"sendmmsg sent {sent} of {multi.count}")

    def drain() -> None:
        for r in rx:
            try:
                while True:
                    r.recv(4096)
            except BlockingIOError:
                pass

    modes = {"own-sockets": own_sockets, "shared-sendmsg": shared_sendmsg, "shared-sendmmsg": shared_sendmmsg}
    samples: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
    for _ in range(rounds):
        for name, fn in modes.items():  # interleaved: the machine's other load hits every mode alike
            u0, s0 = _rusage()
            t0 = time.thread_time()
            fn()
            t1 = time.thread_time()
            u1, s1 = _rusage()
            drain()
            samples[name].append((u1 - u0, s1 - s0, t1 - t0))
    out: dict[str, Any] = {"subscribers": subscribers, "packets": packets, "rounds": rounds}
    for name, xs in samples.items():
        user = sum(u for u, _, _ in xs) / rounds  # getrusage ticks coarsely: means, not medians
        system = sum(s for _, s, _ in xs) / rounds
        total = statistics.median(t for _, _, t in xs)  # clock_gettime(THREAD_CPUTIME): fine-grained
        out[name] = {"user_us_per_subscriber": round(1e6 * user / subscribers, 2),
                     "sys_us_per_subscriber": round(1e6 * system / subscribers, 2),
                     "cpu_us_per_subscriber_median": round(1e6 * total / subscribers, 2),
                     "cpu_us_per_datagram_median": round(1e6 * total / (subscribers * packets), 2)}
    for s in [*own, shared, *rx]:
        s.close()
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import os

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--packets", default="1,4,70", help="datagrams per subscriber and pass, comma-separated")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args(argv)
    if not available():
        print("sendmmsg through cffi is not available here (Linux, 64-bit, cffi)")
        return 0
    results = []
    for n in (int(x) for x in args.packets.split(",")):
        r = run(args.subscribers, n, max(20, args.rounds if n < 20 else args.rounds // 5))
        results.append(r)
        print(f"{args.subscribers} subscribers x {n} datagram(s) per pass:")
        for mode in ("own-sockets", "shared-sendmsg", "shared-sendmmsg"):
            f = r[mode]
            print(f"  {mode:16s} user {f['user_us_per_subscriber']:6.2f} us + sys {f['sys_us_per_subscriber']:6.2f}"
                  f" us (means); median {f['cpu_us_per_subscriber_median']:.2f} us per subscriber-pass,"
                  f" {f['cpu_us_per_datagram_median']:.2f} per datagram")
    load = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "results": results}, indent=1))
    print(f"load average during the run: {load[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
