"""Shared fixtures: the task-leak guard runs for every test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail any test that leaves asyncio tasks running when it ends."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    # Give tasks that are already finishing one loop turn to complete.
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not current and t not in before and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(f"{t.get_name()} ({t.get_coro()!r})" for t in leaked)
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {names}")
