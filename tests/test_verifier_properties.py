"""Properties every one of the 144 verifiers has, on many instances of each (issue 16).

RL optimises whatever the verifier rewards, so for every task, judged the way RL judges
(`rewards.score`, the answer in <<<...>>>):
- the gold answer is correct, and so are fair reformattings of it: letter case, whitespace,
  surrounding quotes, a trailing full stop, list spacing, "(A)" written as "A";
- perturbed answers are wrong: another option, a number off by one unit of the stated
  precision, a list with an extra or a missing element, a hedge that names two options,
  the gold wrapped in nested markers;
- bad input (empty, binary, huge, deeply nested, code) scores 0, and the task's own
  `score` never raises on it, nor runs it.
Where a perturbation can still be a right answer (many right answers, or content that a
duplicate does not change), the task is named below with the reason.
"""

from __future__ import annotations

import ast
import functools
import re
from decimal import Decimal
from pathlib import Path

import pytest

from r1ci import protocol, rewards
from r1ci.config import ProtocolConfig, RewardConfig
from r1ci.tasks import generate_instances, get_task, suite_names
from r1ci.tasks.answers import parse_number
from r1ci.trajectory import Trajectory, Turn

FIXTURES = Path(__file__).resolve().parent / "fixtures"
P, R = ProtocolConfig(), RewardConfig()
SEED = 3
INSTANCES = {"symbench": 10, "bbh": 10, "reasoning_gym": 6}  # BBH data tasks: the whole fixture pool
SLOW_TO_GENERATE = {"sokoban": 1}  # seconds an instance: the package searches for a solvable puzzle

# Many answers are right (the verifier checks them against the rules), so a duplicated
# element can still be right: a repeated waypoint is the same trajectory.
DUPLICATE_IS_RIGHT = {
    "path_plan": "a repeated waypoint leaves the trajectory unchanged",
    "knights_knaves": "naming a person's role twice states the same assignment",
    "jugs": "a plan is right when a jug ends at the target, which a repeated last pour can keep",
    "sokoban": "moves after the last box is placed can leave the puzzle solved",
}
# The verifier checks the rules, and many answers obey them: a changed number can be another right answer.
MANY_RIGHT = {
    "permutations_and_combinations", "constrained_linear_arrangement", "logic_puzzle", "letter_logic_diagram",
    "standard_sudoku", "eight_queens", "path_plan", "blocksworld", "boxlift", "boxnet", "game24",
    "combinatorial_calculation", "cryptarithm", "countdown", "jugs", "palindrome_generation", "shortest_path",
    "sokoban", "word_ladder", "quantum_lock", "n_queens", "tsumego",
}  # fmt: skip
# Spaces only separate the symbols: ']]' is '] ]'.
SPACES_ARE_FORMAT = {"dyck_languages"}
# Letter case is content: a program's exact output.
CASE_IS_CONTENT = {"bf"}
_FLIPS = {"yes": "No", "no": "Yes", "true": "False", "false": "True", "valid": "invalid", "invalid": "valid"}


@pytest.fixture(autouse=True)
def bigbench_fixture(monkeypatch):
    from r1ci.tasks import bbh

    monkeypatch.setattr(bbh, "_DATA_DIR", FIXTURES)


@functools.lru_cache(maxsize=None)
def cases(name: str) -> list:
    task = get_task(name)
    return generate_instances(name, SEED, SLOW_TO_GENERATE.get(name, INSTANCES[task.family]))


def correct(name: str, answer: str, inst, raw: bool = False) -> bool:
    """RL's verdict on `answer` written as the model's final answer (`raw`: as <<<answer>>>
    even where that runs into the closing marker, as in '<<<) >>>>')."""
    text = f"<<<{answer}>>>" if raw else protocol.format_answer(answer, P)
    traj = Trajectory(name, inst.id, "g", [], turns=[Turn(f"Done.\n{text}")])
    return rewards.score(traj, get_task(name), inst, R, P).correct


# --------------------------------------------------------------------------- perturbations


def split_items(text: str) -> tuple[str, str, list[str], str] | None:
    """(opening bracket, separator, items, closing bracket) of a list-like answer, split at
    its top level: a bracketed list, rows on lines, or items joined by ',', '→', '×' or spaces."""
    s = text.strip()
    head = tail = ""
    if len(s) >= 2 and s[0] + s[-1] in ("[]", "()"):
        head, tail, s = s[0], s[-1], s[1:-1]
    for sep in ("\n", ",", " → ", " × ", " "):
        parts = _top_level_split(s, sep)
        if len(parts) > 1:
            joiner = sep + (" " if sep == "," and ", " in s else "")
            return head, joiner, [p.strip() if sep != "\n" else p for p in parts], tail
    return None


def _top_level_split(s: str, sep: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    quote = None
    while i < len(s):
        ch = s[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return [p for p in parts if p.strip()] if sep == " " else parts


def reshape(gold: str) -> str | None:
    """The same cells in one row: a grid or nested list of another shape (None if flat)."""
    if "\n" in gold.strip():
        return " ".join(gold.split())
    try:
        value = ast.literal_eval(gold)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, list) or len(value) < 2 or not any(isinstance(x, (list, str)) for x in value):
        return None
    if all(isinstance(x, str) for x in value):  # rows written as strings (single characters are no rows)
        if all(len(x) < 2 for x in value):
            return None
        return repr(["".join(value)])
    flat = [y for x in value for y in (x if isinstance(x, list) else [x])]
    return repr([flat]) if all(isinstance(x, list) for x in value) else repr(flat)


def precision_unit(question: str, gold: str) -> Decimal:
    """One unit of the precision the question states, else of the gold's last digit."""
    q = question.lower()
    m = re.search(r"(\d+) decimal places?", q) or re.search(r"to (\d+) decimals", q)
    if m:
        return Decimal(1).scaleb(-int(m.group(1)))
    if "to the cent" in q:
        return Decimal("0.01")
    m = re.search(r"(\d+) significant (?:figures|digits)", q)
    g = Decimal(str(parse_number(gold).numerator)) / Decimal(str(parse_number(gold).denominator))
    if m and g != 0:
        return Decimal(1).scaleb(g.adjusted() - int(m.group(1)) + 1)
    digits = re.search(r"\.(\d+)", gold.split("e")[0].split("E")[0])
    exp = int(re.search(r"[eE]([+-]?\d+)", gold).group(1)) if re.search(r"[eE]", gold) else 0
    return Decimal(1).scaleb(exp - (len(digits.group(1)) if digits else 0))


def off_by_one_unit(question: str, gold: str) -> list[str]:
    """The gold number plus and minus one unit of its precision (fractions: numerator +- 1)."""
    s = gold.strip()
    m = (
        re.fullmatch(r"()(-?\d+)( [a-z]+)", s)  # '5 days'
        or re.fullmatch(r"(\$\\d?frac\{)(\d+)(\}\{\d+\}\$)", s)  # a LaTeX fraction
        or re.fullmatch(r"(\$)(-?\d+)(/\d+\$)", s)
    )
    if m:  # the number is the answer, the rest its unit or notation
        head, number, tail = m.groups()
        return [f"{head}{int(number) + 1}{tail}", f"{head}{int(number) - 1}{tail}"]
    if re.fullmatch(r"-?\d+/\d+", s):
        num, den = s.split("/")
        return [f"{int(num) + 1}/{den}", f"{int(num) - 1}/{den}"]
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
        return []
    value = Decimal(s)
    unit = max(precision_unit(question, s), Decimal(1).scaleb(value.adjusted() - 12))  # digits past 13 may be float noise
    return [format(value + unit, "f"), format(value - unit, "f")]


def fair_variants(name: str, inst, gold: str) -> list[str]:
    out = [f"  {gold}\n", f"{gold}.", f"'{gold}'" if '"' in gold else f'"{gold}"']
    if " " in gold.strip() and "\n" not in gold:
        out.append(re.sub(r" +", "  ", gold))  # spacing
    if name in SPACES_ARE_FORMAT:
        out.append(gold.replace(" ", ""))
    if name not in CASE_IS_CONTENT and re.search(r"[A-Za-z]", gold):
        out.append(gold.lower() if gold != gold.lower() else gold.upper())
    items = gold.strip("[]()").split(",")
    if len(items) > 1 and (gold[:1] in "[(" or all(" " not in i.strip() for i in items)):  # a list, not prose
        out.append(re.sub(r",\s+", ",", gold) if re.search(r",\s", gold) else gold.replace(",", ", "))
    m = re.fullmatch(r"\(([A-Z])\)", gold)
    if m:
        letter = m.group(1)
        out += [letter, f"({letter.lower()})", f"{letter})", f"Option {letter}", f"({letter}) {inst.data['option']}"]
    return out


def wrong_variants(name: str, inst, gold: str) -> list[str]:
    out = [f"<<<{gold}>>>"]  # nested markers: the extracted answer still holds them
    m = re.fullmatch(r"\(([A-Z])\)", gold)
    if m:
        letter, options = m.group(1), inst.data["options"]
        other = "A" if letter != "A" else "B"
        out += [f"({other})", f"({letter}) or ({other})", f"({other}) or ({letter})", f"{letter}, {other}"]
        out.append(options[ord(other) - ord("A")])
        return out
    if gold.strip().lower() in _FLIPS:
        flip = _FLIPS[gold.strip().lower()]
        return out + [flip, f"{gold} or {flip}", f"{flip} or {gold}"]
    numbers = off_by_one_unit(inst.question, gold)
    if numbers:
        return out + numbers + [f"{gold} or {numbers[0]}"]
    found = re.search(r"-?\d+(\.\d+)?", gold)
    if found and name not in MANY_RIGHT:  # a number inside a list, grid or plan, one unit off
        out += [gold[: found.start()] + n + gold[found.end() :] for n in off_by_one_unit(inst.question, found.group())]
    reshaped = reshape(gold)
    if reshaped is not None and name not in MANY_RIGHT:
        out.append(reshaped)
    parts = split_items(gold)
    if parts is not None:
        head, sep, items, tail = parts
        out.append(head + sep.join(items[:-1]) + tail)  # a missing element
        if name not in DUPLICATE_IS_RIGHT:
            out.append(head + sep.join(items + items[-1:]) + tail)  # an extra element
        first = off_by_one_unit(inst.question, items[0])
        if first and name not in DUPLICATE_IS_RIGHT:
            out.append(head + sep.join([first[0], *items[1:]]) + tail)
        return out
    last = max((i for i, c in enumerate(gold) if c.isalnum()), default=len(gold) - 1)
    out.append(gold[:last] + gold[last + 1 :])  # a letter less
    if name not in DUPLICATE_IS_RIGHT:
        out += [gold[: last + 1] + gold[last] + gold[last + 1 :], f"{gold} {gold}"]  # a letter more, the answer twice
    return out


BAD_INPUTS = [
    "", "   ", "\x00\x01\x1b[2J\xff\ufffd", "\ud800\udc00", "<<<<<<a>>>>>>", "<<<>>>", "9" * 20_000, "[" * 5_000,
    "(" * 3_000 + ")" * 3_000, "[[[[]]]]", "{'a': [1, {2: 3}]}", "1e99999999", "10**10**10", "2**2**2**2**2**2",
    "nan", "-inf", "None", "x" * 20_000, "a, " * 5_000,
]  # fmt: skip


# --------------------------------------------------------------------------- the properties


@pytest.mark.parametrize("name", suite_names())
def test_gold_and_fair_reformattings_are_correct(name):
    for inst in cases(name):
        gold = inst.answer
        assert gold is not None and correct(name, gold, inst), f"{inst.id}: gold {gold!r} rejected"
        assert correct(name, gold, inst, raw=True), f"{inst.id}: gold {gold!r} rejected when written <<<{gold}>>>"
        for fair in fair_variants(name, inst, gold):
            assert correct(name, fair, inst), f"{inst.id}: fair reformatting {fair!r} of gold {gold!r} rejected"


@pytest.mark.parametrize("name", suite_names())
def test_perturbed_answers_are_wrong(name):
    for inst in cases(name):
        for wrong in wrong_variants(name, inst, inst.answer):
            assert not correct(name, wrong, inst), f"{inst.id}: wrong answer {wrong!r} accepted (gold {inst.answer!r})"


@pytest.mark.parametrize("name", suite_names())
def test_bad_input_scores_zero_and_never_raises_or_runs(name, tmp_path):
    task, inst = get_task(name), cases(name)[0]
    marker = tmp_path / "ran"
    code = [f"__import__('pathlib').Path({str(marker)!r}).write_text('x')", f"open({str(marker)!r}, 'w')"]
    for bad in BAD_INPUTS + code:
        value = task.score(bad, inst)  # the task's own verifier: raising is a defect
        assert 0.0 <= value <= 1.0, f"{inst.id}: score {value} for {bad[:40]!r}"
        assert not correct(name, bad, inst), f"{inst.id}: bad input {bad[:40]!r} accepted"
    assert not marker.exists(), f"{name}: the verifier ran the answer as code"
    huge = "1" * 3_000_000  # megabytes never reach the verifier
    assert rewards.verdict(task, huge, inst, R) == 0.0 and not correct(name, huge, inst)
