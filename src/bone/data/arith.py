"""Bundled GSM8K-style arithmetic word problems from a deterministic generator.

Each record is {"question": str, "answer": "<one equation per line>\\n#### N"}, e.g.
question "Mia has 7 pencils. She buys 5 more. How many pencils does Mia have now?",
answer "7 + 5 = 12\\n#### 12". Problems take one or two steps (+, -, *, /) on small whole numbers,
so a 135M model can pick up the format and the arithmetic in a few CPU minutes.

Splits: a problem belongs to "test" when a hash of its question text falls in the test bucket
(1 in 5), to "validation" when it falls in the validation bucket (1 in 8 of the rest), else to
"train"; the three splits are therefore disjoint for every seed (the validation split is what
`bone compare` picks learning rates on, never the test split). Generation is sequential, so
`generate(n)` is a prefix of `generate(m)` for n < m.
"""
from __future__ import annotations

import hashlib
import random
from ..errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
TEST_BUCKET = 5  # a question is in the test split when its hash % TEST_BUCKET == 0
VALIDATION_BUCKET = 8  # else in the validation split when (hash // TEST_BUCKET) % VALIDATION_BUCKET == 0

NAMES = ("Mia", "Tom", "Ava", "Leo", "Sara", "Ben", "Lily", "Omar", "Nina", "Jack",
         "Emma", "Ravi", "Zoe", "Sam", "Ana", "Max", "Ella", "Kai", "Ruth", "Ivan")
PRONOUN = {n: ("She" if n in {"Mia", "Ava", "Sara", "Lily", "Nina", "Emma", "Zoe", "Ana", "Ella", "Ruth"}
               else "He") for n in NAMES}
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "coins", "shells",
         "cards", "eggs", "flowers", "toy cars", "stamps", "candies", "balloons", "buttons")
CONTAINERS = ("bags", "boxes", "jars", "packs", "baskets")


def _add(r: random.Random, n: str, p: str, it: str):
    a, b = r.randint(2, 30), r.randint(2, 30)
    q = f"{n} has {a} {it}. {p} gets {b} more. How many {it} does {n} have now?"
    return q, [(a, "+", b)]


def _sub(r: random.Random, n: str, p: str, it: str):
    a = r.randint(5, 40)
    b = r.randint(1, a - 1)
    friend = r.choice([x for x in NAMES if x != n])
    q = f"{n} had {a} {it} and gave {b} of them to {friend}. How many {it} does {n} have left?"
    return q, [(a, "-", b)]


def _mul(r: random.Random, n: str, p: str, it: str):
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.choice(CONTAINERS)
    q = f"{n} buys {a} {c} of {it}. Each of the {c} holds {b} {it}. How many {it} does {n} buy?"
    return q, [(a, "*", b)]


def _div(r: random.Random, n: str, p: str, it: str):
    a, b = r.randint(2, 9), r.randint(2, 9)
    q = f"{n} shares {a * b} {it} equally among {a} friends. How many {it} does each friend get?"
    return q, [(a * b, "/", a)]


def _add_sub(r: random.Random, n: str, p: str, it: str):
    a, b = r.randint(2, 25), r.randint(2, 25)
    c = r.randint(1, a + b - 1)
    q = (f"{n} has {a} {it}. {p} buys {b} more and then gives away {c}. "
         f"How many {it} does {n} have now?")
    return q, [(a, "+", b), (None, "-", c)]


def _mul_add(r: random.Random, n: str, p: str, it: str):
    a, b, c, box = r.randint(2, 9), r.randint(2, 9), r.randint(1, 20), r.choice(CONTAINERS)
    q = (f"{n} has {a} {box} with {b} {it} in each, and {c} more {it} outside the {box}. "
         f"How many {it} does {n} have in total?")
    return q, [(a, "*", b), (None, "+", c)]


KINDS = (_add, _sub, _mul, _div, _add_sub, _mul_add)  # problem shapes, drawn uniformly
_OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": lambda x, y: x // y}


def _solve(steps) -> tuple[str, int]:
    """Worked answer: one 'x op y = z' line per step (None = the previous result), then '#### z'."""
    lines, val = [], None
    for x, op, y in steps:
        x = val if x is None else x
        val = _OPS[op](x, y)
        lines.append(f"{x} {op} {y} = {val}")
    return "\n".join(lines) + f"\n#### {val}", val


def split_of(question: str) -> str:
    """The split a question belongs to (a fixed function of its text)."""
    h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big")
    if h % TEST_BUCKET == 0:
        return "test"
    return "validation" if (h // TEST_BUCKET) % VALIDATION_BUCKET == 0 else "train"


def generate(n: int, *, seed: int = 0, split: str = "train") -> list[dict]:
    """`n` distinct problems of `split` ("train", "validation" or "test"), deterministic in (seed, split).

    Returns [{"question": str, "answer": "a op b = c\\n...\\n#### N"}] * n."""
    if split not in SPLITS:
        raise DataError(f"arith split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    rng = random.Random(f"bone-arith/{seed}/{split}")
    out, seen, tries = [], set(), 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise DataError(f"could not draw {n} distinct {split} problems; ask for fewer")
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        question, steps = rng.choice(KINDS)(rng, name, PRONOUN[name], item)
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        answer, _ = _solve(steps)
        out.append({"question": question, "answer": answer})
    return out
