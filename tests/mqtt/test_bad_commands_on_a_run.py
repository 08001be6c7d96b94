"""Fault-matrix row 14 (issue 8): each kind of bad remote command, sent through a real broker to a simulated run.

Forged, expired, replayed, retained, malformed and unknown (non-whitelisted) commands each leave the press and the
potentiostat untouched, get a reply with a reason, and leave an event in the run's store. The judge is the device
truth around each command: the engine's state, the controller's setpoint, and the simulator's true cell current (an
output switched off or a pause shows there at once). The press keeps moving under the pressure loop while the cell
plates, so its motion is judged through the engine and the setpoint, not the stepper counter. A good pause at the
end must show up in the same measurement, so the test can see an actuation when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.data.store import read_events
from rig.remote.commands import make_command
from rig.remote.telemetry import MqttSettings, mqtt_client
from rig.run.engine import RunState
from tests.conftest import FaultFigure
from tests.mqtt.broker import USERS, Broker
from tests.mqtt.linked_run import LinkedRun, linked_run

SECRET = "lab-secret-1"
TOPIC = "rig/rig-a/command"
SETTLE_WALL_S = 0.6  # after each reply: long enough for a pause or an abort to reach the output (speed 2)


@dataclass
class Probe:
    """What one command did, judged by the truth."""

    kind: str
    reply: dict[str, Any]
    changes: list[str]
    confounded: bool  # a stale-load-cell hold of the simulator overlapped (not caused by the command)


@contextlib.asynccontextmanager
async def operator(broker: Broker) -> AsyncIterator[tuple[Any, asyncio.Queue[dict[str, Any]]]]:
    """An operator client subscribed to the rig's replies; replies arrive in a queue."""
    settings = MqttSettings(
        host="127.0.0.1", port=broker.port, rig_id="operator", username="operator", password=USERS["operator"]
    )
    replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with mqtt_client(settings, identifier=f"op-{time.monotonic_ns()}") as op:
        await op.subscribe("rig/rig-a/command/reply", qos=1)

        async def take() -> None:
            async for m in op.messages:
                replies.put_nowait(json.loads(m.payload))

        task = asyncio.create_task(take(), name="operator-replies")
        try:
            yield op, replies
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def next_reply(
    replies: asyncio.Queue[dict[str, Any]], command_id: str | None, timeout_s: float = 15.0
) -> dict[str, Any]:
    """The reply to the command with this id (None: a command without a readable id)."""
    async with asyncio.timeout(timeout_s):
        while True:
            reply = await replies.get()
            if reply.get("id") == command_id:
                return reply


def command_id(payload: bytes) -> str | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    cid = body.get("id") if isinstance(body, dict) else None
    return cid if isinstance(cid, str) and 8 <= len(cid) <= 64 else None


async def plating_steadily(lr: LinkedRun, i_plate: float, timeout_s: float = 30.0) -> None:
    """Wait until the run is RUNNING with the current flowing (after a brief stale hold of the simulator's load cell
    the current stays off until the pressure has settled again): a command is only judged from there."""
    async with asyncio.timeout(timeout_s):
        while True:
            recent = [abs(c) for _, _, c, _ in lr.run.truth[-50:]]
            if lr.run.engine.state is RunState.RUNNING and min(recent) >= 0.5 * i_plate:
                return
            await asyncio.sleep(0.02)


def stale_holds(lr: LinkedRun, t0_exp: float, t1_exp: float) -> list[str]:
    return [
        e["message"]
        for e in read_events(lr.run.store.path)
        if e["kind"] == "state" and "stale" in e["message"] and t0_exp <= e["test_time_s"] <= t1_exp
    ]


async def probe(
    lr: LinkedRun, op: Any, replies: asyncio.Queue[dict[str, Any]], kind: str, payload: bytes, i_plate: float
) -> Probe:
    """Send one command while the cell plates, and compare the truth before and after it."""
    engine, ctl, clock = lr.run.engine, lr.run.rig.ctl, lr.run.rig.clock
    await plating_steadily(lr, i_plate)
    state0, setpoint0, calls0 = engine.state, ctl.status().setpoint_kpa, len(lr.calls)
    t0, n0 = clock.now(), len(lr.run.truth)
    seen = {state0}
    while not replies.empty():  # e.g. the rig's answer to the empty message that cleared the retained command
        replies.get_nowait()
    await op.publish(TOPIC, payload, qos=1)
    reply = await next_reply(replies, command_id(payload))
    end = time.monotonic() + SETTLE_WALL_S
    while time.monotonic() < end:
        seen.add(engine.state)
        await asyncio.sleep(0.01)
    changes: list[str] = []
    if engine.state is not state0 and engine.state is not RunState.SUSPENDED:
        changes.append(f"engine {state0.value} -> {engine.state.value}")
    if ctl.status().setpoint_kpa != setpoint0:
        changes.append(f"setpoint {setpoint0} -> {ctl.status().setpoint_kpa}")
    if len(lr.calls) != calls0:
        changes.append(f"handler called: {lr.calls[calls0:]}")
    low = [c for _, _, c, _ in lr.run.truth[n0:] if abs(c) < 0.5 * i_plate]
    await lr.run.store.flush()
    confounded = RunState.SUSPENDED in seen or bool(stale_holds(lr, t0, clock.now()))
    if low and not confounded:
        changes.append(f"cell current fell to {min(abs(c) for c in low) * 1e3:.3f} mA")
    return Probe(kind, reply, changes, confounded)


async def test_bad_remote_commands_touch_nothing_and_are_answered_and_recorded(
    broker: Broker, tmp_path: Path, fault_figure: FaultFigure
) -> None:
    probes: list[Probe] = []
    async with operator(broker) as (op, replies):
        # retained: an abort left retained on the broker reaches the rig as its link subscribes (retain flag set)
        retained = make_command("abort", command_id="retained-0001", issued_unix_s=time.time(), secret=SECRET)
        await op.publish(TOPIC, json.dumps(retained), qos=1, retain=True)
        async with linked_run(broker, tmp_path, speed=2.0, command_secret=SECRET) as lr:
            first = await next_reply(replies, "retained-0001")
            await op.publish(TOPIC, b"", qos=1, retain=True)  # clear it (the rig also gets, and rejects, the empty one)
            retained_calls = list(lr.calls)
            await lr.run.until(lambda: lr.run.engine.progress().step_kind == "plate", "plating")
            await lr.run.until(lambda: lr.run.engine.state is RunState.RUNNING, "running")
            await asyncio.sleep(1.0)
            i_plate = abs(lr.run.true_current_a())
            assert i_plate > 0, "no current while plating"
            state_after_retained = lr.run.engine.state
            now = time.time()
            # a harmless good command (ack with no trip latched does nothing), to be replayed below
            ack = json.dumps(make_command("ack", command_id="original-001", issued_unix_s=now, secret=SECRET))
            original = await probe(lr, op, replies, "original ack", ack.encode(), i_plate)
            smuggled = {**make_command("pause", command_id="malformed-02", issued_unix_s=now), "setpoint_kpa": 250}
            cases: list[tuple[str, bytes]] = [
                ("forged", json.dumps(make_command("abort", command_id="forged-00001", issued_unix_s=now, secret="x"))),
                ("forged (unsigned)", json.dumps(make_command("pause", command_id="unsigned-001", issued_unix_s=now))),
                (
                    "expired",
                    json.dumps(
                        make_command("abort", command_id="expired-0001", issued_unix_s=now - 300, secret=SECRET)
                    ),
                ),
                ("replayed", ack),
                ("malformed (not JSON)", "{not json"),
                ("malformed (extra field)", json.dumps(smuggled)),
                (
                    "unknown",
                    json.dumps(
                        make_command("set_pressure", command_id="unknown-0001", issued_unix_s=now, secret=SECRET)
                    ),
                ),
            ]
            for kind, payload in cases:
                probes.append(await probe(lr, op, replies, kind, payload.encode(), i_plate))
            # the measurement can see an actuation: a good pause stops the current and pauses the run
            pause = make_command("pause", command_id="good-pause-1", issued_unix_s=time.time(), secret=SECRET)
            control = await probe(lr, op, replies, "good pause", json.dumps(pause).encode(), i_plate)
        db = tmp_path / "run.sqlite"
    events = read_events(db)
    rejected = [e for e in events if e["kind"] == "remote_command_rejected"]

    bad = [("retained", first), *[(p.kind, p.reply) for p in probes]]
    replied = [(k, r) for k, r in bad if r.get("ok") is False and r.get("reason")]
    changes = sum(len(p.changes) for p in probes) + len(retained_calls)
    recorded = sum(1 for _, r in bad if r.get("reason") and any(r["reason"] in e["message"] for e in rejected))
    for k, r in bad:
        print(f"  {k:<26} -> {r.get('reason')} {r}")
    fault_figure(
        14,
        "actuator changes from bad commands",
        f"{changes} ({len(bad)} commands, {sum(p.confounded for p in probes)} beside a stale hold)",
        goal="0",
        met=changes == 0,
    )
    fault_figure(
        14,
        "rejections replied with a reason / recorded",
        f"{len(replied) / len(bad):.0%} ({len(replied)}/{len(bad)}) / {recorded / len(bad):.0%} ({recorded})",
        goal="100 %",
        met=len(replied) == recorded == len(bad),
    )

    assert first["id"] == "retained-0001" and "retained" in first["reason"] and retained_calls == []
    assert state_after_retained is RunState.RUNNING
    assert original.reply["ok"] is True and original.changes == ["handler called: ['ack']"]
    assert [p.changes for p in probes] == [[] for _ in probes], [(p.kind, p.changes) for p in probes]
    expected = ["forged", "forged", "expired", "replayed", "malformed", "malformed", "not allowed"]
    assert [p.reply["ok"] for p in probes] == [False] * len(probes)
    assert [w in p.reply["reason"] for w, p in zip(expected, probes, strict=True)] == [True] * len(probes), bad
    assert len(replied) == recorded == len(bad), (bad, rejected)
    assert not any(p.confounded for p in probes) or changes == 0
    # and a good pause is seen acting, by the same measurement
    assert control.reply["ok"] is True and any("paused" in c for c in control.changes), control
