"""The pure command checker (rig.remote.commands): nothing a client sends makes it raise; every refusal has a reason.

Issue 14 item 6: size and depth are bounded before parsing; what the parser can still raise (RecursionError, the
int-digits limit) and what the checks after it could raise (an int too large for a float, a non-ASCII signature)
become refusals. The system test is tests/mqtt/test_hostile_commands_on_a_rig_run.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.remote.commands import MAX_COMMAND_BYTES, CommandChecker, json_depth, make_command, parse_bounded

NOW = 1_790_000_000.0
HUGE_INT = b'{"schema": 1, "id": "huge-int-0001", "cmd": "pause", "issued_unix_s": ' + b"9" * 5000 + b"}"


def check(raw: bytes, *, secret: str | None = None, retained: bool = False) -> tuple[bool, str]:
    verdict = CommandChecker(secret=secret).check(raw, retained=retained, now_unix_s=NOW)
    return verdict.ok, verdict.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "too large: 200000 bytes"),
        (HUGE_INT, "too large: 5071 bytes"),
        (b"[" * 1500 + b"]" * 1500, "nested deeper than 4"),
        (b'{"a": {"b": {"c": {"d": {"e": 1}}}}}', "nested deeper than 4"),
        ('{"cmd": "pause"}'.encode("utf-16"), "not UTF-8"),
        (b"\xff", "not UTF-8"),
        (b"", "malformed: not JSON"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_hostile_payloads_are_refused_before_or_while_parsing(raw: bytes, reason: str) -> None:
    ok, why = check(raw)
    assert not ok and reason in why, why


def test_what_the_parser_raises_past_the_bounds_becomes_a_reason() -> None:
    # with the bounds lifted, the parser's own errors show: they are turned into refusals, never raised
    with pytest.raises(ValueError, match=r"not JSON \(Exceeds the limit \(4300 digits\)"):
        parse_bounded(HUGE_INT, max_bytes=10**6)
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ValueError, match="not JSON \\(maximum recursion depth"):
        parse_bounded(deep, max_bytes=10**6, max_depth=10**6)


def test_the_depth_scan_skips_brackets_inside_strings() -> None:
    assert json_depth('{"a": "[[[[[[\\"[[[[", "b": [1]}', stop_above=99) == 2
    assert json_depth("[" * 50, stop_above=4) == 5  # stops as soon as it is past the bound


def test_numbers_too_large_for_a_float_and_non_ascii_signatures_are_refused() -> None:
    body: dict[str, Any] = {"schema": 1, "id": "big-issued-1", "cmd": "pause", "issued_unix_s": 10**400}
    assert check(json.dumps(body).encode()) == (False, "malformed: 'issued_unix_s' must be a number")
    signed = {**make_command("pause", command_id="non-ascii-01", issued_unix_s=NOW), "sig": "é" * 64}
    assert check(json.dumps(signed).encode(), secret="s3cret") == (False, "forged: missing or wrong signature")


def test_a_retained_message_is_refused_as_retained_whatever_it_holds() -> None:
    good = json.dumps(make_command("pause", command_id="retained-01", issued_unix_s=NOW)).encode()
    for raw in (good, b"", b"[" * 1500):
        assert check(raw, retained=True) == (False, "retained: commands must not be retained")
    assert check(good) == (True, "accepted")


def test_a_good_command_fits_well_within_the_size_bound() -> None:
    cmd = make_command("ack", command_id="x" * 64, issued_unix_s=time.time(), secret="s" * 64)
    assert len(json.dumps(cmd)) < MAX_COMMAND_BYTES / 10


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=600) | json_values.map(lambda v: json.dumps(v).encode()))
def test_no_payload_makes_the_checker_raise(raw: bytes) -> None:
    verdict = CommandChecker(secret="s3cret").check(raw, retained=False, now_unix_s=NOW)
    assert not verdict.ok and verdict.reason


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(["schema", "id", "cmd", "issued_unix_s", "expires_unix_s", "sig", "x"]), json_values
    )
)
def test_no_command_shaped_payload_makes_the_checker_raise(fields: dict[str, Any]) -> None:
    verdict = CommandChecker(secret="s3cret").check(json.dumps(fields).encode(), retained=False, now_unix_s=NOW)
    assert not verdict.ok and verdict.reason
