"""Safe YAML loading: plain data with marks; tags, aliases, duplicates, NaN and odd keys are refused."""

from __future__ import annotations

import pytest

from protocols import ProtocolError
from protocols.errors import SourceMark
from protocols.yaml_loader import load_yaml


def test_values_and_keys_keep_their_line_and_column() -> None:
    doc = load_yaml("a: 1\nb:\n  - x\n  - {c: 2.5}\n", "f.yaml")
    assert doc.data == {"a": 1, "b": ["x", {"c": 2.5}]}
    assert doc.key_marks[("a",)] == SourceMark("f.yaml", 1, 1)
    assert doc.value_marks[("a",)] == SourceMark("f.yaml", 1, 4)
    assert doc.value_marks[("b", 1)] == SourceMark("f.yaml", 4, 5)
    assert doc.key_marks[("b", 1, "c")] == SourceMark("f.yaml", 4, 6)
    assert doc.issues == ()


def test_a_missing_path_points_at_its_nearest_written_parent() -> None:
    doc = load_yaml("a:\n  b: 1\n", "f.yaml")
    assert doc.mark(("a", "zzz")) == SourceMark("f.yaml", 1, 1)
    assert doc.mark(("a", "b")) == SourceMark("f.yaml", 2, 6)
    assert doc.mark(("a", "b"), prefer_key=True) == SourceMark("f.yaml", 2, 3)


def test_yaml_1_1_surprises_stay_harmless() -> None:
    doc = load_yaml("d: 2024-01-01\nt: 1:30\nh: 0x10\nn: ~\nb: no\n", "f.yaml")
    assert doc.data == {"d": "2024-01-01", "t": 90, "h": 16, "n": None, "b": False}


def test_billion_laughs_is_refused_before_expansion() -> None:
    lines = ['a0: &a0 "lol"']
    for i in range(1, 30):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    with pytest.raises(ProtocolError) as info:
        load_yaml("\n".join(lines), "bomb.yaml")
    assert any("aliases" in i.message for i in info.value.issues)


def test_python_object_tags_are_never_constructed() -> None:
    doc = load_yaml("x: !!python/object/apply:os.system ['echo hacked']\n", "f.yaml")
    (issue,) = doc.issues
    assert issue.message == "YAML tags (`!!python/object/apply:os.system`) are not allowed: plain data only"
    with pytest.raises(ProtocolError):
        doc.check()


def test_problems_that_can_be_read_past_are_all_collected() -> None:
    doc = load_yaml("a: 1\na: 2\n1: x\nc: .nan\nd: !foo y\n", "f.yaml")
    assert [(i.mark.line, i.mark.col) for i in doc.issues] == [(5, 4), (2, 1), (3, 1), (4, 4)]
    assert doc.data["a"] == 1


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: [1, 2\n", (2, 1), "YAML syntax error"),
        ("a: 1\n---\nb: 2\n", (2, 1), "only one YAML document"),
        ("", (1, 1), "empty"),
        ("# only a comment\n", (1, 1), "empty"),
        ("a: \x00\n", (1, 4), "character YAML does not allow (U+0000)"),
        ("a: " + "[" * 60 + "]" * 60 + "\n", (1, 43), "nesting is deeper than 40 levels"),
    ],
)
def test_what_cannot_be_read_past_raises_at_once(text: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        load_yaml(text, "f.yaml")
    (issue,) = info.value.issues
    assert (issue.mark.line, issue.mark.col) == where
    assert message in issue.message


def test_huge_files_are_refused() -> None:
    with pytest.raises(ProtocolError, match="too large"):
        load_yaml("a: " + "x" * 1_000_001, "f.yaml")


@pytest.mark.parametrize(
    ("text", "where"),
    [('a: "x\\U0011FFFFy"\n', (1, 6)), ('a: 1\nb: "\\U7FFFFFFF"\n', (2, 5)), ('a: "\\U80010000"', (1, 5))],
)
def test_an_escape_past_unicode_is_a_syntax_error_not_a_crash(text: str, where: tuple[int, int]) -> None:
    with pytest.raises(ProtocolError) as info:
        load_yaml(text, "f.yaml")
    (issue,) = info.value.issues
    assert (issue.mark.line, issue.mark.col) == where
    assert "is not a Unicode character" in issue.message


@pytest.mark.parametrize(
    ("text", "where"), [('a: "x\\uD800y"\n', (1, 4)), ('a:\n  "\\uDFFF": 1\n', (2, 3)), ("a: [1, '\\ud800']\n", None)]
)
def test_half_a_surrogate_pair_is_no_text(text: str, where: tuple[int, int] | None) -> None:
    """`\\uD800` in double quotes would reach the display and the store as an unencodable character."""
    if where is None:  # only double quotes have escapes: in single quotes it is plain text
        assert load_yaml(text, "f.yaml").issues == ()
        return
    doc = load_yaml(text, "f.yaml")
    (issue,) = doc.issues
    assert (issue.mark.line, issue.mark.col) == where
    assert "surrogate" in issue.message
