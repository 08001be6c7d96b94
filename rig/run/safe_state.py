"""The rig's SAFE STATE, defined in one place and entered by every path (abort, signal, fault, suspension, storage).

Safe state means:
  1. the current is off, the output in its verified HIMP output-off state (the cell floats, never shorted);
  2. the press holds its position (the pressure controller keeps holding the stack) — or, after an over-force
     trip, has stopped and retreated (the controller does that itself, in its own loop, before anything else);
  3. the alarm that caused it is latched until it clears (or, for over-force, until `rig ack`);
  4. an event is recorded.

Nothing here commands the press: the pressure controller is its only owner. The step runner's own "output off"
is passed in, so the potentiostat keeps one owner too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["SafeState"]


@dataclass
class SafeState:
    """Enter the safe state; keeps the latched alarms."""

    current_off: Callable[[], Awaitable[None]]
    event: Callable[..., None]
    alarms: dict[str, str] = field(default_factory=dict)
    entries: int = 0

    async def enter(self, key: str, reason: str, *, kind: str = "alarm", data: dict[str, object] | None = None) -> None:
        """Current off (HIMP); the press stays with its controller (holding, or retreated); alarm latched; event."""
        self.entries += 1
        await self.current_off()
        self.alarms[key] = reason
        self.event(kind, f"safe state: {reason}", condition=key, **(data or {}))

    def clear(self, key: str) -> bool:
        """Unlatch one alarm; True when it was latched."""
        return self.alarms.pop(key, None) is not None
