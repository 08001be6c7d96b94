"""A wire-level simulator of the whole rig: load cell, Mark-10 gauge, Leadshine press drive, Keithley 2450.

It is a peer on the wire: it imports nothing from `rig`, `drivers` or `protocols`.
"""

from hardware_sim.clock import ManualClock, SimClock
from hardware_sim.faults import Faults
from hardware_sim.line_timing import LineTiming
from hardware_sim.model import Measurement, RigModel
from hardware_sim.params import ELECTROLYTES, SimParams

__all__ = ["ELECTROLYTES", "Faults", "LineTiming", "ManualClock", "Measurement", "RigModel", "SimClock", "SimParams"]

from hardware_sim.keithley2450 import Keithley2450Sim
from hardware_sim.leadshine_drive import LeadshineDrive
from hardware_sim.loadcell_transmitter import LoadCellTransmitter
from hardware_sim.mark10_gauge import Mark10Gauge
from hardware_sim.rtu_line import ModbusError, RtuLineServer

__all__ += ["Keithley2450Sim", "Mark10Gauge"]

__all__ += ["LeadshineDrive", "LoadCellTransmitter", "ModbusError", "RtuLineServer"]
