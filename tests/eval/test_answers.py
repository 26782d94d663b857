"""extract_answer / answers_match: table of GSM8K-style outputs plus property tests."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bone.eval import answers_match, extract_answer, normalize_number


@pytest.mark.parametrize("text,expected", [
    ("5 + 3 = 8\n#### 8", "8"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("The answer is 42.", "42"),
    ("So the final answer is: $1,000,000.", "1000000"),
    ("The answer is -7", "-7"),
    ("x = 3.0.", "3"),
    ("It costs $3.50 each, 2.50 total", "2.5"),
    ("she walks 10-3 km", "3"),
    ("#### 12\n#### 10\n#### 10", "12"),  # the first final-answer mark wins
    ("#### 5 and then the answer is 9", "5"),
    ("The answer is 9. Later: 11", "9"),
    ("no number here", None),
    ("", None),
    (None, None),
])
def test_extract_answer_table(text, expected):
    assert extract_answer(text) == expected


def _formats(n: int):
    """Ways a model or dataset writes the integer n."""
    plain = str(n)
    grouped = f"{n:,}"
    sign, mag = ("-", f"{abs(n):,}") if n < 0 else ("", grouped)
    return st.sampled_from([plain, grouped, f"{plain}.", f"{plain}.0", f"{plain}.00", f"{sign}${mag}", f"{grouped}."])


@given(st.integers(-10**9, 10**9).flatmap(lambda n: st.tuples(st.just(n), _formats(n))),
       st.text(alphabet="abc xyz,.!?\n", max_size=30))
def test_final_mark_survives_any_formatting(n_fmt, noise):
    n, written = n_fmt
    assert extract_answer(f"{noise} 17 + 4 = 21 {noise}\n#### {written}") == str(n)
    assert extract_answer(f"{noise}The answer is {written}") == str(n)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6), st.text(alphabet="abc xyz\n", max_size=20))
def test_last_number_when_no_mark(numbers, filler):
    text = filler.join([""] + [f" value {x} " for x in numbers])
    assert extract_answer(text) == str(numbers[-1])


@given(st.decimals(min_value=-10**6, max_value=10**6, allow_nan=False, places=3))
def test_normalize_is_value_preserving(d):
    from decimal import Decimal

    s = normalize_number(str(d))
    assert Decimal(s) == d and not s.endswith(".") and (s == "0" or not s.startswith("0") or s.startswith("0."))
    assert answers_match(str(d), s)


def test_answers_match():
    assert answers_match("3", "3.0") and answers_match("1234", "1,234") and answers_match("-5", "-5.00")
    assert not answers_match("3", "4") and not answers_match(None, "4") and not answers_match("4", None)
    assert not answers_match("abc", "abc")
