"""CRC-16/MODBUS for the simulator's own RTU framing (never shared with the drivers, so a bug cannot hide itself)."""

from __future__ import annotations


def _table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_TABLE = _table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) of `data`."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """`frame` followed by its CRC, low byte first, as it goes on the wire."""
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    """True when the last two bytes of `frame` are the CRC of the rest."""
    return len(frame) >= 4 and crc16_modbus(frame[:-2]) == int.from_bytes(frame[-2:], "little")
