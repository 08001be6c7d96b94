"""CE bookkeeping: pairs, ICE, average."""

from __future__ import annotations

import pytest

from rig.data.coulombic import CoulombicLedger


def test_ice_is_the_first_complete_pair_and_average_spans_all() -> None:
    led = CoulombicLedger()
    led.add(1, "plate", 4.0)
    led.add(1, "strip", 3.5)
    led.add(2, "plate", 4.0)
    led.add(2, "strip", 3.9)
    led.add(3, "plate", 4.0)  # incomplete: not counted
    assert led.ice == pytest.approx(0.875)
    assert led.average_ce == pytest.approx((0.875 + 0.975) / 2)
    assert [c for c, _ in led.efficiencies()] == [1, 2]


def test_a_resumed_step_adds_to_its_cycle() -> None:
    led = CoulombicLedger()
    led.add(1, "plate", 2.0)
    led.add(1, "plate", 2.0)
    led.add(1, "strip", 3.0)
    assert led.ice == pytest.approx(0.75)


def test_bad_input_is_refused() -> None:
    led = CoulombicLedger()
    with pytest.raises(ValueError):
        led.add(1, "plate", float("nan"))
    with pytest.raises(ValueError):
        led.add(1, "rest", 1.0)
    assert led.ice is None and led.average_ce is None
