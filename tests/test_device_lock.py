"""The keys of `rig.device_lock`: one rig, however its devices are spelled; two rigs, never one key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rig.config import RigConfig
from rig.device_lock import LOCK_DIR_ENV, RigLock, RigLocked, rig_lock_keys


def _cfg(port: str, resource: str, usb_serial: str | None = None) -> RigConfig:
    bus: dict[str, object] = {"port": port}
    if usb_serial is not None:
        bus["usb_serial"] = usb_serial
    return RigConfig.model_validate(
        {
            "rig": {"name": "press-1", "electrode_diameter_mm": 12.0, "hard_force_limit_n": 40.0},
            "buses": {"rs485": bus},
            "load_cell": {"driver": "modbus_transmitter", "bus": "rs485", "slave_id": 1},
            "press": {"driver": "leadshine_pr", "bus": "rs485", "travel_min_um": 0, "travel_max_um": 1e4},
            "potentiostat": {"driver": "keithley2450", "resource": resource},
        }
    )


def test_a_port_and_its_by_id_link_and_two_spellings_of_a_visa_resource_are_one_rig(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"
    port.touch()
    link = tmp_path / "usb-FTDI_A10KZ3XY-if00-port0"
    os.symlink(port, link)
    a = rig_lock_keys(_cfg(str(port), "TCPIP0::192.0.2.10::5025::SOCKET"))
    b = rig_lock_keys(_cfg(str(link), "tcpip::192.0.2.10::5025::socket"))
    assert a == b
    with_instr = rig_lock_keys(_cfg(str(port), "GPIB::22::INSTR"))
    assert "visa:GPIB0::22" in with_instr


def test_other_devices_are_another_rig_and_a_usb_serial_number_is_a_key_of_its_own(tmp_path: Path) -> None:
    a = set(rig_lock_keys(_cfg("/dev/ttyUSB0", "TCPIP0::192.0.2.10::5025::SOCKET")))
    b = set(rig_lock_keys(_cfg("/dev/ttyUSB1", "TCPIP0::192.0.2.11::5025::SOCKET")))
    assert not a & b
    moved = set(rig_lock_keys(_cfg("/dev/ttyUSB7", "TCPIP0::192.0.2.12::5025::SOCKET", usb_serial="A10KZ3XY")))
    again = set(rig_lock_keys(_cfg("/dev/ttyUSB0", "TCPIP0::192.0.2.13::5025::SOCKET", usb_serial="A10KZ3XY")))
    assert moved & again == {"usb-serial:A10KZ3XY"}  # the adapter re-enumerated under another path: still one rig


def test_a_held_key_refuses_a_second_holder_and_is_free_once_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    first = RigLock(["serial:/dev/ttyUSB0", "visa:TCPIP0::192.0.2.10::5025::SOCKET"], command="rig run a.yaml")
    first.acquire()
    first.set_run_dir(tmp_path / "run-a")
    with pytest.raises(RigLocked) as refused:
        RigLock(["visa:TCPIP0::192.0.2.10::5025::SOCKET"], command="rig check").acquire()
    assert refused.value.holder["pid"] == os.getpid() and refused.value.holder["command"] == "rig run a.yaml"
    assert str((tmp_path / "run-a").resolve()) in str(refused.value)
    first.release()
    second = RigLock(["visa:TCPIP0::192.0.2.10::5025::SOCKET"], command="rig check").acquire()
    second.release()
