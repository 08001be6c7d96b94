"""A real `rig run --sim --headless` linked to a test broker, and an operator's client that sees all its topics.

The run is the `rig` command in its own process (tests/support/rig_cli.py), configured for the broker through
the environment (`RIG_TELEMETRY__*`), as a lab would. The observer (account `operator`: reads `rig/#`, may write
`rig/+/command`) records every message on `rig/<rig>/#` with its retain flag, publishes commands, and waits for
replies; the broker's own log counts the rig's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.remote.commands import make_command
from rig.remote.telemetry import MqttSettings, mqtt_client
from tests.mqtt.broker import USERS, Broker
from tests.support.rig_cli import RIG, rig_env

SHORT = Path(__file__).resolve().parents[1] / "engine" / "short_protocol.yaml"
SIM_RIG = "sim"  # the name `rig run --sim` gives its rig (also set through RIG_RIG__NAME)


@dataclass
class Seen:
    """One message the observer received."""

    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        """The payload as JSON (None if it is not JSON)."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return None


@dataclass
class Observer:
    """The operator's client on the rig's topics."""

    client: Any
    rig_id: str
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def topic(self, leaf: str) -> str:
        return f"rig/{self.rig_id}/{leaf}"

    def on(self, leaf: str) -> list[Any]:
        """The JSON payloads seen so far on one of the rig's topics."""
        return [m.json() for m in self.seen if m.topic == self.topic(leaf)]

    async def until(self, what: str, ok: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Wait until `ok()` holds, woken by each message."""
        async with asyncio.timeout(timeout_s):
            while not ok():
                self.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), 0.5)
        if not ok():
            raise AssertionError(f"not seen: {what}")

    async def status(self, *states: str, timeout_s: float = 30.0) -> None:
        """Wait until the rig's status topic says one of `states`."""
        await self.until(
            f"status {states}",
            lambda: bool(self.on("status")) and self.on("status")[-1].get("state") in states,
            timeout_s,
        )

    async def send(self, payload: bytes, *, retain: bool = False, timeout_s: float = 15.0) -> dict[str, Any]:
        """Publish to the command topic and return the rig's next reply."""
        n = len(self.on("command/reply"))
        await self.client.publish(self.topic("command"), payload, qos=1, retain=retain)
        await self.until("a reply", lambda: len(self.on("command/reply")) > n, timeout_s)
        reply: dict[str, Any] = self.on("command/reply")[n]
        return reply

    async def command(self, cmd: str, *, secret: str | None = None) -> dict[str, Any]:
        """A well-formed command (signed when `secret` is given), and its reply."""
        body = make_command(cmd, command_id=f"{cmd}-{time.time_ns()}", issued_unix_s=time.time(), secret=secret)
        return await self.send(json.dumps(body).encode())


@contextlib.asynccontextmanager
async def observer(broker: Broker, rig_id: str = SIM_RIG) -> AsyncIterator[Observer]:
    """An operator's client subscribed to everything the rig publishes."""
    settings = MqttSettings(
        host="127.0.0.1", port=broker.port, rig_id="operator", username="operator", password=USERS["operator"]
    )
    async with mqtt_client(settings, identifier=f"observer-{time.monotonic_ns()}") as client:
        obs = Observer(client, rig_id)
        await client.subscribe(f"rig/{rig_id}/#", qos=1)

        async def take() -> None:
            async for m in client.messages:
                raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                obs.seen.append(Seen(m.topic.value, raw, bool(m.retain)))
                obs.arrived.set()

        task = asyncio.create_task(take(), name="observer")
        try:
            yield obs
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class RigRun:
    """A `rig run` process and its runs folder."""

    proc: asyncio.subprocess.Process
    runs: Path
    stdout: str = ""
    stderr: str = ""

    @property
    def run_dir(self) -> Path:
        """The run's folder (the only one under `runs`)."""
        dirs = [d for d in self.runs.iterdir() if d.is_dir()]
        assert len(dirs) == 1, dirs
        return dirs[0]

    def log_events(self) -> list[dict[str, Any]]:
        """The event records of the headless JSON log (`run.log.jsonl`)."""
        lines = (self.run_dir / "run.log.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r.get("type") == "event"]

    async def finish(self, timeout_s: float = 60.0) -> int:
        """Wait for the run to end; its exit code."""
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout_s)
        self.stdout, self.stderr = out.decode(), err.decode()
        return self.proc.returncode if self.proc.returncode is not None else -1


@contextlib.asynccontextmanager
async def rig_run(
    broker: Broker, tmp_path: Path, *, rig_id: str = SIM_RIG, speed: float = 100.0, secret: str | None = None
) -> AsyncIterator[RigRun]:
    """`rig run SHORT --sim --headless` published to the broker as `rig_id` (SIGTERM and reaped if still running)."""
    env = rig_env(
        tmp_path,
        RIG_RIG__NAME=rig_id,
        RIG_TELEMETRY__HOST="127.0.0.1",
        RIG_TELEMETRY__PORT=str(broker.port),
        RIG_TELEMETRY__USERNAME=rig_id,
        RIG_MQTT_PASSWORD=USERS[rig_id],
    )
    env.pop("RIG_COMMAND_SECRET", None)
    if secret is not None:
        env["RIG_COMMAND_SECRET"] = secret
    runs = tmp_path / "runs"
    args = ["run", str(SHORT), "--sim", "--speed", f"{speed:g}", "--runs", str(runs), "--headless"]
    proc = await asyncio.create_subprocess_exec(
        *RIG, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    run = RigRun(proc, runs)
    try:
        yield run
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await run.finish(60.0)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def rig_connections(broker: Broker, rig_id: str = SIM_RIG) -> list[str]:
    """The broker's log lines for each connection of the rig's client (Mosquitto: `... as rig-<id> (p5, ...)`)."""
    log = broker.folder / f"{broker.kind}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if "New client connected" in line and f" as rig-{rig_id} " in line]
