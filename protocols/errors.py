"""Where a protocol problem is (file, line, column) and the one error type every protocol function raises."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class SourceMark:
    """A place in a protocol file; line and column count from 1."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class ProtocolIssue:
    """One problem, reading `FILE:LINE:COL: message`."""

    mark: SourceMark
    message: str

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}"


class ProtocolError(Exception):
    """A protocol that cannot run; carries every issue found, in file order, each `FILE:LINE:COL: message`."""

    def __init__(self, issues: Iterable[ProtocolIssue]) -> None:
        unique = sorted(set(issues), key=lambda i: (i.mark.file, i.mark.line, i.mark.col, i.message))
        if not unique:
            raise ValueError("ProtocolError needs at least one issue")
        self.issues: tuple[ProtocolIssue, ...] = tuple(unique)
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def messages(self) -> list[str]:
        """Every issue as `FILE:LINE:COL: message`."""
        return [str(i) for i in self.issues]
