"""The JSON Schema of protocol files, generated from the models, for editors (`rig schema`, ADR 0022).

`protocol_json_schema()` is pydantic's schema of `Protocol` as YAML writes it: quantities are text with the units'
grammar as `pattern` and their plausible range in the description, a step is a mapping with one key naming its
kind, and of `area`/`diameter`, `current_density`/`current` and `capacity`/`duration` exactly one is given. It accepts
every protocol `rig validate` accepts; what needs the rig's limits, the units' dimensions or the plan is left to
`rig validate`. `schema_text()` is the text committed as `protocols/schema/protocol.schema.json` (package data),
which the library protocols name in a yaml-language-server modeline.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import CoreSchema

from protocols.model import Protocol

__all__ = ["SCHEMA_DIALECT", "SCHEMA_RESOURCE", "protocol_json_schema", "schema_text"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where the schema ships, inside the `protocols` package.
SCHEMA_RESOURCE = ("schema", "protocol.schema.json")
_DESCRIPTION = (
    "A protocol for a pressure-controlled electroplating rig: a header, the cell, and steps (pressure, rest, "
    "plate, strip, hold, repeat). Quantities are text with a unit, e.g. `180 kPa`, `0.5 mA/cm^2`, `10 min`. "
    "This schema checks the shape; `rig validate FILE` checks the rest (the rig's limits, units, the plan)."
)


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, without a title per field (they would name the SI attributes, e.g. `Target Pa`)."""

    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        """Never: a field is named by its key, and described by its type."""
        return False


def protocol_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a protocol file."""
    generated = Protocol.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    definitions = generated.pop("$defs")
    generated.pop("title", None)
    generated["description"] = _DESCRIPTION
    return {"$schema": SCHEMA_DIALECT, "title": "rig protocol", **generated, "$defs": definitions}


def schema_text() -> str:
    """The schema as `rig schema` prints it and the repository holds it: indented JSON, UTF-8, a final newline."""
    return json.dumps(protocol_json_schema(), indent=2, ensure_ascii=False) + "\n"
