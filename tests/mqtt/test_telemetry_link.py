"""Telemetry and remote commands through a real Mosquitto broker with passwords and an ACL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from rig.remote.commands import make_command
from rig.remote.telemetry import MqttSettings, TelemetryLink, mqtt_client
from tests.mqtt.broker import USERS, Broker


def _settings(broker: Broker, user: str, **kw: Any) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=broker.port, rig_id="rig-a", username=user, password=USERS[user], **kw)


class Recorder:
    """Handlers that count what acted, and an event sink."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def handlers(self) -> dict[str, Any]:
        async def make(name: str) -> dict[str, Any]:
            self.calls.append(name)
            return {"state": name}

        return {n: (lambda n=n: make(n)) for n in ("pause", "resume", "abort", "ack")}

    def on_event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        self.events.append((kind, message, data))


@contextlib.asynccontextmanager
async def running_link(broker: Broker, rec: Recorder, **kw: Any) -> AsyncIterator[TelemetryLink]:
    link = TelemetryLink(_settings(broker, "rig-a", **kw), handlers=rec.handlers(), on_event=rec.on_event)
    await link.start()
    try:
        for _ in range(200):
            if link.connected:
                break
            await asyncio.sleep(0.02)
        assert link.connected
        yield link
    finally:
        await link.close()


async def _collect(client: aiomqtt.Client, n: int, timeout_s: float = 5.0) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []

    async def take() -> None:
        async for m in client.messages:
            got.append(m)
            if len(got) >= n:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(take(), timeout_s)
    return got


async def test_a_viewer_receives_telemetry_and_status_but_cannot_command(broker: Broker) -> None:
    rec = Recorder()
    async with running_link(broker, rec) as link:
        viewer_settings = _settings(broker, "viewer")
        async with mqtt_client(viewer_settings, identifier="viewer-1") as viewer:
            await viewer.subscribe("rig/#")
            link.set_status(state="running", step="plate")
            for i in range(5):
                link.publish_telemetry({"pressure_kpa": 180.0 + i * 0.01, "step": 3})
            msgs = await _collect(viewer, 6)
            topics = [m.topic.value for m in msgs]
            assert "rig/rig-a/status" in topics
            tele = [json.loads(m.payload) for m in msgs if m.topic.value == "rig/rig-a/telemetry"]
            assert [t["pressure_kpa"] for t in tele] == [180.0 + i * 0.01 for i in range(len(tele))]
            assert tele and all(t["schema"] == 1 and t["rig"] == "rig-a" for t in tele)
            # the viewer tries to pause the rig: the broker's ACL drops it, nothing acts, no reply
            cmd = make_command("pause", command_id="viewer-cmd-1", issued_unix_s=time.time())
            await viewer.publish("rig/rig-a/command", json.dumps(cmd), qos=1)
            replies = await _collect(viewer, 1, timeout_s=1.0)
            assert [m for m in replies if m.topic.value.endswith("command/reply")] == []
    assert rec.calls == []


async def _send(broker: Broker, payload: bytes) -> dict[str, Any]:
    async with mqtt_client(_settings(broker, "operator"), identifier="op-1") as op:
        await op.subscribe("rig/rig-a/command/reply", qos=1)
        await op.publish("rig/rig-a/command", payload, qos=1)
        msgs = await _collect(op, 1, timeout_s=5.0)
    assert msgs, "no reply"
    reply: dict[str, Any] = json.loads(msgs[0].payload)
    return reply


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("malformed", "malformed"),
        ("unknown", "not allowed"),
        ("expired", "expired"),
        ("future", "future"),
        ("forged", "forged"),
        ("replayed", "replayed"),
    ],
)
async def test_bad_commands_are_rejected_with_a_reason_and_an_event(broker: Broker, case: str, reason: str) -> None:
    rec = Recorder()
    async with running_link(broker, rec, command_secret="s3cret") as _link:
        now = time.time()
        good = make_command("pause", command_id=f"{case}-000001", issued_unix_s=now, secret="s3cret")
        payload: dict[str, Any] | bytes
        if case == "malformed":
            payload = b"{not json"
        elif case == "unknown":
            payload = make_command("set_pressure", command_id="unknown-0001", issued_unix_s=now, secret="s3cret")
        elif case == "expired":
            payload = make_command("pause", command_id="expired-0001", issued_unix_s=now - 300, secret="s3cret")
        elif case == "future":
            payload = make_command("pause", command_id="future-00001", issued_unix_s=now + 300, secret="s3cret")
        elif case == "forged":
            payload = make_command("pause", command_id="forged-00001", issued_unix_s=now, secret="wrong")
        else:
            payload = good
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if case == "replayed":
            first = await _send(broker, raw)
            assert first["ok"] is True
            assert rec.calls == ["pause"]
            rec.calls.clear()
        reply = await _send(broker, raw)
    assert reply["ok"] is False
    assert reason in reply["reason"]
    assert rec.calls == []  # nothing acted
    rejected = [e for e in rec.events if e[0] == "remote_command_rejected"]
    assert rejected and reason in rejected[-1][1]


async def test_a_retained_command_waiting_on_the_broker_is_rejected(broker: Broker) -> None:
    # a retained command would act again on every reconnect: it reaches a (re)subscribing rig with retain=1
    rec = Recorder()
    cmd = make_command("abort", command_id="retained-001", issued_unix_s=time.time())
    async with mqtt_client(_settings(broker, "operator"), identifier="op-2") as op:
        await op.subscribe("rig/rig-a/command/reply", qos=1)
        await op.publish("rig/rig-a/command", json.dumps(cmd), qos=1, retain=True)
        async with running_link(broker, rec):
            msgs = await _collect(op, 1)
        await op.publish("rig/rig-a/command", b"", qos=1, retain=True)
    reply = json.loads(msgs[0].payload)
    assert reply["ok"] is False and "retained" in reply["reason"]
    assert rec.calls == []
    assert rec.events and rec.events[-1][0] == "remote_command_rejected"


async def test_a_good_command_acts_once_and_is_acknowledged(broker: Broker) -> None:
    rec = Recorder()
    async with running_link(broker, rec, command_secret="s3cret") as link:
        cmd = make_command("abort", command_id="good-000001", issued_unix_s=time.time(), secret="s3cret")
        reply = await _send(broker, json.dumps(cmd).encode())
        assert link.accepted == 1
    assert reply == {
        "schema": 1,
        "rig": "rig-a",
        "id": "good-000001",
        "ok": True,
        "cmd": "abort",
        "result": {"state": "abort"},
    }
    assert rec.calls == ["abort"]
    assert rec.events[-1][0] == "remote_command"


async def test_status_goes_offline_on_close_and_by_last_will(broker: Broker) -> None:
    rec = Recorder()
    async with running_link(broker, rec) as link:
        link.set_status(state="running")
        await asyncio.sleep(0.2)
    async with mqtt_client(_settings(broker, "viewer"), identifier="viewer-2") as viewer:
        await viewer.subscribe("rig/rig-a/status")
        msgs = await _collect(viewer, 1)
    assert msgs and msgs[0].retain and json.loads(msgs[0].payload)["state"] == "offline"


async def test_a_broker_outage_never_blocks_producers_and_telemetry_resumes(broker: Broker) -> None:
    rec = Recorder()
    async with running_link(broker, rec, queue_size=50, reconnect_max_s=1.0) as link:
        broker.stop()
        for _ in range(100):
            if not link.connected:
                break
            await asyncio.sleep(0.05)
        assert not link.connected
        # producers keep going at full speed; the queue stays bounded and drops the oldest
        for i in range(500):
            link.publish_telemetry({"n": i})
        assert link.queued <= 50 and link.dropped >= 450
        broker.start()
        for _ in range(200):
            if link.connected:
                break
            await asyncio.sleep(0.05)
        assert link.connected and link.connects >= 2
        async with mqtt_client(_settings(broker, "viewer"), identifier="viewer-3") as viewer:
            await viewer.subscribe("rig/rig-a/telemetry")
            link.publish_telemetry({"n": 1000})
            msgs = await _collect(viewer, 51)
        ns = [json.loads(m.payload)["n"] for m in msgs]
        # telemetry resumed by itself: the newest message arrives, after whatever of the backlog was still queued
        assert ns[-1] == 1000
        assert all(n >= 450 for n in ns)  # the oldest were the ones dropped


class FlakyClock:
    """The link's wall clock, made to fail once on demand (as a faulty time source would)."""

    def __init__(self) -> None:
        self.fail_next = False

    def __call__(self) -> float:
        if self.fail_next:
            self.fail_next = False
            raise OSError("clock source gone")
        return time.time()


async def test_a_fault_while_handling_one_command_costs_only_that_command(broker: Broker) -> None:
    # issue 14 item 6: whatever goes wrong with one message is replied to and recorded; the link stays up
    rec, clock = Recorder(), FlakyClock()
    refuse_next = [False]

    def recorder(kind: str, message: str, data: dict[str, Any]) -> None:
        if refuse_next[0]:
            refuse_next[0] = False
            raise RuntimeError("the store refused the event")
        rec.on_event(kind, message, data)

    settings = _settings(broker, "rig-a")
    link = TelemetryLink(settings, handlers=rec.handlers(), on_event=recorder, now_unix=clock)
    await link.start()
    try:
        for _ in range(200):
            if link.connected:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the first status is out: from here only commands read the clock
        clock.fail_next = True
        broken_clock = await _send(
            broker, json.dumps(make_command("pause", command_id="clock-00001", issued_unix_s=1.0)).encode()
        )
        refuse_next[0] = True
        refused_record = await _send(broker, b"{not json")
        good = await _send(
            broker, json.dumps(make_command("pause", command_id="good-000002", issued_unix_s=time.time())).encode()
        )
        connects, record_errors = link.connects, link.record_errors
    finally:
        await link.close()
    assert (
        broken_clock["ok"] is False
        and "error while handling the command: OSError: clock source gone" in broken_clock["reason"]
    )
    assert refused_record["ok"] is False and "malformed" in refused_record["reason"] and record_errors == 1
    assert good["ok"] is True and rec.calls == ["pause"]
    assert connects == 1
    assert [(k, m.split(":")[0]) for k, m, _ in rec.events] == [
        ("remote_command_rejected", "None"),
        ("remote_command", "pause"),
    ]
    assert "clock source gone" in rec.events[0][1]


async def test_a_broker_that_speaks_only_mqtt_311_is_refused_clearly(mqtt311_broker: Broker) -> None:
    # issue 14 item 7: the rig never falls back to MQTT 3.1.1 (it could not tell a retained command from a live one)
    rec = Recorder()
    link = TelemetryLink(
        _settings(mqtt311_broker, "rig-a", timeout_s=1.0), handlers=rec.handlers(), on_event=rec.on_event
    )
    await link.start()
    try:
        for _ in range(150):
            if rec.events or link.connected:
                break
            await asyncio.sleep(0.05)
        connected = link.connected
    finally:
        await link.close()
    assert not connected
    assert [k for k, _, _ in rec.events] == ["telemetry"], rec.events
    message = rec.events[0][1]
    assert f"127.0.0.1:{mqtt311_broker.port}" in message and "does not speak MQTT 5" in message
    assert "answer to MQTT 3.1.1" in message
