"""Polling helper for tests that watch another process (a simulator, a `rig run`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str, *, poll_s: float = 0.05) -> Any:
    """Return `pred()`'s first truthy value; fail naming `what` after `timeout_s` wall seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")
