"""Shared pieces of the security tests: monitors that speak the waveform codec over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from protocol.waveforms import Announce, ChannelInfo, Chunk, ServerWaveformMessage, decode_server_frame, encode
from tests.conftest import timeout_s
from tests.helpers import WsClient

FS = 500.0


def announce(stream: str, session: str | None = None, oldest_seq: int = 0) -> Announce:
    extra = {} if session is None else {"session": session}
    return Announce(stream, (ChannelInfo("II", "mV", 200.0, 0),), FS, ecg_channel=0,
                    oldest_seq=oldest_seq, **extra)


def chunk(stream: str, seq: int, n: int = 250, t0: float = 1.7e9, value: int = 0) -> Chunk:
    samples = np.full((1, n), value, dtype="<i2")
    samples[0, :] += (np.arange(seq, seq + n) % 200).astype("<i2")
    return Chunk(stream, seq, t0 + seq / FS, samples)


async def send_frame(client: WsClient, msg: Any) -> None:
    await client.ws.send(encode(msg))


async def next_binary(client: WsClient, pred: Any = lambda m: True, timeout: float = 5.0) -> ServerWaveformMessage:
    """The first binary frame (received or to come) that decodes to a message matching `pred`."""
    async def find() -> ServerWaveformMessage:
        async with client._cond:
            while True:
                for i, frame in enumerate(client.binary):
                    m = decode_server_frame(frame)
                    if pred(m):
                        del client.binary[: i + 1]
                        return m
                if client._reader.done():
                    raise ConnectionError("connection closed")
                await client._cond.wait()
    return await asyncio.wait_for(find(), timeout_s(timeout))
