"""Shared test fixtures: data locations and one scalable timeout unit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def timeout_s(seconds: float) -> float:
    """Scale a test timeout by MEDSTREAM_TIMEOUT_FACTOR (slow or loaded machines set it > 1)."""
    return seconds * float(os.environ.get("MEDSTREAM_TIMEOUT_FACTOR", "1"))


def _ecg_data_dir() -> Path:
    env = os.environ.get("MEDSTREAM_ECG_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data" / "ecg"


@pytest.fixture(scope="session")
def ecg_data_dir() -> Path:
    """Root of the PhysioNet WFDB records (mitdb/, nstdb/, vfdb/, cudb/)."""
    path = _ecg_data_dir()
    if not (path / "mitdb" / "100.hea").exists():
        raise RuntimeError(
            f"ECG records not found at {path}; set MEDSTREAM_ECG_DATA to the shared/data/ecg folder"
        )
    return path
