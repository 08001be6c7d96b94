"""A longer fuzz of the protocol language than the test suite runs: nothing may escape but `ProtocolError`.

Three sources of text, each validated with `protocols.validate_protocol`:
- mutated: the library protocols with 1–4 random edits each (characters, YAML-nasty snippets, whole lines),
  from a seeded `random.Random`, so a run is reproducible;
- generated: valid protocols from the test suite's hypothesis strategy (they must all validate, and their plans
  must be consistent), then mutated once more;
- arbitrary: random text of up to 300 characters.

Printed per source: cases, valid, rejected with `ProtocolError`, anything else (must be 0), errors placed outside
the text (a FILE:LINE:COL past the last line an editor shows, or past the end of its line: must be 0), cases per
second and the most common first error messages. The exit code is 1 if anything other than `ProtocolError`
escaped or an error was misplaced.

    python bench/fuzz_protocols.py [--cases 20000] [--generated 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from protocols import ProtocolError, validate_protocol  # noqa: E402
from tests.protocols.fuzzing import arbitrary, mutate  # noqa: E402
from tests.protocols.strategies import valid_protocols  # noqa: E402
from tests.protocols.test_line_positions import editor_lines  # noqa: E402
from tests.protocols.test_properties import check_plan_consistency  # noqa: E402


@dataclass
class Tally:
    """What happened to the cases of one source."""

    cases: int = 0
    valid: int = 0
    rejected: int = 0
    escaped: int = 0
    misplaced: int = 0
    seconds: float = 0.0
    first_errors: Counter[str] = field(default_factory=Counter)
    escapes: list[str] = field(default_factory=list)

    def run(self, text: str, *, must_be_valid: bool = False) -> None:
        self.cases += 1
        t0 = time.perf_counter()
        try:
            plan = validate_protocol(text, "fuzz.yaml")
            check_plan_consistency(plan)
            self.valid += 1
        except ProtocolError as exc:
            self.rejected += 1
            self.first_errors[_category(exc.issues[0].message)] += 1
            outside = _outside(text, exc)
            if outside:
                self.misplaced += 1
                if len(self.escapes) < 5:
                    self.escapes.append(f"misplaced: {outside}\n--- text ---\n{text!r}")
            if must_be_valid:
                self.escaped += 1
                self.escapes.append(f"a generated protocol was refused: {exc}\n{text}")
        except Exception:  # anything but ProtocolError is what this bench counts
            self.escaped += 1
            if len(self.escapes) < 5:
                self.escapes.append(f"{traceback.format_exc()}\n--- text ---\n{text!r}")
        finally:
            self.seconds += time.perf_counter() - t0


def _outside(text: str, exc: ProtocolError) -> str:
    """The first issue whose position is not in `text` as an editor shows it, or ''."""
    lines = editor_lines(text)
    for issue in exc.issues:
        line, col = issue.mark.line, issue.mark.col
        if not (1 <= line <= len(lines) and 1 <= col <= len(lines[line - 1]) + 1):
            return f"{issue} (the text has {len(lines)} lines)"
    return ""


def _category(message: str) -> str:
    head = message.split(":")[0]
    return head[:50] + ("…" if len(head) > 50 else "")


def generated(count: int, seed: int) -> Iterator[str]:
    """Valid protocols from the hypothesis strategy."""
    texts: list[str] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(valid_protocols())
    def collect(gen: object) -> None:
        texts.append(gen.text)  # type: ignore[attr-defined]

    collect()
    yield from texts


def report(name: str, tally: Tally) -> None:
    rate = tally.cases / tally.seconds if tally.seconds else 0.0
    print(
        f"{name:<22} {tally.cases:>7} cases  {tally.valid:>6} valid  {tally.rejected:>6} ProtocolError  "
        f"{tally.escaped:>3} other  {tally.misplaced:>3} misplaced  {rate:>6.0f} cases/s"
    )
    for message, n in tally.first_errors.most_common(6):
        print(f"{'':<24}{n:>6}  {message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000, help="mutated library cases")
    parser.add_argument("--generated", type=int, default=2_000, help="generated valid protocols (each also mutated)")
    parser.add_argument("--arbitrary", type=int, default=5_000, help="random texts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    library = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "protocols" / "library").glob("*.yaml"))]

    tallies: dict[str, Tally] = {}
    sources: list[tuple[str, Callable[[], None]]] = []

    def mutated_library() -> None:
        t = tallies.setdefault("mutated library", Tally())
        for _ in range(args.cases):
            t.run(mutate(rng, rng.choice(library)))

    def valid_and_mutated() -> None:
        v = tallies.setdefault("generated (valid)", Tally())
        m = tallies.setdefault("generated, mutated", Tally())
        for text in generated(args.generated, args.seed):
            v.run(text, must_be_valid=True)
            m.run(mutate(rng, text))

    def random_text() -> None:
        t = tallies.setdefault("arbitrary text", Tally())
        for _ in range(args.arbitrary):
            t.run(arbitrary(rng))

    sources = [("mutated library", mutated_library), ("generated", valid_and_mutated), ("arbitrary", random_text)]
    wall = time.perf_counter()
    for _, run in sources:
        run()
    wall = time.perf_counter() - wall
    for name, tally in tallies.items():
        report(name, tally)
    total = sum(t.cases for t in tallies.values())
    escaped = sum(t.escaped for t in tallies.values())
    misplaced = sum(t.misplaced for t in tallies.values())
    print(
        f"{'total':<22} {total:>7} cases in {wall:.1f} s; anything but ProtocolError: {escaped}; "
        f"errors placed outside the text: {misplaced}"
    )
    for tally in tallies.values():
        for text in tally.escapes[:3]:
            print("\n" + text)
    return 1 if escaped or misplaced else 0


if __name__ == "__main__":
    sys.exit(main())
