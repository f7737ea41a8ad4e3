"""waveforms.ranges.IntervalSet: examples, then random operation sequences against a plain set."""

from __future__ import annotations

import random

import pytest

from waveforms.ranges import IntervalSet


def _runs(indices: set[int]) -> list[tuple[int, int]]:
    """A set of indices as sorted maximal half-open runs (the brute-force model)."""
    out: list[tuple[int, int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def test_missing_and_merge() -> None:
    s = IntervalSet()
    s.add(10, 20)
    s.add(30, 40)
    assert s.missing(0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert s.missing(12, 18) == []
    assert s.missing(15, 35) == [(20, 30)]
    s.add(20, 30)
    assert len(s) == 1 and s.covered() == 30 and s.end == 40


def test_touching_ranges_merge_and_empty_ones_are_ignored() -> None:
    s = IntervalSet([(0, 10), (10, 20), (5, 5), (30, 30)])
    assert list(s) == [(0, 20)] and s.end == 20
    assert IntervalSet().missing(3, 3) == [] and IntervalSet().missing(3, 1) == []
    assert IntervalSet().missing(3, 7) == [(3, 7)]
    assert not IntervalSet() and IntervalSet().end == 0 and IntervalSet().first is None


def test_first_pop_first_and_discard_below() -> None:
    s = IntervalSet([(5, 8), (10, 20), (30, 40)])
    assert s.first == (5, 8)
    assert s.pop_first() == (5, 8) and s.first == (10, 20)
    s.discard_below(15)
    assert list(s) == [(15, 20), (30, 40)]
    s.discard_below(20)  # exactly at a stop: the whole interval goes
    assert list(s) == [(30, 40)]
    s.discard_below(100)
    assert not s and len(s) == 0
    with pytest.raises(IndexError):
        s.pop_first()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_agree_with_a_brute_force_set(seed: int) -> None:
    rng = random.Random(seed)
    s, model = IntervalSet(), set[int]()
    for _ in range(2000):
        lo = rng.randrange(0, 400)
        hi = lo + rng.randrange(-5, 40)
        op = rng.random()
        if op < 0.45:
            s.add(lo, hi)
            model.update(range(lo, hi))
        elif op < 0.85:
            want = _runs(set(range(lo, hi)) - model)
            assert s.missing(lo, hi) == want, (lo, hi, list(s))
        elif op < 0.92:
            s.discard_below(lo)
            model = {i for i in model if i >= lo}
        elif s:
            first = _runs(model)[0]
            assert s.first == first
            assert s.pop_first() == first
            model -= set(range(*first))
        runs = _runs(model)
        assert list(s) == runs
        assert len(s) == len(runs) and bool(s) == bool(runs)
        assert s.covered() == len(model)
        assert s.end == (max(model) + 1 if model else 0)
        assert s.first == (runs[0] if runs else None)
    assert s == IntervalSet(runs)
