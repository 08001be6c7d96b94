"""Parameters of the simulated rig, documented and validated (pydantic).

Values marked *paper* come from the source paper (see shared reference physics.md). Everything else is this
simulator's own model choice, picked to be physically plausible; the docs say so wherever the curves appear.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Electrolyte = Literal["dme", "ec-dmc"]

NA_UM_PER_MAH_CM2 = 8.86  # paper: dense Na thickness per areal capacity
C_PER_MAH = 3.6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MechanicsParams(_Strict):
    """Press, series spring, stack and creep."""

    um_per_pulse: float = Field(0.625, gt=0, description="platen travel per drive pulse (2 mm lead, 3200 pulses/rev)")
    initial_gap_um: float = Field(300.0, ge=0, description="open gap between spring and stack at pulse 0")
    spring_n_per_um: float = Field(0.025, gt=0, description="series (disc) spring stiffness at scale 1")
    stack_n_per_um: float = Field(0.20, gt=0, description="stack contact stiffness at first contact, scale 1")
    stack_hardening_um: float = Field(25.0, gt=0, description="stack stiffness doubles after this compression")
    stiffness_scale: float = Field(1.0, ge=0.05, le=20.0, description="multiplies spring and stack stiffness")
    electrode_diameter_mm: float = Field(12.0, gt=0, description="working electrode diameter")
    stall_force_n: float = Field(400.0, gt=0, description="the motor stalls (loses steps) above this force")
    creep_rate_um_per_s: float = Field(0.03, ge=0, description="initial creep rate at the reference pressure")
    creep_ref_pressure_kpa: float = Field(180.0, gt=0)
    creep_stress_exponent: float = Field(4.0, gt=0, description="power-law (Norton) stress exponent")
    creep_hardening_um: float = Field(4.0, gt=0, description="strain-hardening scale of primary creep")
    creep_hardening_exponent: float = Field(3.0, ge=0)

    @property
    def area_m2(self) -> float:
        """Electrode area in m²."""
        return math.pi * (self.electrode_diameter_mm * 1e-3 / 2) ** 2

    @property
    def area_cm2(self) -> float:
        """Electrode area in cm²."""
        return self.area_m2 * 1e4


class ElectrolyteParams(_Strict):
    """Pressure response of one electrolyte. The optimum and its ICE are the paper's; the fall-off is the model's."""

    name: str
    optimum_pressure_kpa: float = Field(gt=0)
    ice_at_optimum: float = Field(gt=0, lt=1)
    ice_at_10kpa: float = Field(gt=0, lt=1, description="model's own")
    falloff_exponent: float = Field(1.0, gt=0, description="shape of the fall-off below the optimum (model)")
    porosity_at_optimum: float = Field(ge=0, lt=1)
    porosity_at_10kpa: float = Field(ge=0, lt=1)
    sei_share_of_loss: float = Field(ge=0.75, le=0.85, description="paper: 75–85 % of first-cycle loss is SEI")
    later_cycle_loss_floor: float = Field(0.05, ge=0, le=1, description="loss rate after the first 1 mAh/cm²")
    r_inf_ohm_cm2: float = Field(gt=0, description="interfacial resistance at infinite pressure")
    r_pressure_kpa: float = Field(gt=0, description="pressure scale of the interfacial resistance")
    tafel_v: float = Field(gt=0, description="charge-transfer slope (asinh form)")
    j0_ma_cm2: float = Field(gt=0, description="exchange current density")
    nucleation_v: float = Field(ge=0, description="extra nucleation overpotential at the start of plating")


DME = ElectrolyteParams(
    name="1 M NaPF6 in DME",
    optimum_pressure_kpa=180.0,
    ice_at_optimum=0.882,
    ice_at_10kpa=0.74,
    porosity_at_optimum=0.0,
    porosity_at_10kpa=0.15,
    sei_share_of_loss=0.80,
    r_inf_ohm_cm2=15.0,
    r_pressure_kpa=20.0,
    tafel_v=0.025,
    j0_ma_cm2=1.0,
    nucleation_v=0.03,
)

EC_DMC = ElectrolyteParams(
    name="1 M NaPF6 in EC:DMC 1:1",
    optimum_pressure_kpa=250.0,
    ice_at_optimum=0.861,
    ice_at_10kpa=0.58,
    porosity_at_optimum=0.04,
    porosity_at_10kpa=0.55,
    sei_share_of_loss=0.78,
    r_inf_ohm_cm2=60.0,
    r_pressure_kpa=50.0,
    tafel_v=0.04,
    j0_ma_cm2=0.5,
    nucleation_v=0.08,
)

ELECTROLYTES: dict[str, ElectrolyteParams] = {"dme": DME, "ec-dmc": EC_DMC}


class CellParams(_Strict):
    """The Na||Al cell's voltage features."""

    al_ocv_v: float = Field(1.6, description="open-circuit voltage of pristine Al vs Na (model)")
    exhaustion_v: float = Field(1.0, description="voltage where the last reversible Na is gone")
    tail_mah_cm2: float = Field(0.01, gt=0, description="reversible Na over which the strip voltage rises")
    nucleation_mah_cm2: float = Field(0.005, gt=0, description="charge scale of the nucleation dip")
    capacitance_f_cm2: float = Field(1e-3, gt=0, description="capacitance once no reversible Na is left")
    short_resistance_ohm: float = Field(2.0, ge=0, description="source resistance of a NORMAL output-off short")


class LoadCellSensorParams(_Strict):
    """What a physical load cell adds to the true force."""

    noise_n: float = Field(0.004, ge=0, description="white noise, 1 sigma per sample")
    drift_n_per_sqrt_s: float = Field(0.0008, ge=0, description="random-walk drift (a few g per 15–30 min)")
    warmup_drift_n: float = Field(0.03, description="warm-up drift amplitude")
    warmup_tau_s: float = Field(1200.0, gt=0)


class SimParams(_Strict):
    """All parameters of the simulated rig."""

    electrolyte: Electrolyte = "dme"
    mechanics: MechanicsParams = MechanicsParams()
    cell: CellParams = CellParams()
    loadcell_sensor: LoadCellSensorParams = LoadCellSensorParams()
    seed: int = 1

    @property
    def electrolyte_params(self) -> ElectrolyteParams:
        """Parameters of the chosen electrolyte."""
        return ELECTROLYTES[self.electrolyte]
