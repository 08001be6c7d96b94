"""Text mutators for protocol fuzzing, shared by the fault-matrix test (row 15) and bench/fuzz_protocols.py."""

from __future__ import annotations

import random

from tests.protocols.strategies import NASTY

YAML_CHARS = list(":-[]{}&*!|>#'\"\n\t %@`,.0123456789eEn")


def mutate(rng: random.Random, text: str) -> str:
    """`text` with 1–4 random edits."""
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["char", "delete", "insert", "line_dup", "line_del", "line_swap", "truncate"])
        n = len(text)
        if op == "char" and n:
            i = rng.randrange(n)
            c = rng.choice(YAML_CHARS) if rng.random() < 0.7 else chr(rng.randrange(0x20, 0x3000))
            text = text[:i] + c + text[i + 1 :]
        elif op == "delete" and n:
            i = rng.randrange(n)
            text = text[:i] + text[i + rng.randint(1, 20) :]
        elif op == "insert":
            i = rng.randint(0, n)
            text = text[:i] + rng.choice(NASTY) + text[i:]
        elif op == "truncate" and n:
            text = text[: rng.randrange(n)]
        else:
            lines = text.split("\n")
            if len(lines) < 2:
                continue
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if op == "line_dup":
                lines.insert(j, lines[i])
            elif op == "line_del":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


def arbitrary(rng: random.Random) -> str:
    """Random text, mostly YAML punctuation and words of the language."""
    words = [*YAML_CHARS, "steps", "plate", "strip", "repeat", "count", "kPa", "mA/cm^2", "- ", ": ", "\n  "]
    return "".join(rng.choice(words) for _ in range(rng.randint(0, 300)))
