"""Shared readings test data: the 12-lead records and one analysed ECG."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def twelve_lead_dir(ecg_data_dir: Path) -> Path:
    """../shared/data/ecg/12lead (PTB-XL, PTB, CPSC 2018, CinC 2021)."""
    return ecg_data_dir / "12lead"
