"""`rig schema`: the JSON Schema of protocol files, so an editor checks a protocol as it is typed (issue 14, item 15).

The schema is generated from the pydantic models (`protocols.json_schema`), committed as package data
(`protocols/schema/protocol.schema.json`) and named by a yaml-language-server modeline in every library protocol.
It is a superset of what `rig validate` accepts: it never refuses a valid protocol, and it refuses what can be seen
without the rig's limits or the units' dimensions (ADR 0022). Which broken examples it must refuse is listed below,
each file once, so a new broken example has to be placed on one side or the other.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator

from protocols.json_schema import protocol_json_schema, schema_text
from protocols.units import QUANTITY_PATTERN
from tests.support.rig_cli import rig_env, run_rig

from .strategies import Generated, valid_protocols

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "protocols" / "schema" / "protocol.schema.json"
LIBRARY = sorted((ROOT / "protocols" / "library").glob("*.yaml"))
BROKEN = Path(__file__).parent / "broken"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")

#: Broken examples the schema refuses: the data loads, and its shape, a field, a type or a quantity's grammar is wrong.
SCHEMA_LEVEL = {
    "area_and_diameter",
    "current_and_density",
    "empty_file",  # nothing (null) is not a protocol
    "infinity",  # `.inf` is a number, a quantity is text
    "missing_cutoff",
    "missing_electrolyte",
    "missing_name",
    "missing_steps",
    "nan",
    "nan_in_quantity",
    "negative_current",
    "negative_cutoff",
    "negative_duration",
    "no_electrode_size",
    "no_end_condition",
    "no_unit",
    "non_text_key",
    "on_resume_invalid",
    "plate_restart",
    "repeat_count_fraction",
    "repeat_count_zero",
    "repeat_empty",
    "several_errors",  # its unknown field
    "step_misindented",
    "steps_not_a_list",
    "text_field_bool",
    "text_field_number",
    "too_deep",  # lists are not steps
    "top_level_list",
    "unknown_field_cell",
    "unknown_field_header",
    "unknown_field_step",
    "unknown_step_kind",
}

#: Broken examples only `rig validate` finds, and why. "YAML:" ones are for the editor's YAML parser (or a safe
#: loader refuses them); the others need the rig's limits, the units' dimensions, the physical bounds or the plan.
NOT_SCHEMA_LEVEL = {
    "anchor_alias": "YAML: anchors and aliases",
    "anchor_only": "YAML: an anchor",
    "duplicate_key": "YAML: a duplicate key",
    "multiple_documents": "YAML: a second document",
    "syntax_error": "YAML: syntax",
    "tab_indent": "YAML: a tab",
    "yaml_str_tag": "YAML: a tag",
    "yaml_tag": "YAML: a tag",
    "capacity_implausible": "a physical bound inside a quantity's text",
    "current_density_implausible": "the rig's current-density limit",
    "current_implausible": "the rig's current-density limit, through the area",
    "current_out_of_range": "the potentiostat's range",
    "current_too_small": "the potentiostat's range",
    "cutoff_beyond_compliance": "the potentiostat's compliance",
    "diameter_implausible": "a physical bound inside a quantity's text",
    "duration_too_long": "a physical bound inside a quantity's text",
    "implausible_plating": "capacity / current, a year",
    "no_pressure_set": "the plan: the order of steps",
    "pressure_above_range": "the rig's pressure range",
    "pressure_below_range": "the rig's pressure range",
    "rate_implausible": "a physical bound inside a quantity's text",
    "repeat_too_large": "the plan: the expanded length",
    "strip_without_limit": "the plan: the order of steps",
    "strip_without_limit_in_repeat": "the plan: the order of steps",
    "timeout_within_settle": "two fields compared",
    "tolerance_implausible": "a physical bound inside a quantity's text",
    "unknown_unit": "the unit names (pint's)",
    "voltage_limit_beyond_compliance": "the potentiostat's compliance",
    "wrong_dimension": "the units' dimensions",
    "wrong_dimension_time": "the units' dimensions",
    "zero_duration": "a physical bound inside a quantity's text",
}


@functools.cache
def committed_validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.fixture
def validator() -> Draft202012Validator:
    return committed_validator()


def schema_errors(validator: Draft202012Validator, data: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def test_rig_schema_prints_the_committed_schema(tmp_path: Path) -> None:
    result = run_rig("schema", env=rig_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCHEMA_FILE.read_text(encoding="utf-8"), (
        "the committed schema is stale: rig schema > protocols/schema/protocol.schema.json"
    )


def test_the_committed_schema_is_the_generated_one_and_ships_as_package_data() -> None:
    assert schema_text() == SCHEMA_FILE.read_text(encoding="utf-8")
    shipped = resources.files("protocols").joinpath("schema", "protocol.schema.json").read_text(encoding="utf-8")
    assert shipped == schema_text()
    assert json.loads(schema_text()) == protocol_json_schema()


def _quantities(node: Any) -> list[dict[str, Any]]:
    """Every sub-schema with a `pattern` (the quantities)."""
    if isinstance(node, dict):
        own = [node] if "pattern" in node and node.get("type") == "string" and "examples" in node else []
        return own + [q for value in node.values() for q in _quantities(value)]
    if isinstance(node, list):
        return [q for value in node for q in _quantities(value)]
    return []


def test_quantities_are_text_with_the_grammar_as_pattern_and_their_bounds_described() -> None:
    schema = protocol_json_schema()
    quantities = _quantities(schema)
    assert len(quantities) >= 12
    for q in quantities:
        assert q["pattern"].startswith("^") and q["pattern"].endswith("$")
        assert "e.g. `" in q["description"], q
        for example in q["examples"]:
            assert re.search(q["pattern"], example), (example, q["pattern"])
    target = schema["$defs"]["PressureStep"]["properties"]["target"]
    assert "pressure" in target["description"] and "at most 10 MPa" in target["description"]
    tolerance = schema["$defs"]["PressureStep"]["properties"]["tolerance"]
    assert "from 0.1 kPa to 20 kPa" in tolerance["description"]
    pattern = target["pattern"]
    for good in ("180 kPa", "1.8 bar", "0.5 mA/cm^2", "0.5 mA/cm²", "1.131 cm^2", "+3 V", "1e3 Pa", "10 kPa/min"):
        assert re.search(pattern, good), good
    for bad in ("180", "kPa", "-5 kPa", "−1 V", "9**9**9 kPa", "1 m**9**9", "nan kPa", "1 (m)", "180 kPa\nx"):
        assert not re.search(pattern, bad), bad
    # the pattern is the units' own grammar, with no sign but `+` (every protocol quantity is positive)
    assert QUANTITY_PATTERN.replace("[+\\-\\u2212]?", "\\+?", 1) == pattern


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_every_library_protocol_names_the_schema_and_validates_against_it(
    path: Path, validator: Draft202012Validator
) -> None:
    text = path.read_text(encoding="utf-8")
    match = MODELINE.match(text.splitlines()[0])
    assert match, f"{path.name}: line 1 must be the yaml-language-server modeline"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_FILE.resolve()
    assert schema_errors(validator, yaml.safe_load(text)) == []


def test_every_broken_example_is_placed_once() -> None:
    names = {p.stem for p in BROKEN.glob("*.yaml")}
    assert not SCHEMA_LEVEL & NOT_SCHEMA_LEVEL.keys()
    assert names == SCHEMA_LEVEL | NOT_SCHEMA_LEVEL.keys(), (
        f"not placed: {sorted(names - SCHEMA_LEVEL - NOT_SCHEMA_LEVEL.keys())}; "
        f"gone: {sorted((SCHEMA_LEVEL | NOT_SCHEMA_LEVEL.keys()) - names)}"
    )


@pytest.mark.parametrize("name", sorted(SCHEMA_LEVEL))
def test_a_schema_level_error_fails_the_schema(name: str, validator: Draft202012Validator) -> None:
    data = yaml.safe_load((BROKEN / f"{name}.yaml").read_text(encoding="utf-8"))
    assert schema_errors(validator, data), f"{name} passes the schema"


@pytest.mark.parametrize("name", sorted(NOT_SCHEMA_LEVEL))
def test_what_the_schema_cannot_see_passes_it(name: str, validator: Draft202012Validator) -> None:
    text = (BROKEN / f"{name}.yaml").read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        assert NOT_SCHEMA_LEVEL[name].startswith("YAML:"), f"{name} does not load: it is a YAML error"
        return
    assert schema_errors(validator, data) == [], f"{name} fails the schema: it is schema-level"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid_protocols())
def test_the_schema_never_refuses_a_valid_protocol(gen: Generated) -> None:
    assert schema_errors(committed_validator(), yaml.safe_load(gen.text)) == []
