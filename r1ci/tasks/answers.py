"""Answer comparison shared by every task family: lenient where the format allows, strict where not.

A verifier gets the payload of <<<...>>> as the model wrote it. Formatting that carries no
meaning (spacing, case, a trailing full stop, quotes, list brackets, 1/2 versus 0.5) must
not decide the reward; content must. Tasks whose format is the answer (a bracket
sequence, a sorted word list) call `same_text(..., case=True)` or compare exactly.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SPACE = re.compile(r"\s+")
_TRAILING = ".,;:!"
_QUOTES = "\"'`"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def normalize_text(text: str, case: bool = False) -> str:
    """Collapse whitespace, drop surrounding quotes and trailing punctuation; lower-case unless `case`."""
    s = _SPACE.sub(" ", str(text)).strip()
    while s and (s[-1] in _TRAILING or (len(s) > 1 and s[0] == s[-1] and s[0] in _QUOTES)):
        s = s[1:-1].strip() if s[0] == s[-1] and s[0] in _QUOTES and len(s) > 1 else s[:-1].rstrip()
    return s if case else s.lower()


def parse_number(text: str) -> Fraction | float | None:
    """A number written as an integer, decimal, fraction (3/4), percentage or with thousands commas.

    Returns an exact Fraction where possible (so 1/3 equals 2/6), a float for inf/nan-free
    scientific notation that does not fit, and None for anything that is not one number.
    """
    s = normalize_text(text).replace(" ", "").lstrip("$")
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            if not (_NUMBER.match(num) and _NUMBER.match(den)) or float(den) == 0:
                return None
            value = Fraction(num) / Fraction(den)
        elif _NUMBER.match(s):
            value = Fraction(s)
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def same_number(answer: str, gold: str, rel_tol: float = 1e-6) -> bool:
    """True when both parse as numbers that agree to `rel_tol` (relative); integers must be equal."""
    a, g = parse_number(answer), parse_number(gold)
    if a is None or g is None:
        return False
    if a == g:
        return True
    if isinstance(a, Fraction) and isinstance(g, Fraction) and a.denominator == g.denominator == 1:
        return False
    return math.isclose(float(a), float(g), rel_tol=rel_tol, abs_tol=1e-12)


def parse_list(text: str) -> list[str] | None:
    """Items of a list written as [a, b], (a, b), {a, b} or a, b; None when there is no separator."""
    s = str(text).strip()
    if len(s) >= 2 and s[0] + s[-1] in ("[]", "()", "{}"):
        s = s[1:-1]
    if "," not in s and ";" not in s:
        return None
    items = [normalize_text(x) for x in re.split(r"[,;]", s)]
    return [x for x in items if x != ""]


def same_text(answer: str, gold: str, case: bool = False) -> bool:
    """Equal after `normalize_text`; `case=True` keeps letter case significant."""
    return normalize_text(answer, case) == normalize_text(gold, case)


def same_answer(answer: str | None, gold: str, ordered: bool = True) -> bool:
    """Lenient match of a free-form answer: text, then number, then list (item by item).

    `ordered=False` compares lists as multisets (e.g. "the set of solutions").
    """
    if answer is None:
        return False
    if same_text(answer, gold) or same_number(answer, gold):
        return True
    a_items, g_items = parse_list(answer), parse_list(gold)
    if a_items is None or g_items is None or len(a_items) != len(g_items):
        return False
    if not ordered:
        a_items, g_items = sorted(a_items), sorted(g_items)
    return all(x == y or same_number(x, y) for x, y in zip(a_items, g_items))


def choice_letter(answer: str) -> str | None:
    """The option letter in '(B)', 'B', 'B)', '(b)', 'Option B' or 'B. text'; None otherwise."""
    s = normalize_text(answer, case=True)
    m = re.fullmatch(r"(?:option\s+)?\(?([A-Za-z])\)?(?:[.):]\s.*)?", s, flags=re.I)
    return m.group(1).upper() if m else None


def same_choice(answer: str | None, letter: str, option_text: str) -> bool:
    """A multiple-choice answer: the right letter, '(letter) text', or the option's own text."""
    if answer is None:
        return False
    found = choice_letter(answer)
    if found is not None:
        return found == letter.upper()
    return same_text(answer, option_text)
