"""Final-answer extraction and comparison for GSM8K-style outputs.

Order of preference: the first "#### N"; else the first "The (final) answer is N"; else the last
number in the text. Numbers may carry thousands commas ("1,234"), a "$", a sign and decimals;
they are normalized so "3.0", "3." and "3" all read "3".
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# a minus sign counts only when it does not follow a word or ")" ("10-3" is 10 and 3, "-3" is -3)
_NUM = r"(?:(?<![\w)\]])-)?\$?\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_HASHES = re.compile(r"####\s*(" + _NUM + ")")
_ANSWER_IS = re.compile(r"answer is[:\s]*(" + _NUM + ")", re.IGNORECASE)
_ANY = re.compile(_NUM)


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of one number ("-$1,234.50" -> "-1234.5", "3.0" -> "3"), or None."""
    s = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if s.count("-") > 1:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    d = d.normalize()
    out = format(d, "f")
    return "0" if out in ("-0", "0") else out


def extract_answer(text: str | None) -> str | None:
    """The final number of a model output or a GSM8K answer, normalized; None when there is none."""
    if not text:
        return None
    for pattern in (_HASHES, _ANSWER_IS):
        m = pattern.search(text)
        if m:
            return normalize_number(m.group(1))
    found = _ANY.findall(text)
    return normalize_number(found[-1]) if found else None


def answers_match(pred: str | None, gold: str | None) -> bool:
    """True when both are numbers with the same value (after normalize_number)."""
    if pred is None or gold is None:
        return False
    p, g = normalize_number(pred), normalize_number(gold)
    return p is not None and p == g
