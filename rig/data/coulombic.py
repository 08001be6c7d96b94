"""Coulombic-efficiency bookkeeping (pure): plate/strip pairs, ICE and the average CE."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class CyclePair:
    """Charge plated and stripped in one cycle (C, magnitudes)."""

    cycle: int
    plated_c: float = 0.0
    stripped_c: float = 0.0

    @property
    def complete(self) -> bool:
        """Both halves happened."""
        return self.plated_c > 0 and self.stripped_c > 0

    @property
    def ce(self) -> float | None:
        """Coulombic efficiency Q_strip / Q_plate, or None when incomplete."""
        return self.stripped_c / self.plated_c if self.complete else None


@dataclass
class CoulombicLedger:
    """Adds charge per cycle; a strip pairs with the plate of the same cycle."""

    pairs: dict[int, CyclePair] = field(default_factory=dict)

    def add(self, cycle: int, kind: str, charge_c: float) -> None:
        """Add the charge of a finished (or partial) plate or strip step."""
        if not math.isfinite(charge_c) or charge_c < 0:
            raise ValueError(f"charge must be a finite magnitude, got {charge_c}")
        pair = self.pairs.setdefault(cycle, CyclePair(cycle))
        if kind == "plate":
            pair.plated_c += charge_c
        elif kind == "strip":
            pair.stripped_c += charge_c
        else:
            raise ValueError(f"kind must be plate or strip, got {kind!r}")

    def efficiencies(self) -> list[tuple[int, float]]:
        """(cycle, CE) for every complete pair, in cycle order."""
        return [(c, p.ce) for c, p in sorted(self.pairs.items()) if p.ce is not None]

    @property
    def ice(self) -> float | None:
        """First-cycle coulombic efficiency."""
        ces = self.efficiencies()
        return ces[0][1] if ces else None

    @property
    def average_ce(self) -> float | None:
        """Mean CE over the complete cycles."""
        ces = [ce for _, ce in self.efficiencies()]
        return math.fsum(ces) / len(ces) if ces else None
