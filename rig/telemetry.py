"""Telemetry and remote commands over MQTT (aiomqtt), off the control path.

One task owns the broker connection. Producers call `publish_telemetry` / `publish_event` / `set_status`, which
never wait: messages go into a bounded queue, the oldest is dropped (and counted) when it is full. A broker outage
therefore never slows the control loop; the task reconnects with exponential backoff, a fresh client each time.

Topics, under `<prefix>/<rig id>/`:
- `status` (retained; the last will says `offline`), `telemetry` (a few times a second), `events`;
- `command` (in: pause, resume, abort, ack only; see `rig.remote_commands`), `command/reply` (out).
Payloads are JSON with `schema` and units in the field names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from rig.clock import unix_now
from rig.remote_commands import SCHEMA_VERSION, CommandChecker

Handler = Callable[[], Awaitable[dict[str, Any]]]
EventSink = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker and what to call this rig there."""

    host: str
    rig_id: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca_file: Path | None = None
    prefix: str = "rig"
    keepalive_s: int = 10
    queue_size: int = 1000
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0  # a broker back after an outage is used again within 5 s
    command_secret: str | None = None
    command_max_age_s: float = 30.0

    def topic(self, leaf: str) -> str:
        """Full topic name of one of this rig's topics."""
        return f"{self.prefix}/{self.rig_id}/{leaf}"


def mqtt_client(settings: MqttSettings, *, identifier: str, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
    """A fresh aiomqtt client for these settings."""
    tls: ssl.SSLContext | None = None
    if settings.tls_ca_file is not None:
        tls = ssl.create_default_context(cafile=str(settings.tls_ca_file))
    return aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password,
        identifier=identifier,
        will=will,
        keepalive=settings.keepalive_s,
        tls_context=tls,
        timeout=5.0,
    )


class TelemetryLink:
    """The rig's side of the broker: publishes, listens for commands, survives outages."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        handlers: dict[str, Handler] | None = None,
        on_event: EventSink | None = None,
        now_unix: Callable[[], float] = unix_now,
    ) -> None:
        self.settings = settings
        self._handlers = handlers or {}
        self._on_event = on_event
        self._now = now_unix
        self._queue: asyncio.Queue[tuple[str, bytes, int, bool]] = asyncio.Queue(maxsize=settings.queue_size)
        self._checker = CommandChecker(max_age_s=settings.command_max_age_s, secret=settings.command_secret)
        self._task: asyncio.Task[None] | None = None
        self._status: dict[str, Any] = {"state": "online"}
        self._status_dirty = asyncio.Event()
        self._status_sending = False
        self.connected = False
        self.connects = 0
        self.published = 0
        self.dropped = 0
        self.rejected = 0
        self.accepted = 0

    # ------------------------------------------------------------ producers: never wait
    def publish_telemetry(self, data: dict[str, Any]) -> None:
        """Queue one telemetry message (QoS 0)."""
        self._put(self.settings.topic("telemetry"), data, qos=0)

    def publish_event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """Queue one event (QoS 1)."""
        self._put(self.settings.topic("events"), {"kind": kind, "message": message, **(data or {})}, qos=1)

    def set_status(self, **status: Any) -> None:
        """Update the retained status (published now and on every reconnect)."""
        self._status = {**self._status, **status}
        self._status_dirty.set()

    def _put(self, topic: str, data: dict[str, Any], *, qos: int, retain: bool = False) -> None:
        body = json.dumps({"schema": SCHEMA_VERSION, "rig": self.settings.rig_id, "unix_time_s": self._now(), **data})
        item = (topic, body.encode(), qos, retain)
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._queue.get_nowait()
                    self.dropped += 1

    @property
    def queued(self) -> int:
        """Messages waiting for the broker."""
        return self._queue.qsize()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the connection task (it connects and reconnects by itself)."""
        self._task = asyncio.create_task(self._run(), name=f"mqtt:{self.settings.rig_id}")

    async def close(self, *, final_state: str = "offline") -> None:
        """Say goodbye on the status topic if connected, then stop."""
        self.set_status(state=final_state)
        if self.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), 2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drained(self) -> None:
        # a short poll: the pumps own the queue and the flag; this only waits for them at shutdown
        while self._status_dirty.is_set() or self._status_sending or not self._queue.empty():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------ the connection
    def _status_payload(self) -> bytes:
        body = {"schema": SCHEMA_VERSION, "rig": self.settings.rig_id, "unix_time_s": self._now(), **self._status}
        return json.dumps(body).encode()

    async def _run(self) -> None:
        delay = self.settings.reconnect_min_s
        offline = json.dumps({"schema": SCHEMA_VERSION, "rig": self.settings.rig_id, "state": "offline"}).encode()
        will = aiomqtt.Will(self.settings.topic("status"), offline, qos=1, retain=True)
        while True:
            try:
                client = mqtt_client(self.settings, identifier=f"rig-{self.settings.rig_id}", will=will)
                async with client:
                    self.connected = True
                    self.connects += 1
                    delay = self.settings.reconnect_min_s
                    self._status_dirty.set()
                    await client.subscribe(self.settings.topic("command"), qos=1)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._pump(client))
                        tg.create_task(self._status_pump(client))
                        tg.create_task(self._listen(client))
            except* aiomqtt.MqttError:
                pass
            except* OSError:
                pass
            self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _pump(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload, qos, retain = await self._queue.get()
            await client.publish(topic, payload, qos=qos, retain=retain)
            self.published += 1

    async def _status_pump(self, client: aiomqtt.Client) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()  # a change while publishing sets it again
            self._status_sending = True
            try:
                await client.publish(self.settings.topic("status"), self._status_payload(), qos=1, retain=True)
            finally:
                self._status_sending = False

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            raw = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            await self._command(client, raw, retained=bool(message.retain))

    async def _command(self, client: aiomqtt.Client, raw: bytes, *, retained: bool) -> None:
        verdict = self._checker.check(raw, retained=retained, now_unix_s=self._now())
        reply: dict[str, Any] = {"schema": SCHEMA_VERSION, "rig": self.settings.rig_id, "id": verdict.command_id}
        handler = self._handlers.get(verdict.cmd or "") if verdict.ok else None
        if verdict.ok and handler is None:
            verdict_ok, reason = False, f"not available on this rig: {verdict.cmd}"
        else:
            verdict_ok, reason = verdict.ok, verdict.reason
        if verdict_ok and handler is not None:
            try:
                result = await handler()
                reply.update(ok=True, cmd=verdict.cmd, result=result)
                self.accepted += 1
            except Exception as exc:
                reply.update(ok=False, cmd=verdict.cmd, reason=f"{type(exc).__name__}: {exc}")
        else:
            self.rejected += 1
            reply.update(ok=False, cmd=verdict.cmd, reason=reason)
        if self._on_event is not None:
            kind = "remote_command" if reply["ok"] else "remote_command_rejected"
            self._on_event(kind, f"{verdict.cmd}: {reply.get('reason', 'accepted')}", {"id": verdict.command_id})
        await client.publish(self.settings.topic("command/reply"), json.dumps(reply).encode(), qos=1)
