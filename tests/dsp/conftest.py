"""Shared dsp test helpers: cached real records."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dsp.records import EcgRecord, load_record


@lru_cache(maxsize=16)
def cached_record(path: str) -> EcgRecord:
    """Load a WFDB record once per test session."""
    return load_record(Path(path))
