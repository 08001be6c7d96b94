"""The rig configuration: a TOML file loaded with pydantic-settings, environment overrides allowed.

Environment variables override file values: `RIG_<SECTION>__<KEY>`, e.g. `RIG_BUSES__RS485__PORT=/dev/ttyUSB1` or
`RIG_CLOCK__SPEED=100`. Every error names the key and the file.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


class ConfigError(Exception):
    """A configuration problem, naming the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RigSection(_Section):
    """The rig itself: electrode and hard limits."""

    name: str = "rig"
    electrode_diameter_mm: float | None = Field(None, gt=0)
    electrode_area_cm2: float | None = Field(None, gt=0)
    min_pressure_kpa: float = Field(10.0, gt=0)
    max_pressure_kpa: float = Field(250.0, gt=0)
    #: plausibility limit of a protocol's current density (against unit slips; the paper plates at 0.5 mA/cm²)
    max_current_density_ma_cm2: float = Field(10.0, gt=0)
    hard_force_limit_n: float = Field(gt=0, description="absolute over-force trip, from the calibration reference")
    #: where this rig's runs are kept (absolute, ~ allowed); default: the user data folder (rig.data.paths)
    runs_dir: Path | None = None

    @field_validator("runs_dir")
    @classmethod
    def _absolute_runs_dir(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if not value.is_absolute():
            raise ValueError(f"give an absolute folder (or one under ~), not {str(value)!r}")
        return value

    @model_validator(mode="after")
    def _one_electrode_size(self) -> RigSection:
        if (self.electrode_diameter_mm is None) == (self.electrode_area_cm2 is None):
            raise ValueError("give exactly one of electrode_diameter_mm or electrode_area_cm2")
        if self.min_pressure_kpa >= self.max_pressure_kpa:
            raise ValueError("min_pressure_kpa must be below max_pressure_kpa")
        return self

    @property
    def area_cm2(self) -> float:
        """Electrode area in cm²."""
        if self.electrode_area_cm2 is not None:
            return self.electrode_area_cm2
        assert self.electrode_diameter_mm is not None
        return math.pi * (self.electrode_diameter_mm / 20.0) ** 2

    @property
    def area_m2(self) -> float:
        """Electrode area in m²."""
        return self.area_cm2 * 1e-4


class ClockSection(_Section):
    """The experiment clock: speed 1 on hardware, N× against an accelerated simulator."""

    speed: float = Field(1.0, gt=0)


class BusConfig(_Section):
    """One serial line (RS-485 or USB virtual COM port)."""

    port: str
    baudrate: int = Field(9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(0.3, gt=0)
    retries: int = Field(2, ge=0, le=10)
    usb_serial: str | None = None


#: Newtons per unit of the force units a load cell may be calibrated in (standard gravity).
FORCE_UNIT_TO_N: dict[str, float] = {
    "N": 1.0,
    "g": 9.80665e-3,
    "kg": 9.80665,
    "gF": 9.80665e-3,
    "kgF": 9.80665,
    "lbF": 4.4482216152605,
    "ozF": 0.27801385095378125,
}
#: How far `scale_to_n` may differ from the unit's own factor (a calibration correction, not another unit).
SCALE_TOLERANCE = 0.10


class LoadCellConfig(_Section):
    """The force sensor."""

    driver: Literal["modbus_transmitter", "mark10"]
    bus: str
    slave_id: int = Field(1, ge=1, le=247)
    unit: Literal["N", "g", "kg", "lbF", "kgF", "gF", "ozF"] = "N"
    scale_to_n: float = Field(1.0, gt=0)
    capacity_n: float = Field(100.0, gt=0)
    #: the datasheet's creep/drift as a random walk; sets the uncertainty of the operando porosity
    #: ("a few grams per 15–30 min" ≈ 0.0008 N/√s)
    drift_n_per_sqrt_s: float = Field(0.0008, ge=0)

    @model_validator(mode="after")
    def _scale_matches_unit(self) -> LoadCellConfig:
        # unit = "g" with the default scale_to_n = 1.0 would read grams as newtons: refuse, do not guess
        per_unit = FORCE_UNIT_TO_N[self.unit]
        if abs(self.scale_to_n / per_unit - 1.0) > SCALE_TOLERANCE:
            raise ValueError(
                f"scale_to_n = {self.scale_to_n:g} N per unit contradicts unit = {self.unit!r} "
                f"({per_unit:g} N per {self.unit}); set scale_to_n = {per_unit:g} or correct the unit"
            )
        return self


class PressConfig(_Section):
    """The stepper-actuated press."""

    driver: Literal["leadshine_pr"]
    bus: str
    slave_id: int = Field(2, ge=1, le=247)
    um_per_pulse: float = Field(0.625, gt=0)
    pulses_per_rev: int = Field(3200, gt=0)
    travel_min_um: float
    travel_max_um: float
    velocity_rpm: int = Field(60, gt=0, le=3000)
    accel_ms_per_krpm: int = Field(100, gt=0)
    decel_ms_per_krpm: int = Field(100, gt=0)

    @model_validator(mode="after")
    def _travel(self) -> PressConfig:
        if self.travel_min_um >= self.travel_max_um:
            raise ValueError("travel_min_um must be below travel_max_um")
        return self


class PotentiostatConfig(_Section):
    """The potentiostat / SMU."""

    driver: Literal["keithley2450"]
    resource: str
    timeout_s: float = Field(5.0, gt=0)
    voltage_limit_v: float = Field(3.0, gt=0, le=200)
    nplc: float = Field(1.0, ge=0.01, le=10)


class TelemetrySection(_Section):
    """The lab's MQTT broker (optional). Secrets come from the environment, never from the file."""

    host: str
    port: int = Field(1883, gt=0, lt=65536)
    username: str | None = None
    password_env: str = "RIG_MQTT_PASSWORD"
    tls_ca_file: Path | None = None
    prefix: str = "rig"
    rate_hz: float = Field(4.0, gt=0, le=50)
    command_secret_env: str = "RIG_COMMAND_SECRET"
    command_max_age_s: float = Field(30.0, gt=0)
    queue_size: int = Field(1000, ge=10)


class RigEnvironment(BaseSettings):
    """The `[rig]` keys set in the environment (`RIG_RIG__<KEY>`, read as for a configuration file), for commands
    that run without one: `rig run --sim` (its rig's name) and the built-in validation limits."""

    model_config = SettingsConfigDict(env_prefix="RIG_RIG__", extra="ignore")

    name: str | None = None
    max_current_density_ma_cm2: float | None = Field(None, gt=0, allow_inf_nan=False)


class SimSection(_Section):
    """Present when the configuration points at a simulator."""

    control: str | None = None


class RigConfig(BaseSettings):
    """The whole rig configuration."""

    model_config = SettingsConfigDict(env_prefix="RIG_", env_nested_delimiter="__", extra="forbid")
    toml_path: ClassVar[Path | None] = None

    rig: RigSection
    clock: ClockSection = ClockSection()
    buses: dict[str, BusConfig] = Field(default_factory=dict)
    load_cell: LoadCellConfig
    press: PressConfig
    potentiostat: PotentiostatConfig
    telemetry: TelemetrySection | None = None
    sim: SimSection = SimSection()

    @model_validator(mode="after")
    def _buses_exist(self) -> RigConfig:
        for section, bus in (("load_cell", self.load_cell.bus), ("press", self.press.bus)):
            if bus not in self.buses:
                raise ValueError(f"{section}.bus = {bus!r} names no [buses.{bus}] section; have {sorted(self.buses)}")
        if self.load_cell.bus == self.press.bus and self.load_cell.slave_id == self.press.slave_id:
            raise ValueError("load_cell and press share a bus and the same slave_id")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the TOML file named by `toml_path`."""
        toml_file = cls.toml_path
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_config(path: str | Path) -> RigConfig:
    """Load and validate a rig configuration; errors name the file and the key."""
    path = Path(path)
    file_path: Path = path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the rig configuration: {exc.strerror or exc}") from exc
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc

    class _FromFile(RigConfig):
        toml_path = file_path

    try:
        cfg = _FromFile()
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from exc
    return RigConfig.model_validate(cfg.model_dump())


def _describe(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid rig configuration:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        value: Any = err.get("input")
        shown = f" (got {value!r})" if err["type"] not in ("missing",) and not isinstance(value, dict) else ""
        lines.append(f"  {path}: {key}: {msg}{shown}")
    return "\n".join(lines)
