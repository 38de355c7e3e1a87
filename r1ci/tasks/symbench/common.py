"""What every SymBench task shares: the generation loop, lenient answer parsing, a safe
arithmetic evaluator, and the way a task's solver functions become a standalone program.

A task writes its solver as plain module-level functions (stdlib only, imports from
`SOLVER_HEADER`); `reference_program` pastes their source with the instance data, so the
program the teacher runs is the code the tests and the generators use.
"""

from __future__ import annotations

import ast
import inspect
import json
import random
import re
from fractions import Fraction
from typing import Any, Callable, ClassVar

from r1ci.tasks.answers import numbers_match, parse_literal, parse_number, same_structure, unwrap
from r1ci.tasks.base import Instance, Task

SOLVER_HEADER = "import itertools, math, json, re, collections, heapq\nfrom fractions import Fraction\n"
MAX_ATTEMPTS_PER_INSTANCE = 60


def reference_program(functions: tuple[Callable, ...], data: dict[str, Any]) -> str:
    """A standalone program: the functions' source, then `print(<last function>(data))`."""
    sources = "\n\n".join(inspect.getsource(f) for f in functions)
    entry = functions[-1].__name__
    return f"{SOLVER_HEADER}\n{sources}\n\nprint({entry}(json.loads({json.dumps(data)!r})))\n"


class SymbenchTask(Task):
    """A SymBench task: subclasses implement `make` and, unless the gold text compares, `check`.

    `solver` holds the functions of the reference solution; the last one takes the
    instance data and returns the answer text (the payload of <<<...>>>).
    """

    family: ClassVar[str] = "symbench"
    solver: ClassVar[tuple[Callable, ...]] = ()

    def make(self, rng: random.Random, difficulty: int) -> tuple[str, dict[str, Any], str | None]:
        """One candidate instance: (question, validator data, gold answer or None)."""
        raise NotImplementedError

    def check(self, answer: str, instance: Instance) -> float:
        """Score of a non-empty answer; may raise on garbage (score turns that into 0)."""
        return float(same_value(answer, instance.answer))

    def solve(self, data: dict[str, Any]) -> str:
        return self.solver[-1](data)

    def generate(self, seed: int, n: int, difficulty: int = 1) -> list[Instance]:
        if difficulty < 1:
            raise ValueError(f"{self.name}: difficulty must be >= 1, got {difficulty}")
        rng = random.Random(f"symbench/{self.name}/{seed}/{difficulty}")
        seen: set[str] = set()
        out: list[Instance] = []
        for _ in range(MAX_ATTEMPTS_PER_INSTANCE * n + 100):
            if len(out) == n:
                return out
            question, data, answer = self.make(rng, difficulty)
            if question in seen:
                continue
            seen.add(question)
            out.append(Instance(self.name, seed, len(out), question, answer, data, {"difficulty": difficulty}))
        if len(out) == n:
            return out
        raise ValueError(
            f"{self.name}: only {len(out)} distinct instances exist at difficulty {difficulty}; "
            f"ask for fewer than {n} or raise the difficulty"
        )

    def score(self, answer: str | None, instance: Instance) -> float:
        if answer is None or not str(answer).strip():
            return 0.0
        try:
            return max(0.0, min(1.0, float(self.check(unwrap(answer), instance))))
        except Exception:  # garbage answers of any shape score 0, never raise
            return 0.0

    def reference_solution(self, instance: Instance) -> str | None:
        return reference_program(self.solver, instance.data) if self.solver else None


# ---------------------------------------------------------------- lenient parsing

_ATOM = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?|[A-Za-z_][A-Za-z_0-9]*|[^\s\[\]\(\)\{\},;'\"]")


def atoms(text: str) -> list[Any]:
    """The answer as a flat sequence of numbers (Fractions) and lower-cased words; brackets,
    commas, quotes and whitespace ignored, so list and grid formats compare leniently."""
    out: list[Any] = []
    for tok in _ATOM.findall(text):
        num = parse_number(tok)
        out.append(num if num is not None else tok.lower())
    return out


def atoms_equal(answer: str, gold: str | None, abs_tol: float = 0.0) -> bool:
    """Same atoms in the same order; numbers compare exactly (0.5 equals 1/2), or within
    `abs_tol` where the task asks for rounded values."""
    if gold is None:
        return False
    a, g = atoms(answer), atoms(gold)
    if len(a) != len(g):
        return False
    for x, y in zip(a, g):
        if isinstance(x, Fraction) and isinstance(y, Fraction):
            if abs(x - y) > abs_tol:
                return False
        elif x != y:
            return False
    return True


def same_value(answer: str, gold: str | None, abs_tol: Fraction = Fraction(0)) -> bool:
    """The answer equals a gold list item by item at every nesting level, so its shape counts
    ([[1, 2], [3, 4]] is not [[1, 2, 3, 4]]); it may be written as a Python/JSON literal or
    as one row per line. Numbers compare exactly or within `abs_tol`, words case-insensitively.
    A gold that is not a list compares by `atoms_equal`."""
    if gold is None:
        return False
    try:
        g = parse_literal(gold)
    except ValueError:
        g = None
    if not isinstance(g, (list, tuple)):
        return atoms_equal(answer, gold, abs_tol)
    return same_structure(literal_or_rows(answer), g, abs_tol)


def literal_or_rows(text: str) -> Any:
    """A list answer: a literal ('[[2, 0], [4, 8]]', '(1, 2)'), else one list of atoms per
    non-empty line ('2, 0\n4, 8'), a single line giving a flat list."""
    try:
        value = parse_literal(text)
        if isinstance(value, (list, tuple)):
            return value
    except ValueError:
        pass
    rows = [atoms(line) for line in text.splitlines()]
    rows = [r for r in rows if r]
    return rows[0] if len(rows) == 1 else rows


def char_rows(text: str, alphabet: str) -> list[str]:
    """A character grid as its rows (upper-cased, only `alphabet`'s characters), written as a
    list of row strings, a list of lists of characters, or one row per line."""
    keep = set(alphabet.upper())
    try:
        value = parse_literal(text)
    except ValueError:
        value = None
    if isinstance(value, (list, tuple)) and all(isinstance(r, (str, list, tuple)) for r in value):
        rows = [r if isinstance(r, str) else "".join(map(str, r)) for r in value]
    else:
        rows = text.splitlines()
    rows = ["".join(c for c in r.upper() if c in keep) for r in rows]
    return [r for r in rows if r]


def chars_equal(answer: str, gold: str | None, alphabet: str) -> bool:
    """Compare character grids/sequences by the characters of `alphabet` only (case-insensitive
    for letters), so rows as strings, lists of strings or lists of characters all match."""
    if gold is None:
        return False
    keep = set(alphabet.lower())
    pick = lambda text: [c for c in text.lower() if c in keep]  # noqa: E731
    return pick(answer) == pick(gold)


def number_equal(answer: str, gold: str | None, decimals: int | None = None) -> bool:
    """The answer holds exactly one number (commas as thousands separators, $ and units
    allowed; fractions such as 3/8 too) and it matches the gold number by `numbers_match`:
    exactly, or within half a unit of `decimals` places where the question asks for them."""
    if gold is None:
        return False
    value, target = parse_number(answer), parse_number(gold)
    if value is None:  # a number with words around it, like "15 cups"
        found = numbers_in(re.sub(r"(?<=\d),(?=\d{3}\b)", "", answer))
        value = found[0] if len(found) == 1 else None
    return value is not None and target is not None and numbers_match(value, target, decimals)


def numbers_in(text: str) -> list[Fraction]:
    return [n for n in (parse_number(t) for t in re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", text)) if n is not None]


def cell_pairs(text: str) -> list[tuple[int, int]]:
    """'[(0, 1), (2, 3)]', '0 1, 2 3' or '[[0,1],[2,3]]' as a list of (row, col) pairs."""
    nums = [int(n) for n in re.findall(r"-?\d+", text)]
    if len(nums) % 2:
        raise ValueError("odd number of coordinates")
    return [(nums[i], nums[i + 1]) for i in range(0, len(nums), 2)]


# ---------------------------------------------------------------- safe arithmetic

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def eval_arithmetic(expr: str) -> tuple[Fraction, list[int]]:
    """Exact value of an expression of integers, + - * / and parentheses, and the integers in
    the order written. Anything else (names, calls, powers, unary minus) raises ValueError."""
    expr = expr.replace("×", "*").replace("x", "*").replace("÷", "/").replace("−", "-")
    expr = max(expr.split("="), key=len)  # "expr = 24" or "24 = expr": the expression is the longer side
    if expr.strip().startswith("["):  # SymBench's token-list form: [4, -, (, 6, *, 9, )]
        expr = re.sub(r"[\[\],'\"]", " ", expr)
    tree = ast.parse(expr.strip(), mode="eval")
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        raise ValueError(f"not allowed in the expression: {ast.dump(node)[:40]}")

    return walk(tree.body), used


def shuffled(rng: random.Random, items: list) -> list:
    items = list(items)
    rng.shuffle(items)
    return items
