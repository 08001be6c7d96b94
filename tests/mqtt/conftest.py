"""Fixtures: a real MQTT broker per test (Mosquitto, or amqtt where it is absent), on a free port, with passwords
and an ACL. RIG_TEST_BROKER=amqtt forces the amqtt fallback (to test it where Mosquitto is installed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.broker import BROKER_ENV, Broker, broker_kind


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker, started; stopped after the test."""
    kind = broker_kind()
    if kind is None:
        if os.environ.get("CI"):
            pytest.fail("no MQTT broker in CI: .ci/run installs mosquitto with apt-get (amqtt comes with .[dev])")
        pytest.fail(
            f"no MQTT broker: install mosquitto or amqtt (pip install -e '.[dev]'); {BROKER_ENV}="
            f"{os.environ.get(BROKER_ENV)}"
        )
    b = Broker(tmp_path / "broker", kind=kind)
    b.folder.mkdir()
    b.configure()
    b.start()
    try:
        yield b
    finally:
        b.stop()
