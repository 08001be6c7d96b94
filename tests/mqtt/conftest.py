"""Fixtures: a real Mosquitto broker per test, on a free port, with passwords and an ACL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.broker import Broker, mosquitto_path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto, started; stopped after the test."""
    if mosquitto_path() is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is missing in CI: .ci/run installs it with apt-get")
        pytest.skip("mosquitto is not installed here (.ci/run installs it with apt-get)")
    b = Broker(tmp_path / "broker")
    b.folder.mkdir()
    b.configure()
    b.start()
    try:
        yield b
    finally:
        b.stop()
