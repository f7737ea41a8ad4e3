"""VF/VT detection on real vfdb/cudb/mitdb records and EC13-style synthetic VT/VF, live path."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from dsp.alarm_eval import run_records
from dsp.alarms import AlarmKind
from dsp.ventricular import VentricularBank
from tests.dsp.conftest import cached_record
from tests.dsp.synthetic import NORMAL, beat_times, fibrillation, render, ventricular_tachycardia

VENTRICULAR = {AlarmKind.VENTRICULAR_FIBRILLATION.value, AlarmKind.VENTRICULAR_TACHYCARDIA.value}


def _signal(ecg_data_dir, record: str, start_s: float, end_s: float) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(ecg_data_dir / record), channels=[0])
    fs = float(rec.fs)
    return np.nan_to_num(rec.p_signal[int(start_s * fs) : int(end_s * fs), 0]), fs


def _first_raised(alarms, kinds) -> float | None:
    times = [a["raised_s"] for a in alarms if a["kind"] in kinds]
    return min(times) if times else None


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_cudb_vf_onset_raises_a_ventricular_alarm_within_4_s(ecg_data_dir, scale):
    x, fs = _signal(ecg_data_dir, "cudb/cu01", 150.0, 240.0)  # VF begins at 214.2 s
    run = run_records({"cu01": (x * scale, fs)})["cu01"]
    onset = 214.2 - 150.0
    raised = _first_raised(run.alarms, VENTRICULAR)
    assert raised is not None and onset < raised <= onset + 4.0, run.alarms
    assert not [a for a in run.alarms if a["raised_s"] < onset]  # nothing during sinus rhythm
    # VF replaces asystole: no asystole alarm although QRS detection sees nothing
    assert AlarmKind.ASYSTOLE.value not in {a["kind"] for a in run.alarms}


def test_vfdb_flutter_onset_raises_within_4_s(ecg_data_dir):
    x, fs = _signal(ecg_data_dir, "vfdb/419", 540.0, 600.0)  # VFL from 577.3 s
    run = run_records({"419": (x, fs)})["419"]
    raised = _first_raised(run.alarms, VENTRICULAR)
    assert raised is not None and 37.3 < raised <= 37.3 + 4.0, run.alarms


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("kind", ["vt", "vf"])
def test_synthetic_vt_and_vf_after_sinus_rhythm(scale, kind):
    fs = 250.0
    sinus = render(fs, beat_times([0.8], 30.0), [NORMAL], 30.0, scale)
    tail = (ventricular_tachycardia(fs, 200, 20.0, scale, seed=1) if kind == "vt"
            else fibrillation(fs, 20.0, scale, seed=2))
    run = run_records({"p": (np.concatenate([sinus, tail]), fs)})["p"]
    want = (AlarmKind.VENTRICULAR_TACHYCARDIA if kind == "vt"
            else AlarmKind.VENTRICULAR_FIBRILLATION).value
    raised = _first_raised(run.alarms, {want})
    assert raised is not None and 30.0 < raised <= 34.0, run.alarms
    assert [a for a in run.alarms if a["raised_s"] < 30.0] == []
    first = next(a for a in run.alarms if a["kind"] == want)
    assert first["priority"] == "high" and first["cleared_s"] is None


@pytest.mark.parametrize("name", ["100", "201", "208"])  # sinus; AF; PVCs, bigeminy
def test_no_ventricular_condition_on_sinus_af_and_pvc_records(ecg_data_dir, name):
    x = cached_record(str(ecg_data_dir / "mitdb" / name)).signal_mv[: 600 * 360]
    bank = VentricularBank(360)
    bank.add_stream()
    seen = False
    for a in range(0, x.size, 90):
        bank.process(x[None, a : a + 90])
        seen |= bool(bank.fibrillation[0] or bank.tachycardia[0])
    assert not seen


def test_decisions_do_not_depend_on_chunking(ecg_data_dir):
    x, fs = _signal(ecg_data_dir, "vfdb/418", 380.0, 720.0)  # many VFL episodes
    rng = np.random.default_rng(5)

    def onsets(sizes) -> list[int]:
        bank = VentricularBank(fs)
        bank.add_stream()
        out, pos = [], 0
        for n in sizes:
            bank.process(x[None, pos : pos + n])
            pos += n
            on = bool(bank.fibrillation[0] or bank.tachycardia[0])
            if on and (not out or out[-1] != int(bank.onset_sample[0])):
                out.append(int(bank.onset_sample[0]))
        return out

    step = int(0.5 * fs)
    regular = onsets([step] * (x.size // step + 1))
    random = onsets(rng.integers(1, step, size=x.size).tolist())
    assert len(regular) >= 5
    assert random == regular
