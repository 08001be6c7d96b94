"""A run on the in-process simulator published to a real broker, wired as `rig run` wires it (rig/cli/run_cmd.py).

The engine runs under tests/support/run_harness.py `running(...)` (store, supervisor, the model's truth recorded);
`rig.remote.run_telemetry.run_telemetry` samples `run_snapshot(engine.progress(), controller.status())` into a
TelemetryLink on the broker; remote pause/resume/abort/ack go to the engine's own handlers (each call counted in
`LinkedRun.calls`) and remote-command events go to the run's store and the events topic, as in `rig run` (which also
writes them to the headless JSON log: tests/mqtt/test_hostile_commands_on_a_rig_run.py checks all three).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.clock import unix_now
from rig.config import TelemetrySection
from rig.remote.run_telemetry import Handler, run_snapshot, run_telemetry
from rig.remote.telemetry import TelemetryLink
from tests.mqtt.broker import USERS, Broker
from tests.support.run_harness import Running, running

PASSWORD_ENV = "RIG_TEST_MQTT_PASSWORD"
SECRET_ENV = "RIG_TEST_COMMAND_SECRET"


@dataclass
class LinkedRun:
    run: Running
    link: TelemetryLink
    calls: list[str] = field(default_factory=list)  # remote commands that reached the engine's handlers


@contextlib.asynccontextmanager
async def linked_run(
    broker: Broker,
    tmp_path: Path,
    *,
    kpa: float = 180.0,
    speed: float = 4.0,
    rig_id: str = "rig-a",
    queue_size: int = 1000,
    rate_hz: float = 4.0,
    command_secret: str | None = None,
) -> AsyncIterator[LinkedRun]:
    """Start the run and its link; yield once the link is connected."""
    saved = {k: os.environ.get(k) for k in (PASSWORD_ENV, SECRET_ENV)}
    os.environ[PASSWORD_ENV] = USERS[rig_id]
    if command_secret is None:
        os.environ.pop(SECRET_ENV, None)
    else:
        os.environ[SECRET_ENV] = command_secret
    try:
        async with running(tmp_path, kpa=kpa, speed=speed) as r:
            tele = TelemetrySection(
                host="127.0.0.1",
                port=broker.port,
                username=rig_id,
                password_env=PASSWORD_ENV,
                command_secret_env=SECRET_ENV,
                rate_hz=rate_hz,
                queue_size=queue_size,
            )
            cfg = r.rig.cfg.model_copy(
                update={"rig": r.rig.cfg.rig.model_copy(update={"name": rig_id}), "telemetry": tele}
            )
            engine, store, clock = r.engine, r.store, r.rig.clock

            links: list[TelemetryLink] = []

            def record_remote(kind: str, message: str, data: dict[str, Any]) -> None:
                store.event(kind, message, test_time_s=clock.now(), unix_time_s=unix_now(), data=data)
                for published in links:
                    published.publish_event(kind, message, data)

            calls: list[str] = []

            def counted(name: str, handler: Handler) -> Handler:
                async def call() -> dict[str, Any]:
                    calls.append(name)
                    return await handler()

                return call

            remote: dict[str, Handler] = {
                "pause": counted("pause", engine.pause),
                "resume": counted("resume", engine.resume),
                "abort": counted("abort", engine.abort),
                "ack": counted("ack", engine.ack),
            }
            async with run_telemetry(
                cfg,
                snapshot=lambda: run_snapshot(engine.progress(), r.rig.ctl.status()),
                handlers=remote,
                record_event=record_remote,
            ) as link:
                assert link is not None
                links.append(link)
                for _ in range(500):
                    if link.connected:
                        break
                    await asyncio.sleep(0.02)
                assert link.connected, "the run's link did not connect to the broker"
                yield LinkedRun(r, link, calls)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
