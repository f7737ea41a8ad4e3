"""recorder.library on sessions written by a real SessionRecorder: list, show, resolve, Range, prune."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recorder import RecorderConfig, SessionRecorder
from recorder.errors import RangeNotSatisfiableError, SessionNotFoundError, UnsafePathError
from recorder.library import list_sessions, main, parse_range, prune, resolve_file
from tests.recorder.media import Clip, frames

DAY_S = 86400.0
NOW = 1_760_000_000.0


def record(root: Path, room: str, started: float, clip: Clip | None = None,
           stop: bool = True) -> SessionRecorder:
    rec = SessionRecorder(RecorderConfig(root), room=room, clock=lambda: started)
    rec.start("dr-a")
    if clip is not None:
        sink = rec.add_track("v", "p1", "video", "VP8")
        for f in frames(clip, "v", start_at=started):
            sink.on_frame(f)
    if stop:
        rec.stop_blocking("dr-a")
    else:
        rec.checkpoint_blocking()
    return rec


@pytest.fixture
def library(tmp_path: Path, vp8_clip: Clip):
    old = record(tmp_path, "ward1", NOW - 40 * DAY_S, vp8_clip)
    new = record(tmp_path, "ward2", NOW - 1 * DAY_S, vp8_clip)
    running = record(tmp_path, "ward1", NOW - 50 * DAY_S, stop=False)  # killed or still going
    broken = tmp_path / "ward2" / "20240101T000000Z-abcdef"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    yield tmp_path, old, new, running, broken
    running.stop_blocking("test")


def test_list_and_show(library, capsys: pytest.CaptureFixture[str]) -> None:
    root, old, new, running, broken = library
    sessions = list_sessions(root)
    assert [s.session_id for s in sessions] == [new.session_id, old.session_id,
                                                running.session_id, broken.name]
    by_id = {s.session_id: s for s in sessions}
    assert by_id[old.session_id].complete and by_id[old.session_id].room == "ward1"
    assert by_id[old.session_id].n_files == 2  # manifest + video
    assert not by_id[running.session_id].complete
    assert by_id[running.session_id].stopped_at is None
    assert by_id[broken.name].error and not by_id[broken.name].complete
    assert [s.session_id for s in list_sessions(root, room="ward2")] == [new.session_id, broken.name]
    assert list_sessions(root / "missing") == []

    assert main(["--root", str(root), "list", "--json", "--room", "ward1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [entry["session_id"] for entry in lines] == [old.session_id, running.session_id]
    assert main(["--root", str(root), "show", old.session_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["files"][0]["sha256"] and shown["stop_reason"] == "requested"
    assert main(["--root", str(root), "show", "20990101T000000Z-000000"]) == 1
    assert "no session" in capsys.readouterr().err


def test_resolve_file_is_safe(library) -> None:
    root, old, *_ = library
    path = resolve_file(root, old.session_id, "video01_p1.webm")
    assert path == old.directory / "video01_p1.webm"  # type: ignore[operator]
    assert resolve_file(root, old.session_id, "manifest.json").name == "manifest.json"
    for bad in ["../../ward2", "../" + old.session_id + "/manifest.json", "/etc/passwd",
                ".manifest.json.tmp", "a/b", "", "..", "x\x00y"]:
        with pytest.raises(UnsafePathError):
            resolve_file(root, old.session_id, bad)
    os.symlink("/etc/passwd", old.directory / "link")  # type: ignore[operator]
    with pytest.raises(UnsafePathError, match="symbolic link"):
        resolve_file(root, old.session_id, "link")
    with pytest.raises(FileNotFoundError):
        resolve_file(root, old.session_id, "nothing.webm")
    with pytest.raises(SessionNotFoundError):
        resolve_file(root, "../ward1", "manifest.json")
    with pytest.raises(SessionNotFoundError):
        resolve_file(root, "20990101T000000Z-000000", "manifest.json")


def test_parse_range() -> None:
    assert parse_range(None, 1000) is None
    assert parse_range("bytes=0-499", 1000) == (0, 499)
    assert parse_range("bytes=500-", 1000) == (500, 999)
    assert parse_range("bytes=-200", 1000) == (800, 999)
    assert parse_range("bytes=-5000", 1000) == (0, 999)
    assert parse_range("bytes=900-5000", 1000) == (900, 999)
    assert parse_range("bytes=0-1,5-6", 1000) is None  # multi-range: send it all
    assert parse_range("items=0-1", 1000) is None
    assert parse_range("bytes=9-1", 1000) is None
    with pytest.raises(RangeNotSatisfiableError, match="< file size 1000, got 1000"):
        parse_range("bytes=1000-", 1000)
    with pytest.raises(RangeNotSatisfiableError):
        parse_range("bytes=-0", 1000)


def test_prune_keeps_recent_and_running_sessions(library, capsys) -> None:
    root, old, new, running, broken = library
    os.utime(broken / "manifest.json", (NOW - 400 * DAY_S, NOW - 400 * DAY_S))
    would = prune(root, older_than_s=30 * DAY_S, now=NOW, dry_run=True)
    assert {s.session_id for s in would} == {old.session_id, broken.name}
    assert old.directory.exists()  # type: ignore[union-attr]
    removed = prune(root, older_than_s=30 * DAY_S, now=NOW)
    assert {s.session_id for s in removed} == {old.session_id, broken.name}
    assert [s.session_id for s in list_sessions(root)] == [new.session_id, running.session_id]
    with pytest.raises(ValueError, match="older_than_s must be >= 0, got -1"):
        prune(root, older_than_s=-1)
    assert main(["--root", str(root), "prune", "--older-than", "0", "--dry-run"]) == 0
    assert f"would delete ward2/{new.session_id}" in capsys.readouterr().out
