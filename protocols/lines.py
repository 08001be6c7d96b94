"""Lines and columns as an editor shows them, for every FILE:LINE:COL (ADR 0022).

A line ends at LF, CRLF or a lone CR: what editors show and what the Language Server Protocol specifies. PyYAML
(YAML 1.1) also ends a line at U+0085 (NEL), U+2028 (LINE SEPARATOR) and U+2029 (PARAGRAPH SEPARATOR); editors show
those inside a line, and YAML 1.2 no longer breaks lines at them either. So positions are never taken from PyYAML's
line count: they are computed here from the character offset, and the three characters are refused where they
stand (`yaml_only_breaks`), because a file holding one would not read as it looks (a comment in the editor can be
a step to YAML). Columns count characters from 1; a byte order mark at the start of the file takes no column.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

__all__ = ["YAML_ONLY_BREAKS", "LineIndex", "yaml_only_breaks"]

_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"

#: Characters PyYAML takes as line breaks and editors do not, with their names.
YAML_ONLY_BREAKS = {"\x85": "NEXT LINE", "\u2028": "LINE SEPARATOR", "\u2029": "PARAGRAPH SEPARATOR"}
_YAML_ONLY = re.compile("[" + "".join(YAML_ONLY_BREAKS) + "]")


class LineIndex:
    """Where each line of a text starts, to turn a character offset into an editor's line and column."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._starts = [0, *(m.end() for m in _LINE_END.finditer(text))]
        self._bom = text.startswith(_BOM)

    @property
    def line_count(self) -> int:
        """How many lines an editor shows (a text ending in a line break has an empty last line)."""
        return len(self._starts)

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based line and column of the character at `offset` (the end of the text is a position too)."""
        offset = max(0, min(offset, len(self._text)))
        if offset and self._text[offset - 1 : offset + 1] == "\r\n":
            offset -= 1  # the LF of a CRLF belongs to the line break that starts at its CR
        line = bisect.bisect_right(self._starts, offset)
        col = offset - self._starts[line - 1] + 1
        if line == 1 and self._bom:
            col = max(1, col - 1)
        return line, col


def yaml_only_breaks(text: str) -> Iterator[tuple[int, str]]:
    """The offset and the character of every U+0085, U+2028 and U+2029 in `text`."""
    for match in _YAML_ONLY.finditer(text):
        yield match.start(), match.group()
