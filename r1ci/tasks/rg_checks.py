"""Where Reasoning-Gym's own verifiers are too lenient, too strict about format, or unsafe,
and what r1ci does instead. Every entry was found by a right-and-wrong-answer test
(tests/test_verifier_properties.py); each says what the package accepts that is wrong.

`tidy` removes formatting before any verifier sees an answer (surrounding quotes and
spaces, a trailing full stop, letter case where the gold has one case, runs of spaces,
Python list syntax where JSON is parsed). `SAFE` lists the answers that may reach a
verifier that evaluates them (sympy's parse_expr and eval run any Python). `REPLACED`
tasks are judged by r1ci's check alone, `ALSO_REQUIRED` ones by the package and r1ci both.
"""

from __future__ import annotations

import ast
import json
import re
from fractions import Fraction
from typing import Any, Callable

from r1ci.tasks.answers import (
    normalize_text,
    numbers_match,
    parse_literal,
    parse_number,
    same_answer,
    same_structure,
    same_text,
)

CASE_IS_CONTENT = {"bf"}  # a program's exact output


def tidy(name: str, answer: str, gold: str) -> str:
    """The answer without formatting that carries no meaning for this gold answer."""
    s = answer.strip()
    while len(s) > 1 and s[0] == s[-1] and s[0] in "\"'`" and not gold.startswith(s[0]):
        s = s[1:-1].strip()
    if s.endswith(".") and (not gold.endswith(".") or s.endswith("..")):
        s = s[:-1].rstrip()
    letters = re.sub(r"[^A-Za-z]", "", gold)
    if name not in CASE_IS_CONTENT and letters:
        s = s.upper() if letters.isupper() else s.lower() if letters.islower() else s
    if "\n" in gold.strip():  # a grid: rows on lines, cells separated by single spaces
        s = "\n".join(" ".join(line.split()) for line in s.splitlines() if line.strip())
    elif "  " not in gold:
        s = re.sub(r"[ \t]+", " ", s)
    if gold.startswith("[") and s.startswith("["):
        s = _as_json(s)
    return _TIDY[name](s) if name in _TIDY else s


_TIDY: dict[str, Callable[[str], str]] = {
    # jugs are named by capital letters ("fill A"); the moves themselves are lower case
    "jugs": lambda s: re.sub(r"\b[a-z]\b", lambda m: m.group().upper(), s.lower()),
}


def _as_json(text: str) -> str:
    """A Python list literal rewritten as JSON (the package parses these answers with json.loads)."""
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        return json.dumps(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _same_as_gold(name: str, answer: str, gold: str) -> bool:
    """Text, exact number or item-by-item list equality; a grid line by line and a list
    literal level by level (their shape counts)."""
    if name in CASE_IS_CONTENT:
        return same_text(answer, gold, case=True)
    if "\n" in gold.strip():
        a, g = answer.strip().splitlines(), gold.strip().splitlines()
        return len(a) == len(g) and all(same_answer(x, y) for x, y in zip(a, g))
    if gold.startswith("["):
        try:
            return same_structure(parse_literal(answer), parse_literal(gold))
        except ValueError:
            return False
    return same_answer(answer, gold)


# -- answers that may reach a verifier which evaluates them --------------------------------

_POLYNOMIAL = re.compile(r"[0-9A-Za-z+\-*/^(). ]+")


def _small_polynomial(s: str) -> bool:
    """Only one-letter variables, no number glued to a letter (1e9999), no power towers or
    huge exponents (sympy would compute 10**10**10): what a polynomial answer looks like."""
    if len(s) > 1000 or not _POLYNOMIAL.fullmatch(s) or re.search(r"[A-Za-z]{2}|\d[A-Za-z]|__|\({6}", s):
        return False  # (gold answers are a few hundred characters at most, nested a few levels)
    if re.search(r"(\*\*|\^)\s*\(?\s*-?\d{4,}", s) or re.search(r"(\*\*|\^)[^+\-]*?(\*\*|\^)", s):
        return False
    return len(re.findall(r"\d+", s)) <= 200 and all(len(n) <= 30 for n in re.findall(r"\d+", s))


SAFE: dict[str, Callable[[str], bool]] = {
    "polynomial_multiplication": _small_polynomial,  # sympy.parse_expr(answer) runs Python
    "simple_integration": _small_polynomial,
    "countdown": lambda s: re.fullmatch(r"[\d\s+\-*/()]+", s) is not None and "**" not in s and len(s) <= 200,
    "binary_matrix": lambda s: re.fullmatch(r"[\d\s-]+", s) is not None,  # eval(answer) on other formats
    "spiral_matrix": lambda s: re.fullmatch(r"[\d\s-]+", s) is not None,
    "n_queens": lambda s: re.fullmatch(r"[Q_\s]+", s) is not None,
}


# -- r1ci's own checks ----------------------------------------------------------------------


def _coin_flip(answer: str, entry: dict) -> bool:
    """Package: within 1e-4, and full marks for a matching prefix ('11' for a probability of 1).
    Here: the exact probability (float noise aside), or the gold itself where it is the exact
    value rounded to 10 significant digits (and an answer that rounds to it)."""
    value, exact, gold = parse_number(answer), Fraction(**entry["metadata"]["rational"]), parse_number(entry["answer"])
    if value is None:
        return False
    return numbers_match(value, exact) or (gold != exact and _same_digits(value, gold, 10))


def _same_digits(value: Fraction, exact: Fraction, digits: int) -> bool:
    """Within half a unit of the `digits`-th significant digit of `exact`."""
    if exact == 0:
        return value == 0
    magnitude = len(str(abs(exact.numerator) // abs(exact.denominator))) if abs(exact) >= 1 else -_leading_zeros(exact)
    return abs(value - exact) <= Fraction(10) ** (magnitude - digits) / 2


def _leading_zeros(x: Fraction) -> int:
    x, n = abs(x), 0
    while x < Fraction(1, 10):
        x, n = x * 10, n + 1
    return n


def _decimal_arithmetic(answer: str, entry: dict) -> bool:
    """Package: within 10**-3 although the question asks for 12 significant digits. Here: the
    answer rounds to the gold at 12 significant digits (one unit off in the 12th is wrong)."""
    value, gold = parse_number(answer), parse_number(entry["answer"])
    return value is not None and gold is not None and _same_digits(value, gold, 12)


def _number_format(answer: str, entry: dict) -> bool:
    """Package: within 0.01, so a neighbouring value in the last asked digit passes. Here: the
    chosen candidate's value exactly (any of its formats)."""
    value = parse_number(answer)
    return value is not None and numbers_match(value, Fraction(str(entry["metadata"]["solution"])))


def _figlet_font(answer: str, entry: dict) -> bool:
    """Package: 0.1 per letter in place, capped at 1, so ten right letters and junk pass."""
    return re.sub(r"\s", "", answer).lower() == entry["answer"].strip().lower()


def _advanced_geometry(answer: str, entry: dict) -> bool:
    """Package: angles compared at 2 decimals although 3 are asked, radii only as the exact
    gold text, and an orthocentre read from the first two numbers whatever follows. Here:
    the same count of numbers as the gold, each within half a unit of 3 decimals."""
    found = re.findall(r"-?\d+(?:\.\d+)?", answer.replace("°", ""))
    gold = re.findall(r"-?\d+(?:\.\d+)?", entry["answer"])
    if re.sub(r"[-\d.,()°\s]", "", answer) or len(found) != len(gold):
        return False
    return all(numbers_match(Fraction(a), Fraction(g), decimals=3) for a, g in zip(found, gold))


def _fraction(answer: str, entry: dict) -> bool:
    """fraction_simplification. Package: reads the first fraction (a LaTeX one only at the
    start), so '$\\frac{2}{3}$ or $\\frac{3}{4}$' passes. Here: the answer is one fraction, in
    lowest terms as asked, plain or LaTeX, with or without $ signs."""
    s = re.sub(r"\s", "", answer).strip("$")
    m = re.fullmatch(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", s) or re.fullmatch(r"(-?\d+)/(\d+)", s)
    meta = entry["metadata"]
    return m is not None and (int(m.group(1)), int(m.group(2))) == (meta["simplified_numerator"], meta["simplified_denominator"])


def _weekday_or_package(answer: str, entry: dict) -> bool | None:
    """calendar_arithmetic. Package: a weekday only in title case ('monday' scores 0.05)."""
    return same_text(answer, entry["answer"]) if entry["answer"].istitle() and entry["answer"].isalpha() else None


REPLACED: dict[str, Callable[[str, dict], Any]] = {
    "coin_flip": _coin_flip,
    "decimal_arithmetic": _decimal_arithmetic,
    "number_format": _number_format,
    "figlet_font": _figlet_font,
    "advanced_geometry": _advanced_geometry,
    "fraction_simplification": _fraction,
    "calendar_arithmetic": _weekday_or_package,  # None: the package decides
    # Package: per-letter partial credit that can sum past 1 with an extra letter.
    "spell_backward": lambda a, e: same_text(a, e["answer"]),
    # Package: partial credit that reaches 1 with extra words appended.
    "letter_jumble": lambda a, e: normalize_text(a).split() == normalize_text(e["answer"]).split(),
    # Package: exact string only, so lower case fails; the sentence itself is the answer.
    "emoji_mystery": lambda a, e: same_text(a, e["answer"]),
}


def _grid_shape(answer: str, entry: dict) -> bool:
    """game_of_life. Package: scores the gold's cells only, so extra rows or columns pass."""
    a, g = json.loads(answer), json.loads(entry["answer"])
    return isinstance(a, list) and len(a) == len(g) and all(isinstance(r, list) and len(r) == len(s) for r, s in zip(a, g))


def _no_repeats(answer: str, entry: dict) -> bool:
    """palindrome_partitioning. Package: compares sets, so a partition listed twice passes."""
    parts = [tuple(p) for p in json.loads(answer)]
    return len(parts) == len(set(parts))


def _two_decimals(answer: str, entry: dict) -> bool:
    """pool_matrix. Package: 1% relative tolerance although 2 decimals are asked."""
    a, g = answer.strip().splitlines(), entry["answer"].strip().splitlines()
    if len(a) != len(g):
        return False
    for x, y in zip(a, g):
        xs, ys = x.split(), y.split()
        if len(xs) != len(ys) or not all(_close(u, v, 2) for u, v in zip(xs, ys)):
            return False
    return True


def _close(a: str, g: str, decimals: int) -> bool:
    x, y = parse_number(a), parse_number(g)
    return x is not None and y is not None and numbers_match(x, y, decimals)


def _puzzle_letters(answer: str, entry: dict) -> bool:
    """cryptarithm. Package: ignores letters that are not in the puzzle and letters given twice."""
    letters = [pair.split("=")[0].strip() for pair in answer.split(",")]
    return sorted(letters) == sorted(entry["metadata"]["letters"])


def _duration(answer: str, entry: dict) -> bool:
    """time_intervals. Package: reads the first word as the day count and the first time
    after a comma, whatever follows ('5 days, 01:00, 02:00' passes). Here: one duration."""
    kind, s = entry["metadata"]["task_type"], answer.strip().lower()
    clock = r"\d+:\d\d(:\d\d(\.\d+)?)?"
    if kind == "date":
        return re.fullmatch(r"-?\d+( days?)?", s) is not None
    return re.fullmatch(clock if kind.startswith("time") else rf"-?\d+ days?, {clock}", s) is not None


ALSO_REQUIRED: dict[str, Callable[[str, dict], bool]] = {
    # Package: exp(-distance) with the distance to 'nan' being nan, and min(1.0, nan) == 1.0.
    "complex_arithmetic": lambda a, e: not re.search(r"nan|inf", a.lower()),
    "game_of_life": _grid_shape,
    "palindrome_partitioning": _no_repeats,
    "pool_matrix": _two_decimals,
    "cryptarithm": _puzzle_letters,
    "time_intervals": _duration,
    # Package: any sorted list within 1 of every gold number.
    "number_sorting": lambda a, e: same_answer(a, e["answer"]),
}


def check(name: str, answer: str, entry: dict, package_score: Callable[[str], float], default_verifier: bool) -> float:
    """The verdict on a tidied answer: r1ci's check, the package's, or both (see the module doc)."""
    if name in REPLACED:
        ours = REPLACED[name](answer, entry)
        if ours is not None:
            return float(ours)
    elif default_verifier:  # the package's base class: exact string, or a fraction for containing it
        return float(_same_as_gold(name, answer, entry["answer"]))
    if name in SAFE and not SAFE[name](answer):
        return 0.0
    value = package_score(answer)
    if name in ALSO_REQUIRED and value > 0 and not ALSO_REQUIRED[name](answer, entry):
        return 0.0
    return value
