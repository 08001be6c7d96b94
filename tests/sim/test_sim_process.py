"""The whole simulated rig as its own process, reached by plain clients that are not ours."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pyvisa
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from hardware_sim.control_port import control_request
from rig.config import load_config
from tests.sim.sim_process import sim_process


def _state(control: str) -> dict[str, Any]:
    reply = control_request(control, {"cmd": "state"})
    assert reply["ok"], reply
    state: dict[str, Any] = reply["state"]
    return state


async def _modbus_gross_n(url: str, *, decimals: int = 3) -> float:
    client = AsyncModbusSerialClient(port=url, framer=FramerType.RTU, baudrate=115200, timeout=2, retries=1)
    await client.connect()
    try:
        rr = await client.read_holding_registers(0x0050, count=2, device_id=1)
        assert not rr.isError(), rr
        raw = struct.unpack(">i", struct.pack(">HH", *rr.registers))[0]
        st = await client.read_holding_registers(0x0008, count=1, device_id=1)
        assert not st.isError(), st
        decimals = st.registers[0] & 0x7
        return raw / 10**decimals
    finally:
        client.close()


async def _modbus_move_press(url: str, pulses: int) -> None:
    """Relative PR0 move with plain pymodbus writes (mode, target, velocity, accel, decel, trigger)."""
    client = AsyncModbusSerialClient(port=url, framer=FramerType.RTU, baudrate=115200, timeout=2, retries=1)
    await client.connect()
    try:
        hi, lo = struct.unpack(">HH", struct.pack(">i", pulses))
        wr = await client.write_registers(0x6200, [0x0041, hi, lo, 300, 50, 50], device_id=2)
        assert not wr.isError(), wr
        wr = await client.write_register(0x6002, 0x0010, device_id=2)
        assert not wr.isError(), wr
    finally:
        client.close()


def test_plain_clients_reach_every_device_of_the_running_simulator(tmp_path: Path) -> None:
    with sim_process(tmp_path, "--speed", "20", launcher="rig") as sim:
        rs485 = sim.endpoints["rs485"]
        assert rs485.startswith("socket://127.0.0.1:")
        # close the press onto the stack with plain Modbus writes, until it bears a few newtons
        asyncio.run(_modbus_move_press(rs485, 2800))  # 1750 µm: past the 300 µm gap, well into the spring
        for _ in range(100):
            state = _state(sim.control)
            if not state["moving"] and state["force_n"] > 1.0:
                break
            asyncio.run(asyncio.sleep(0.05))
        truth_n = _state(sim.control)["force_n"]
        assert truth_n > 5.0
        gross_n = asyncio.run(_modbus_gross_n(rs485))
        # the transmitter adds sensor noise, drift and its own zero: within 0.2 N of the model's force
        assert gross_n == pytest.approx(_state(sim.control)["force_n"], abs=0.2)

        # a raw '?' to the gauge's line gets a force line in newtons
        host, port = sim.endpoints["gauge"].removeprefix("socket://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"?\r\n")
            line = b""
            while not line.endswith(b"\r\n"):
                line += s.recv(64)
        m = re.fullmatch(rb"(-?\d+\.\d+) N\r\n", line)
        assert m, line
        assert float(m.group(1)) == pytest.approx(_state(sim.control)["force_n"], abs=0.2)

        # a plain pyvisa session gets the 2450's identity
        rm = pyvisa.ResourceManager("@py")
        try:
            inst = rm.open_resource(
                sim.endpoints["potentiostat"], read_termination="\n", write_termination="\n", timeout=5000
            )
            idn = inst.query("*IDN?")
            inst.close()
        finally:
            rm.close()
        assert idn.startswith("KEITHLEY INSTRUMENTS,MODEL 2450,")

        # the configuration it wrote loads as a rig configuration naming these endpoints
        cfg = load_config(sim.config_path)
        assert cfg.buses["rs485"].port == rs485
        assert cfg.potentiostat.resource == sim.endpoints["potentiostat"]
        assert cfg.clock.speed == 20.0
        assert cfg.sim.control == sim.control


def test_faults_are_injected_from_another_process(tmp_path: Path) -> None:
    with sim_process(tmp_path, "--speed", "5") as sim:
        rs485 = sim.endpoints["rs485"]
        asyncio.run(_modbus_gross_n(rs485))  # healthy first
        out = subprocess.run(
            [sys.executable, "-m", "hardware_sim", "fault", "--control", sim.control, "loadcell", "no_reply=true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        faults = _state(sim.control)["faults"]
        assert faults["loadcell"] == {"no_reply": True}
        assert faults["stepper"] == faults["gauge"] == faults["potentiostat"] == {}

        async def silent() -> bool:
            client = AsyncModbusSerialClient(port=rs485, framer=FramerType.RTU, baudrate=115200, timeout=0.5, retries=0)
            await client.connect()
            try:
                await client.read_holding_registers(0x0050, count=2, device_id=1)
            except Exception:
                return True
            finally:
                client.close()
            return False

        assert asyncio.run(silent())
        # the stepper on the same line still answers
        asyncio.run(_modbus_move_press(rs485, 10))
        bad = subprocess.run(
            [sys.executable, "-m", "hardware_sim", "fault", "--control", sim.control, "loadcell", "warp=true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 1 and "unknown fault 'warp'" in bad.stdout
        cleared = subprocess.run(
            [sys.executable, "-m", "hardware_sim", "fault", "--control", sim.control, "--clear"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cleared.returncode == 0
        assert asyncio.run(_modbus_gross_n(rs485)) == pytest.approx(_state(sim.control)["force_n"], abs=0.2)
