"""A set of half-open integer intervals: which samples of a waveform are already on disk."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(slots=True)
class IntervalSet:
    """Disjoint, sorted, merged half-open intervals [start, stop) of sample indices."""

    _starts: list[int] = field(default_factory=list)
    _stops: list[int] = field(default_factory=list)

    def missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Parts of [start, stop) not yet in the set, in order."""
        out: list[tuple[int, int]] = []
        cursor = start
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while cursor < stop and i < len(self._starts):
            s, e = self._starts[i], self._stops[i]
            if e <= cursor:
                i += 1
                continue
            if s >= stop:
                break
            if s > cursor:
                out.append((cursor, s))
            cursor = max(cursor, e)
            i += 1
        if cursor < stop:
            out.append((cursor, stop))
        return out

    def add(self, start: int, stop: int) -> None:
        """Add [start, stop), merging with touching or overlapping intervals."""
        if stop <= start:
            return
        i = bisect.bisect_left(self._stops, start)
        j = bisect.bisect_right(self._starts, stop)
        if i < j:
            start = min(start, self._starts[i])
            stop = max(stop, self._stops[j - 1])
        self._starts[i:j] = [start]
        self._stops[i:j] = [stop]

    @property
    def end(self) -> int:
        """One past the highest index in the set (0 when empty)."""
        return self._stops[-1] if self._stops else 0

    def covered(self) -> int:
        """Number of indices in the set."""
        return sum(e - s for s, e in zip(self._starts, self._stops))

    def __len__(self) -> int:
        return len(self._starts)
