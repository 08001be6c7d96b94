"""A small valid protocol to build test cases from."""

from __future__ import annotations

HEADER = """\
name: test protocol
operator: tester
cell:
  id: t1
  electrolyte: {electrolyte}
  working_electrode: Al foil
  {size}
steps:
"""


def protocol_text(steps: str, *, size: str = "diameter: 12 mm", electrolyte: str = "dme") -> str:
    """A protocol with the given (already indented) step lines."""
    return HEADER.format(size=size, electrolyte=electrolyte) + steps
