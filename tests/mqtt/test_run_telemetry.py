"""A simulated `rig run` publishing to a real broker: a viewer sees it; a broker outage leaves the run be.

The full 30 s outage with its figures (fault-matrix row 13) is tests/mqtt/test_broker_outage.py, in-process where
the loop rate can be read; this one is the same through `rig run --sim` end to end, with a 5 s outage.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rig.data.store import read_events, read_samples
from rig.remote.telemetry import MqttSettings, mqtt_client
from tests.mqtt.broker import USERS, Broker

SHORT = Path(__file__).resolve().parents[1] / "engine" / "short_protocol.yaml"
OUTAGE_S = 5.0


async def test_a_viewer_follows_a_simulated_run_through_a_broker_outage(broker: Broker, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # plating (6 min of experiment time, 18 s at 20x) holds the whole outage
    protocol = SHORT
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(tmp_path),
        "RIG_RIG__NAME": "rig-a",  # the rig's broker account is its rig id (ACL: rig/%u/#)
        "RIG_TELEMETRY__HOST": "127.0.0.1",
        "RIG_TELEMETRY__PORT": str(broker.port),
        "RIG_TELEMETRY__USERNAME": "rig-a",
        "RIG_MQTT_PASSWORD": USERS["rig-a"],
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from rig.cli.app import app; app()",
        "run",
        str(protocol),
        "--sim",
        "--speed",
        "20",
        "--runs",
        str(runs),
        "--headless",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    viewer_settings = MqttSettings(
        host="127.0.0.1", port=broker.port, rig_id="viewer", username="viewer", password=USERS["viewer"]
    )
    telemetry: list[tuple[float, dict[str, Any]]] = []

    async def follow(until: float) -> None:
        async with mqtt_client(viewer_settings, identifier=f"viewer-{time.monotonic_ns()}") as viewer:
            await viewer.subscribe("rig/rig-a/telemetry")

            async def take() -> None:
                async for m in viewer.messages:
                    telemetry.append((time.monotonic(), json.loads(m.payload)))

            try:
                await asyncio.wait_for(take(), max(0.0, until - time.monotonic()))
            except TimeoutError:
                pass

    try:
        # wait until the run is plating, following its telemetry
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(t[1].get("step", "").startswith("2/") for t in telemetry):
            await follow(time.monotonic() + 2.0)
        assert any("plate" in t[1]["step"] for t in telemetry), telemetry[-3:]
        first = telemetry[-1][1]
        assert first["schema"] == 1 and first["rig"] == "rig-a"
        assert abs(first["pressure_kpa"] - 180.0) < 5.0
        # the broker goes away for a while as the cell plates
        broker.stop()
        t_down = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        broker.start()
        t_up = time.monotonic()
        n_before = len(telemetry)
        await follow(time.monotonic() + 8.0)
        assert len(telemetry) > n_before, "telemetry did not resume by itself"
        rc = await asyncio.wait_for(proc.wait(), 300)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0
    run_dir = next(d for d in runs.iterdir() if d.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "completed" and 0.86 < summary["ice"] < 0.90
    # the run's data is untouched by the outage: samples keep coming at the same pace
    samples = read_samples(run_dir / "run.sqlite")
    times = [s.test_time_s for s in samples]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    median = gaps[len(gaps) // 2]
    assert max(gaps) < 20 * median + 5.0, (max(gaps), median)
    assert t_up - t_down >= OUTAGE_S
    events = read_events(run_dir / "run.sqlite")
    assert not any(e["kind"] == "alarm" and "mqtt" in e["message"].lower() for e in events)
