"""Read rate of a load cell and a stepper drive sharing ONE RS-485 Modbus RTU line, against the frame-size limit.

The simulated rig runs in this process with line timing on: every byte costs its wire time at the emulated baud,
and the line is half duplex. Our drivers talk to it over `socket://`, exactly as to a USB-RS485 adapter. Per baud
rate, for `--seconds` each, two cycles alternate on the one line as fast as the drivers allow:

- `gross + position`: the load cell's gross weight (FC03 0x0050, 2 registers) then the drive's position counter
  (FC03 0x602C, 2 registers), the same frames `ModbusTransmitter` and `LeadshinePR` send;
- `read() + position_um()`: the drivers' public calls, where a load-cell reading is gross weight plus the status
  word (decimal places and overload/overflow bits), i.e. three transactions per cycle.

Theoretical limit per transaction: (request + reply bytes) x 10 bits / baud (8N1), plus two 3.5-character silent
gaps (after the request: the slave's turnaround; after the reply: before the next request), each 1.75 ms above
19200 baud. Slave processing time is taken as zero. Printed: cycles per second achieved, the limit, their ratio.

Where the rest goes (measured on Linux): asyncio's epoll timer rounds every sleep up to a whole millisecond, so
the simulator's wire-time sleep and the bus's t3.5 wait each lose up to 1 ms per transaction; Python costs about
0.7 ms per transaction (driver + simulator; the same with the simulator in its own process); and `ModbusBus`
times t3.5 with 11-bit characters as the Modbus spec does (4.0 ms at 9600 baud, not 3.6 ms). The fixed losses
weigh more the faster the line, hence the falling ratio.

    python bench/bus_rate.py [--seconds 5] [--bauds 9600,38400,115200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.errors import DeviceError
from drivers.leadshine_pr import LeadshinePR
from drivers.modbus_bus import ModbusBus
from drivers.modbus_transmitter import REG_GROSS, ModbusTransmitter
from hardware_sim.rig import LOADCELL_ID, STEPPER_ID, SimulatedRig

BITS_PER_CHAR = 10  # 8N1: start + 8 data + stop
FC03_REQUEST_BYTES = 8  # id, fc, address(2), count(2), crc(2)


def fc03_reply_bytes(registers: int) -> int:
    """id, fc, byte count, data, crc."""
    return 5 + 2 * registers


def gap_s(baud: int) -> float:
    """The Modbus RTU silent interval t3.5: 3.5 characters, fixed 1.75 ms above 19200 baud."""
    return 0.00175 if baud > 19200 else 3.5 * BITS_PER_CHAR / baud


def transaction_s(baud: int, registers: int) -> float:
    """Theoretical time of one FC03 transaction: both frames on the wire plus two silent gaps."""
    return (FC03_REQUEST_BYTES + fc03_reply_bytes(registers)) * BITS_PER_CHAR / baud + 2 * gap_s(baud)


@dataclass(frozen=True)
class Cycle:
    """What one cycle reads: the register count of each FC03 transaction, in order."""

    name: str
    registers: tuple[int, ...]

    def wire_bytes(self) -> int:
        """Request plus reply bytes of the whole cycle."""
        return sum(FC03_REQUEST_BYTES + fc03_reply_bytes(n) for n in self.registers)

    def limit_per_s(self, baud: int) -> float:
        """Cycles per second the line could carry at most."""
        return 1.0 / sum(transaction_s(baud, n) for n in self.registers)


PAIR = Cycle("gross + position", (2, 2))
DRIVER = Cycle("read() + position_um()", (2, 1, 2))


@dataclass(frozen=True)
class Row:
    """One measured cycle at one baud rate."""

    baud: int
    cycle: Cycle
    cycles: int
    wall_s: float
    errors: int

    @property
    def rate_per_s(self) -> float:
        """Cycles per second achieved."""
        return self.cycles / self.wall_s


async def _measure(step: Callable[[], Awaitable[None]], seconds: float) -> tuple[int, float, int]:
    """Run `step` back to back for `seconds`; (cycles, wall seconds, errors)."""
    for _ in range(5):  # warm-up: ports open, first conversions done
        await step()
    cycles = errors = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        try:
            await step()
            cycles += 1
        except DeviceError as exc:
            errors += 1
            print(f"  error: {exc}", file=sys.stderr)
    return cycles, time.perf_counter() - t0, errors


async def run_baud(baud: int, seconds: float) -> list[Row]:
    """Both cycles on one simulated line at `baud`."""
    rig = SimulatedRig(baudrate=baud, line_timing=True)
    await rig.start()
    bus = ModbusBus(port=rig.lines["rs485"].url, baudrate=baud, timeout_s=0.5, retries=0, name="rs485")
    loadcell = ModbusTransmitter(bus=bus, device_id=LOADCELL_ID, name="load cell", capacity_n=100.0)
    press = LeadshinePR(bus=bus, device_id=STEPPER_ID, name="press")
    rows: list[Row] = []
    try:
        await loadcell.connect()
        await press.connect()

        async def pair() -> None:
            # the frame ModbusTransmitter.read() sends first; the driver has no gross-only call
            await bus.read_holding(loadcell.name, LOADCELL_ID, REG_GROSS, 2, what="gross weight")
            await press.position_um()

        async def driver_calls() -> None:
            await loadcell.read()
            await press.position_um()

        for cycle, step in ((PAIR, pair), (DRIVER, driver_calls)):
            cycles, wall_s, errors = await _measure(step, seconds)
            rows.append(Row(baud, cycle, cycles, wall_s, errors))
    finally:
        await press.close()
        await loadcell.close()
        await bus.close()
        await rig.close()
    return rows


def print_table(rows: list[Row], seconds: float) -> None:
    """The result table."""
    print(
        f"load cell (slave {LOADCELL_ID}) + Leadshine drive (slave {STEPPER_ID}) on ONE simulated RS-485 line, "
        f"line timing on, {seconds:g} s per row"
    )
    print(
        f"limit = (request + reply bytes) x {BITS_PER_CHAR} bit / baud + 2 x t3.5 gap per transaction "
        "(t3.5 = 3.5 chars, 1.75 ms above 19200 baud)"
    )
    head = (
        f"{'baud':>6}  {'cycle':<24} {'frames':>6} {'bytes':>5}  {'achieved/s':>10}  {'limit/s':>8}  "
        f"{'ratio':>5}  {'ms/cycle':>8}  {'limit ms':>8}  {'errors':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        limit = r.cycle.limit_per_s(r.baud)
        print(
            f"{r.baud:>6}  {r.cycle.name:<24} {len(r.cycle.registers):>6} {r.cycle.wire_bytes():>5}  "
            f"{r.rate_per_s:>10.1f}  {limit:>8.1f}  {r.rate_per_s / limit:>5.2f}  "
            f"{1e3 / r.rate_per_s:>8.2f}  {1e3 / limit:>8.2f}  {r.errors:>6}"
        )


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per cycle and baud rate")
    ap.add_argument("--bauds", default="9600,38400,115200", help="comma-separated emulated baud rates")
    args = ap.parse_args()
    if not args.seconds > 0:
        ap.error("--seconds must be positive")
    rows: list[Row] = []
    for baud in (int(b) for b in args.bauds.split(",")):
        rows += asyncio.run(run_baud(baud, args.seconds))
    print_table(rows, args.seconds)


if __name__ == "__main__":
    main()
