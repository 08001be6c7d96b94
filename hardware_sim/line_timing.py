"""Emulated serial line timing: what the bytes would cost on a real line at a given baud rate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LineTiming:
    """Bits per character and baud of an emulated serial line; `enabled=False` makes the line instant."""

    baudrate: int = 9600
    bits_per_char: int = 10  # 8N1: start + 8 data + stop
    enabled: bool = True

    def char_s(self) -> float:
        """Seconds one character takes on the line."""
        return self.bits_per_char / self.baudrate

    def frame_s(self, n_bytes: int) -> float:
        """Seconds `n_bytes` take on the line."""
        return n_bytes * self.char_s() if self.enabled else 0.0

    def gap_s(self) -> float:
        """The Modbus RTU inter-frame gap: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
        if not self.enabled:
            return 0.0
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.char_s()

    def rtu_exchange_s(self, request_bytes: int, reply_bytes: int, response_delay_s: float = 0.0) -> float:
        """Wire time of a whole request/reply: request, gap, device delay, reply, gap."""
        if not self.enabled:
            return response_delay_s
        return self.frame_s(request_bytes) + self.gap_s() + response_delay_s + self.frame_s(reply_bytes) + self.gap_s()
