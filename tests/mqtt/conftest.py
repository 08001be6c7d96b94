"""Fixtures: a real MQTT broker per test, on a free port, with passwords and an ACL.

The rig speaks MQTT 5 (docs/decisions/0023), so `broker` is Mosquitto: amqtt 0.12, the pure-Python fallback of
docs/decisions/0020, speaks MQTT 3.1.1 only and refuses the rig's connection. Where Mosquitto is missing (or
RIG_TEST_BROKER=amqtt forces amqtt) the tests that need `broker` are skipped with that reason; in CI they fail, and
.ci/run installs Mosquitto. `mqtt311_broker` is amqtt on purpose: it proves that the rig refuses such a broker
clearly instead of falling back to MQTT 3.1.1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.broker import BROKER_ENV, Broker, amqtt_available, require_mqtt5_broker, running_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """An MQTT 5 broker (Mosquitto), started; stopped after the test."""
    with running_broker(tmp_path / "broker", require_mqtt5_broker()) as b:
        yield b


@pytest.fixture
def mqtt311_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that speaks MQTT 3.1.1 only (amqtt 0.12), started; stopped after the test."""
    if not amqtt_available():
        pytest.fail(f"amqtt is not installed: pip install -e '.[dev]' ({BROKER_ENV}={os.environ.get(BROKER_ENV)})")
    with running_broker(tmp_path / "broker-311", "amqtt") as b:
        yield b
