"""Each file in `broken/` breaks one rule; its comments say where the error must be reported and what it says.

A comment `# error at `TOKEN`: TEXT` on a line means: an error is reported on that line, at the column where TOKEN
starts, and its message contains TEXT. `# error at line L col C: TEXT` gives the place outright (for errors about
something missing). Every expected error must be reported, and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocols import ProtocolError, validate_protocol

BROKEN = Path(__file__).parent / "broken"
_AT_TOKEN = re.compile(r"#\s*error at `([^`]+)`:\s*(.+?)\s*$")
_AT_PLACE = re.compile(r"#\s*error at line (\d+) col (\d+):\s*(.+?)\s*$")


@dataclass(frozen=True)
class Expected:
    line: int
    col: int
    text: str


def expectations(text: str) -> list[Expected]:
    """The errors a broken file announces in its comments."""
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        if m := _AT_PLACE.search(line):
            found.append(Expected(int(m.group(1)), int(m.group(2)), m.group(3)))
        elif m := _AT_TOKEN.search(line):
            token = m.group(1)
            col = line.index(token) + 1
            assert col < m.start() + 1, f"line {n}: token {token!r} must appear before the comment"
            found.append(Expected(n, col, m.group(2)))
    return found


def broken_files() -> list[Path]:
    return sorted(BROKEN.glob("*.yaml"))


def test_the_collection_is_there() -> None:
    files = broken_files()
    assert len(files) >= 40
    for path in files:
        assert expectations(path.read_text(encoding="utf-8")), f"{path.name} announces no error"


@pytest.mark.parametrize("path", broken_files(), ids=lambda p: p.stem)
def test_broken_protocol_fails_at_the_right_place(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    name = f"broken/{path.name}"
    with pytest.raises(ProtocolError) as info:
        validate_protocol(text, name)
    issues = info.value.issues
    reported = "\n".join(str(i) for i in issues)
    for exp in expectations(text):
        matching = [i for i in issues if i.mark.line == exp.line and exp.text in i.message]
        assert matching, f"expected an error at line {exp.line} containing {exp.text!r}; got:\n{reported}"
        assert any(i.mark.col == exp.col for i in matching), (
            f"expected the error at {exp.line}:{exp.col}; got:\n{reported}"
        )
    assert len(issues) == len(expectations(text)), f"unexpected extra errors:\n{reported}"
    for issue in issues:
        assert str(issue).startswith(f"{name}:{issue.mark.line}:{issue.mark.col}: ")
    assert str(info.value).splitlines() == [str(i) for i in issues]
