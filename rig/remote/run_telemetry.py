"""Wires a run to the lab's MQTT broker: telemetry a few times a second, events, status, remote commands.

Everything here is off the control path: the sampler reads snapshots and hands them to the link's bounded queue;
the link's own task talks to the broker. Remote commands go to the same engine handlers as the local operator
socket (pause, resume, abort, ack). `record_event` gets every remote command, accepted or refused with its reason,
and the link's own notes (a broker that refuses the rig: kind `telemetry`); `rig run` writes them to the run's
store, the headless JSON log and the events topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from rig.clock import unix_now
from rig.config import RigConfig
from rig.remote.telemetry import MqttSettings, TelemetryLink

Snapshot = Callable[[], dict[str, Any]]
Handler = Callable[[], Awaitable[dict[str, Any]]]


def mqtt_settings(cfg: RigConfig) -> MqttSettings | None:
    """Broker settings from the configuration's [telemetry] section (secrets from the environment)."""
    t = cfg.telemetry
    if t is None:
        return None
    return MqttSettings(
        host=t.host,
        port=t.port,
        rig_id=cfg.rig.name,
        username=t.username,
        password=os.environ.get(t.password_env),
        tls_ca_file=t.tls_ca_file,
        prefix=t.prefix,
        queue_size=t.queue_size,
        command_secret=os.environ.get(t.command_secret_env) or None,
        command_max_age_s=t.command_max_age_s,
    )


@contextlib.asynccontextmanager
async def run_telemetry(
    cfg: RigConfig,
    *,
    snapshot: Snapshot,
    handlers: dict[str, Handler],
    record_event: Callable[[str, str, dict[str, Any]], None],
    wall_period_s: float | None = None,
) -> AsyncIterator[TelemetryLink | None]:
    """Publish `snapshot()` at the configured rate while the block runs; None when telemetry is not configured."""
    settings = mqtt_settings(cfg)
    if settings is None or cfg.telemetry is None:
        yield None
        return
    period = wall_period_s if wall_period_s is not None else 1.0 / cfg.telemetry.rate_hz
    link = TelemetryLink(settings, handlers=handlers, on_event=record_event, now_unix=unix_now)
    await link.start()

    async def sample() -> None:
        last_state = None
        last_step = None
        while True:
            snap = snapshot()
            state = snap.get("state")
            if state != last_state:
                link.set_status(state=state, step=snap.get("step"))
                if last_state is not None:
                    link.publish_event("state", f"{last_state} -> {state}")
                last_state = state
            if snap.get("step") != last_step:
                if last_step is not None:
                    link.publish_event("step", f"step {snap.get('step')}")
                last_step = snap.get("step")
            link.publish_telemetry({**snap, "mqtt_dropped": link.dropped})
            await asyncio.sleep(period)

    task = asyncio.create_task(sample(), name="telemetry-sampler")
    try:
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        snap = snapshot()
        await link.close(final_state=str(snap.get("state", "offline")))


def run_snapshot(progress: Any, status: Any) -> dict[str, Any]:
    """Telemetry fields (units in the names) from the engine's progress and the controller's status."""
    return {
        "state": progress.state.value,
        "step": f"{progress.step_number}/{progress.step_total} {progress.step_kind} {progress.step_label}".strip(),
        "cycle": progress.cycle,
        "elapsed_s": progress.elapsed_s,
        "remaining_s": progress.remaining_s,
        "pressure_kpa": progress.pressure_kpa,
        "setpoint_kpa": progress.setpoint_kpa,
        "force_n": status.force_abs_n,
        "position_um": status.position_um,
        "voltage_v": progress.voltage_v,
        "current_a": progress.current_a,
        "step_charge_mah": progress.step_charge_c / 3.6,
    }
