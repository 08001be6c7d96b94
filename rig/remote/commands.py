"""Remote commands over MQTT, checked before anything acts on them (pure: no I/O).

Only pause, resume, abort and ack are accepted — nothing remote sets a pressure, a current or a position.
A command is one JSON object:

    {"schema": 1, "id": "<8–64 chars>", "cmd": "pause", "issued_unix_s": 1764000000.0,
     "expires_unix_s": 1764000030.0,            # optional; at most max_age_s after issue
     "sig": "<hex HMAC-SHA256>"}                # required when the rig has a command secret

It is rejected — with a reason — when it is too large or nested too deep (both checked before it is parsed),
malformed, unknown, retained, expired or issued in the future (beyond the allowed clock skew), replayed (an id
already seen), or forged (missing or wrong signature). Who may publish at all is the broker's business
(username/password and a per-topic ACL); the signature guards against a client that has publish rights but not the
rig's secret. Nothing a client sends makes `check` raise: it always returns a verdict.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
ALLOWED = frozenset({"pause", "resume", "abort", "ack"})
MAX_COMMAND_BYTES = 4096  # a signed command is about 250 bytes
MAX_JSON_DEPTH = 4  # a command is one flat object (depth 1)
_RETAINED = "retained: commands must not be retained"


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one command."""

    ok: bool
    reason: str
    command_id: str | None = None
    cmd: str | None = None


def json_depth(text: str, *, stop_above: int) -> int:
    """How deep arrays and objects nest in a JSON text (a cheap scan, no parsing; stops once above `stop_above`)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_bounded(raw: bytes, *, max_bytes: int = MAX_COMMAND_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of `raw` (UTF-8), or ValueError with the reason: size and depth are bounded before parsing, and
    what the parser can still raise (RecursionError, the int-digits limit, MemoryError) becomes a ValueError.

    The text is decoded first, so the depth scan sees the characters the parser sees (the parser would take UTF-16
    bytes too, whose non-ASCII characters can hold quote and bracket bytes)."""
    if len(raw) > max_bytes:
        raise ValueError(f"too large: {len(raw)} bytes, a command is at most {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("malformed: not UTF-8 text") from None
    if json_depth(text, stop_above=max_depth) > max_depth:
        raise ValueError(f"malformed: JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError, MemoryError) as exc:  # JSONDecodeError is a ValueError
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ValueError(f"malformed: not JSON ({detail})") from None


def _time_s(value: Any) -> float | None:
    """A finite time in seconds, or None (not a number, not finite, or an int too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def canonical(payload: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the command without `sig`, keys sorted, compact."""
    body = {k: v for k, v in payload.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(payload: dict[str, Any], secret: str) -> str:
    """HMAC-SHA256 of the canonical command."""
    return hmac.new(secret.encode(), canonical(payload), hashlib.sha256).hexdigest()


def make_command(
    cmd: str, *, command_id: str, issued_unix_s: float, ttl_s: float = 30.0, secret: str | None = None
) -> dict[str, Any]:
    """Build a command as `rig send` does."""
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "id": command_id,
        "cmd": cmd,
        "issued_unix_s": issued_unix_s,
        "expires_unix_s": issued_unix_s + ttl_s,
    }
    if secret:
        payload["sig"] = sign(payload, secret)
    return payload


class CommandChecker:
    """Checks commands; remembers recent ids to refuse replays."""

    def __init__(
        self,
        *,
        max_age_s: float = 30.0,
        max_skew_s: float = 5.0,
        secret: str | None = None,
        remember: int = 4096,
        max_bytes: int = MAX_COMMAND_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.max_skew_s = max_skew_s
        self.secret = secret or None
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._remember = remember

    def check(self, raw: bytes, *, retained: bool, now_unix_s: float) -> Verdict:
        """Decide whether a received command may act."""
        try:
            payload = parse_bounded(raw, max_bytes=self.max_bytes)
        except ValueError as exc:
            return Verdict(False, _RETAINED if retained else str(exc))
        if not isinstance(payload, dict):
            return Verdict(False, _RETAINED if retained else "malformed: not a JSON object")
        cid = payload.get("id")
        cid_s = cid if isinstance(cid, str) else None
        cmd = payload.get("cmd")
        cmd_s = cmd if isinstance(cmd, str) else None
        if retained:
            return Verdict(False, _RETAINED, cid_s, cmd_s)
        if payload.get("schema") != SCHEMA_VERSION:
            return Verdict(False, f"malformed: schema must be {SCHEMA_VERSION}", cid_s, cmd_s)
        if cid_s is None or not 8 <= len(cid_s) <= 64:
            return Verdict(False, "malformed: 'id' must be a string of 8-64 characters", None, cmd_s)
        if cmd_s not in ALLOWED:
            return Verdict(False, f"not allowed: {cmd!r}; only {', '.join(sorted(ALLOWED))}", cid_s, cmd_s)
        extra = set(payload) - {"schema", "id", "cmd", "issued_unix_s", "expires_unix_s", "sig"}
        if extra:
            return Verdict(False, f"malformed: unknown fields {sorted(extra)}", cid_s, cmd_s)
        issued = _time_s(payload.get("issued_unix_s"))
        if issued is None:
            return Verdict(False, "malformed: 'issued_unix_s' must be a number", cid_s, cmd_s)
        expires = _time_s(payload.get("expires_unix_s", issued + self.max_age_s))
        if expires is None:
            return Verdict(False, "malformed: 'expires_unix_s' must be a number", cid_s, cmd_s)
        if self.secret is not None:
            sig = payload.get("sig")
            # as bytes: compare_digest raises TypeError on a str with non-ASCII characters
            if not isinstance(sig, str) or not hmac.compare_digest(sig.encode(), sign(payload, self.secret).encode()):
                return Verdict(False, "forged: missing or wrong signature", cid_s, cmd_s)
        if issued > now_unix_s + self.max_skew_s:
            return Verdict(False, "issued in the future (clock skew?)", cid_s, cmd_s)
        if now_unix_s > min(expires, issued + self.max_age_s):
            return Verdict(False, f"expired: issued {now_unix_s - issued:.1f} s ago", cid_s, cmd_s)
        if cid_s in self._seen:
            return Verdict(False, "replayed: this id was already received", cid_s, cmd_s)
        self._seen[cid_s] = now_unix_s
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return Verdict(True, "accepted", cid_s, cmd_s)
