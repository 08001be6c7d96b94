"""Fault matrix row 3: NaN, inf, over-range, saturation codes, a single spike, garbage bytes.

- Property: ≥ 10⁵ (10⁶ with RIG_FAULT_LONG=1) hostile raw inputs (Modbus register triples: gross weight high/low
  word and status word; ASCII reply lines of the Mark-10) go through the real drivers' decoding
  (`ModbusTransmitter.read`, `Mark10.read`, with the transport replaced by a stub that returns the raw data) and the
  controller's freshness check (`classify_reading`). Counted: readings classed usable whose value is not finite or
  lies past the sensor's range. Seeded, so a failure names its case and repeats.
- Saturation against the simulator (overload bit): near the hard limit it trips the over-force (stop, retreat,
  latched) at once; far below it, it is invalid data and makes no motion.
- A single spike against the simulator (the transmitter's one-reading `spike_n` fault): no motion and no trip,
  even when the spike lies past the over-force limit; a jump that persists is confirmed on the next reading.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from drivers.interfaces import ForceReading
from drivers.mark10 import MARK10_UNITS_TO_N, Mark10
from drivers.modbus_bus import ModbusBus
from drivers.modbus_transmitter import UNIT_TO_N, ModbusTransmitter
from rig.control.controller import ControllerMode
from rig.control.law import JumpFilter, classify_reading, saturation_may_be_real
from tests.conftest import FaultFigure
from tests.control.harness import ControlledRig, controlled_rig

LONG = bool(os.environ.get("RIG_FAULT_LONG"))  # bench/faults.py --long: ten times the cases
CASES_MODBUS = 600_000 if LONG else 60_000
CASES_ASCII = 600_000 if LONG else 60_000
SEED = 20261125
AREA_M2 = math.pi * 6e-3**2  # the simulator's 12 mm electrode

# ----------------------------------------------------------------------------------------------- property


@dataclass
class _StubBus:
    """Stands in for the RS-485 bus: returns the registers the case put there (decoding is the driver's)."""

    regs: dict[int, list[int]] = field(default_factory=dict)

    async def read_holding(
        self, device: str, device_id: int, address: int, count: int, *, what: str, timeout_s: float | None
    ) -> list[int]:
        return self.regs[address]


@dataclass
class _StubLine:
    """Stands in for the serial line: returns the reply line the case put there."""

    reply: bytes = b""

    async def query_line(self, request: bytes, **kw: object) -> bytes:
        return self.reply


_SPECIAL_WORDS = (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF)


def _word(rng: random.Random) -> int:
    return rng.choice(_SPECIAL_WORDS) if rng.random() < 0.3 else rng.getrandbits(16)


def _modbus_case(rng: random.Random, capacity_counts: int) -> tuple[int, int, int]:
    """(high, low, status): random words, pinned codes, and counts around the capacity boundary."""
    kind = rng.random()
    if kind < 0.4:
        high, low = _word(rng), _word(rng)
    else:  # near ±1.1 × capacity at some decimals, where the range check must bite
        counts = rng.choice((-1, 1)) * int(capacity_counts * rng.uniform(0.9, 1.3)) * 10 ** rng.randrange(0, 4)
        u = counts & 0xFFFFFFFF
        high, low = u >> 16, u & 0xFFFF
    status = rng.getrandbits(16) if rng.random() < 0.5 else rng.randrange(8) | rng.choice((0, 1 << 5, 1 << 6, 1 << 9))
    return high, low, status


_NUMBERS = (
    "nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "1e309", "-1e309", "1e308", "9.9E+37", "1e-400",
    "0", "-0", "+.5", "5.", ".", "-", "1e", "1_000", "0x1F", "１２", "12,5", "1.2.3", "  7 ", "99999999999999999999",
)  # fmt: skip
_UNITS = (*MARK10_UNITS_TO_N, "n", "KN", "mn", "LBF", "lbf", "kgf", "GF", "OZF", "MN", "Nm", "kg", "", " N", "N N")
_GOOD = b"12.345 N\r\n"
_ENDS = ("\r\n", "\n", "")


def _ascii_case(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.2:  # garbage bytes
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 24)))
    if kind < 0.35:  # a good line with bytes flipped, dropped or inserted
        b = bytearray(_GOOD)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.5:
                b[i] = rng.getrandbits(8)
            elif op < 0.75:
                del b[i]
            else:
                b.insert(i, rng.getrandbits(8))
        return bytes(b)
    if kind < 0.45:
        return rng.choice((b"OVER\r\n", b"over 12 N\r\n", b"OVERLOAD\r\n", b"\r\n", b"\n", b""))
    if kind < 0.7:
        number = rng.choice(_NUMBERS)
    else:  # a number of any size, some past what a float holds once scaled to newtons
        sign = rng.choice(("", "-", "+"))
        number = f"{sign}{rng.uniform(0, 10):.{rng.randrange(0, 6)}f}e{rng.randrange(-320, 320)}"
    sep = rng.choice((" ", "", "  ", "\t"))
    end = rng.choice(_ENDS)
    return f"{number}{sep}{rng.choice(_UNITS)}{end}".encode()


def _bad(reading: ForceReading, max_n: float) -> bool:
    """Classed usable by the controller's freshness check while not a finite force within range."""
    verdict = classify_reading(
        valid=reading.valid, seq=reading.seq, t_s=reading.t_s, now_s=reading.t_s, last_seq=reading.seq - 1,
        max_age_s=1.0,
    )  # fmt: skip
    if not verdict.usable:
        return False
    value = reading.force_n()
    return not (math.isfinite(value) and abs(value) <= max_n)


async def test_no_non_finite_or_out_of_range_value_reaches_control_over_1e5_hostile_inputs(
    fault_figure: FaultFigure,
) -> None:
    rng = random.Random(SEED)
    capacity_n = 100.0
    bad: list[str] = []
    usable = 0
    # Modbus transmitter: every unit it can be calibrated in
    bus = _StubBus()
    transmitters = [ModbusTransmitter(bus=cast(ModbusBus, bus), unit=unit, capacity_n=capacity_n) for unit in UNIT_TO_N]
    for _ in range(CASES_MODBUS):
        tx = rng.choice(transmitters)
        high, low, status = _modbus_case(rng, int(capacity_n / tx.scale_to_n))
        bus.regs = {0x0050: [high, low], 0x0008: [status]}
        reading = await tx.read()
        usable += reading.valid
        if _bad(reading, 1.1 * capacity_n):
            bad.append(f"modbus {tx.unit} 0x{high:04X}{low:04X} status 0x{status:04X} -> {reading}")
    # Mark-10 gauge: with and without an expected unit
    gauges = []
    for unit in (None, "N", "lbF"):
        gauge = Mark10(name="gauge", url="socket://127.0.0.1:9", capacity_n=capacity_n, expected_unit=unit)
        cast(Any, gauge)._line = _StubLine()
        gauges.append(gauge)
    for _ in range(CASES_ASCII):
        gauge = rng.choice(gauges)
        raw = _ascii_case(rng)
        cast(Any, gauge)._line.reply = raw
        reading = await gauge.read()
        usable += reading.valid
        if _bad(reading, capacity_n):
            bad.append(f"mark10 expected={gauge.expected_unit} {raw!r} -> {reading}")
    total = CASES_MODBUS + CASES_ASCII
    print(f"\n{total} hostile inputs, {usable} decoded as usable forces, {len(bad)} bad: {bad[:5]}")
    fault_figure(
        3,
        "non-finite / out-of-range values reaching control",
        f"{len(bad)} of {total} cases",
        goal="0 over ≥ 10⁵",
        met=not bad and total >= 100_000,
    )
    assert total >= 100_000
    assert not bad
    assert 0.05 * total < usable < 0.95 * total  # the generator reaches both sides of the check


def test_a_spike_is_held_and_rejected_a_persisting_jump_is_confirmed() -> None:
    f = JumpFilter()
    assert f.check(10.0, 1.0) == ""
    assert f.check(10.5, 1.0) == ""
    assert f.check(40.0, 1.0).startswith("spike")  # held: no motion, no trip on it
    assert f.check(10.4, 1.0) == "" and f.spikes == 1  # back: it was a spike
    assert f.check(8.0, 1.0).startswith("spike")
    assert f.check(7.9, 1.0) == "" and f.accepted_n == 7.9  # it persisted (same side): a real step, one period late
    assert f.check(20.0, 1.0).startswith("spike")
    assert f.check(35.0, 1.0) == ""  # a runaway is not held for ever: confirmed on the next reading


def test_saturation_is_a_possible_over_force_only_within_reach_of_the_limit() -> None:
    assert saturation_may_be_real(None, 40.0, 2.0)  # nothing known: it may be real
    assert saturation_may_be_real(38.5, 40.0, 2.0)
    assert not saturation_may_be_real(11.0, 40.0, 2.0)


# ------------------------------------------------------------------------------------------ on the simulator


async def _hold(rig: ControlledRig, kpa: float) -> None:
    await rig.ctl.engage(kpa)
    await rig.ctl.wait_settled(timeout_s=60.0)
    await rig.ctl.wait_cycles(10)


@pytest.mark.parametrize("near_limit", [True, False], ids=["near-the-limit", "far-below"])
async def test_saturation_trips_near_the_limit_and_never_moves_the_press(
    tmp_path: Path, fault_figure: FaultFigure, near_limit: bool
) -> None:
    overrides = {"hard_force_limit_n": 110e3 * AREA_M2, "max_pressure_kpa": 105.0} if near_limit else None
    async with controlled_rig(tmp_path, speed=5.0, rig_overrides=overrides) as rig:
        ctl = rig.ctl
        await _hold(rig, 100.0)
        q = ctl.subscribe(maxsize=10_000)
        counter = rig.counter_pulses
        moves = ctl.moves
        rig.sim.faults["loadcell"].set(overload=True)
        t_fault = rig.clock.now()
        first_bad = None
        for _ in range(200):
            await ctl.wait_cycles(1)
            while not q.empty():
                s = q.get_nowait()
                if first_bad is None and not s.usable:
                    first_bad = s
            if first_bad is not None and (not near_limit or ctl.mode is ControllerMode.TRIPPED):
                break
        if ctl.mode is ControllerMode.HOLD:
            ctl.set_setpoint(105.0)  # more force wanted: still no motion on saturated data
        await ctl.wait_cycles(20)
        ctl.unsubscribe(q)
        st = ctl.status()
        assert first_bad is not None
        if near_limit:
            assert st.trip is not None and ctl.mode is ControllerMode.TRIPPED
            latency = st.trip.t_s - t_fault
            print(f"\nsaturation near the limit: tripped {latency * 1e3:.0f} ms after the overload bit; {st.trip}")
            fault_figure(
                3,
                "trip latency (saturation near the limit)",
                f"{latency * 1e3:.0f} ms = {latency / ctl.settings.period_s:.1f} periods",
                goal="≤ 2 periods",
                met=latency <= 2 * ctl.settings.period_s,
            )
            assert latency <= 2 * ctl.settings.period_s
            assert "saturated" in st.trip.detail
            assert rig.counter_pulses < counter  # stopped and retreated, nothing closed the press
        else:
            assert st.trip is None and ctl.mode is ControllerMode.HOLD  # invalid data, not an over-force
            no_motion = first_bad.t_s - t_fault
            print(f"\nsaturation far below the limit: no motion from {no_motion * 1e3:.0f} ms after the overload bit")
            fault_figure(
                3,
                "no-motion latency (saturation far below)",
                f"{no_motion * 1e3:.0f} ms; {rig.counter_pulses - counter} pulses",
                goal="≤ 2 periods, 0",
                met=no_motion <= 2 * ctl.settings.period_s and rig.counter_pulses == counter,
            )
            assert rig.counter_pulses == counter and ctl.moves == moves
            assert "invalid" in st.last_reject
            rig.sim.faults["loadcell"].clear()
            await ctl.wait_settled(timeout_s=60.0)  # healthy again: the same controller holds the new setpoint
            assert rig.true_kpa() == pytest.approx(105.0, abs=1.5)


@pytest.mark.parametrize("spike_n", [+30.0, -8.0], ids=["past-the-limit", "downwards"])
async def test_a_single_spike_moves_nothing_and_trips_nothing(
    tmp_path: Path, fault_figure: FaultFigure, spike_n: float
) -> None:
    async with controlled_rig(tmp_path, speed=5.0) as rig:
        ctl = rig.ctl
        await _hold(rig, 100.0)
        limit = ctl.hard_force_limit_n
        q = ctl.subscribe(maxsize=10_000)
        moves = ctl.moves
        truth = [rig.true_kpa()]
        rig.sim.faults["loadcell"].set(spike_n=spike_n)
        for _ in range(10):
            await ctl.wait_cycles(1)
            truth.append(rig.true_kpa())
        ctl.unsubscribe(q)
        samples = []
        while not q.empty():
            samples.append(q.get_nowait())
        spikes = [s for s in samples if s.reason.startswith("spike")]
        st = ctl.status()
        moved_on_spike = sum(abs(s.pulses) for s in spikes)
        print(
            f"\nspike {spike_n:+.0f} N at 100 kPa (hard limit {limit:.1f} N): {len(spikes)} reading(s) held "
            f"({spikes[0].reason if spikes else '-'}); moves after it {ctl.moves - moves}; trip {st.trip}; "
            f"true pressure {min(truth):.2f}–{max(truth):.2f} kPa"
        )
        fault_figure(
            3,
            f"single spike {spike_n:+.0f} N: motion / trip",
            f"{moved_on_spike} pulses, trip {'yes' if st.trip else 'no'}",
            goal="0, no",
            met=bool(spikes) and moved_on_spike == 0 and st.trip is None,
        )
        assert len(spikes) == 1 and spikes[0].pulses == 0
        assert st.trip is None and ctl.mode is ControllerMode.HOLD
        assert max(abs(p - 100.0) for p in truth) <= 1.5  # the press did not act on it
        assert rig.sim.faults["loadcell"].spike_n == 0.0  # the simulator sent it once


@pytest.mark.parametrize(
    ("driver", "device", "fault"),
    [
        ("modbus_transmitter", "loadcell", "corrupt"),  # garbage bytes on RS-485: bad CRC
        ("mark10", "gauge", "corrupt"),  # garbage bytes on the ASCII line
        ("mark10", "gauge", "nan"),  # the gauge answers 'nan'
    ],
)
async def test_garbage_and_nan_on_the_wire_move_nothing_and_the_hold_returns(
    tmp_path: Path, fault_figure: FaultFigure, driver: str, device: str, fault: str
) -> None:
    bus = {"timeout_s": 0.05, "retries": 0}  # a corrupt Modbus frame is silence to the master: short timeouts
    async with controlled_rig(tmp_path, speed=5.0, driver=driver, bus_overrides=bus) as rig:
        ctl = rig.ctl
        await _hold(rig, 100.0)
        counter = rig.counter_pulses
        seen = ctl.status()
        rig.sim.faults[device].set(**{fault: True})
        ctl.set_setpoint(110.0)  # would move the press if anything reached the law
        for _ in range(300):
            await ctl.wait_cycles(1)
            st = ctl.status()
            bad = st.invalid_readings + st.read_errors - seen.invalid_readings - seen.read_errors
            if bad >= 10:
                break
        st = ctl.status()
        pulses = rig.counter_pulses - counter
        print(f"\n{driver} {fault}: {bad} readings refused ({st.last_reject[:90]}); {pulses} pulses; trip {st.trip}")
        fault_figure(
            3,
            f"{fault} ({driver}): motion",
            f"{pulses} pulses over {bad} bad readings",
            goal="0",
            met=pulses == 0 and bad >= 10,
        )
        assert bad >= 10 and pulses == 0 and st.moves == seen.moves
        assert st.trip is None and not st.sensor_ok
        rig.sim.faults[device].clear()
        await ctl.wait_settled(timeout_s=60.0)
        assert rig.true_kpa() == pytest.approx(110.0, abs=1.5)
