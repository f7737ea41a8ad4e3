"""A shaped point-to-point link between two network namespaces, in userspace (no tc netem here).

`python -m tests.support.impaired_link NETNS HOST_IF CLINIC_IF` creates a TUN device HOST_IF in
its own namespace and one named CLINIC_IF inside NETNS (it enters NETNS for that and comes
back: a TUN's file descriptor keeps working from anywhere), prints "ready", then carries every IP
packet from one to the other through an asyncio pipeline per direction:

  rate limit (token bucket, bounded byte queue: tail drop, like a router or `tc tbf`)
  -> random loss -> one-way delay + uniform jitter (order kept, as on a real path)

Settings come as lines on stdin, applied at once: `down rate=200000 queue=6000 loss=0.05
delay=0.15 jitter=0.02` (`down`: towards the clinic, `up`: from it, `both`); `rate=0` means
unlimited. Counters are printed as one JSON line on `stats`; `log` prints, per direction and
SSRC, the fate of every RTP packet (SRTP leaves the header in clear): [sequence number, the
monotonic time it entered the link, "d" delivered | "q" dropped by the full queue | "r" dropped
at random], so a test can tell what the link did from what the endpoints did; a packet the full
queue dropped also carries what filled the queue then ({SSRC or "other": bytes}), so a test can
tell video crowding out audio from a burst of audio alone. Nothing leaves the
two namespaces: the packets only ever go from one TUN to the other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import fcntl
import json
import os
import random
import struct
import sys
from dataclasses import asdict, dataclass
from typing import Any

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000


def open_tun(name: str) -> int:
    """A non-blocking TUN device `name` in the current network namespace (IP packets, no header)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def enter_netns(path: str) -> None:
    """Move this thread (the only one) into the network namespace at `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path}) failed")
    finally:
        os.close(fd)


@dataclass
class Shape:
    """One direction's impairment: bit/s (0: unlimited), queue bytes, loss 0-1, seconds."""

    rate: float = 0.0
    queue: int = 8000
    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0


@dataclass
class Counters:
    packets_in: int = 0
    packets_out: int = 0
    queue_drops: int = 0
    random_drops: int = 0
    kernel_drops: int = 0  # packets the kernel dropped before the link read them (TUN tx queue full)
    since_queue_drop_s: float | None = None  # since the full queue last dropped a packet (None: never)


def rtp_key(packet: bytes) -> tuple[int, int] | None:
    """(SSRC, sequence number) of an IPv4/UDP packet carrying RTP (not RTCP, STUN, DTLS)."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    rtp = (packet[0] & 0x0F) * 4 + 8
    if len(packet) < rtp + 12 or packet[rtp] >> 6 != 2 or 192 <= packet[rtp + 1] <= 223:
        return None
    return (int.from_bytes(packet[rtp + 8:rtp + 12], "big"), int.from_bytes(packet[rtp + 2:rtp + 4], "big"))


class Direction:
    """Carries packets read from one TUN to the other with its `Shape`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, out_fd: int, seed: int) -> None:
        self.shape = Shape()
        self.counters = Counters()
        self._loop = loop
        self._out = out_fd
        self._random = random.Random(seed)
        self._queue: collections.deque[tuple[bytes, list[Any] | None, float]] = collections.deque()
        # (departure, bytes, SSRC or None): what the queue holds now
        self._occupancy: collections.deque[tuple[float, int, int | None]] = collections.deque()
        self.log: dict[int, list[list[Any]]] = {}
        self._queued_bytes = 0
        self.last_queue_drop: float | None = None  # monotonic time of the last packet the full queue dropped
        self._wake = asyncio.Event()
        self._last_due = 0.0
        self._link_free = 0.0
        self._task = loop.create_task(self._drain())

    def receive(self, packet: bytes) -> None:
        self.counters.packets_in += 1
        key = rtp_key(packet)
        record: list[Any] | None = None
        if key is not None:
            record = [key[1], round(self._loop.time(), 4), "d"]
            self.log.setdefault(key[0], []).append(record)
        if self.shape.rate <= 0:
            self._after_rate(packet, record)
            return
        # the queue as the link sees it in real time: a packet occupies it until the link has
        # serialised it (its departure time), whether or not this process got the CPU to
        # write it out yet, so a late wake-up on a loaded machine neither drops what a real
        # link would have carried nor slows the link down
        now = self._loop.time()
        while self._occupancy and self._occupancy[0][0] <= now:
            self._queued_bytes -= self._occupancy.popleft()[1]
        if self._queued_bytes + len(packet) > self.shape.queue:
            self.counters.queue_drops += 1
            self.last_queue_drop = now
            if record is not None:
                record[2] = "q"
                held: dict[str, int] = {}
                for _, size, ssrc in self._occupancy:
                    name = "other" if ssrc is None else str(ssrc)
                    held[name] = held.get(name, 0) + size
                record.append(held)
            return
        departure = max(self._link_free, now) + 8 * len(packet) / self.shape.rate
        self._link_free = departure
        self._occupancy.append((departure, len(packet), None if key is None else key[0]))
        self._queued_bytes += len(packet)
        self._queue.append((packet, record, departure))
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            packet, record, departure = self._queue[0]
            now = self._loop.time()
            if departure > now:
                await asyncio.sleep(departure - now)
            self._queue.popleft()
            self._after_rate(packet, record)

    def _after_rate(self, packet: bytes, record: list[Any] | None) -> None:
        s = self.shape
        if s.loss > 0 and self._random.random() < s.loss:
            self.counters.random_drops += 1
            if record is not None:
                record[2] = "r"
            return
        if s.delay <= 0 and s.jitter <= 0:
            self._send(packet, record)
            return
        now = self._loop.time()
        # strictly after the previous packet: asyncio's timer heap does not keep the order of
        # equal times, and a late wake-up on a loaded machine gave a run of packets the same
        # due time (measured: 7-30 of 300 audio packets one place out of order, which the
        # clinic's receiver dropped as late; the link promises order)
        due = max(now + s.delay + self._random.uniform(-s.jitter, s.jitter), self._last_due + 1e-6)
        self._last_due = due
        self._loop.call_at(due, self._send, packet, record)

    def _send(self, packet: bytes, record: list[Any] | None) -> None:
        try:
            os.write(self._out, packet)
            self.counters.packets_out += 1
        except OSError:  # the device is down or gone: the link drops it
            self.counters.queue_drops += 1
            if record is not None:
                record[2] = "e"


def _tx_dropped(ifname: str) -> int:
    """Packets the kernel could not queue on our TUN (the link process was not reading fast enough)."""
    with open("/proc/self/net/dev") as f:  # this process's namespace (/sys may be another's)
        for line in f:
            name, _, fields = line.partition(":")
            if name.strip() == ifname:
                return int(fields.split()[11])  # transmit: bytes packets errs drop
    return -1


def apply(line: str, down: Direction, up: Direction) -> None:
    """Apply one settings line (`down|up|both key=value ...`)."""
    words = line.split()
    if not words:
        return
    targets = {"down": [down], "up": [up], "both": [down, up]}[words[0]]
    for word in words[1:]:
        key, value = word.split("=", 1)
        for d in targets:
            setattr(d.shape, key, int(value) if key == "queue" else float(value))


def _like_hardware() -> None:
    """Run ahead of the processes under test: a router is not starved by the endpoints' CPU
    load (measured on a loaded 2-core machine, this process's own late wake-ups were what
    overflowed the queue)."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-10)


async def run(netns: str, host_if: str, clinic_if: str) -> None:
    _like_hardware()
    loop = asyncio.get_running_loop()
    host_fd = open_tun(host_if)
    home = f"/proc/{os.getpid()}/ns/net"
    home_fd = os.open(home, os.O_RDONLY)
    enter_netns(f"/var/run/netns/{netns}")
    clinic_fd = open_tun(clinic_if)
    enter_netns(f"/proc/self/fd/{home_fd}")
    os.close(home_fd)
    down = Direction(loop, clinic_fd, seed=1)
    up = Direction(loop, host_fd, seed=2)

    def reader(fd: int, direction: Direction) -> None:
        while True:
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            direction.receive(packet)

    loop.add_reader(host_fd, reader, host_fd, down)
    loop.add_reader(clinic_fd, reader, clinic_fd, up)
    print("ready", flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := (await stdin.readline()).decode():
        if line.strip() == "stats":
            down.counters.kernel_drops = _tx_dropped(host_if)
            for d in (down, up):
                last = d.last_queue_drop
                d.counters.since_queue_drop_s = None if last is None else round(loop.time() - last, 3)
            print(json.dumps({"down": asdict(down.counters), "up": asdict(up.counters)}), flush=True)
        elif line.strip() == "log":
            print(json.dumps({"down": down.log, "up": up.log}), flush=True)
        else:
            apply(line, down, up)
            print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(run(*sys.argv[1:4]))
