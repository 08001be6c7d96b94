from drivers.keithley2450 import Keithley2450 as Keithley2450
from drivers.leadshine_pr import LEADSHINE_ALARMS as LEADSHINE_ALARMS
from drivers.leadshine_pr import LeadshinePR as LeadshinePR
from drivers.mark10 import Mark10 as Mark10
from drivers.modbus_bus import ModbusBus as ModbusBus
from drivers.modbus_transmitter import ModbusTransmitter as ModbusTransmitter
from drivers.serial_line import SerialLine as SerialLine
