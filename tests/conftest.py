"""Shared test fixtures: data locations, one scalable timeout unit, a deadline for async tests."""

from __future__ import annotations

import asyncio
import functools
import inspect
import io
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

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


# pytest-timeout's signal method cannot stop an asyncio test: its exception lands in whichever
# callback runs at that moment and asyncio logs it, so a test stuck in an await hangs the run.
# Each async test is therefore cancelled from inside its own loop a little before pytest-timeout
# (which stays, in thread mode, as the backstop for a hang in cleanup), and the failure says
# where every task was waiting.
DEADLINE_MARGIN = 0.9


def _task_stacks() -> str:
    """Each pending task's await chain, innermost last (Task.print_stack shows only the outer frame)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"{task.get_name()}:\n")
        coro: Any = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                out.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out.getvalue()


def _with_deadline(fn: Callable[..., Coroutine[Any, Any, Any]], budget_s: float) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        expired: list[str] = []

        def expire() -> None:
            expired.append(_task_stacks())
            task.cancel()

        handle = asyncio.get_running_loop().call_later(budget_s, expire)
        try:
            return await fn(*args, **kwargs)
        except asyncio.CancelledError:
            if expired:
                pytest.fail(f"over the {budget_s:.0f}-s deadline; where each task waited:\n{expired[0]}",
                            pytrace=True)
            raise
        finally:
            handle.cancel()
    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ini = float(config.getini("timeout") or 0)
    for item in items:
        if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
            continue
        marker = item.get_closest_marker("timeout")
        limit = float(marker.args[0]) if marker and marker.args else ini
        if limit > 0:
            item.obj = _with_deadline(item.obj, DEADLINE_MARGIN * limit)
