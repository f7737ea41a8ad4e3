"""A bedside monitor simulator: streams a WFDB record or synthetic ECG as a real monitor would.

Fixed-rate chunks of ADC integers (the record's own gains/baselines, or neurokit2's `ecg_simulate`
at a set heart rate with scripted events), numerics now and then (`VitalSigns`: bounded,
mean-reverting, following the scripted events), and store-and-forward: every
chunk stays in a buffer until the server's `ack` covers it; while disconnected the monitor keeps
generating, and when it is back it re-announces (with `oldest_seq`) and back-fills, oldest first.
Back within the server's resume grace period it rejoins with the `resume` key of its last `joined`
(same participant, no ghost left as disconnected), falling back to a fresh join if refused.

Library use: `MonitorSimulator(source, config)`; `next_chunk()` generates without a socket;
`await run()` connects and streams; `set_offline(True/False)` simulates a network outage.
CLI: `medstream monitor-sim --url ws://127.0.0.1:8765/ws --token T --record PATH | --synthetic`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import websockets

from protocol import signaling as wire
from protocol.waveforms import (
    Ack,
    Announce,
    ChannelInfo,
    Chunk,
    Numerics,
    RateLimits,
    WaveformError,
    decode_server_frame,
    encode,
)

log = logging.getLogger(__name__)

EventKind = Literal["asystole", "tachy", "brady"]
FATAL_JOIN_REASONS = {"invalid_token", "token_expired", "token_not_yet_valid", "wrong_room",
                      "unknown_room", "forbidden", "room_ended", "unsupported_version"}


class _Redirected(Exception):
    """The server does not host our room (a cluster): connect to its node at once."""


class MonitorSimError(Exception):
    """The simulator cannot continue (bad token, refused join, unreadable record)."""


# --------------------------------------------------------------------------- vital signs


@dataclass(frozen=True, slots=True)
class VitalSpec:
    """One vital sign as an Ornstein-Uhlenbeck process: it reverts to `mean` with time constant
    `tau_s`, wanders with stationary standard deviation `sd` and never leaves [`low`, `high`]
    (physiological limits of the simulated patient); shown with `digits` decimals."""

    mean: float
    sd: float
    tau_s: float
    low: float
    high: float
    digits: int = 0


# An adult at rest. Bounds keep every value possible for a living patient on a monitor (SpO2 never
# above 100 %, temperature 36-38 degC); the scripted events move the means (EVENT_SHIFTS).
VITALS: dict[str, VitalSpec] = {
    "spo2_pct": VitalSpec(97.5, 0.7, 45.0, 70.0, 100.0, 0),
    "resp_rate_bpm": VitalSpec(16.0, 1.2, 60.0, 6.0, 40.0, 0),
    "temp_c": VitalSpec(36.8, 0.12, 900.0, 36.0, 38.0, 1),
    "nibp_sys_mmhg": VitalSpec(120.0, 5.0, 240.0, 50.0, 190.0, 0),
    "nibp_dia_mmhg": VitalSpec(78.0, 3.5, 240.0, 30.0, 120.0, 0),
}
# How each scripted rhythm moves the means (added to VITALS[...].mean) and how fast (tau_s):
# no output in asystole (saturation falls, pressure collapses, breathing stops); tachycardia
# raises breathing and pressure a little; bradycardia lowers pressure.
EVENT_SHIFTS: dict[str, tuple[dict[str, float], float]] = {
    "asystole": ({"spo2_pct": -20.0, "resp_rate_bpm": -10.0, "nibp_sys_mmhg": -60.0, "nibp_dia_mmhg": -40.0}, 20.0),
    "tachy": ({"spo2_pct": -2.0, "resp_rate_bpm": 6.0, "nibp_sys_mmhg": 15.0, "nibp_dia_mmhg": 8.0}, 30.0),
    "brady": ({"spo2_pct": -2.0, "resp_rate_bpm": -2.0, "nibp_sys_mmhg": -25.0, "nibp_dia_mmhg": -15.0}, 30.0),
}
PULSE_PRESSURE_MIN_MMHG = 15.0


class VitalSigns:
    """The numerics of one simulated patient: each vital an exact-discretisation OU step
    (x' = m + (x - m) e^(-dt/tau) + sd sqrt(1 - e^(-2 dt/tau)) z), clipped to its bounds, with the
    diastolic pressure kept at least PULSE_PRESSURE_MIN_MMHG below the systolic one.

    `step(dt_s, rhythm)` advances by `dt_s` seconds of stream time under `rhythm` ("normal" or
    an event kind) and returns the values rounded for display.
    """

    def __init__(self, rng: np.random.Generator, specs: dict[str, VitalSpec] = VITALS) -> None:
        self.specs = specs
        self._rng = rng
        self.values = {k: v.mean for k, v in specs.items()}

    def step(self, dt_s: float, rhythm: str = "normal") -> dict[str, float]:
        """Advance `dt_s` (> 0) seconds; returns {name: value} rounded to each spec's digits."""
        if dt_s <= 0:
            raise ValueError(f"dt_s must be > 0, got {dt_s}")
        shifts, event_tau_s = EVENT_SHIFTS.get(rhythm, ({}, None))
        for name, spec in self.specs.items():
            mean = spec.mean + shifts.get(name, 0.0)
            tau = min(spec.tau_s, event_tau_s) if name in shifts and event_tau_s else spec.tau_s
            decay = math.exp(-dt_s / tau)
            noise = spec.sd * math.sqrt(1.0 - decay * decay) * float(self._rng.standard_normal())
            x = mean + (self.values[name] - mean) * decay + noise
            self.values[name] = min(spec.high, max(spec.low, x))
        if "nibp_sys_mmhg" in self.values and "nibp_dia_mmhg" in self.values:
            self.values["nibp_dia_mmhg"] = min(self.values["nibp_dia_mmhg"],
                                               self.values["nibp_sys_mmhg"] - PULSE_PRESSURE_MIN_MMHG)
            self.values["nibp_dia_mmhg"] = max(self.specs["nibp_dia_mmhg"].low, self.values["nibp_dia_mmhg"])
        return {k: round(v, self.specs[k].digits) for k, v in self.values.items()}


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True, slots=True)
class SimEvent:
    """A scripted rhythm change: `kind` from `start_s` for `duration_s` (tachy/brady at `rate_bpm`)."""

    kind: EventKind
    start_s: float
    duration_s: float
    rate_bpm: float | None = None


_EVENT = re.compile(r"^(asystole|tachy|brady)@([\d.]+)\+([\d.]+)(?::([\d.]+))?$")


def parse_events(text: str) -> tuple[SimEvent, ...]:
    """Parse "asystole@30+8,tachy@60+20:150" (kind@start_s+duration_s[:rate_bpm]).

    Raises ValueError naming the bad item.
    """
    events = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        m = _EVENT.match(item)
        if m is None:
            raise ValueError(f"event must look like kind@start_s+duration_s[:rate_bpm] with kind "
                             f"asystole|tachy|brady, got {item!r}")
        kind, start, dur, rate = m.groups()
        default = {"tachy": 150.0, "brady": 35.0}.get(kind)
        events.append(SimEvent(kind, float(start), float(dur),  # type: ignore[arg-type]
                               float(rate) if rate else default))
    return tuple(sorted(events, key=lambda e: e.start_s))


class RecordSource:
    """ADC integers of a WFDB record, channel-major, optionally looping at the end."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        import wfdb

        try:
            rec = wfdb.rdrecord(str(path), physical=False)
        except Exception as exc:
            raise MonitorSimError(f"cannot read WFDB record {path}: {exc}") from exc
        self.samples = np.ascontiguousarray(rec.d_signal.T.astype(np.int16))
        self.sampling_rate_hz = float(rec.fs)
        self.channels = tuple(
            ChannelInfo(name, unit or "mV", float(gain) if gain else 200.0, int(base))
            for name, unit, gain, base in zip(rec.sig_name, rec.units, rec.adc_gain, rec.baseline,
                                              strict=True))
        self.ecg_channel = 0
        self.loop = loop
        self._pos = 0

    def read(self, n: int) -> np.ndarray | None:
        """The next `n` samples (n_channels, n), or None at the end of a non-looping record."""
        total = self.samples.shape[1]
        if self._pos + n <= total:
            out = self.samples[:, self._pos:self._pos + n]
            self._pos += n
            return out
        if not self.loop:
            return None
        idx = (self._pos + np.arange(n)) % total
        self._pos = (self._pos + n) % total
        return self.samples[:, idx]


class SyntheticSource:
    """One ECG lead from neurokit2's `ecg_simulate` (mV -> int16 at 200 adu/mV) with events.

    Generated in blocks of `block_s` at the heart rate in force at the block's start; asystole is a
    flat line with a little noise. `seed` makes it repeatable.
    """

    GAIN = 200.0

    def __init__(self, heart_rate_bpm: float = 72.0, events: tuple[SimEvent, ...] = (),
                 sampling_rate_hz: float = 500.0, seed: int = 0, block_s: float = 4.0) -> None:
        if not 20 <= heart_rate_bpm <= 250:
            raise ValueError(f"heart_rate_bpm must be 20-250, got {heart_rate_bpm}")
        self.heart_rate_bpm = heart_rate_bpm
        self.events = events
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.channels = (ChannelInfo("II", "mV", self.GAIN, 0),)
        self.ecg_channel = 0
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self._block_n = int(block_s * self.sampling_rate_hz)
        self._buf = np.zeros((1, 0), dtype=np.int16)
        self._generated = 0

    def _state_at(self, t_s: float) -> tuple[str, float]:
        for e in self.events:
            if e.start_s <= t_s < e.start_s + e.duration_s:
                return e.kind, e.rate_bpm or self.heart_rate_bpm
        return "normal", self.heart_rate_bpm

    def rhythm_at(self, t_s: float) -> str:
        """The scripted rhythm at stream time `t_s`: "normal" or an event kind."""
        return self._state_at(t_s)[0]

    def _block(self) -> np.ndarray:
        import neurokit2 as nk

        t = self._generated / self.sampling_rate_hz
        n = self._block_n
        # end the block at the next event boundary so events start and stop on time
        for e in self.events:
            for edge in (e.start_s, e.start_s + e.duration_s):
                edge_n = round(edge * self.sampling_rate_hz) - self._generated
                if 0 < edge_n < n:
                    n = edge_n
        kind, rate = self._state_at(t)
        if kind == "asystole":
            mv = self._rng.normal(0.0, 0.01, n)
        else:
            dur = max(n / self.sampling_rate_hz, 1.0)
            sim = nk.ecg_simulate(duration=dur, sampling_rate=int(self.sampling_rate_hz),
                                  heart_rate=rate, noise=0.01, method="simple",
                                  random_state=self._seed + self._generated)
            mv = np.asarray(sim[:n], dtype=np.float64)
        self._generated += n
        return np.clip(np.round(mv * self.GAIN), -32768, 32767).astype(np.int16)[None, :]

    def read(self, n: int) -> np.ndarray:
        """The next `n` samples, shape (1, n)."""
        while self._buf.shape[1] < n:
            self._buf = np.concatenate([self._buf, self._block()], axis=1)
        out, self._buf = self._buf[:, :n], self._buf[:, n:]
        return out


class ArraySource:
    """Samples from an array already in memory (shape (n_channels, n)), looping, from `offset`.

    Lets many simulated monitors share one generated signal (benchmarks) at different phases.
    """

    def __init__(self, samples: np.ndarray, sampling_rate_hz: float,
                 channels: tuple[ChannelInfo, ...], ecg_channel: int | None = 0,
                 offset: int = 0) -> None:
        if samples.ndim != 2 or samples.shape[0] != len(channels):
            raise ValueError(f"samples must have shape ({len(channels)}, n), got {samples.shape}")
        self.samples = samples
        self.sampling_rate_hz = float(sampling_rate_hz)
        self.channels = channels
        self.ecg_channel = ecg_channel
        self._pos = offset % samples.shape[1]

    def read(self, n: int) -> np.ndarray:
        """The next `n` samples (n_channels, n), wrapping around."""
        total = self.samples.shape[1]
        idx = (self._pos + np.arange(n)) % total
        self._pos = (self._pos + n) % total
        return self.samples[:, idx]


Source = RecordSource | SyntheticSource | ArraySource


# --------------------------------------------------------------------------- simulator


@dataclass(frozen=True, slots=True)
class MonitorSimConfig:
    """How the simulated monitor connects and paces itself.

    speed: simulated seconds per wall second (tests and demos run faster than real time).
    buffer_s: unacked data kept (stream time); beyond it the oldest is dropped and lost.
    """

    url: str = "ws://127.0.0.1:8765/ws"
    token: str = ""
    stream_id: str = "bed-1"
    chunk_ms: float = 100.0
    speed: float = 1.0
    numerics_every_s: float = 5.0
    buffer_s: float = 600.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0
    ack_timeout_s: float = 5.0
    limits: RateLimits | None = None
    start_epoch: float | None = None  # t0 of sample 0; default: time at construction
    seed: int = 0


@dataclass(slots=True)
class MonitorSimStats:
    """What the simulator did (for tests and benchmarks)."""

    chunks_generated: int = 0
    chunks_sent: int = 0
    chunks_backfilled: int = 0
    samples_lost_buffer_full: int = 0
    connections: int = 0
    resumed: int = 0  # reconnections that resumed the same participant (no ghost left behind)
    resume_refused: int = 0  # resumes the server refused (grace over): joined afresh instead
    errors: list[WaveformError] = field(default_factory=list)
    acked_seq: int = 0
    send_times: dict[int, float] = field(default_factory=dict)  # seq -> wall time first sent


class MonitorSimulator:
    """A bedside monitor streaming one stream with store-and-forward.

    `clock` is wall time (s); it paces generation (with `speed`) and stamps `send_times`.
    """

    def __init__(self, source: Source, config: MonitorSimConfig,
                 clock: Callable[[], float] = time.time, record_send_times: bool = False) -> None:
        if config.speed <= 0:
            raise ValueError(f"speed must be > 0, got {config.speed}")
        self.source = source
        self.config = config
        self.clock = clock
        self.fs = source.sampling_rate_hz
        self.chunk_samples = max(1, round(config.chunk_ms / 1000.0 * self.fs))
        self.start_epoch = config.start_epoch if config.start_epoch is not None else clock()
        # A new session id per run: a restarted monitor's counter begins at 0 again, and the server
        # starts a new segment of the bed's record instead of taking its samples for duplicates.
        self.announce = Announce(config.stream_id, source.channels, self.fs, source.ecg_channel,
                                 config.limits, session=secrets.token_hex(8))
        self.stats = MonitorSimStats()
        self.next_seq = 0  # next sample to generate
        self.finished = False  # a non-looping record ran out
        self._record_send_times = record_send_times
        self._buffer: deque[Chunk] = deque()  # generated, not yet acked, in seq order
        self._new_chunk = asyncio.Event()
        self._offline = False
        self._online = asyncio.Event()
        self._online.set()
        self._ws: websockets.ClientConnection | None = None
        self._rng = np.random.default_rng(config.seed)
        self.vitals = VitalSigns(self._rng)
        self._numerics_at_s: float | None = None  # stream time of the last numerics
        self._next_numerics_s = 0.0
        self._node_url: str | None = None  # a cluster's node hosting our room (after a `redirect`)
        self._resume_key: str | None = None  # from the last `joined`
        self._resume_grace_s = 0.0
        self._disconnected_at: float | None = None  # clock() when the last connection ended

    @property
    def buffered_chunks(self) -> int:
        """Chunks generated but not yet acknowledged."""
        return len(self._buffer)

    def next_chunk(self) -> Chunk | None:
        """Generate the next chunk (no socket needed) and keep it until acked; None at record end."""
        samples = self.source.read(self.chunk_samples)
        if samples is None:
            self.finished = True
            return None
        chunk = Chunk(self.config.stream_id, self.next_seq,
                      self.start_epoch + self.next_seq / self.fs, samples)
        self.next_seq += samples.shape[1]
        self._buffer.append(chunk)
        self.stats.chunks_generated += 1
        max_chunks = max(1, int(self.config.buffer_s * self.fs / self.chunk_samples))
        while len(self._buffer) > max_chunks:
            self.stats.samples_lost_buffer_full += self._buffer.popleft().n_samples
        self._new_chunk.set()
        return chunk

    def on_ack(self, next_seq: int) -> None:
        """The server stored everything before `next_seq`: free those chunks."""
        self.stats.acked_seq = max(self.stats.acked_seq, next_seq)
        while self._buffer and self._buffer[0].seq + self._buffer[0].n_samples <= next_seq:
            self._buffer.popleft()

    def _numerics_due(self, sim_s: float) -> Numerics | None:
        if sim_s < self._next_numerics_s:
            return None
        self._next_numerics_s = sim_s + self.config.numerics_every_s
        values = self.vitals_at(sim_s)
        return Numerics(self.config.stream_id, self.start_epoch + sim_s, values)

    def vitals_at(self, sim_s: float) -> dict[str, float]:
        """Advance the vital signs to stream time `sim_s` (following the source's scripted rhythm,
        if it has one) and return them rounded for display."""
        rhythm_at = getattr(self.source, "rhythm_at", None)
        rhythm = rhythm_at(sim_s) if rhythm_at is not None else "normal"
        dt = self.config.numerics_every_s if self._numerics_at_s is None else sim_s - self._numerics_at_s
        self._numerics_at_s = sim_s
        if dt <= 0:
            return {k: round(v, self.vitals.specs[k].digits) for k, v in self.vitals.values.items()}
        return self.vitals.step(dt, rhythm)

    def set_offline(self, offline: bool) -> None:
        """Simulate a network outage: drop the socket now and stay away until set back online.
        Generation goes on; everything is back-filled when online again."""
        self._offline = offline
        if offline:
            self._online.clear()
            if self._ws is not None:
                self._closing = asyncio.ensure_future(self._ws.close())  # kept: no dangling task
        else:
            self._online.set()

    async def _generate(self, duration_s: float | None) -> None:
        """Produce chunks at the configured pace (stream time = wall time x speed)."""
        wall0 = self.clock()
        limit = None if duration_s is None else int(duration_s * self.fs)
        while not self.finished:
            due = int((self.clock() - wall0) * self.config.speed * self.fs)
            if limit is not None:
                due = min(due, limit)
            while self.next_seq + self.chunk_samples <= due and not self.finished:
                self.next_chunk()
            if limit is not None and self.next_seq + self.chunk_samples > limit:
                return
            await asyncio.sleep(self.chunk_samples / self.fs / self.config.speed / 2)

    async def run(self, duration_s: float | None = None) -> MonitorSimStats:
        """Connect, stream and reconnect until `duration_s` of stream time is generated and acked
        (or forever / until the record ends). Raises MonitorSimError on a refused join."""
        gen = asyncio.create_task(self._generate(duration_s))
        try:
            backoff = self.config.reconnect_min_s
            while True:
                await self._online.wait()
                try:
                    done = await self._connection(gen)
                    backoff = self.config.reconnect_min_s
                    if done:
                        return self.stats
                    self._node_url = None  # lost: start over at the configured address
                except _Redirected:
                    continue
                except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                    self._node_url = None
                    log.info("monitor %s: connection lost (%s); retrying in %.1f s",
                             self.config.stream_id, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.config.reconnect_max_s)
        finally:
            gen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gen

    def _resume_key_if_fresh(self) -> str | None:
        """The resume key while the server should still hold our place (its grace period)."""
        if self._resume_key is None or self._disconnected_at is None:
            return None
        if self.clock() - self._disconnected_at >= self._resume_grace_s:
            return None
        return self._resume_key

    async def _join(self, ws: websockets.ClientConnection) -> None:
        """Join, resuming the previous participant when back within its grace period (so it does
        not linger as disconnected next to a new one); a refused resume falls back to a fresh
        join on the same connection."""
        resume = self._resume_key_if_fresh()
        join = wire.Join(wire.PROTOCOL_VERSION, self.config.token, id=1)
        await ws.send(wire.encode(replace(join, resume=resume) if resume else join))
        while True:
            async with asyncio.timeout(self.config.ack_timeout_s):
                raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            msg = wire.decode_server_message(raw)
            if isinstance(msg, wire.Redirect):
                self._node_url = msg.url
                self.stats.connections -= 1  # not a connection of ours: the room is elsewhere
                raise _Redirected(msg.url)
            if isinstance(msg, wire.Joined):
                self._resume_key = msg.resume
                self._resume_grace_s = msg.resume_grace_s
                self.stats.resumed += msg.resumed
                return
            if isinstance(msg, wire.Error):
                if msg.reason is wire.Reason.RESUME_FAILED and resume:
                    log.info("monitor %s: resume refused, joining afresh", self.config.stream_id)
                    self.stats.resume_refused += 1
                    resume = None
                    await ws.send(wire.encode(replace(join, id=2)))
                    continue
                if msg.reason.value in FATAL_JOIN_REASONS:
                    raise MonitorSimError(f"join refused: {msg.reason.value}: {msg.message}")
                raise websockets.WebSocketException(f"join failed: {msg}")

    async def _connection(self, gen: asyncio.Task[None]) -> bool:
        """One connection's life; True when the run is complete."""
        # close_timeout: a monitor that stops waits this long at most for the server's closing
        # handshake (websockets' default, 10 s, outlasted the demo's 5 s wait for its monitors
        # when the loop they share with the server was busy)
        async with websockets.connect(self._node_url or self.config.url, max_size=None, compression=None,
                                      open_timeout=self.config.ack_timeout_s, close_timeout=1.0) as ws:
            self._ws = ws
            if self._offline:
                return False
            self.stats.connections += 1
            await self._join(ws)
            oldest = self._buffer[0].seq if self._buffer else self.next_seq
            await ws.send(encode(replace(self.announce, oldest_seq=max(oldest, self.stats.acked_seq))))
            first_ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            reader = asyncio.create_task(self._read(ws, first_ack))
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the awaited thing completes, and the monitor never stops
                async with asyncio.timeout(self.config.ack_timeout_s):
                    send_from = await first_ack
                # after a reconnect, what was generated before it is back-fill; on the first
                # connection nothing was ever sent, so the chunks made while joining are live
                first = self.stats.connections == 1
                live_from = (self._buffer[0].seq if first and self._buffer else self.next_seq)
                while True:
                    sent_any = False
                    for chunk in list(self._buffer):
                        if chunk.seq + chunk.n_samples <= send_from:
                            continue
                        backfill = chunk.seq < live_from
                        if self._record_send_times and chunk.seq not in self.stats.send_times:
                            self.stats.send_times[chunk.seq] = self.clock()
                        await ws.send(encode(replace(chunk, backfill=backfill)))
                        self.stats.chunks_sent += 1
                        self.stats.chunks_backfilled += backfill
                        send_from = chunk.seq + chunk.n_samples
                        sent_any = True
                    sim_s = send_from / self.fs
                    if (n := self._numerics_due(sim_s)) is not None:
                        await ws.send(encode(n))
                    if gen.done() and not self._buffer:
                        return True
                    if reader.done():
                        reader.result()  # re-raise what ended the connection
                        return False
                    if not sent_any:
                        self._new_chunk.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.5):
                                await self._new_chunk.wait()
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
                self._ws = None
                self._disconnected_at = self.clock()

    async def _read(self, ws: websockets.ClientConnection, first_ack: asyncio.Future[int]) -> None:
        async for raw in ws:
            if isinstance(raw, str):
                msg = wire.decode_server_message(raw)
                if isinstance(msg, wire.Error):
                    log.warning("monitor %s: server error %s", self.config.stream_id, msg)
                continue
            m = decode_server_frame(raw)
            if isinstance(m, Ack):
                self.on_ack(m.next_seq)
                if not first_ack.done():
                    first_ack.set_result(m.next_seq)
            elif isinstance(m, WaveformError):
                log.warning("monitor %s: waveform error %s: %s", self.config.stream_id,
                            m.reason.value, m.message)
                self.stats.errors.append(m)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `medstream monitor-sim`."""
    p = argparse.ArgumentParser(prog="medstream monitor-sim", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    p.add_argument("--token", required=True, help="access token with role monitor")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--record", help="WFDB record path without extension (e.g. .../mitdb/100)")
    src.add_argument("--synthetic", action="store_true", help="neurokit2 ecg_simulate")
    p.add_argument("--heart-rate", type=float, default=72.0, help="synthetic heart rate (bpm)")
    p.add_argument("--fs", type=float, default=500.0, help="synthetic sampling rate (Hz)")
    p.add_argument("--events", default="", help='e.g. "asystole@30+8,tachy@60+20:150"')
    p.add_argument("--stream-id", default="bed-1")
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("--loop", action="store_true", help="loop the record")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    p.add_argument("--duration", type=float, default=None, help="stop after this much stream time (s)")
    return p


def main(argv: list[str]) -> int:
    """`medstream monitor-sim ...`: stream until interrupted (or --duration / record end)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        source: Source
        if args.record:
            source = RecordSource(args.record, loop=args.loop)
        else:
            source = SyntheticSource(args.heart_rate, parse_events(args.events), args.fs)
        sim = MonitorSimulator(source, MonitorSimConfig(
            url=args.url, token=args.token, stream_id=args.stream_id, chunk_ms=args.chunk_ms,
            speed=args.speed))
        stats = asyncio.run(sim.run(args.duration))
    except (MonitorSimError, ValueError) as exc:
        print(f"monitor-sim: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"monitor-sim: sent {stats.chunks_sent} chunks ({stats.chunks_backfilled} back-filled), "
          f"acked up to sample {stats.acked_seq}")
    return 0
