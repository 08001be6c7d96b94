"""`rig watch` (the fleet view) and `rig send` (one remote command), over the lab's MQTT broker.

A broker that cannot be reached, refuses the login or speaks MQTT 3.1.1 only raises `BrokerError`, whose message is
one line for the operator naming the broker (host:port) and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import aiomqtt
from rich.console import Console
from rich.live import Live
from rich.table import Table

from rig.remote.commands import make_command
from rig.remote.telemetry import MqttSettings, broker_problem, connection, mqtt_client

FIX_ADDRESS = "(--broker HOST:PORT)"
FIX_LOGIN = "check --username and --password (or $RIG_MQTT_PASSWORD)"


class BrokerError(Exception):
    """The broker could not be used; the message is one line naming it and what to do."""


async def _broker_error(settings: MqttSettings, exc: aiomqtt.MqttError, *, connected: bool) -> BrokerError:
    problem = await broker_problem(settings, exc, connected=connected)
    return BrokerError(problem.line(fix_address=FIX_ADDRESS, fix_login=FIX_LOGIN))


def fleet_table(rigs: dict[str, dict[str, Any]], *, now: float) -> Table:
    """One row per rig seen on the broker."""
    t = Table(title="rigs on the broker")
    for col in ("rig", "state", "pressure / kPa", "setpoint / kPa", "step", "voltage / V", "last update"):
        t.add_column(col)
    for rig_id in sorted(rigs):
        r = rigs[rig_id]
        p = r.get("pressure_kpa")
        v = r.get("voltage_v")
        age = now - r["seen"] if "seen" in r else None
        t.add_row(
            rig_id,
            str(r.get("state", "?")),
            "—" if p is None else f"{p:.2f}",
            "—" if r.get("setpoint_kpa") is None else f"{r['setpoint_kpa']:g}",
            str(r.get("step", "—")),
            "—" if v is None else f"{v:+.4f}",
            "—" if age is None else f"{age:.0f} s ago",
        )
    return t


async def watch(settings: MqttSettings, console: Console, *, duration_s: float | None = None) -> dict[str, Any]:
    """Show every rig's state, pressure and step until interrupted (or for `duration_s`)."""
    rigs: dict[str, dict[str, Any]] = {}
    live = Live(console=console, refresh_per_second=2) if console.is_terminal else None
    connected = False

    async def follow() -> None:
        nonlocal connected
        async with connection(mqtt_client(settings, identifier=f"watch-{uuid.uuid4().hex[:8]}")) as client:
            connected = True
            await client.subscribe(f"{settings.prefix}/+/status")
            await client.subscribe(f"{settings.prefix}/+/telemetry")
            async for m in client.messages:
                parts = m.topic.value.split("/")
                if len(parts) < 3:
                    continue
                try:
                    data = json.loads(m.payload)
                except (json.JSONDecodeError, TypeError):
                    continue
                if not isinstance(data, dict):
                    continue
                entry = rigs.setdefault(parts[-2], {})
                entry.update({k: v for k, v in data.items() if k not in ("schema", "rig")})
                entry["seen"] = time.time()
                if live is not None:
                    live.update(fleet_table(rigs, now=time.time()))

    if live is not None:
        live.__enter__()
    try:
        task = asyncio.create_task(follow())
        try:
            await asyncio.wait_for(asyncio.shield(task), duration_s)
        except TimeoutError:
            pass
        except aiomqtt.MqttError as exc:
            raise await _broker_error(settings, exc, connected=connected) from None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):  # its error is raised above
                await task
    finally:
        if live is not None:
            live.__exit__(None, None, None)
    if live is None:
        console.print(fleet_table(rigs, now=time.time()))
    return rigs


async def send(
    settings: MqttSettings, cmd: str, rig_id: str, *, secret: str | None, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Publish one command to `rig_id` and wait for its reply."""
    try:
        return await _send(settings, cmd, rig_id, secret=secret, timeout_s=timeout_s)
    except aiomqtt.MqttError as exc:
        raise await _broker_error(settings, exc, connected=False) from None


async def _send(
    settings: MqttSettings, cmd: str, rig_id: str, *, secret: str | None, timeout_s: float
) -> dict[str, Any]:
    cid = uuid.uuid4().hex
    payload = make_command(cmd, command_id=cid, issued_unix_s=time.time(), secret=secret)
    reply_topic = f"{settings.prefix}/{rig_id}/command/reply"
    async with connection(mqtt_client(settings, identifier=f"send-{cid[:8]}")) as client:
        await client.subscribe(reply_topic, qos=1)
        await client.publish(f"{settings.prefix}/{rig_id}/command", json.dumps(payload), qos=1, retain=False)

        async def wait_reply() -> dict[str, Any]:
            async for m in client.messages:
                try:
                    data = json.loads(m.payload)
                except (json.JSONDecodeError, TypeError):
                    continue
                if isinstance(data, dict) and data.get("id") == cid:
                    return data
            return {"ok": False, "reason": "connection closed"}

        try:
            return await asyncio.wait_for(wait_reply(), timeout_s)
        except TimeoutError:
            return {"ok": False, "reason": f"no reply from {rig_id} within {timeout_s:g} s (offline, or not allowed?)"}
