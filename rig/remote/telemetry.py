"""Telemetry and remote commands over MQTT (aiomqtt), off the control path.

One task owns the broker connection. Producers call `publish_telemetry` / `publish_event` / `set_status`, which
never wait: messages go into a bounded queue, the oldest is dropped (and counted) when it is full. A broker outage
therefore never slows the control loop; the task reconnects with exponential backoff, a fresh client each time.

The connection is MQTT 5, and the command topic is subscribed with retain-as-published: the broker keeps the retain
flag on a command it forwards to the connected rig, so a retained command is refused in every case (under MQTT
3.1.1 the flag is cleared for a connected subscriber). A broker that speaks MQTT 3.1.1 only is not used; the link
records one clear event saying so (docs/decisions/0023). One message can never end the link: whatever goes wrong
while handling it is replied to with a reason and recorded, and the next message is handled as usual.

Topics, under `<prefix>/<rig id>/`:
- `status` (retained; the last will says `offline`), `telemetry` (a few times a second), `events`;
- `command` (in: pause, resume, abort, ack only; see `rig.remote.commands`), `command/reply` (out).
Payloads are JSON with `schema` and units in the field names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from rig.clock import unix_now
from rig.remote.commands import SCHEMA_VERSION, CommandChecker

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
    timeout_s: float = 5.0  # connect, subscribe, publish

    def topic(self, leaf: str) -> str:
        """Full topic name of one of this rig's topics."""
        return f"{self.prefix}/{self.rig_id}/{leaf}"

    @property
    def address(self) -> str:
        """host:port of the broker."""
        return f"{self.host}:{self.port}"


def mqtt_client(
    settings: MqttSettings,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
) -> aiomqtt.Client:
    """A fresh aiomqtt client for these settings (MQTT 5 unless told otherwise)."""
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
        protocol=protocol,
        keepalive=settings.keepalive_s,
        tls_context=tls,
        timeout=settings.timeout_s,
    )


@contextlib.asynccontextmanager
async def connection(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """`async with client`, except that a failed connect leaves nothing behind.

    aiomqtt 2.x keeps the socket of a connect that timed out open, with a task polling it, until the keepalive runs
    out; paho's own `disconnect()` closes it at once (aiomqtt has no public handle on its paho client)."""
    try:
        await client.__aenter__()
    except aiomqtt.MqttError:
        with contextlib.suppress(Exception):
            client._client.disconnect()
        raise
    try:
        yield client
    except BaseException as exc:
        await client.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    await client.__aexit__(None, None, None)


_LOGIN_CODES = frozenset({4, 5, 0x86, 0x87, 0x8C})  # bad user name or password, not authorised, bad auth method
_PROTOCOL_CODES = frozenset({1, 0x84})  # unacceptable (3.1.1) / unsupported (5) protocol version


@dataclass(frozen=True)
class BrokerProblem:
    """Why the broker could not be used: `kind` says what to fix, `detail` what the client library said."""

    kind: Literal["unreachable", "lost", "login", "mqtt311", "refused"]
    address: str
    detail: str

    def line(self, *, fix_address: str, fix_login: str) -> str:
        """One line for an operator: what happened, where, and what to do."""
        where = f"the MQTT broker at {self.address}"
        if self.kind == "login":
            return f"{where} refused the login: {self.detail}; {fix_login}"
        if self.kind == "mqtt311":
            return (
                f"{where} does not speak MQTT 5 ({self.detail}): rigs need MQTT 5 (Mosquitto 1.6 or later) to "
                "tell retained commands from live ones (docs/decisions/0023)"
            )
        if self.kind == "refused":
            return f"{where} refused the connection: {self.detail}"
        if self.kind == "lost":
            return f"lost the connection to {where}: {self.detail}"
        if "SSL" in self.detail or "certificate" in self.detail:
            return f"cannot reach {where} over TLS: {self.detail}; check its certificate and the CA file"
        return f"cannot reach {where}: {self.detail}; is it running? {fix_address}"


async def broker_problem(settings: MqttSettings, exc: aiomqtt.MqttError, *, connected: bool = False) -> BrokerProblem:
    """Classify a failed or lost connection; a connect that MQTT 5 got no answer to is tried once with MQTT 3.1.1."""
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        code = rc.value if isinstance(rc, ReasonCode) else rc
        text = str(rc) if isinstance(rc, ReasonCode) else str(exc).removeprefix(f"[code:{rc}] ")
        if code in _PROTOCOL_CODES:
            return BrokerProblem("mqtt311", settings.address, text)
        return BrokerProblem("login" if code in _LOGIN_CODES else "refused", settings.address, text)
    detail = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
    if connected:
        return BrokerProblem("lost", settings.address, detail)
    if "timed out" in detail and await _answers_mqtt311(settings):  # amqtt 0.12 misreads an MQTT 5 connect and waits
        detail = f"no answer to MQTT 5 within {settings.timeout_s:g} s, an answer to MQTT 3.1.1"
        return BrokerProblem("mqtt311", settings.address, detail)
    return BrokerProblem("unreachable", settings.address, detail)


async def _answers_mqtt311(settings: MqttSettings) -> bool:
    """Whether the broker answers an MQTT 3.1.1 connect (accepted or not); the connection is closed at once."""
    probe = mqtt_client(settings, identifier=f"probe-{uuid.uuid4().hex[:12]}", protocol=aiomqtt.ProtocolVersion.V311)
    try:
        async with connection(probe):
            return True
    except MqttConnectError:
        return True  # a 3.1.1 CONNACK all the same (e.g. a refused login)
    except aiomqtt.MqttError:
        return False


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
        self.record_errors = 0  # events the recorder refused (the reply still went out)
        self.problem: BrokerProblem | None = None  # the last recorded reason the broker could not be used
        self._last_fault = ""

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

    def _note(self, kind: str, message: str, data: dict[str, Any]) -> None:
        """Record an event of the link itself; a recorder that fails is counted, never raised."""
        if self._on_event is None:
            return
        try:
            self._on_event(kind, message, data)
        except Exception:
            self.record_errors += 1

    async def _run(self) -> None:
        delay = self.settings.reconnect_min_s
        offline = json.dumps({"schema": SCHEMA_VERSION, "rig": self.settings.rig_id, "state": "offline"}).encode()
        will = aiomqtt.Will(self.settings.topic("status"), offline, qos=1, retain=True)
        while True:
            entered = False
            try:
                client = mqtt_client(self.settings, identifier=f"rig-{self.settings.rig_id}", will=will)
                async with connection(client):
                    entered = True
                    self.connected = True
                    self.connects += 1
                    self.problem = None
                    delay = self.settings.reconnect_min_s
                    self._status_dirty.set()
                    await self._subscribe_commands(client)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._pump(client))
                        tg.create_task(self._status_pump(client))
                        tg.create_task(self._listen(client))
            except* aiomqtt.MqttError as group:
                if not entered:
                    await self._connect_failed(group.exceptions[0])
            except* OSError:
                pass
            except* Exception as group:  # a fault of the link itself: noted (once), a fresh connection after the delay
                fault = f"MQTT link error, reconnecting: {_brief(group.exceptions[0])}"
                if fault != self._last_fault:
                    self._last_fault = fault
                    self._note("telemetry", fault, {})
            self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _connect_failed(self, exc: BaseException) -> None:
        """A broker that refuses the rig (login, MQTT 3.1.1 only) is recorded once; an outage is not (it is retried)."""
        if not isinstance(exc, aiomqtt.MqttError):
            return
        problem = await broker_problem(self.settings, exc)
        if problem.kind in ("unreachable", "lost") or problem == self.problem:
            return
        self.problem = problem
        line = problem.line(fix_address="", fix_login="check the [telemetry] username and the broker password")
        self._note("telemetry", f"telemetry and remote commands off: {line}", {"broker": problem.address})

    async def _subscribe_commands(self, client: aiomqtt.Client) -> None:
        """Commands at QoS 1 with retain-as-published: a retained command keeps its flag even while we are connected."""
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        granted = await client.subscribe(self.settings.topic("command"), options=options)
        refused = [str(code) for code in granted if isinstance(code, ReasonCode) and code.is_failure]
        if refused:
            self._note(
                "telemetry",
                f"remote commands off: the broker refused the subscription to {self.settings.topic('command')} "
                f"({', '.join(refused)})",
                {"broker": self.settings.address},
            )

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
            try:
                await self._command(client, message)
            except aiomqtt.MqttError:
                raise  # the connection itself failed: the link reconnects
            except Exception as exc:  # never expected (_command catches its own): one message never ends the link
                self.rejected += 1
                self._note("remote_command_rejected", f"None: error while handling a command: {_brief(exc)}", {})

    async def _command(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Check one command, act on it if it may act, record it, and reply; whatever fails costs only this one."""
        cid: str | None = None
        cmd: str | None = None
        result: dict[str, Any] | None = None
        try:
            raw = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            verdict = self._checker.check(raw, retained=bool(message.retain), now_unix_s=self._now())
            cid, cmd = verdict.command_id, verdict.cmd
            handler = self._handlers.get(verdict.cmd or "") if verdict.ok else None
            if verdict.ok and handler is None:
                ok, reason = False, f"not available on this rig: {verdict.cmd}"
            elif handler is not None:
                try:
                    result, ok, reason = await handler(), True, "accepted"
                except Exception as exc:
                    ok, reason = False, f"failed: {_brief(exc)}"
            else:
                ok, reason = False, verdict.reason
        except Exception as exc:  # a bug in checking: the command is refused, with the error as its reason
            ok, reason = False, f"error while handling the command: {_brief(exc)}"
        if ok:
            self.accepted += 1
        else:
            self.rejected += 1
        kind = "remote_command" if ok else "remote_command_rejected"
        try:
            if self._on_event is not None:
                self._on_event(kind, f"{cmd}: {reason}", {"id": cid})
        except Exception:
            self.record_errors += 1  # the store or the log refused it; the reply below still goes out
        reply: dict[str, Any] = {"schema": SCHEMA_VERSION, "rig": self.settings.rig_id, "id": cid, "ok": ok, "cmd": cmd}
        if ok:
            reply["result"] = result
        else:
            reply["reason"] = reason
        body = json.dumps(reply, default=str).encode()
        await client.publish(self.settings.topic("command/reply"), body, qos=1)


def _brief(exc: BaseException, limit: int = 200) -> str:
    """`Type: message`, on one line and at most `limit` characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
