"""The task-leak guard itself must be able to fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def test_guard_fails_a_test_that_leaks_a_task(tmp_path: Path) -> None:
    conftest = Path(__file__).with_name("conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            async def test_leaks():
                asyncio.get_running_loop().create_task(asyncio.sleep(30), name="leaky-sleeper")

            async def test_clean():
                t = asyncio.get_running_loop().create_task(asyncio.sleep(0))
                await t
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},  # the copied conftest imports tests
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "leaky-sleeper" in out.stdout
    # the leaky test's body passes, its teardown errors; the clean test passes with no error
    assert "ERROR test_leaky.py::test_leaks" in out.stdout
    assert "test_clean" not in out.stdout.split("short test summary")[-1]
    assert "2 passed, 1 error" in out.stdout
