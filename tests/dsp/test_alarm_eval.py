"""`medstream alarm-eval` on real records: the JSON the issue specifies, scoring, options."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from dsp.alarm_eval import (
    RecordRun,
    _reference_beats,
    main,
    rhythm_episodes,
    score_ventricular_runs,
    ventricular_runs,
)
from medstream.cli import main as cli_main


@pytest.fixture(scope="module")
def cu01_default(ecg_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """cu01 evaluated once at the server's defaults (two tests compare against it): JSON, output."""
    out = tmp_path_factory.mktemp("alarm-eval") / "alarms.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(ecg_data_dir / "cudb" / "cu01"), "--json", str(out)]) == 0
    return json.loads(out.read_text()), printed.getvalue()


def test_alarm_eval_writes_alarms_hr_and_beats_per_record(cu01_default):
    data, printed = cu01_default
    assert data["chunk_s"] == 0.1 and data["step_s"] == 0.2  # the server's defaults
    rec = data["records"]["cu01"]
    assert rec["fs"] == 250.0 and rec["duration_s"] == pytest.approx(127232 / 250)
    assert len(rec["hr"]) == int(rec["duration_s"])
    assert [t for t, _ in rec["hr"][:3]] == [1.0, 2.0, 3.0]
    assert rec["hr"][100][1] == pytest.approx(57, abs=5)  # 203 beats in the 214 s before VF
    assert 180 < len([b for b in rec["beats"] if b < 214 * 250]) < 240
    vf = [a for a in rec["alarms"] if a["kind"] == "ventricular_fibrillation"]
    assert vf and vf[0]["priority"] == "high" and 214.2 < vf[0]["raised_s"] < 218.2
    assert set(vf[0]) >= {"kind", "priority", "raised_s", "cleared_s"}
    (episode,) = rec["score"]["episodes"]
    assert episode["label"] == "(VF" and episode["latency_s"] <= 4.0
    assert "cu01" in printed


def test_records_are_streamed_with_the_given_chunk_and_step(ecg_data_dir, tmp_path, cu01_default):
    out = tmp_path / "a.json"
    rec = str(ecg_data_dir / "cudb" / "cu01")
    assert cli_main(["alarm-eval", rec, "--chunk-s", "0.04", "--step-s", "1.0",
                     "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    r = data["records"]["cu01"]
    assert data["step_s"] == 1.0 and data["chunk_s"] == 0.04
    before_vf = [b for b in r["beats"] if b < 214 * 250]
    assert abs(len(before_vf) - 203) <= 2  # cu01 has 203 annotated beats before the VF
    assert r["alarms"][0]["kind"] in ("ventricular_tachycardia", "ventricular_fibrillation")
    # alarms are decided on the analyzer's grid of signal time: the same as at the server's
    # defaults (0.1 s chunks, a step every 0.2 s), raise and clear times included
    d = cu01_default[0]["records"]["cu01"]
    assert r["alarms"] == d["alarms"] and r["beats"] == d["beats"]


def test_flutter_marked_twice_is_one_episode(ecg_data_dir):
    episodes = [e for e in rhythm_episodes(str(ecg_data_dir / "mitdb" / "207"), 360.0, 1805.6)
                if e.label == "(VFL"]
    starts = [round(e.start_s) for e in episodes]
    assert len(starts) == len(set(starts)) and 41 in starts


def test_bad_arguments_are_reported(ecg_data_dir, capsys):
    with pytest.raises(SystemExit):
        main([str(ecg_data_dir / "mitdb" / "nope")])
    assert "expected" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(ecg_data_dir / "mitdb" / "100"), "--step-s", "0"])


def test_vt_is_scored_by_the_alarms_own_definition_on_the_reference_beats(ecg_data_dir):
    """A VT episode counts when the reference beats meet the VT alarm's definition (>= 5
    consecutive ventricular beats at >= 100 bpm), latency from that moment; shorter or slower
    runs are reported apart (a monitor calls them runs, not VT). Before, every annotated "(VT"
    rhythm episode was scored from its onset: 39 episodes, most of them 3-4 beat salvos."""
    beats_s, symbols = _reference_beats(str(ecg_data_dir / "mitdb" / "223"), 360.0)
    runs = ventricular_runs(beats_s, symbols)
    vt = [r for r in runs if r.kind == "vt"]
    assert [(round(r.start_s), r.beats) for r in vt] == [(578, 97), (1044, 67), (1551, 5)]
    assert all(r.start_s < r.met_s <= r.start_s + 3.1 for r in vt)  # the 5th beat at >= 100 bpm
    assert {r.kind for r in runs} == {"vt", "run", "couplet"}
    slow = ventricular_runs(*_reference_beats(str(ecg_data_dir / "mitdb" / "205"), 360.0))
    assert [r.kind for r in slow if r.beats == 13] == ["run"]  # 13 beats at 91 bpm: not VT
    run = RecordRun("223", 360.0, 1805.6, alarms=[
        {"kind": "ventricular_tachycardia", "raised_s": 588.0, "cleared_s": 639.0}])
    scored = score_ventricular_runs(run, vt)
    assert scored[0]["alarmed"] and scored[0]["latency_s"] == round(588.0 - vt[0].met_s, 2)
    assert [s["latency_s"] for s in scored[1:]] == [None, None]
