"""The fault-matrix table itself: rows are checked, every figure is printed, missing rows are shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fault_matrix import ROWS, Figure, check_row, format_table, read_json, write_json


def test_unknown_row_is_refused() -> None:
    with pytest.raises(ValueError, match=r"rows 1\.\.19"):
        check_row(20)


def test_table_lists_each_figure_and_marks_unmet_and_missing_rows(tmp_path: Path) -> None:
    figs = [
        Figure(4, "peak force / hard limit", "104.7 %", "≤ 110 %", True, "t::a"),
        Figure(1, "detection time", "3.1 periods", "≤ 2 periods", False, "t::b"),
    ]
    table = format_table(figs, all_rows=True)
    lines = table.splitlines()
    assert len(lines) == 2 + len(ROWS)  # one line per row: two measured, the rest "(no figure recorded)"
    row1 = next(line for line in lines if line.startswith(" 1 "))
    assert "3.1 periods" in row1 and row1.rstrip().endswith("NO")
    row4 = next(line for line in lines if line.startswith(" 4 "))
    assert "104.7 %" in row4 and row4.rstrip().endswith("yes")
    assert sum("(no figure recorded)" in line for line in lines) == len(ROWS) - 2
    out = tmp_path / "m.json"
    write_json(figs, str(out))
    write_json(figs[:1], str(out))  # appends: several pytest runs feed one matrix
    assert read_json(out) == figs + figs[:1]
