"""Beat classes end to end: the live analyzer's N/V/Q labels on a real record (mitdb 119,
ventricular bigeminy) go through the wire `analysis` message, the recorder's WFDB annotations
(read back with wfdb.rdann) and the EDF+ export (read back with pyedflib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyedflib
import wfdb
from wfdb.processing import compare_annotations

from dsp.analyzer import MultiStreamAnalyzer
from protocol.waveforms import (
    Analysis,
    Announce,
    ChannelInfo,
    decode_server_frame,
    encode,
)
from recorder.edf_export import export_edf
from recorder.service import RelayWaveformSink
from recorder.session import RecorderConfig, SessionRecorder
from tests.waveforms.helpers import FakeClock
from waveforms.analysis import AnalysisScheduler, AnalysisUpdate

FS = 360.0
SECONDS = 90


async def test_ventricular_beats_are_labelled_v_on_the_wire_in_wfdb_and_in_edf(
    ecg_data_dir: Path, tmp_path: Path
) -> None:
    path = str(ecg_data_dir / "mitdb" / "119")
    raw = wfdb.rdrecord(path, physical=False, sampto=int(SECONDS * FS))
    adc = np.ascontiguousarray(raw.d_signal.T.astype(np.int16))
    ref = wfdb.rdann(path, "atr", sampto=int(SECONDS * FS))
    announce = Announce("bed-1", (ChannelInfo("MLII", "mV", 200.0, 1024),
                                  ChannelInfo("V1", "mV", 200.0, 1024)), FS, ecg_channel=0)
    updates: list[AnalysisUpdate] = []
    scheduler = AnalysisScheduler(MultiStreamAnalyzer(), on_update=updates.append,
                                  gap_timeout_s=10.0, max_hold_s=120.0, clock=FakeClock())
    stream = scheduler.open(announce, 0, None)
    assert stream is not None
    rec = SessionRecorder(RecorderConfig(tmp_path), room="icu-1")
    directory = rec.start("dr-li")
    rec.add_participant("mon-1", "patient")
    sink = RelayWaveformSink(rec)
    sink.on_stream("mon-1", announce)
    chunk = int(0.1 * FS)
    for lo in range(0, adc.shape[1], chunk):
        sink.on_samples("bed-1", lo, adc[:, lo:lo + chunk], 1.7e9 + lo / FS)
        scheduler.feed(stream, lo, adc[:, lo:lo + chunk])
        if (lo // chunk) % 5 == 4:
            n = len(updates)
            scheduler.analyze_once()
            for u in updates[n:]:
                wire = decode_server_frame(encode(u.analysis))  # as viewers and sinks get it
                assert isinstance(wire, Analysis) and wire == u.analysis
                sink.on_analysis("bed-1", wire)
    labels = "".join(u.analysis.labels for u in updates)
    assert set(labels) <= set("NVQ") and "V" in labels
    sink.end_all()
    await rec.stop("dr-li")

    record = next(p.stem for p in directory.glob("*.hea"))
    ann = wfdb.rdann(str(directory / record), "atr")
    beats = np.asarray(ann.sample)
    symbols = np.asarray(ann.symbol)
    ref_beats = np.asarray(ref.sample)[np.isin(ref.symbol, list("NV"))]
    ref_symbols = np.asarray(ref.symbol)[np.isin(ref.symbol, list("NV"))]
    cmp = compare_annotations(ref_beats, beats, int(0.15 * FS))
    got = symbols[cmp.matched_test_inds]
    want = ref_symbols[cmp.matched_ref_inds]
    tp = int(((got == "V") & (want == "V")).sum())
    se = tp / int((want == "V").sum())
    ppv = tp / int((got == "V").sum())
    assert cmp.sensitivity >= 0.98 and se >= 0.9 and ppv >= 0.9, (cmp.sensitivity, se, ppv)

    edf = export_edf(directory, record)
    with pyedflib.EdfReader(str(edf)) as r:
        _, _, texts = r.readAnnotations()
    assert sorted(t for t in texts if t in ("N", "V", "Q")) == sorted(symbols.tolist())
