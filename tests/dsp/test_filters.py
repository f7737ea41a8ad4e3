"""Filters: chunked equals whole, per row; validation."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.filters import History, SosFilterBank, check_sampling_rate, design_qrs_bandpass
from tests.dsp.conftest import cached_record


def _random_chunks(n: int, rng: np.random.Generator, max_chunk: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    while pos < n:
        size = int(rng.integers(0, max_chunk + 1))
        out.append((pos, min(n, pos + size)))
        pos += size
    return out


def test_sos_bank_chunked_equals_whole_bit_for_bit(ecg_data_dir):
    x = cached_record(str(ecg_data_dir / "mitdb" / "105")).signal_mv[:40000]
    two = np.stack([x, x[::-1].copy()])
    whole = SosFilterBank(design_qrs_bandpass(360))
    whole.add_streams(2)
    expected = whole.process(two)
    chunked = SosFilterBank(design_qrs_bandpass(360))
    chunked.add_streams(2)
    rng = np.random.default_rng(1)
    parts = [chunked.process(two[:, a:b]) for a, b in _random_chunks(x.size, rng, 700)]
    assert np.array_equal(np.concatenate(parts, axis=1), expected)


def test_sos_bank_rows_subset_matches_single_stream(ecg_data_dir):
    x = cached_record(str(ecg_data_dir / "mitdb" / "100")).signal_mv[:5000]
    bank = SosFilterBank(design_qrs_bandpass(360))
    bank.add_streams(3)
    bank.process(np.zeros((3, 10)))
    single = SosFilterBank(design_qrs_bandpass(360))
    single.add_streams(1)
    single.process(np.zeros((1, 10)))
    y_rows = bank.process(x[None, :], rows=np.array([1]))
    assert np.array_equal(y_rows, single.process(x[None, :]))
    assert not np.array_equal(bank.zi[:, 1], bank.zi[:, 0])


def test_history_keeps_tail_across_calls():
    hist = History(4)
    hist.add_streams(1)
    hist.extend(np.arange(3.0)[None, :])
    joined = hist.extend(np.arange(3.0, 6.0)[None, :])
    assert joined.tolist() == [[0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    assert hist.data.tolist() == [[2.0, 3.0, 4.0, 5.0]]


def test_history_in_place_window_matches_a_plain_join():
    """History appends in place and moves its window back when the buffer ends; every joined
    block must still equal "last ``length`` samples ++ block", for all rows and for subsets."""
    rng = np.random.default_rng(3)
    length, rows = 5, 3
    hist = History(length, spare=7)
    hist.add_streams(rows)
    kept = np.zeros((rows, length))
    for _ in range(60):
        n = int(rng.integers(1, 12))  # sometimes longer than the spare columns
        subset = None if rng.random() < 0.7 else np.sort(rng.choice(rows, 2, replace=False))
        take = np.arange(rows) if subset is None else subset
        block = rng.standard_normal((take.size, n))
        want = np.concatenate([kept[take], block], axis=1)
        assert np.array_equal(hist.extend(block, subset), want)
        kept[take] = want[:, -length:]
        assert np.array_equal(hist.data, kept)


def test_sos_bank_kernel_path_equals_scipy_sosfilt(ecg_data_dir):
    """The bank calls scipy's compiled sosfilt kernel directly; `scipy.signal.sosfilt` (the
    public function, ``direct=False``) must give the same numbers, state included."""
    x = cached_record(str(ecg_data_dir / "mitdb" / "208")).signal_mv[:20000]
    block = np.stack([x, -x, 0.5 * x + 1.0])
    fast = SosFilterBank(design_qrs_bandpass(360))
    ref = SosFilterBank(design_qrs_bandpass(360), direct=False)
    assert fast.direct and not ref.direct
    for bank in (fast, ref):
        bank.add_streams(3)
    rng = np.random.default_rng(2)
    for a, b in _random_chunks(x.size, rng, 500):
        sub = None if rng.random() < 0.6 else np.array([0, 2])
        part = block[:, a:b] if sub is None else block[sub, a:b]
        assert np.array_equal(fast.process(part, sub), ref.process(part, sub))
        assert np.array_equal(fast.zi, ref.zi)


@pytest.mark.parametrize("fs", [0, 100, 2000, float("nan")])
def test_sampling_rate_out_of_range_is_rejected(fs):
    with pytest.raises(ValueError, match="125-1000 Hz"):
        check_sampling_rate(fs)
