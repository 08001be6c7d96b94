"""The protocol language: a header, the cell, and steps of six kinds. Pydantic models, values held in SI.

A step is written as a one-key mapping naming its kind:

    steps:
      - pressure: {target: 180 kPa, rate: 30 kPa/min, tolerance: 2 kPa, settle: 2 min}
      - rest: {duration: 10 min}
      - plate: {current_density: 0.5 mA/cm^2, capacity: 1 mAh/cm^2, voltage_limit: 1 V}
      - strip: {current_density: 0.5 mA/cm^2, cutoff: 1 V, capacity_limit: 1.1 mAh/cm^2}
      - repeat: {count: 10, steps: [...]}

YAML keys are the operator's words (`target`, `duration`); Python attributes carry their SI unit (`target_pa`,
`duration_s`). Currents and voltage limits are written as positive magnitudes; the sign convention (plating
current negative, stripping positive) is applied by the plan (`protocols/plan.py`, ADR 0012). Unknown fields,
zero or negative quantities and quantities outside their plausible range (`protocols.bounds`, ADR 0022) are
rejected. `parse_protocol` reports every problem with its `FILE:LINE:COL`. The models also give the JSON Schema of
protocol files (`protocols.json_schema`): quantities as text with the units' grammar, steps as one-key mappings.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, core_schema

from protocols import bounds
from protocols.bounds import Bound
from protocols.errors import ProtocolError, ProtocolIssue, SourceMark
from protocols.units import Kind, UnitError, parse_quantity
from protocols.yaml_loader import Path, YamlDocument

__all__ = [
    "MAX_DURATION_S",
    "MAX_REPEAT_COUNT",
    "STEP_KINDS",
    "Capacity",
    "Cell",
    "HoldStep",
    "OnResume",
    "PlateStep",
    "PressureStep",
    "Protocol",
    "RepeatStep",
    "RestStep",
    "Step",
    "StripStep",
    "parse_protocol",
]

#: What a step does when an interrupted run resumes: finish what is left, start the step again, or stop the run.
OnResume = Literal["continue", "restart", "abort"]

STEP_KINDS = ("pressure", "rest", "plate", "strip", "hold", "repeat")
MAX_DURATION_S = 366 * 86400.0  # `bounds.DURATION`'s upper end
MAX_REPEAT_COUNT = 10_000
_MAX_TEXT = 2000
#: Defaults as operators write them (the models hold them in SI, and the JSON Schema shows them as written).
DEFAULT_TOLERANCE = "2 kPa"
DEFAULT_SETTLE = "1 min"
DEFAULT_VOLTAGE_LIMIT = "1 V"
_NOWHERE = SourceMark("<unknown>", 1, 1)


# --- value types ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capacity:
    """A capacity as written: areal (C/m², `1 mAh/cm^2`) or absolute (C, `1.13 mAh`)."""

    si: float
    areal: bool
    text: str

    def coulombs(self, area_m2: float) -> float:
        """The charge in coulombs for an electrode of `area_m2`."""
        return self.si * area_m2 if self.areal else self.si


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"`{str(value).lower()}` (a yes/no)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"`{value}`"


def _text(value: object) -> str:
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise ValueError(f"text is too long ({len(value)} characters, at most {_MAX_TEXT})")
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f'expected text, got the number {value}; put it in quotes: "{value}"')
    raise ValueError(f"expected text, got {_describe(value)}")


def _name(value: object) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


_ELECTROLYTES = {"dme": "dme", "ec-dmc": "ec-dmc", "ec:dmc": "ec-dmc", "ec/dmc": "ec-dmc", "ec_dmc": "ec-dmc"}


def _electrolyte(value: object) -> str:
    text = _name(value)
    return _ELECTROLYTES.get(text.lower().replace(" ", ""), text)


@dataclass(frozen=True, eq=False)
class _Quantity:
    """A quantity field: text in a unit, positive and within its bound, held in SI (or as a `Capacity`).

    Used as `Annotated[float, _Quantity(bound)]`; it is the field's validator and its JSON Schema (text matching
    the units' grammar, with the bound described).
    """

    bound: Bound
    sign_hint: str = ""

    def check(self, value: object) -> Any:
        """Parse and check `value`; return SI (or a `Capacity`). Raises `ValueError` with the operator's message."""
        try:
            q = parse_quantity(value, *self.bound.kinds)
        except UnitError as exc:
            raise ValueError(str(exc)) from None
        if q.si <= 0:
            hint = f"; {self.sign_hint}" if self.sign_hint and q.si < 0 else ""
            raise ValueError(f"`{q.text}` must be greater than zero{hint}")
        self.bound.check(q)
        if set(self.bound.kinds) == {Kind.AREAL_CHARGE, Kind.CHARGE}:
            return Capacity(si=q.si, areal=q.kind is Kind.AREAL_CHARGE, text=q.text)
        return q.si

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """Validate with `check` before the field's own type."""
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """Text with the units' grammar as pattern, and the bound in the description."""
        return self.bound.json_schema()


@dataclass(frozen=True, eq=False)
class _Schema:
    """Extra JSON Schema keywords for a field type (e.g. `minItems`); no effect on validation."""

    extra: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, **extra: Any) -> _Schema:
        """E.g. `_Schema.of(minimum=1)`."""
        return cls(tuple(extra.items()))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The type's own schema, with the extra keywords."""
        out = dict(handler(schema))
        out.update(self.extra)
        return out


_CURRENT_HINT = "write the magnitude: the sign follows from plate or strip"
_VOLTAGE_HINT = "write the magnitude: a plating limit applies below 0 V, a strip cut-off above (ADR 0012)"

Text = Annotated[str, BeforeValidator(_text), _Schema.of(maxLength=_MAX_TEXT)]
Name = Annotated[str, BeforeValidator(_name), _Schema.of(minLength=1, maxLength=_MAX_TEXT)]
Electrolyte = Annotated[str, BeforeValidator(_electrolyte), _Schema.of(examples=["dme", "ec-dmc"])]
Pressure = Annotated[float, _Quantity(bounds.PRESSURE)]
Tolerance = Annotated[float, _Quantity(bounds.TOLERANCE)]
PressureRate = Annotated[float, _Quantity(bounds.RAMP_RATE)]
SettleTime = Annotated[float, _Quantity(bounds.SETTLE)]
Timeout = Annotated[float, _Quantity(bounds.TIMEOUT)]
Duration = Annotated[float, _Quantity(bounds.DURATION)]
Current = Annotated[float, _Quantity(bounds.CURRENT, sign_hint=_CURRENT_HINT)]
CurrentDensity = Annotated[float, _Quantity(bounds.CURRENT_DENSITY, sign_hint=_CURRENT_HINT)]
Voltage = Annotated[float, _Quantity(bounds.VOLTAGE, sign_hint=_VOLTAGE_HINT)]
Length = Annotated[float, _Quantity(bounds.DIAMETER)]
Area = Annotated[float, _Quantity(bounds.AREA)]
CapacityValue = Annotated[Capacity, _Quantity(bounds.CAPACITY)]


def _on_resume(value: object) -> str:
    if value in ("continue", "restart", "abort"):
        return str(value)
    raise ValueError(f"must be continue, restart or abort; got {_describe(value)}")


OnResumeField = Annotated[OnResume, BeforeValidator(_on_resume)]


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number of repetitions, got {_describe(value)}")
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    if value > MAX_REPEAT_COUNT:
        raise ValueError(f"must be at most {MAX_REPEAT_COUNT}, got {value}")
    return value


Count = Annotated[int, BeforeValidator(_count), _Schema.of(minimum=1, maximum=MAX_REPEAT_COUNT)]


# --- models -----------------------------------------------------------------------------------------------------


def _json_schema_extra(schema: dict[str, Any], cls: type[Any]) -> None:
    """A model's JSON Schema as YAML writes it: no `kind` (a step's key names it), the fields given one of a pair."""
    properties = schema.get("properties", {})
    properties.pop("kind", None)
    for prop in properties.values():  # an optional quantity: its description where an editor shows it
        described = [branch for branch in prop.get("anyOf", ()) if "description" in branch]
        if described:
            prop.update({key: described[0][key] for key in ("description", "examples") if key in described[0]})
    if "on_resume" in properties:
        properties["on_resume"]["enum"] = list(cls._resume_choices)
    # exactly one of each pair is given (not null): `area` or `diameter`, `current_density` or `current`, ...
    pairs = [
        {"oneOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in pair]}
        for pair in cls._exactly_one
    ]
    if len(pairs) == 1:
        schema.update(pairs[0])
    elif pairs:
        schema["allOf"] = pairs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, json_schema_extra=_json_schema_extra)
    #: pairs of fields of which exactly one is given (for the JSON Schema; the validators say it to the operator)
    _exactly_one: ClassVar[tuple[tuple[str, str], ...]] = ()
    _resume_choices: ClassVar[tuple[str, ...]] = ("continue", "restart", "abort")


class Cell(_Strict):
    """The cell under test: id, electrolyte, electrodes and the working electrode's size (area OR diameter)."""

    _exactly_one: ClassVar[tuple[tuple[str, str], ...]] = (("area", "diameter"),)

    id: Name
    electrolyte: Electrolyte = Field(description="`dme`, `ec-dmc`, or free text")
    working_electrode: Name
    counter_electrode: Name = "Na metal"
    separator: Text = ""
    area_m2: Area | None = Field(None, alias="area")
    diameter_m: Length | None = Field(None, alias="diameter")

    @model_validator(mode="after")
    def _one_size(self) -> Cell:
        if (self.area_m2 is None) == (self.diameter_m is None):
            raise ValueError("give the working electrode's `area` (e.g. `1.131 cm^2`) or its `diameter` (e.g. `12 mm`)")
        return self

    @property
    def electrode_area_m2(self) -> float:
        """The working electrode's area in m²."""
        if self.area_m2 is not None:
            return self.area_m2
        assert self.diameter_m is not None
        return 3.141592653589793 * (self.diameter_m / 2.0) ** 2


class _StepBase(_Strict):
    label: Text = ""
    _source: SourceMark = PrivateAttr(default=_NOWHERE)

    @property
    def source(self) -> SourceMark:
        """Where the step was written."""
        return self._source


class PressureStep(_StepBase):
    """Set (no `rate`) or ramp to a pressure, then wait until it has stayed within `tolerance` for `settle`."""

    kind: Literal["pressure"] = "pressure"
    target_pa: Pressure = Field(alias="target")
    rate_pa_s: PressureRate | None = Field(None, alias="rate")
    tolerance_pa: Tolerance = Field(DEFAULT_TOLERANCE, alias="tolerance", validate_default=True)
    settle_s: SettleTime = Field(DEFAULT_SETTLE, alias="settle", validate_default=True)
    timeout_s: Timeout | None = Field(None, alias="timeout")
    on_resume: OnResumeField = "restart"


class RestStep(_StepBase):
    """Open circuit for a duration, recording the OCV."""

    kind: Literal["rest"] = "rest"
    duration_s: Duration = Field(alias="duration")
    pressure_pa: Pressure | None = Field(None, alias="pressure")
    on_resume: OnResumeField = "restart"


class HoldStep(_StepBase):
    """Keep the pressure for a duration, no current (output off)."""

    kind: Literal["hold"] = "hold"
    duration_s: Duration = Field(alias="duration")
    pressure_pa: Pressure | None = Field(None, alias="pressure")
    on_resume: OnResumeField = "continue"


class _Galvanostatic(_StepBase):
    _exactly_one: ClassVar[tuple[tuple[str, str], ...]] = (("current_density", "current"),)
    current_density_a_m2: CurrentDensity | None = Field(None, alias="current_density")
    current_a: Current | None = Field(None, alias="current")
    pressure_pa: Pressure | None = Field(None, alias="pressure")

    def magnitude_a(self, area_m2: float) -> float:
        """The current's magnitude in A for an electrode of `area_m2`."""
        if self.current_a is not None:
            return self.current_a
        assert self.current_density_a_m2 is not None
        return self.current_density_a_m2 * area_m2

    def _one_current(self) -> None:
        if (self.current_a is None) == (self.current_density_a_m2 is None):
            raise ValueError("give exactly one of `current_density` (e.g. `0.5 mA/cm^2`) or `current` (e.g. `0.5 mA`)")


class PlateStep(_Galvanostatic):
    """Galvanostatic plating until a capacity (areal or absolute) or for a duration; `voltage_limit` is a safeguard."""

    _exactly_one: ClassVar[tuple[tuple[str, str], ...]] = (("current_density", "current"), ("capacity", "duration"))
    _resume_choices: ClassVar[tuple[str, ...]] = ("continue", "abort")

    kind: Literal["plate"] = "plate"
    capacity: CapacityValue | None = None
    duration_s: Duration | None = Field(None, alias="duration")
    voltage_limit_v: Voltage = Field(DEFAULT_VOLTAGE_LIMIT, alias="voltage_limit", validate_default=True)
    on_resume: OnResumeField = "continue"

    @model_validator(mode="after")
    def _ends(self) -> PlateStep:
        self._one_current()
        if (self.capacity is None) == (self.duration_s is None):
            raise ValueError("give exactly one of `capacity` (e.g. `1 mAh/cm^2`) or `duration` (e.g. `2 h`)")
        return self

    @field_validator("on_resume")
    @classmethod
    def _no_restart(cls, value: OnResume) -> OnResume:
        if value == "restart":
            raise ValueError("a plate cannot restart (it would plate its charge again): use continue or abort")
        return value


class StripStep(_Galvanostatic):
    """Galvanostatic stripping until the `cutoff` voltage; `capacity_limit` is a safeguard."""

    kind: Literal["strip"] = "strip"
    cutoff_v: Voltage = Field(alias="cutoff")
    capacity_limit: CapacityValue | None = None
    on_resume: OnResumeField = "continue"

    @model_validator(mode="after")
    def _current(self) -> StripStep:
        self._one_current()
        return self


def _unwrap_step(value: object) -> object:
    """`{plate: {...}}` becomes `{kind: plate, ...}` for the discriminated union; malformed steps say why."""
    kinds = ", ".join(STEP_KINDS)
    if not isinstance(value, dict):
        raise ValueError(f"a step is a one-key mapping naming its kind ({kinds}), e.g. `- rest: {{duration: 10 min}}`")
    if len(value) != 1:
        keys = ", ".join(f"`{k}`" for k in value) or "nothing"
        raise ValueError(
            f"a step has exactly one key naming its kind ({kinds}); got {keys}: indent the step's fields under its kind"
        )
    ((kind, body),) = value.items()
    if kind not in STEP_KINDS:
        close = difflib.get_close_matches(str(kind), STEP_KINDS, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        raise ValueError(f"unknown step kind `{kind}`: expected one of {kinds}{hint}")
    if not isinstance(body, dict):
        raise ValueError(f"the fields of a `{kind}` step go in a mapping under it, e.g. `{_EXAMPLES[kind]}`")
    if "kind" in body:
        raise ValueError(f"unknown field `kind` in a `{kind}` step")
    return {"kind": kind, **body}


_EXAMPLES = {
    "pressure": "pressure: {target: 180 kPa, settle: 2 min}",
    "rest": "rest: {duration: 10 min}",
    "plate": "plate: {current_density: 0.5 mA/cm^2, capacity: 1 mAh/cm^2}",
    "strip": "strip: {current_density: 0.5 mA/cm^2, cutoff: 1 V}",
    "hold": "hold: {duration: 1 h}",
    "repeat": "repeat: {count: 10, steps: [...]}",
}


def _step_list(value: object) -> object:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of steps, got {_describe(value)}")
    if not value:
        raise ValueError("needs at least one step")
    return value


Steps = Annotated[tuple["Step", ...], BeforeValidator(_step_list), _Schema.of(minItems=1)]


class RepeatStep(_StepBase):
    """A body of steps done `count` times; each pass is one cycle when the body plates and strips."""

    kind: Literal["repeat"] = "repeat"
    count: Count
    steps: Steps


class _OneKeyStep:
    """The JSON Schema of a step as written: a one-key mapping naming its kind, e.g. `- rest: {duration: 10 min}`."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """One branch per kind, from the discriminated union's mapping of kinds to models."""
        union = handler(schema)
        mapping: dict[str, str] = union["discriminator"]["mapping"]
        return {
            "description": f"a step: a mapping with one key naming its kind ({', '.join(STEP_KINDS)})",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {kind: {"$ref": ref}},
                    "required": [kind],
                    "additionalProperties": False,
                }
                for kind, ref in mapping.items()
            ],
        }


Step = Annotated[
    Annotated[
        PressureStep | RestStep | PlateStep | StripStep | HoldStep | RepeatStep,
        Field(discriminator="kind"),
    ],
    BeforeValidator(_unwrap_step),
    _OneKeyStep(),
]


class Protocol(_Strict):
    """A whole protocol: header, cell and steps."""

    name: Name
    description: Text = ""
    operator: Text = ""
    cell: Cell
    steps: Steps
    _filename: str = PrivateAttr(default="<unknown>")

    @property
    def filename(self) -> str:
        """The file the protocol was read from (as named by the caller)."""
        return self._filename


RepeatStep.model_rebuild()
Protocol.model_rebuild()

_MODELS: dict[str, type[BaseModel]] = {
    "pressure": PressureStep,
    "rest": RestStep,
    "plate": PlateStep,
    "strip": StripStep,
    "hold": HoldStep,
    "repeat": RepeatStep,
}


# --- from YAML, with marks --------------------------------------------------------------------------------------


def _model_at(loc: Path) -> tuple[type[BaseModel], str]:
    """The model that holds the mapping at `loc`, and how to name it in a message."""
    if not loc:
        return Protocol, "the protocol"
    if loc == ("cell",):
        return Cell, "the cell"
    last = loc[-1]
    if isinstance(last, str) and last in _MODELS and len(loc) >= 2 and isinstance(loc[-2], int):
        return _MODELS[last], f"a `{last}` step"
    return Protocol, "the protocol"


def _fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items() if name != "kind"]


def value_at(data: Any, loc: Path) -> Any:
    """The loaded value at `loc`, or None where the path leads nowhere."""
    for part in loc:
        if isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            data = data[part]
        elif isinstance(part, str) and isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def _message(err: ErrorDetails, loc: Path) -> tuple[str, bool]:
    """A message for one pydantic error, and whether it should point at the key rather than the value."""
    kind = err["type"]
    field = loc[-1] if loc and isinstance(loc[-1], str) else None
    model, where = _model_at(loc[:-1])
    if kind == "extra_forbidden" and field is not None:
        allowed = _fields(model)
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = f": did you mean `{close[0]}`?" if close else ""
        return f"unknown field `{field}` in {where}{hint} (it takes {', '.join(allowed)})", True
    if kind == "missing" and field is not None:
        return f"{where} needs `{field}`", True
    if kind == "value_error":
        ctx = err.get("ctx") or {}
        text = str(ctx.get("error", err["msg"]))
    elif kind in ("model_type", "model_attributes_type", "dataclass_type"):
        text = f"expected a mapping of fields, got {_describe(err.get('input'))}"
    elif kind in ("tuple_type", "list_type"):
        text = f"expected a list of steps, got {_describe(err.get('input'))}"
    elif kind == "too_short":
        text = "needs at least one step"
    else:
        text = err["msg"]
    if field is not None and not (loc[-1] in _MODELS and len(loc) >= 2 and isinstance(loc[-2], int)):
        return f"`{field}`: {text}", False
    return text, False


def model_issues(exc: ValidationError, doc: YamlDocument) -> list[ProtocolIssue]:
    """Pydantic's errors as issues at their line and column, leaving out places the loader already reported."""
    loader_marks = {issue.mark for issue in doc.issues}
    issues = []
    for err in exc.errors(include_url=False):
        loc: Path = tuple(err["loc"])  # the YAML path: a step's kind is the discriminator's part of it
        message, at_key = _message(err, loc)
        value = value_at(doc.data, loc)
        mark = doc.mark(loc, prefer_key=at_key or isinstance(value, (dict, list)))
        if mark not in loader_marks:
            issues.append(ProtocolIssue(mark, message))
    return issues


def parse_protocol(doc: YamlDocument, *, loader_issues: bool = True) -> Protocol:
    """Validate loaded YAML as a protocol; raises `ProtocolError` with every problem, each at its line and column.

    The loader's own issues (`doc.issues`) are raised too, together with the model's, unless `loader_issues` is
    False (for a caller that reports them itself).
    """
    found = list(doc.issues) if loader_issues else []
    try:
        protocol = Protocol.model_validate(doc.data)
    except ValidationError as exc:
        # model errors at places the loader reported (a NaN, a tagged value) are left out: the loader's issue says it
        raise ProtocolError([*found, *model_issues(exc, doc)] or list(doc.issues)) from None
    if found:
        raise ProtocolError(found)
    protocol._filename = doc.filename
    _attach_sources(protocol.steps, ("steps",), doc)
    return protocol


def _attach_sources(steps: tuple[Step, ...], path: Path, doc: YamlDocument) -> None:
    for i, step in enumerate(steps):
        step._source = doc.mark((*path, i))
        if isinstance(step, RepeatStep):
            _attach_sources(step.steps, (*path, i, "repeat", "steps"), doc)
