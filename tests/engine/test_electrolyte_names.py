"""Protocol electrolyte text → the simulator's model: the spellings labs use, and no silent fallback."""

from __future__ import annotations

import pytest

from rig.cli.run_cmd import RunError, electrolyte_key, require_sim_electrolyte, sim_electrolyte


@pytest.mark.parametrize(
    ("text", "model"),
    [
        ("dme", "dme"),
        ("1 M NaPF6 in DME", "dme"),
        ("NaPF6 in diglyme", "dme"),
        ("ether", "dme"),
        ("ec-dmc", "ec-dmc"),
        ("EC:DMC", "ec-dmc"),
        ("ecdmc", "ec-dmc"),
        ("1 M NaClO4 in EC/DMC (1:1)", "ec-dmc"),
        ("NaPF6 in PC", "ec-dmc"),
        ("carbonate", "ec-dmc"),
        ("LiTFSI in PYR14TFSI", None),
        ("water", None),
    ],
)
def test_electrolyte_names(text: str, model: str | None) -> None:
    assert sim_electrolyte(text) == model
    assert electrolyte_key(text) == (model or text)


def test_an_unknown_electrolyte_is_an_error_naming_the_file() -> None:
    with pytest.raises(RunError, match=r"p\.yaml: cell\.electrolyte 'water': the simulator models"):
        require_sim_electrolyte("water", "p.yaml")
