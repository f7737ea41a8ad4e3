"""Which samples of a stream we have: one set of half-open integer ranges.

The relay keeps, per stream, the ranges received beyond its contiguous prefix (what a back-fill
must still fill); the recorder keeps the ranges already on disk. Both ask the same questions
(`missing`: what of [start, stop) is new; `add`; the first range; drop what is below a point), so
both use this one type. Pure code: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class IntervalSet:
    """Disjoint, sorted, merged half-open intervals [start, stop) of sample indices.

    Touching intervals are merged ([0, 10) + [10, 20) is one interval [0, 20)), so `len()` is the
    number of separate runs and ``len() - 1`` the number of holes between them. Costs are
    O(log n) to locate an index plus the number of intervals touched; n is small in practice (the
    holes of one stream).
    """

    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        for start, stop in ranges:
            self.add(start, stop)

    def missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Parts of [start, stop) not yet in the set, in order (empty if stop <= start)."""
        starts, stops = self._starts, self._stops
        if not starts:  # the common case for a stream without holes
            return [(start, stop)] if start < stop else []
        out: list[tuple[int, int]] = []
        cursor = start
        i = max(0, bisect.bisect_right(starts, start) - 1)
        n = len(starts)
        while cursor < stop and i < n:
            s, e = starts[i], stops[i]
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
        """Add [start, stop), merging with touching or overlapping intervals (no-op if empty)."""
        if stop <= start:
            return
        i = bisect.bisect_left(self._stops, start)
        j = bisect.bisect_right(self._starts, stop)
        if i < j:
            start = min(start, self._starts[i])
            stop = max(stop, self._stops[j - 1])
        self._starts[i:j] = [start]
        self._stops[i:j] = [stop]

    def discard_below(self, point: int) -> None:
        """Forget every index below `point` (an interval across it keeps [point, stop))."""
        i = bisect.bisect_right(self._stops, point)
        del self._starts[:i]
        del self._stops[:i]
        if self._starts and self._starts[0] < point:
            self._starts[0] = point

    @property
    def first(self) -> tuple[int, int] | None:
        """The lowest interval as (start, stop), None when empty."""
        return (self._starts[0], self._stops[0]) if self._starts else None

    def pop_first(self) -> tuple[int, int]:
        """Remove and return the lowest interval. Raises IndexError when empty."""
        if not self._starts:
            raise IndexError("pop_first from an empty IntervalSet")
        return self._starts.pop(0), self._stops.pop(0)

    @property
    def end(self) -> int:
        """One past the highest index in the set (0 when empty)."""
        return self._stops[-1] if self._stops else 0

    def covered(self) -> int:
        """Number of indices in the set."""
        return sum(e - s for s, e in zip(self._starts, self._stops))

    def __len__(self) -> int:
        """Number of separate intervals (not of indices: see `covered`)."""
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """The intervals as (start, stop), lowest first."""
        return zip(self._starts, self._stops)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalSet):
            return NotImplemented
        return self._starts == other._starts and self._stops == other._stops

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"IntervalSet({list(self)!r})"
