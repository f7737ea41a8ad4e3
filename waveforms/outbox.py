"""One viewer's bounded queue of waveform frames, and its overflow policy.

Fan-out never waits for the slowest viewer: the relay puts every frame into each viewer's
`ViewerOutbox` synchronously and returns; the viewer's writer task drains it with `get()`.

Overflow policy (per viewer, never affecting another viewer, a monitor or a store sink):

* **Chunks may be dropped, oldest first.** At most `max_chunks` chunk frames are queued. A new
  chunk beyond that drops the oldest queued chunk, and a `skipped` notice for its stream takes the
  dropped chunk's place, so the viewer learns of the hole in stream order (before the chunks that
  follow it). Further drops of the same stream while that notice is unsent widen it
  (`from_sample`/`to_sample`, `chunks`) instead of adding notices.
* **Control is never dropped.** `stream_announce`, `gap` and `stream_ended` are queued as they
  come and never merged.
* **Analysis and numerics are merged, never dropped.** An unsent `analysis` of a stream absorbs
  the next one (`merge_analysis`: beats and alarm changes joined, newest values kept); unsent
  `numerics` keep the newest value per name. So they stay bounded (one pending of each kind per
  stream) and no beat or alarm change is lost.

Synchronous and socket-free except `get()`, which awaits the next frame.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from protocol.waveforms import Analysis, Gap, Numerics, Skipped, StreamAnnounce, StreamEnded, encode


class _Kind(Enum):
    SKIPPED = auto()
    ANALYSIS = auto()
    NUMERICS = auto()
    CONTROL = auto()


_ChunkEntry = tuple[str, bytes, int, int]  # stream id, encoded frame, from_sample, to_sample


@dataclass(slots=True)
class _Entry:
    kind: _Kind
    stream_id: str
    frame: bytes | None = None  # encoded (shared between viewers) or None: encode `msg` at get
    msg: Analysis | Numerics | None = None
    from_sample: int = 0
    to_sample: int = 0
    chunks: int = 0


class ViewerOutbox:
    """Bounded queue of frames for one viewer; the server's writer task drains it with `get()`.

    Overflow policy (module docstring): at most `max_chunks` chunk frames are queued; a new chunk
    beyond that drops the oldest queued chunk and puts a `skipped` notice (coalesced per stream)
    where it was. Other messages are never dropped; analysis and numerics are merged per stream
    while unsent. `on_drop(n)` is told of every `n` chunks dropped (the relay's counter).
    Raises ValueError if `max_chunks` < 1.
    """

    def __init__(self, viewer_id: str, max_chunks: int, on_drop: Callable[[int], None]) -> None:
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        self.viewer_id = viewer_id
        self.max_chunks = max_chunks
        self.dropped_chunks = 0
        self._on_drop = on_drop
        self._entries: OrderedDict[int, _Entry | _ChunkEntry] = OrderedDict()
        self._chunk_ids: deque[int] = deque()
        self._merge: dict[tuple[_Kind, str], int] = {}  # unsent coalescable entry per stream
        self._ids = itertools.count()
        self._put_at: dict[int, float] = {}  # entry -> when it was queued (monotonic s)
        self.last_age_s = 0.0  # how long the frame `get_nowait` returned last had been queued
        self._closed = False
        self._wakeup: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        """True once closed; `get()` still returns what was queued, then None."""
        return self._closed

    def __len__(self) -> int:
        return len(self._entries)

    def _append(self, entry: _Entry | _ChunkEntry) -> int:
        key = next(self._ids)
        self._entries[key] = entry
        self._put_at[key] = time.monotonic()
        if self._wakeup is not None:
            self._wakeup.set()
        return key

    def put_chunk(self, stream_id: str, from_sample: int, to_sample: int, frame: bytes) -> None:
        """Queue an encoded chunk frame (samples [from_sample, to_sample)); may drop the oldest."""
        if self._closed:
            return
        if len(self._chunk_ids) >= self.max_chunks:
            self._drop_oldest_chunk()
        # a plain tuple, not an _Entry: this runs once per chunk per viewer
        key = self._append((stream_id, frame, from_sample, to_sample))
        self._chunk_ids.append(key)

    def _drop_oldest_chunk(self) -> None:
        key = self._chunk_ids.popleft()
        stream_id, _, lo, hi = self._entries[key]  # type: ignore[misc]
        self.dropped_chunks += 1
        self._on_drop(1)
        merge_key = (_Kind.SKIPPED, stream_id)
        existing = self._merge.get(merge_key)
        if existing is not None:
            s = self._merged(existing)
            s.from_sample = min(s.from_sample, lo)
            s.to_sample = max(s.to_sample, hi)
            s.chunks += 1
            del self._entries[key]
            self._put_at.pop(key, None)
        else:  # the notice takes the dropped chunk's place, so it arrives in stream order
            self._entries[key] = _Entry(_Kind.SKIPPED, stream_id, None, None, lo, hi, 1)
            self._merge[merge_key] = key

    def put_control(self, msg: StreamAnnounce | Gap | StreamEnded, frame: bytes | None = None) -> None:
        """Queue a message that is never dropped nor merged (`frame`: its encoding, if made)."""
        if not self._closed:
            self._append(_Entry(_Kind.CONTROL, "", frame or encode(msg)))

    def _merged(self, key: int) -> _Entry:
        entry = self._entries[key]
        assert isinstance(entry, _Entry)  # merge keys only ever point at _Entry objects
        return entry

    def put_analysis(self, msg: Analysis, frame: bytes | None = None) -> None:
        """Queue an analysis message (`frame`: its encoding, if already made), merged with an
        unsent one of the same stream."""
        if self._closed:
            return
        key = self._merge.get((_Kind.ANALYSIS, msg.stream_id))
        if key is not None:
            entry = self._merged(key)
            assert isinstance(entry.msg, Analysis)
            entry.msg = merge_analysis(entry.msg, msg)
            entry.frame = None  # encoded when sent
        else:
            self._merge[(_Kind.ANALYSIS, msg.stream_id)] = self._append(
                _Entry(_Kind.ANALYSIS, msg.stream_id, frame, msg))

    def put_numerics(self, msg: Numerics) -> None:
        """Queue numerics, merged (newest value per name) with unsent numerics of the stream."""
        if self._closed:
            return
        key = self._merge.get((_Kind.NUMERICS, msg.stream_id))
        if key is not None:
            entry = self._merged(key)
            old = entry.msg
            assert isinstance(old, Numerics)
            entry.msg = Numerics(msg.stream_id, msg.time, {**old.values, **msg.values})
        else:
            self._merge[(_Kind.NUMERICS, msg.stream_id)] = self._append(
                _Entry(_Kind.NUMERICS, msg.stream_id, None, msg))

    def get_nowait(self) -> bytes | None:
        """The next frame, or None when nothing is queued."""
        if not self._entries:
            return None
        key, entry = self._entries.popitem(last=False)
        self.last_age_s = time.monotonic() - self._put_at.pop(key, time.monotonic())
        if type(entry) is tuple:
            self._chunk_ids.popleft()
            return entry[1]
        assert isinstance(entry, _Entry)
        if self._merge.get((entry.kind, entry.stream_id)) == key:
            del self._merge[(entry.kind, entry.stream_id)]
        if entry.frame is not None:
            return entry.frame
        if entry.kind is _Kind.SKIPPED:
            return encode(Skipped(entry.stream_id, entry.from_sample, entry.to_sample, entry.chunks))
        assert entry.msg is not None  # analysis and numerics entries always carry their message
        return encode(entry.msg)

    async def get(self) -> bytes | None:
        """Wait for the next frame; None once the outbox is closed and drained."""
        while True:
            frame = self.get_nowait()
            if frame is not None or self._closed:
                return frame
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self, discard: bool = False) -> None:
        """Stop accepting frames; `discard` also forgets what is queued. Idempotent."""
        self._closed = True
        if discard:
            self._entries.clear()
            self._put_at.clear()
            self._chunk_ids.clear()
            self._merge.clear()
        if self._wakeup is not None:
            self._wakeup.set()


def merge_analysis(old: Analysis, new: Analysis) -> Analysis:
    """Two consecutive analysis messages of one stream as one (beats and alarm changes joined;
    the newer heart rate, RR, irregularity and active alarms as they are: None there means
    unknown *now*, and a viewer behind must see the meter blank, not an older rate)."""
    return Analysis(
        new.stream_id,
        old.beats + new.beats,
        new.heart_rate_bpm,
        new.rr_ms,
        new.irregularity,
        new.active_alarms,
        old.alarms_raised + new.alarms_raised,
        old.alarms_cleared + new.alarms_cleared,
        old.labels + new.labels if old.beat_labels or new.beat_labels else "",
    )
