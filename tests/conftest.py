"""Shared fixtures: the task-leak guard runs for every test; the fault matrix collects its figures."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from typing import Any

import pytest

from tests.support.fault_matrix import Figure, check_row, format_table, write_json

_FIGURES = pytest.StashKey[list[Figure]]()

FaultFigure = Callable[..., None]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that record a fault-matrix figure carry the `fault_matrix` marker (bench/faults.py selects them)."""
    for item in items:
        if "fault_figure" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fault_matrix)


@pytest.fixture
def fault_figure(request: pytest.FixtureRequest) -> FaultFigure:
    """Record one figure of a fault-matrix row: fault_figure(row, figure, value, goal=..., met=...)."""

    def record(row: int, figure: str, value: str, *, goal: str, met: bool) -> None:
        check_row(row)
        request.config.stash[_FIGURES].append(Figure(row, figure, value, goal, bool(met), request.node.nodeid))
        print(f"\nfault matrix row {row}: {figure} = {value} (goal {goal}) {'met' if met else 'NOT MET'}")

    return record


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its figures to the controller, which prints the table for the whole session."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_figures"] = json.dumps([asdict(f) for f in session.config.stash.get(_FIGURES, [])])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist (controller): collect a finished worker's figures."""
    figures = json.loads(getattr(node, "workeroutput", {}).get("fault_figures", "[]"))
    node.config.stash[_FIGURES].extend(Figure(**f) for f in figures)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if not figures or hasattr(config, "workeroutput"):
        return
    terminalreporter.section("fault matrix (issue 9): figures measured in this session")
    terminalreporter.write_line(format_table(sorted(figures, key=lambda f: f.row)))
    write_json(figures)


@pytest.fixture(autouse=True, scope="module")
def _earlier_modules_out_of_the_collector() -> Iterator[None]:
    """Each test module starts with the objects of the modules before it collected or frozen.

    The test process carries a few hundred thousand objects from earlier tests that a rig's own process never
    has; a full collection over them paused the process up to 382 ms (measured with gc.callbacks over the
    suite), and once, in a 30 s broker outage test, a 392 ms loop lag (most likely such a pause) tripped the
    supervisor's 250 ms check. Frozen, they are left out of collections until the module ends; the module's own
    objects are collected as usual (pauses over 30 ms inside tests afterwards: 4, at most 79 ms)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


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
