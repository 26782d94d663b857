"""The bundled arithmetic generator: deterministic, disjoint splits, correct worked answers."""
from __future__ import annotations

import re

import pytest

from bone.data import arith
from bone.eval import extract_answer

_STEP = re.compile(r"^(-?\d+) ([-+*/]) (\d+) = (-?\d+)$")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


def test_deterministic_and_prefix_stable():
    a = arith.generate(200, seed=3)
    assert a == arith.generate(200, seed=3)
    assert arith.generate(50, seed=3) == a[:50]
    assert a != arith.generate(200, seed=4)


def test_splits_are_disjoint_across_seeds():
    train = {r["question"] for s in (0, 1) for r in arith.generate(1500, seed=s)}
    validation = {r["question"] for s in (0, 1) for r in arith.generate(300, seed=s, split="validation")}
    test = {r["question"] for s in (0, 1) for r in arith.generate(300, seed=s, split="test")}
    assert len(test) > 300 and len(validation) > 300
    assert not train & test and not train & validation and not validation & test
    assert all(arith.split_of(q) == "test" for q in test)
    assert all(arith.split_of(q) == "validation" for q in validation)
    assert all(arith.split_of(q) == "train" for q in train)


def test_bundled_splits_are_large_enough_for_a_comparison():
    from bone.data import load_records

    test = load_records("bundled:arith", split="test")
    validation = load_records("bundled:arith", split="validation")
    assert len(test) >= 300 and len({r["question"] for r in test}) == len(test)  # +-0.05 at 95% needs ~300
    assert len(validation) >= 300 and not {r["question"] for r in test} & {r["question"] for r in validation}


def test_questions_are_distinct_and_every_answer_is_right():
    records = arith.generate(600, split="test")
    assert len({r["question"] for r in records}) == 600
    kinds = set()
    for r in records:
        *steps, final = r["answer"].split("\n")
        prev = None
        for line in steps:
            a, op, b, c = _STEP.match(line).groups()
            if prev is not None:
                assert int(a) == prev  # a second step continues from the first result
            assert _OPS[op](int(a), int(b)) == int(c) and int(c) >= 0
            prev = int(c)
        assert final == f"#### {prev}" and extract_answer(r["answer"]) == str(prev)
        numbers = [int(x) for x in re.findall(r"\d+", r["question"])]
        assert all(0 < x <= 81 for x in numbers)  # small numbers: a 135M model can learn them quickly
        kinds.add((len(steps), steps[0].split()[1]))
    assert kinds == {(1, "+"), (1, "-"), (1, "*"), (1, "/"), (2, "+"), (2, "*")}


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        arith.generate(5, split="dev")
    with pytest.raises(ValueError, match="n must be"):
        arith.generate(-1)
