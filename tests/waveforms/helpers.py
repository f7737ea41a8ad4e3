"""Test helpers shared by the waveform tests (relay, analysis, monitor simulator, server end-to-end)."""

from __future__ import annotations

import numpy as np

from protocol.waveforms import Analysis, Announce


class RecordingSink:
    """A store sink that keeps what it gets (what the recorder would write), analysis included."""

    def __init__(self) -> None:
        self.announces: list[tuple[str, Announce]] = []
        self.pieces: list[tuple[str, int, np.ndarray]] = []
        self.analyses: list[tuple[str, Analysis]] = []
        self.ended: list[str] = []

    def on_stream(self, publisher_id: str, announce: Announce) -> None:
        self.announces.append((publisher_id, announce))

    def on_samples(self, stream_id: str, first_sample: int, samples: np.ndarray, t0: float) -> None:
        self.pieces.append((stream_id, first_sample, samples.copy()))

    def on_analysis(self, stream_id: str, analysis: Analysis) -> None:
        self.analyses.append((stream_id, analysis))

    def on_stream_ended(self, stream_id: str) -> None:
        self.ended.append(stream_id)

    def assembled(self, n_channels: int = 2) -> np.ndarray:
        """Every stored sample placed at its index; asserts none was stored twice or is missing."""
        end = max(f + p.shape[1] for _, f, p in self.pieces)
        out = np.zeros((n_channels, end), dtype=np.int64)
        seen = np.zeros(end, dtype=np.int32)
        for _, first, p in self.pieces:
            out[:, first:first + p.shape[1]] = p
            seen[first:first + p.shape[1]] += 1
        assert seen.max() == 1, "a sample was stored twice"
        assert seen.min() == 1, "a sample is missing"
        return out

    def beats(self) -> list[int]:
        """Every beat reported through `on_analysis`, in arrival order."""
        return [b for _, a in self.analyses for b in a.beats]


class FakeClock:
    """Monotonic seconds that move only when a test moves `now`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
