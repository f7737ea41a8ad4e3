"""WfdbRecordWriter: a real MIT-BIH record streamed in chunks, out of order, read back sample-exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from recorder.wfdb_file import WaveformStreamInfo, WfdbRecordWriter


@pytest.fixture(scope="module")
def mitdb_100(ecg_data_dir: Path) -> tuple[np.ndarray, wfdb.Record, wfdb.Annotation]:
    """First 60 s of mitdb/100 as ADC integers (2, n) with its header and beat annotations."""
    rec = wfdb.rdrecord(str(ecg_data_dir / "mitdb" / "100"), physical=False, sampto=360 * 60)
    ann = wfdb.rdann(str(ecg_data_dir / "mitdb" / "100"), "atr", sampto=360 * 60)
    return rec.d_signal.T.astype(np.int64), rec, ann


def info_of(rec: wfdb.Record) -> WaveformStreamInfo:
    return WaveformStreamInfo(tuple(rec.sig_name), tuple(rec.units), tuple(rec.adc_gain),
                              tuple(int(b) for b in rec.baseline), float(rec.fs),
                              adc_resolution_bits=int(rec.adc_res[0]))


def test_out_of_order_backfill_is_sample_exact(tmp_path: Path, mitdb_100) -> None:
    samples, rec, ann = mitdb_100
    origin = 1_000_000  # the monitor's sample counter when recording started
    w = WfdbRecordWriter(tmp_path, "ecg", info_of(rec))
    chunk = 360 // 4
    starts = list(range(0, samples.shape[1], chunk))
    held_back = set(starts[40:60]) | {starts[100]}  # a 5 s gap and a lone lost chunk
    for s in starts:
        if s not in held_back:
            w.write_chunk(origin + s, samples[:, s:s + chunk])
    w.checkpoint()
    partial = wfdb.rdrecord(str(tmp_path / "ecg"), physical=False).d_signal.T
    hole = slice(starts[40], starts[60])
    assert (partial[:, hole] == -32768).all()  # not yet received: WFDB invalid sample
    assert np.array_equal(partial[:, : starts[40]], samples[:, : starts[40]])
    for s in sorted(held_back, reverse=True):  # back-fill arrives late and out of order
        w.write_chunk(origin + s, samples[:, s:s + chunk])
    w.write_chunk(origin + 500, samples[:, 500:1700])  # overlaps what is on disk: ignored
    for sample, symbol in zip(ann.sample, ann.symbol):
        w.add_annotation(origin + int(sample), symbol)
    w.add_annotation(origin + 7200, '"', "ALARM asystole")
    w.close()

    back = wfdb.rdrecord(str(tmp_path / "ecg"), physical=False)
    assert np.array_equal(back.d_signal.T, samples)
    assert back.fs == rec.fs and back.sig_name == rec.sig_name and back.units == rec.units
    assert back.adc_gain == rec.adc_gain and back.baseline == rec.baseline
    assert back.checksum == list((samples.sum(axis=1) + 32768) % 65536 - 32768)
    physical = wfdb.rdrecord(str(tmp_path / "ecg")).p_signal
    assert np.allclose(physical, (samples.T - np.array(rec.baseline)) / np.array(rec.adc_gain))
    assert w.stats.samples_duplicate == 1200 and w.stats.gaps_open == 0
    got = wfdb.rdann(str(tmp_path / "ecg"), "atr")
    assert got.fs == rec.fs
    alarm = list(got.symbol).index('"')
    assert got.aux_note[alarm] == "ALARM asystole" and got.sample[alarm] == 7200
    beats = [(int(s), y) for s, y, a in zip(got.sample, got.symbol, got.aux_note) if a == ""]
    assert beats == [(int(s), y) for s, y in zip(ann.sample, ann.symbol)]


def test_samples_before_origin_are_ignored(tmp_path: Path) -> None:
    info = WaveformStreamInfo(("II",), ("mV",), (200.0,), (0,), 500.0)
    w = WfdbRecordWriter(tmp_path, "r", info)
    x = np.arange(1, 1001, dtype=np.int16).reshape(1, -1)
    w.write_chunk(500, x[:, 500:])
    w.write_chunk(0, x[:, :600])  # back-fill from before the recording: only 500..599 overlap
    w.close()
    assert w.stats.samples_before_origin == 500 and w.stats.samples_duplicate == 100
    back = wfdb.rdrecord(str(tmp_path / "r"), physical=False).d_signal[:, 0]
    assert np.array_equal(back, x[0, 500:])


def test_chunk_and_description_validation() -> None:
    with pytest.raises(ValueError, match="gains must have 2 entries"):
        WaveformStreamInfo(("I", "II"), ("mV", "mV"), (200.0,), (0, 0), 500.0)
    with pytest.raises(ValueError, match="sampling_rate_hz must be > 0, got 0"):
        WaveformStreamInfo(("I",), ("mV",), (200.0,), (0,), 0)
    info = WaveformStreamInfo(("I",), ("mV",), (200.0,), (0,), 500.0)
    with pytest.raises(ValueError, match=r"shape \(1, n\), got \(2, 3\)"):
        info.check_chunk(np.zeros((2, 3), np.int16))
    with pytest.raises(ValueError, match="integers"):
        info.check_chunk(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"got \[-32768, 0\]"):
        info.check_chunk(np.array([[-32768, 0]]))
    wide = WaveformStreamInfo(("I",), ("uV",), (1000.0,), (0,), 500.0, adc_resolution_bits=24)
    assert wide.wfdb_format == 32
    wide.check_chunk(np.array([[-40000, 40000]]))
