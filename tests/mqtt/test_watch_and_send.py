"""`rig watch` shows every rig on one broker; `rig send` reaches one rig, and only with operator rights."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from rig.remote.telemetry import MqttSettings, TelemetryLink
from tests.mqtt.broker import USERS, Broker

SHORT = Path(__file__).resolve().parents[1] / "engine" / "short_protocol.yaml"


async def _rig_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from rig.cli.app import app; app()",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "160"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def _link(broker: Broker, rig_id: str, calls: list[str]) -> TelemetryLink:
    async def handler(name: str) -> dict[str, Any]:
        calls.append(f"{rig_id}:{name}")
        return {"state": "aborted"}

    settings = MqttSettings(host="127.0.0.1", port=broker.port, rig_id=rig_id, username=rig_id, password=USERS[rig_id])
    return TelemetryLink(settings, handlers={"abort": lambda: handler("abort")})


async def _connected(*links: TelemetryLink) -> None:
    for _ in range(200):
        if all(link.connected for link in links):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("links did not connect")


async def test_watch_shows_two_rigs_and_send_reaches_one(broker: Broker) -> None:
    calls: list[str] = []
    a, b = _link(broker, "rig-a", calls), _link(broker, "rig-b", calls)
    await a.start()
    await b.start()
    try:
        await _connected(a, b)
        a.set_status(state="running")
        b.set_status(state="paused")

        async def publish() -> None:
            for _ in range(40):
                a.publish_telemetry({"pressure_kpa": 180.04, "setpoint_kpa": 180.0, "step": "3/4 plate"})
                b.publish_telemetry({"pressure_kpa": 249.97, "setpoint_kpa": 250.0, "step": "2/4 rest"})
                await asyncio.sleep(0.1)

        pub = asyncio.create_task(publish())
        broker_addr = f"127.0.0.1:{broker.port}"
        rc, out = await _rig_cli(
            "watch", "--broker", broker_addr, "--username", "viewer", "--password", USERS["viewer"], "--duration", "2"
        )
        await pub
        assert rc == 0, out
        row_a = next(line for line in out.splitlines() if "rig-a" in line)
        row_b = next(line for line in out.splitlines() if "rig-b" in line)
        assert "running" in row_a and "180.04" in row_a and "plate" in row_a
        assert "paused" in row_b and "249.97" in row_b and "rest" in row_b

        # a viewer may not command: the broker drops it, no reply comes, nothing acts
        rc, out = await _rig_cli(
            "send",
            "abort",
            "--rig",
            "rig-b",
            "--broker",
            broker_addr,
            "--username",
            "viewer",
            "--password",
            USERS["viewer"],
            "--timeout",
            "2",
        )
        assert rc == 1 and "no reply" in out
        assert calls == []
        rc, out = await _rig_cli(
            "send",
            "abort",
            "--rig",
            "rig-b",
            "--broker",
            broker_addr,
            "--username",
            "operator",
            "--password",
            USERS["operator"],
        )
        assert rc == 0, out
        assert calls == ["rig-b:abort"]
        # nothing but the four commands can even be sent
        rc, out = await _rig_cli("send", "set_pressure", "--rig", "rig-a", "--broker", broker_addr)
        assert rc == 2 and calls == ["rig-b:abort"]
    finally:
        await a.close()
        await b.close()


async def test_watch_shows_two_simulated_runs_on_one_broker(broker: Broker, tmp_path: Path) -> None:
    procs = []
    for rig_id in ("rig-a", "rig-b"):
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(tmp_path),
            "RIG_RIG__NAME": rig_id,
            "RIG_TELEMETRY__HOST": "127.0.0.1",
            "RIG_TELEMETRY__PORT": str(broker.port),
            "RIG_TELEMETRY__USERNAME": rig_id,
            "RIG_MQTT_PASSWORD": USERS[rig_id],
        }
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from rig.cli.app import app; app()",
                "run",
                str(SHORT),
                "--sim",
                "--speed",
                "50",
                "--runs",
                str(tmp_path / rig_id),
                "--headless",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
            )
        )
    try:
        broker_addr = f"127.0.0.1:{broker.port}"
        seen: set[str] = set()
        out = ""
        for _ in range(20):
            rc, out = await _rig_cli(
                "watch",
                "--broker",
                broker_addr,
                "--username",
                "viewer",
                "--password",
                USERS["viewer"],
                "--duration",
                "2",
            )
            assert rc == 0, out
            seen = {
                rid
                for rid in ("rig-a", "rig-b")
                for line in out.splitlines()
                if rid in line and "kPa" not in line and any(ch.isdigit() for ch in line)
            }
            rows = [line for line in out.splitlines() if "rig-a" in line or "rig-b" in line]
            # a rig starting up says "idle" until its devices are verified: wait for both to be under way
            if seen == {"rig-a", "rig-b"} and all("running" in r or "completed" in r for r in rows):
                break
        assert seen == {"rig-a", "rig-b"}, out
        assert all("running" in r or "completed" in r for r in rows), rows
    finally:
        for p in procs:
            if p.returncode is None:
                p.terminate()
        for p in procs:
            await asyncio.wait_for(p.wait(), 120)
