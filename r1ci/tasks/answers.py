"""Answer comparison shared by every task family: lenient about format, exact about content.

A verifier gets the payload of <<<...>>> as the model wrote it. Formatting that carries no
meaning (spacing, case, a trailing full stop, surrounding quotes, list brackets and list
spacing, 1/2 versus 0.5) must not decide the reward; content must. So numbers compare
exactly unless the question states a precision (then within half a unit of it), a
multiple-choice answer names one option and nothing else, and a list must have exactly the
gold items. Tasks whose format is the answer (a bracket sequence) compare their symbols.
"""

from __future__ import annotations

import ast
import json
import re
from fractions import Fraction
from typing import Any

_SPACE = re.compile(r"\s+")
_TRAILING = ".,;:!"
_QUOTES = "\"'`"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_MAX_EXPONENT = 400  # 1e400 is no answer to any task; Fraction("1e99999999") would take forever
_MAX_DIGITS = 4000  # Python refuses to convert longer digit strings (and no answer is one)
FLOAT_NOISE = Fraction(1, 10**14)  # relative error of a few float operations (0.1 + 0.2 -> 0.30000000000000004)


def normalize_text(text: str, case: bool = False) -> str:
    """Collapse whitespace, drop surrounding quotes and trailing punctuation; lower-case unless `case`."""
    s = _SPACE.sub(" ", str(text)).strip()
    while s and (s[-1] in _TRAILING or (len(s) > 1 and s[0] == s[-1] and s[0] in _QUOTES)):
        s = s[1:-1].strip() if s[0] == s[-1] and s[0] in _QUOTES and len(s) > 1 else s[:-1].rstrip()
    return s if case else s.lower()


def parse_number(text: str) -> Fraction | None:
    """A number written as an integer, decimal, fraction (3/4), percentage, in scientific
    notation or with thousands commas and a leading $, as an exact Fraction; None for
    anything that is not one number (so 1/3 equals 2/6 and 0.5 equals 1/2)."""
    s = normalize_text(text).replace(" ", "").replace("\u2212", "-").lstrip("$")
    if re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    parts = s.split("/")
    if len(parts) > 2 or not all(_NUMBER.match(p) and _small_exponent(p) and len(p) <= _MAX_DIGITS for p in parts):
        return None
    value = Fraction(parts[0])
    if len(parts) == 2:
        den = Fraction(parts[1])
        if den == 0:
            return None
        value /= den
    return value / 100 if percent else value


def _small_exponent(number: str) -> bool:
    m = re.search(r"[eE]([+-]?\d+)$", number)
    return m is None or abs(int(m.group(1))) <= _MAX_EXPONENT


def same_number(answer: str, gold: str, decimals: int | None = None) -> bool:
    """Both are numbers with the same value, or, when the question asks for `decimals`
    decimal places, the answer is within half a unit of that place of the (rounded) gold:
    for 2 decimals, 3.14 and 3.1416 match 3.14, and 3.15 and 3.1 do not.

    Without a stated precision the values must be equal, up to float noise (FLOAT_NOISE,
    relative) when either is not an integer; two integers must be equal exactly.
    """
    a, g = parse_number(answer), parse_number(gold)
    return a is not None and g is not None and numbers_match(a, g, decimals)


def numbers_match(a: Fraction, g: Fraction, decimals: int | None = None) -> bool:
    """`same_number` on parsed values."""
    if decimals is not None:
        return abs(a - g) <= Fraction(1, 2 * 10**decimals)
    if a == g:
        return True
    return not (a.denominator == g.denominator == 1) and abs(a - g) <= abs(g) * FLOAT_NOISE


def unwrap(text: str) -> str:
    """The answer without surrounding spaces, quotes or backticks and without trailing full stops."""
    s = str(text).strip()
    while len(s) > 1 and s[0] == s[-1] and s[0] in _QUOTES:
        s = s[1:-1].strip()
    return s.rstrip(".").rstrip() or s


def parse_literal(text: str) -> Any:
    """A Python or JSON literal (list, dict, tuple, number, string) from answer text; raises
    ValueError when there is none (deep nesting and overlong numbers included)."""
    text = unwrap(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not a literal: {exc}") from None


def same_structure(answer: Any, gold: Any, abs_tol: Fraction = Fraction(0)) -> bool:
    """Nested lists equal item by item at every level, so their shape counts ([[1, 2], [3, 4]]
    is not [[1, 2, 3, 4]]); tuples count as lists, numbers compare exactly (or within
    `abs_tol`) whether written as numbers or as strings, other items as normalized text."""
    if isinstance(gold, (list, tuple)):
        return isinstance(answer, (list, tuple)) and len(answer) == len(gold) and all(
            same_structure(x, y, abs_tol) for x, y in zip(answer, gold)
        )
    if isinstance(answer, (list, tuple, dict, set)):
        return False
    a, g = parse_number(str(answer)), parse_number(str(gold))
    if a is not None and g is not None:
        return abs(a - g) <= abs_tol if abs_tol else numbers_match(a, g)
    return normalize_text(str(answer)) == normalize_text(str(gold))


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
    """Lenient match of a free-form answer: text, then exact number, then list (item by item).

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


# "(B)", "B", "B)", "B.", "Option B", "option (b)", "Answer: B"; group 1 is the letter, group 2 any text after it
_CHOICE = re.compile(r"(?:(?:the\s+)?(?:answer|option)\s*(?:is\s*)?:?\s*)?\(?([A-Za-z])\)?(?:(?:[.):]|\s)\s*(.*))?", re.I | re.S)


def choice_letter(answer: str) -> str | None:
    """The option letter of an answer that is only a letter ('(B)', 'B', 'b)', 'Option B'); None otherwise."""
    m = _CHOICE.fullmatch(normalize_text(answer, case=True))
    return m.group(1).upper() if m and not m.group(2) else None


def same_choice(answer: str | None, letter: str, option_text: str) -> bool:
    """A multiple-choice answer naming exactly the right option: its letter ('(B)', 'B'),
    its text, or both ('(B) blue', 'B. blue'). Anything more is another claim, so a hedge
    such as '(B) or (A)' or 'B, C' names no single option and is wrong."""
    if answer is None:
        return False
    s = normalize_text(answer, case=True)
    if same_text(s, option_text):
        return True
    m = _CHOICE.fullmatch(s)
    if m is None or m.group(1).upper() != letter.upper():
        return False
    return not m.group(2) or same_text(m.group(2), option_text)
