"""FILE:LINE:COL counts lines as an editor does (issue 14, item 17).

Lines end at LF, CRLF or a lone CR, as in the Language Server Protocol and every editor. PyYAML (YAML 1.1) also ends
a line at U+0085, U+2028 and U+2029, which editors show inside a line: such a character is refused where it stands,
and every other error keeps the line and column an editor shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocols import ProtocolError, validate_protocol
from protocols.lines import LineIndex
from protocols.yaml_loader import load_yaml

from .helpers import protocol_text

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
YAML_ONLY_BREAKS = {"\u2028": "U+2028", "\u2029": "U+2029", "\x85": "U+0085"}


def editor_lines(text: str) -> list[str]:
    """The lines an editor shows: split at CRLF, CR or LF, and nowhere else."""
    return re.split(r"\r\n|\r|\n", text)


def issues_of(text: str, filename: str = "f.yaml") -> list[tuple[int, int, str]]:
    with pytest.raises(ProtocolError) as info:
        validate_protocol(text, filename)
    return [(i.mark.line, i.mark.col, i.message) for i in info.value.issues]


def where(text: str, token: str) -> tuple[int, int]:
    """The editor's line and column of the first `token` in `text`."""
    before = text[: text.index(token)]
    lines = editor_lines(before)
    return len(lines), len(lines[-1]) + 1


def test_the_failing_example_from_the_full_run() -> None:
    """A library protocol with U+2028 inserted: PyYAML put the end of the file on a line past the last one."""
    path = LIBRARY / "dme_180kpa_plate_strip.yaml"
    text = path.read_text(encoding="utf-8").replace("capacity_limit: 1.1", "capacity_limit: \u20281.1")
    lines = editor_lines(text)
    found = issues_of(text, "mutated.yaml")
    assert all(1 <= line <= len(lines) and 1 <= col <= len(lines[line - 1]) + 1 for line, col, _ in found), found
    separator_line, separator_col = where(text, "\u2028")
    assert (separator_line, separator_col) == (len(lines) - 1, len("      capacity_limit: ") + 1)
    assert [(line, col) for line, col, _ in found] == [(separator_line, separator_col), (len(lines), 1)]
    assert "U+2028" in found[0][2]
    assert found[1][2].startswith("YAML syntax error") and f"begun at line {separator_line})" in found[1][2]


@pytest.mark.parametrize("char", list(YAML_ONLY_BREAKS), ids=list(YAML_ONLY_BREAKS.values()))
def test_a_yaml_only_line_break_is_refused_where_an_editor_shows_it(char: str) -> None:
    text = protocol_text("  - pressure: {target: 900 kPa}\n").replace("operator: tester", f"operator: tester{char}")
    found = issues_of(text)
    # the separator itself, on the operator's line; then the pressure, on the line an editor shows it
    assert (found[0][0], found[0][1]) == where(text, char) == (2, len("operator: tester") + 1)
    assert YAML_ONLY_BREAKS[char] in found[0][2] and "line" in found[0][2]
    assert (found[1][0], found[1][1]) == where(text, "900 kPa")
    assert "outside the rig's pressure range" in found[1][2]
    assert len(found) == 2


@pytest.mark.parametrize("char", list(YAML_ONLY_BREAKS), ids=list(YAML_ONLY_BREAKS.values()))
def test_a_step_hidden_behind_a_separator_in_a_comment_does_not_run(char: str) -> None:
    """An editor shows one comment line; YAML 1.1 ends the comment at the separator and reads a second step."""
    path = LIBRARY / "dme_180kpa_plate_strip.yaml"
    text = path.read_text(encoding="utf-8")
    hidden = text.replace(
        "  - rest: {duration: 10 min, label: OCV}\n",
        f"  - rest: {{duration: 10 min, label: OCV}}   # OCV{char}  - hold: {{duration: 300 h}}\n",
    )
    assert hidden != text
    found = issues_of(hidden)
    assert [(line, col) for line, col, _ in found] == [where(hidden, char)]


@pytest.mark.parametrize("newline", ["\r", "\r\n"], ids=["CR", "CRLF"])
def test_cr_and_crlf_line_endings_give_the_same_positions_as_lf(newline: str) -> None:
    text = protocol_text(
        "  - pressure: {target: 900 kPa}\n  - rest: {duration: -1 min}\n  - plate: {current: 1 mA, colour: blue}\n"
    )
    expected = issues_of(text)
    assert len(expected) == 3
    assert issues_of(text.replace("\n", newline)) == expected


@pytest.mark.parametrize("newline", ["\n", "\r", "\r\n"], ids=["LF", "CR", "CRLF"])
def test_syntax_and_reader_errors_count_lines_as_an_editor(newline: str) -> None:
    with pytest.raises(ProtocolError) as info:
        load_yaml(newline.join(["a: 1", "b: [1,", "c: 2", "d: x: y"]), "f.yaml")
    ((line, col, message),) = [(i.mark.line, i.mark.col, i.message) for i in info.value.issues]
    assert (line, col) == (4, 2) and "begun at line 2" in message
    with pytest.raises(ProtocolError) as info:
        load_yaml(newline.join(["a: 1", "b: 2", "c: \x00"]), "f.yaml")
    ((issue),) = info.value.issues
    assert (issue.mark.line, issue.mark.col) == (3, 4)


def test_a_byte_order_mark_takes_no_column() -> None:
    found = issues_of("\ufeff" + protocol_text("  - pressure: {target: 900 kPa}\n").replace("name:", "nme:"))
    assert (1, 1) in [(line, col) for line, col, _ in found]


def test_escaped_separators_in_double_quotes_are_plain_text() -> None:
    text = protocol_text('  - pressure: {target: 180 kPa, label: "a\\Lb\\Pc\\Nd"}\n')
    plan = validate_protocol(text, "f.yaml")
    assert plan.steps[0].label == "a\u2028b\u2029c\x85d"


@pytest.mark.parametrize(
    ("text", "offset", "where"),
    [
        ("ab\ncd", 3, (2, 1)),
        ("ab\r\ncd", 2, (1, 3)),  # the CR of a CRLF ends line 1
        ("ab\r\ncd", 3, (1, 3)),  # ... and so does its LF: one line break
        ("ab\r\ncd", 4, (2, 1)),
        ("ab\rcd", 3, (2, 1)),
        ("ab\u2028cd", 3, (1, 4)),  # no line break for an editor
        ("ab\x85cd\u2029e", 6, (1, 7)),
        ("ab\n", 3, (2, 1)),  # the end of a text that ends in a line break: the empty last line
        ("\ufeffab", 1, (1, 1)),  # the byte order mark takes no column
        ("\ufeffab\nc", 4, (2, 1)),
        ("", 0, (1, 1)),
        ("ab", 99, (1, 3)),  # past the end: the end
    ],
)
def test_an_offset_is_the_line_and_column_an_editor_shows(text: str, offset: int, where: tuple[int, int]) -> None:
    index = LineIndex(text)
    assert index.position(offset) == where
    assert index.line_count == len(editor_lines(text))
