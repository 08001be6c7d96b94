"""Safe YAML loading that keeps the line and column of every key and value.

Only plain data is accepted: mappings with text keys, lists, text, whole numbers, finite decimals, booleans and
null. Rejected, each with its `FILE:LINE:COL`: tags (`!!python/object`, `!foo`, even `!!str`), anchors and aliases
(`&a` / `*a`: they hide repetition and allow "billion laughs"), duplicate keys, non-text keys (`1:`, `yes:`,
`null:`), NaN and infinity, more than one document, nesting deeper than 40 levels, files over 1 MB, and the line
breaks only YAML 1.1 sees (U+0085, U+2028, U+2029: `protocols.lines`). Dates stay the text they were written as.
Every problem found is reported, not only the first: problems that can be read past are collected in
`YamlDocument.issues` rather than raised at once. Lines and columns are an editor's (`protocols.lines`), never
PyYAML's own count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from protocols.errors import ProtocolError, ProtocolIssue, SourceMark
from protocols.lines import YAML_ONLY_BREAKS, LineIndex, yaml_only_breaks

#: A position in the loaded tree: mapping keys (text) and list indices (int), from the top.
Path = tuple[str | int, ...]

MAX_BYTES = 1_000_000
MAX_DEPTH = 40

_TAG = "tag:yaml.org,2002:"
_SURROGATE = re.compile("[\ud800-\udfff]")
_TEXT_KEY_TAGS = (_TAG + "str", _TAG + "merge", _TAG + "value")


@dataclass(frozen=True)
class YamlDocument:
    """The loaded data, and where each part of it was written."""

    filename: str
    data: Any
    value_marks: Mapping[Path, SourceMark] = field(default_factory=dict)
    key_marks: Mapping[Path, SourceMark] = field(default_factory=dict)
    issues: tuple[ProtocolIssue, ...] = ()

    def check(self) -> None:
        """Raise `ProtocolError` if loading found problems it could read past (see `load_yaml`)."""
        if self.issues:
            raise ProtocolError(self.issues)

    def mark(self, path: Path, *, prefer_key: bool = False) -> SourceMark:
        """Where `path` was written; for a path that is not there, where its nearest written parent is."""
        for n in range(len(path), -1, -1):
            sub = path[:n]
            if prefer_key or n < len(path):
                if sub in self.key_marks:
                    return self.key_marks[sub]
            if sub in self.value_marks:
                return self.value_marks[sub]
        return SourceMark(self.filename, 1, 1)


class _Marks:
    """Marks of one text, as an editor shows them (PyYAML's own line count differs: `protocols.lines`)."""

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines = LineIndex(text)

    def at(self, offset: int) -> SourceMark:
        """The mark of the character at `offset`."""
        return SourceMark(self.filename, *self.lines.position(offset))

    def of(self, m: Any) -> SourceMark:
        """The mark of a PyYAML mark (its character offset, not its line and column)."""
        return SourceMark(self.filename, 1, 1) if m is None else self.at(m.index)


def too_large(filename: str, size: str) -> ProtocolError:
    """The error for a file over `MAX_BYTES`; `size` says how large it is, e.g. `52428800 bytes`."""
    message = f"the file is too large ({size}; a protocol is at most {MAX_BYTES} bytes)"
    return ProtocolError([ProtocolIssue(SourceMark(filename, 1, 1), message)])


def _separator_issues(text: str, marks: _Marks) -> list[ProtocolIssue]:
    return [
        ProtocolIssue(
            marks.at(offset),
            f"U+{ord(char):04X} ({YAML_ONLY_BREAKS[char]}) is not allowed: YAML ends a line there and editors do not, "
            "so the file would not read as it looks; replace it with a line break or a space",
        )
        for offset, char in yaml_only_breaks(text)
    ]


def _syntax_issue(marks: _Marks, exc: yaml.YAMLError) -> ProtocolIssue:
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return ProtocolIssue(marks.at(exc.position), f"the file holds a character YAML does not allow (U+{char:04X})")
    if isinstance(exc, yaml.composer.ComposerError) and "single document" in str(exc.context):
        return ProtocolIssue(marks.of(exc.problem_mark), "only one YAML document is allowed; a second starts here")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "YAML syntax error"
        context = ""
        if exc.context:
            where = f" begun at line {marks.of(exc.context_mark).line}" if exc.context_mark is not None else ""
            context = f" ({exc.context}{where})"
        return ProtocolIssue(marks.of(mark), f"YAML syntax error: {problem}{context}")
    return ProtocolIssue(SourceMark(marks.filename, 1, 1), f"YAML error: {exc}")


def _scan_events(text: str, marks: _Marks) -> tuple[list[ProtocolIssue], bool]:
    """One pass over the parser's events: tags, anchors, aliases, depth, syntax; and whether loading can go on."""
    issues: list[ProtocolIssue] = []
    fatal = False
    depth = 0
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses characters YAML does not allow at once
    except yaml.YAMLError as exc:
        return [_syntax_issue(marks, exc)], True
    try:
        while loader.check_event():
            event = loader.get_event()
            where = marks.of(event.start_mark)
            if isinstance(event, AliasEvent):
                issues.append(ProtocolIssue(where, f"aliases (`*{event.anchor}`) are not allowed: write the value out"))
                fatal = True  # expanding them could blow up ("billion laughs"): stop here
                continue
            if isinstance(event, NodeEvent) and event.anchor is not None:
                issues.append(ProtocolIssue(where, f"anchors (`&{event.anchor}`) are not allowed: write the value out"))
            if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag is not None:
                tag = event.tag.replace(_TAG, "!!", 1) if event.tag.startswith(_TAG) else event.tag
                issues.append(ProtocolIssue(where, f"YAML tags (`{tag}`) are not allowed: plain data only"))
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    issues.append(ProtocolIssue(where, f"nesting is deeper than {MAX_DEPTH} levels"))
                    return issues, True
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        issues.append(_syntax_issue(marks, exc))
        fatal = True
    except (ValueError, OverflowError):  # PyYAML's scanner: chr() of a `\U` escape past U+10FFFF, read to its digits
        escape = ProtocolIssue(
            marks.at(loader.get_mark().index - 2), "YAML syntax error: this `\\U` escape is not a Unicode character"
        )
        issues.append(escape)
        fatal = True
    finally:
        loader.dispose()
    return issues, fatal


class _Converter:
    """Turns composed nodes into plain Python data, recording marks and collecting issues."""

    def __init__(self, marks: _Marks) -> None:
        self.marks = marks
        self.value_marks: dict[Path, SourceMark] = {}
        self.key_marks: dict[Path, SourceMark] = {}
        self.issues: list[ProtocolIssue] = []
        self._constructor = SafeConstructor()

    def _issue(self, node: Node, message: str) -> None:
        self.issues.append(ProtocolIssue(self.mark(node), message))

    def mark(self, node: Node) -> SourceMark:
        return self.marks.of(node.start_mark)

    def convert(self, node: Node, path: Path) -> Any:
        self.value_marks[path] = self.mark(node)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node)

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, SourceMark] = {}
        for key_node, value_node in node.value:
            where = self.mark(key_node)
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _TEXT_KEY_TAGS:
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a " + type(key_node).__name__
                self.issues.append(ProtocolIssue(where, f"keys must be text; `{shown}` is not (put it in quotes?)"))
                continue
            key = str(key_node.value)
            self._no_surrogates(key_node, key)
            if key in first_seen:
                first = first_seen[key]
                message = f"duplicate key `{key}` (first given at {first.line}:{first.col})"
                self.issues.append(ProtocolIssue(where, message))
                continue
            first_seen[key] = where
            self.key_marks[(*path, key)] = where
            out[key] = self.convert(value_node, (*path, key))
        return out

    def _scalar(self, node: ScalarNode) -> Any:
        tag = node.tag
        try:
            if tag == _TAG + "null":
                return None
            if tag == _TAG + "bool":
                return self._constructor.construct_yaml_bool(node)
            if tag == _TAG + "int":
                return self._constructor.construct_yaml_int(node)
            if tag == _TAG + "float":
                value = self._constructor.construct_yaml_float(node)
                if not math.isfinite(value):
                    self._issue(node, f"`{node.value}`: NaN and infinity are not allowed")
                return value
        except (ValueError, ConstructorError, OverflowError) as exc:
            shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
            self.issues.append(ProtocolIssue(self.mark(node), f"`{shown}` is not a usable number ({str(exc)[:60]})"))
            return None
        # text, and anything else implicit (dates, `<<`, `=`) stays the text it was written as
        self._no_surrogates(node, node.value)
        return str(node.value)

    def _no_surrogates(self, node: Node, text: str) -> None:
        """`"\\uD800"` gives half of a UTF-16 pair: no character, and nothing can print or store it."""
        if half := _SURROGATE.search(text):
            self._issue(node, f"`\\u{ord(half.group()):04X}` is half of a UTF-16 surrogate pair, not a character")


def load_yaml(text: str, filename: str) -> YamlDocument:
    """Load one YAML document safely, keeping marks.

    Raises `ProtocolError` for what cannot be read past: a syntax error, an alias, too deep or too large.
    Problems it can read past (a tag, an anchor, a duplicate key — the first value is kept —, a non-text key — left
    out —, NaN or infinity, a YAML-only line break) are in `issues`, so a caller can report them with whatever
    else it finds; `check()` raises them.
    """
    if len(text) > MAX_BYTES:  # at least a byte a character: no need to encode it to know
        raise too_large(filename, f"{len(text)} characters")
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BYTES:
        raise too_large(filename, f"{size} bytes")
    marks = _Marks(filename, text)
    issues = _separator_issues(text, marks)
    scanned, fatal = _scan_events(text, marks)
    issues.extend(scanned)
    if fatal:
        raise ProtocolError(issues)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ProtocolError([*issues, _syntax_issue(marks, exc)]) from None
    if node is None:
        empty = ProtocolIssue(SourceMark(filename, 1, 1), "the file holds no protocol (it is empty)")
        raise ProtocolError([*issues, empty])
    converter = _Converter(marks)
    data = converter.convert(node, ())
    return YamlDocument(filename, data, converter.value_marks, converter.key_marks, (*issues, *converter.issues))
