"""`medstream demo` stopped by SIGTERM or Ctrl-C (SIGINT) finishes its recordings cleanly.

The demo runs as a real subprocess recording its monitoring ward from the start; once the
recording has files, the process gets the signal. It must exit 0 and leave every session complete
(stopped, every file hashed), not "incomplete" as a killed process would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from recorder.library import list_sessions
from tests.conftest import REPO_ROOT, timeout_s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_demo_finishes_its_recordings_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    recordings = tmp_path / "recordings"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "medstream.cli", "demo", "--port", "0", "--record", "monitoring",
        "--recordings-dir", str(recordings),
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONFAULTHANDLER": "1", "MEDSTREAM_SECRET": "demo-signal-test-secret-0123456789abcdef"})
    assert proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())  # drained all along: a full pipe would block the demo
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("Ctrl-C") for line in lines):
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout_s(30))
            assert raw, f"demo exited early: {lines}"
            lines.append(raw.decode().strip())

        async def recording_has_files() -> None:
            # the manifest lists files when the recording stops; the samples are on disk before
            while not (list(recordings.glob("*/*/manifest.json"))
                       and any(p.stat().st_size > 0 for p in recordings.glob("*/*/*.dat"))):
                await asyncio.sleep(0.2)

        try:
            await asyncio.wait_for(recording_has_files(), timeout_s(30))
        except TimeoutError:
            raise AssertionError(f"no recorded samples after 30 s: {sorted(map(str, recordings.rglob('*')))}") from None
        assert [s.complete for s in list_sessions(recordings)] == [False]  # recording, not finished yet
        proc.send_signal(signum)
        stdout_task = asyncio.ensure_future(proc.stdout.read())
        try:
            await asyncio.wait_for(proc.wait(), timeout_s(30))
            out = await asyncio.wait_for(stdout_task, timeout_s(10))
        except TimeoutError:
            proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack to stderr
            await asyncio.wait_for(proc.wait(), timeout_s(10))
            said = (await stdout_task).decode()[-300:]
            dump = (await stderr_task).decode()
            start = dump.find("Fatal Python error")
            tail = dump[start:dump.find("Extension modules", start)] if start >= 0 else dump[-6000:]
            raise AssertionError(f"demo still running 30 s after {signum.name}; it said {said!r}:\n{tail}") from None
        err = await stderr_task
        assert proc.returncode == 0, (proc.returncode, err.decode()[-2000:])
        assert "finishing recordings" in out.decode(), out.decode()
        sessions = list_sessions(recordings)
        assert sessions, "no session recorded"
        for s in sessions:
            assert s.complete and not s.error, s
            assert s.n_files > 0 and s.stopped_at is not None, s
        assert "Traceback" not in err.decode(), err.decode()[-2000:]
        assert "did not stop" not in err.decode(), err.decode()[-2000:]  # every monitor obeyed the cancel
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr_task.cancel()
