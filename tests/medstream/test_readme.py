"""The README's command-line session runs as printed.

The block under "Using it" is executed by bash, unchanged, in a scratch folder that has
`../shared` beside it (as a checkout has) and a `medstream` command on PATH, so an example that
stops working fails here before a new user finds out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.test_publish import write_clip
from tests.conftest import REPO_ROOT, timeout_s


def readme_session() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using it", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "README: no ```sh block under 'Using it'"
    return match.group(1)


@pytest.mark.slow
def test_readme_session_runs_as_printed(tmp_path: Path, ecg_data_dir: Path) -> None:
    shared = ecg_data_dir.parent.parent  # .../shared/data/ecg -> .../shared
    work = tmp_path / "checkout"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared, target_is_directory=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "medstream").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m medstream.cli "$@"\n')
    (bin_dir / "medstream").chmod(0o755)
    write_clip(work / "lecture.webm", "libvpx", "libopus")
    script = "set -euo pipefail\n" + readme_session() + "\nwait\n"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MEDSTREAM_SECRET", None)
    out = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                         timeout=timeout_s(240))
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    # what each step leaves behind
    assert re.search(r"^eyJ[\w-]+\.[\w-]+\.[\w-]+$", out.stdout, re.M), "the booked token was printed"
    assert "monitor-sim: sent" in out.stdout
    assert re.search(r"ecg12-send: queued as \S+ \(priority stat\)", out.stdout), "the STEMI snapshot was queued first"
    report = json.loads((work / "ecg.json").read_text())
    assert set(report["records"]) == {"100", "208"}
    assert "medstream serving on http://127.0.0.1:8765" in out.stdout
