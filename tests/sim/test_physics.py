"""The physics model, driven in-process: calibration to the paper, mechanics, creep, porosity, short."""

from __future__ import annotations

import itertools

import pytest

from hardware_sim.clock import ManualClock
from hardware_sim.model import RigModel
from hardware_sim.params import C_PER_MAH, ELECTROLYTES, NA_UM_PER_MAH_CM2, MechanicsParams, SimParams


def _plate_strip(model: RigModel, clock: ManualClock, *, j_ma_cm2: float = 0.5, q_mah_cm2: float = 1.0) -> float:
    """An ideal current source: plate to capacity, strip to 1 V; returns Q_strip / Q_plate from terminal currents."""
    i_a = j_ma_cm2 * 1e-3 * model.area_cm2
    q_target = q_mah_cm2 * C_PER_MAH * model.area_cm2
    dt = 1.0
    q_plate = 0.0
    model.set_source("current", current_a=-i_a, voltage_limit_v=5.0)
    while q_plate < q_target - 1e-12:
        step = min(dt, (q_target - q_plate) / i_a)
        clock.advance(step)
        q_plate += abs(model.measure().current_a) * step
    model.set_source("current", current_a=i_a, voltage_limit_v=5.0)
    q_strip = 0.0
    for _ in range(100_000):
        clock.advance(dt)
        m = model.measure()
        q_strip += m.current_a * dt
        if m.voltage_v >= 1.0:
            break
    else:  # pragma: no cover - a strip that never ends is itself the failure
        pytest.fail("strip never reached the 1 V cut-off")
    model.set_source("open")
    return q_strip / q_plate


def _ice(electrolyte: str, pressure_kpa: float) -> float:
    clock = ManualClock()
    model = RigModel(SimParams(electrolyte=electrolyte), clock=clock)  # type: ignore[arg-type]
    model.pin_pressure_kpa = pressure_kpa
    return _plate_strip(model, clock)


@pytest.mark.parametrize(("electrolyte", "p_opt", "ice_paper"), [("dme", 180.0, 0.882), ("ec-dmc", 250.0, 0.861)])
def test_first_cycle_efficiency_passes_through_the_published_optimum(
    electrolyte: str, p_opt: float, ice_paper: float
) -> None:
    ice = _ice(electrolyte, p_opt)
    assert abs(ice - ice_paper) <= 0.005, f"{electrolyte}: ICE {ice:.4f} at {p_opt} kPa, paper {ice_paper}"


@pytest.mark.parametrize(("electrolyte", "p_opt"), [("dme", 180.0), ("ec-dmc", 250.0)])
def test_efficiency_gains_nothing_above_the_optimum_and_falls_off_below(electrolyte: str, p_opt: float) -> None:
    curve = {p: _ice(electrolyte, p) for p in (10.0, 50.0, 100.0, p_opt, 300.0)}
    assert curve[300.0] <= curve[p_opt] + 0.002
    assert curve[10.0] < curve[50.0] < curve[100.0] < curve[p_opt]
    assert curve[p_opt] - curve[10.0] > 0.10, curve


def test_carbonate_suffers_more_at_low_pressure_than_ether() -> None:
    drop_dme = _ice("dme", 180.0) - _ice("dme", 10.0)
    drop_ec = _ice("ec-dmc", 250.0) - _ice("ec-dmc", 10.0)
    assert drop_ec > drop_dme


@pytest.mark.parametrize("electrolyte", ["dme", "ec-dmc"])
def test_sei_is_75_to_85_percent_of_the_first_cycle_loss(electrolyte: str) -> None:
    clock = ManualClock()
    model = RigModel(SimParams(electrolyte=electrolyte), clock=clock)  # type: ignore[arg-type]
    model.pin_pressure_kpa = 10.0
    _plate_strip(model, clock)
    share = model.sei_c / (model.sei_c + model.dead_c)
    assert 0.75 <= share <= 0.85


def test_strip_voltage_rises_steeply_once_reversible_na_is_gone() -> None:
    clock = ManualClock()
    model = RigModel(SimParams(), clock=clock)
    model.pin_pressure_kpa = 180.0
    i_a = 0.5e-3 * model.area_cm2
    model.set_source("current", current_a=-i_a, voltage_limit_v=5.0)
    clock.advance(3600.0)
    model.set_source("current", current_a=i_a, voltage_limit_v=5.0)
    trace = []
    for _ in range(4000):
        clock.advance(2.0)
        trace.append((model.na_rev_c, model.measure().voltage_v))
    plateau = [v for q, v in trace if q > 0.5 * trace[0][0]]
    assert max(plateau) < 0.1  # stripping plateau: tens of mV
    crossing = next(i for i, (_, v) in enumerate(trace) if v >= 1.0)
    # less than 5 min of experiment time from 0.2 V to 1 V: a steep rise
    start = next(i for i, (_, v) in enumerate(trace) if v >= 0.2)
    assert (crossing - start) * 2.0 < 300.0
    assert trace[crossing][0] < 0.01 * trace[0][0]


def test_plated_dense_na_adds_8_86_um_per_mah_cm2_and_porous_more() -> None:
    for p_kpa, electrolyte in ((180.0, "dme"), (10.0, "ec-dmc")):
        clock = ManualClock()
        model = RigModel(SimParams(electrolyte=electrolyte), clock=clock)  # type: ignore[arg-type]
        model.pin_pressure_kpa = p_kpa
        i_a = 0.5e-3 * model.area_cm2
        model.set_source("current", current_a=-i_a, voltage_limit_v=5.0)
        clock.advance(7200.0)
        model.measure()
        q_areal = model.plated_c / C_PER_MAH / model.area_cm2
        phi = model.porosity_at(p_kpa)
        expected_um = q_areal * NA_UM_PER_MAH_CM2 / (1 - phi)
        # the first microcoulombs only discharge the Al double layer
        assert model.deposit_um == pytest.approx(expected_um, rel=2e-3)
        assert model.deposit_porosity() == pytest.approx(phi, abs=2e-3)
    assert RigModel(SimParams(electrolyte="ec-dmc"), clock=ManualClock()).porosity_at(10.0) > 0.3
    assert RigModel(SimParams(electrolyte="dme"), clock=ManualClock()).porosity_at(180.0) < 0.02


def _engaged_model(stiffness_scale: float = 1.0, force_n: float = 20.0) -> tuple[RigModel, ManualClock]:
    """A model whose platen has been moved (instantly) until the force reaches about `force_n`."""
    clock = ManualClock()
    model = RigModel(SimParams(mechanics=MechanicsParams(stiffness_scale=stiffness_scale)), clock=clock)
    while model.force_n < force_n:
        model.axis.actual_pulses += 1
        model.axis.set_counter(round(model.axis.actual_pulses))
        model._update_force()
    return model, clock


def test_fixed_position_force_rises_with_the_deposit() -> None:
    model, clock = _engaged_model(force_n=20.0)
    f0 = model.force_n
    i_a = 0.5e-3 * model.area_cm2
    model.set_source("current", current_a=-i_a, voltage_limit_v=5.0)
    clock.advance(600.0)
    model.advance()
    dep = model.deposit_um
    assert dep > 0.5
    # force change = stiffness x (deposit - creep), measured against the same model with no current
    ref, ref_clock = _engaged_model(force_n=20.0)
    ref_clock.advance(600.0)
    ref.advance()
    assert model.force_n - ref.force_n == pytest.approx(dep * model.stiffness_n_per_um(), rel=0.1)
    assert model.force_n > ref.force_n
    assert f0 > 0


def test_fixed_position_force_decays_with_creep_over_hours() -> None:
    model, clock = _engaged_model(force_n=20.4)  # 180 kPa on 12 mm
    forces = []
    for _ in range(12):
        clock.advance(3600.0)
        model.advance()
        forces.append(model.force_n)
    assert all(b < a for a, b in itertools.pairwise(forces))  # monotonic decay
    first_hour_drop = 20.4 - forces[0]
    last_hour_drop = forces[-2] - forces[-1]
    assert first_hour_drop > 3 * last_hour_drop  # primary creep slows down
    assert 0.01 < (20.4 - forces[-1]) / 20.4 < 0.5


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_stiffness_scales_over_x0_1_to_x10(scale: float) -> None:
    model, _ = _engaged_model(stiffness_scale=scale, force_n=10.0)
    base, _ = _engaged_model(stiffness_scale=1.0, force_n=10.0)
    assert model.stiffness_n_per_um() == pytest.approx(scale * base.stiffness_n_per_um(), rel=0.05)


def test_open_gap_gives_no_force_until_contact() -> None:
    clock = ManualClock()
    model = RigModel(SimParams(), clock=clock)
    gap_pulses = MechanicsParams().initial_gap_um / MechanicsParams().um_per_pulse
    model.axis.start_move(int(gap_pulses) - 10, velocity_pps=5000, accel_pps2=50000, decel_pps2=50000)
    clock.advance(5.0)
    model.advance()
    assert model.force_n == 0.0
    model.axis.start_move(int(gap_pulses) + 200, velocity_pps=5000, accel_pps2=50000, decel_pps2=50000)
    clock.advance(5.0)
    model.advance()
    assert model.force_n > 0.5


def test_lost_steps_move_the_platen_less_than_the_counter() -> None:
    clock = ManualClock()
    model = RigModel(SimParams(), clock=clock)
    model.axis.lost_steps_fraction = 0.25
    model.axis.start_move(1000, velocity_pps=5000, accel_pps2=50000, decel_pps2=50000)
    clock.advance(2.0)
    model.advance()
    assert model.axis.counter_pulses == 1000
    assert model.axis.actual_pulses == pytest.approx(750.0, abs=1.0)


def test_normal_output_off_shorts_the_cell_and_himp_opens_it() -> None:
    clock = ManualClock()
    model = RigModel(SimParams(), clock=clock)
    model.pin_pressure_kpa = 180.0
    i_a = 0.5e-3 * model.area_cm2
    model.set_source("current", current_a=-i_a, voltage_limit_v=5.0)
    clock.advance(3600.0)
    model.set_source("current", current_a=i_a, voltage_limit_v=5.0)
    while model.measure().voltage_v < 1.0:
        clock.advance(1.0)
    # HIGH-Z: open circuit, no current, the voltage stays up
    model.set_source("open")
    clock.advance(60.0)
    m_open = model.measure()
    assert m_open.current_a == 0.0 and m_open.voltage_v > 0.5
    na_before, short_before = model.na_rev_c, model.short_c
    # NORMAL: a 0 V source — current flows and plates Na uncontrolled
    model.set_source("short")
    m_short = model.measure()
    assert m_short.voltage_v == 0.0 and m_short.current_a < 0
    clock.advance(60.0)
    model.measure()
    assert model.short_c > short_before
    assert model.na_rev_c > na_before


def test_compliance_clamps_voltage_and_current() -> None:
    clock = ManualClock()
    model = RigModel(SimParams(), clock=clock)
    model.pin_pressure_kpa = 180.0
    model.set_source("current", current_a=1e-3, voltage_limit_v=1.2)  # strip an empty electrode
    clock.advance(1.0)
    m = model.measure()
    assert m.in_compliance and m.voltage_v == pytest.approx(1.2)
    assert 0.0 <= m.current_a < 1e-3


def test_published_optima_are_the_electrolyte_parameters() -> None:
    assert ELECTROLYTES["dme"].optimum_pressure_kpa == 180.0 and ELECTROLYTES["dme"].ice_at_optimum == 0.882
    assert ELECTROLYTES["ec-dmc"].optimum_pressure_kpa == 250.0 and ELECTROLYTES["ec-dmc"].ice_at_optimum == 0.861
