"""Errors raised by drivers. Every error names the device, the register or command, and what came back."""

from __future__ import annotations


class DeviceError(Exception):
    """A device did something other than what was asked; names device, command and reply."""

    def __init__(self, device: str, command: str, detail: str, reply: bytes | str | None = None) -> None:
        self.device = device
        self.command = command
        self.detail = detail
        self.reply = reply
        got = f"; got {reply!r}" if reply is not None else ""
        super().__init__(f"{device}: {command}: {detail}{got}")


class DeviceTimeout(DeviceError):
    """No (complete) reply within the call's timeout."""


class DeviceProtocolError(DeviceError):
    """A reply arrived but was malformed: bad CRC, wrong length, garbage bytes, unparsable text."""


class DeviceExceptionReply(DeviceError):
    """The device answered with an explicit error (Modbus exception code, SCPI error queue entry)."""

    def __init__(self, device: str, command: str, detail: str, reply: bytes | str | None = None, *, code: int) -> None:
        self.code = code
        super().__init__(device, command, detail, reply)


class DeviceDisconnected(DeviceError):
    """The port or connection is gone (USB unplugged, socket closed)."""


class DeviceAlarm(DeviceError):
    """The device reports an active alarm; it is reported, never silently reset."""

    def __init__(self, device: str, command: str, detail: str, reply: bytes | str | None = None, *, code: int) -> None:
        self.code = code
        super().__init__(device, command, detail, reply)


class UnsafeSetting(DeviceError):
    """A safety-relevant setting read back differs from what must be set before a run."""


class InvalidReadingError(Exception):
    """Code tried to use an invalid reading (NaN, overrange, overload, stale) as a number."""
