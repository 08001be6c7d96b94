"""The protocol language: pure parsing, validation and planning, no I/O.

Typical use (the caller reads the file; `rig.cli.validate_cmd.read_protocol_file` checks its size before reading it):

    plan = validate_protocol(text, str(path), RigLimits(max_pressure_pa=250e3))

`validate_protocol` raises `ProtocolError` (every issue `FILE:LINE:COL: message`, lines and columns as an editor
shows them) or returns a `Plan` of concrete steps in SI units. Sign convention: plating current is negative,
stripping positive (ADR 0012). Quantities are bounded by the physics (`protocols.bounds`) and the rig's limits;
`protocol_json_schema()` is the JSON Schema of protocol files for editors (ADR 0022).
"""

from protocols.errors import ProtocolError as ProtocolError
from protocols.errors import ProtocolIssue as ProtocolIssue
from protocols.errors import SourceMark as SourceMark
from protocols.json_schema import protocol_json_schema as protocol_json_schema
from protocols.model import Protocol as Protocol
from protocols.model import parse_protocol as parse_protocol
from protocols.plan import Plan as Plan
from protocols.plan import PlannedHold as PlannedHold
from protocols.plan import PlannedPlate as PlannedPlate
from protocols.plan import PlannedPressure as PlannedPressure
from protocols.plan import PlannedRest as PlannedRest
from protocols.plan import PlannedStep as PlannedStep
from protocols.plan import PlannedStrip as PlannedStrip
from protocols.plan import build_plan as build_plan
from protocols.validate import RigLimits as RigLimits
from protocols.validate import load_protocol as load_protocol
from protocols.validate import validate_protocol as validate_protocol
from protocols.yaml_loader import load_yaml as load_yaml
