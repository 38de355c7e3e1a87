"""SymBench arithmetic tasks: big products, user-defined operators, 24, ordered target
expressions and letter equations."""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

from r1ci.tasks.symbench.common import SymbenchTask, eval_arithmetic, number_equal, numbers_in


# ---------------------------------------------------------------- number_multiply


def solve_number_multiply(data):
    product = 1
    for f in data["factors"]:
        product *= f
    return str(product)


class NumberMultiply(SymbenchTask):
    name = "number_multiply"
    kind = "execution"
    solver = (solve_number_multiply,)

    def make(self, rng, difficulty):
        count = 2 + rng.randint(0, 1) + difficulty // 2
        factors = [rng.randint(10 ** (d - 1), 10**d - 1) for d in (rng.randint(3, 3 + difficulty) for _ in range(count))]
        data = {"factors": factors}
        q = f"Compute {' * '.join(map(str, factors))}. Answer with the exact integer only, like <<<123456>>>."
        return q, data, self.solve(data)

    def check(self, answer, instance):
        return float(number_equal(answer, instance.answer))


# ---------------------------------------------------------------- new_operator

_OPERATOR_SYMBOLS = ["#", "@", "&", "$", "~", "%"]
_OPERATOR_BODIES = ["a + 2*b", "2*a - b", "a*b - a", "a*b + b", "3*a + b", "a - 3*b", "(a + b)*2", "a*a - b", "a + b*b", "(a - b)*b"]


def eval_custom_expression(expr, ops):
    """Evaluate tokens of integers, parentheses and custom binary operators (all of equal
    precedence, left to right); each operator is defined by a Python expression in a, b."""
    tokens = re.findall(r"\d+|[()]|[^\s\d()]", expr)
    pos = 0

    def atom():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = chain()
            pos += 1  # the closing parenthesis
            return value
        return int(tok)

    def chain():
        nonlocal pos
        value = atom()
        while pos < len(tokens) and tokens[pos] in ops:
            op = tokens[pos]
            pos += 1
            value = eval(ops[op], {}, {"a": value, "b": atom()})
        return value

    return chain()


def solve_new_operator(data):
    return str(eval_custom_expression(data["expression"], data["operators"]))


class NewOperator(SymbenchTask):
    name = "new_operator"
    kind = "execution"
    solver = (eval_custom_expression, solve_new_operator)

    def make(self, rng, difficulty):
        symbols = rng.sample(_OPERATOR_SYMBOLS, 1 + min(difficulty, 3))
        ops = {s: rng.choice(_OPERATOR_BODIES) for s in symbols}

        def build(depth):
            if depth == 0 or rng.random() < 0.3:
                return str(rng.randint(1, 9))
            return f"({build(depth - 1)} {rng.choice(symbols)} {build(depth - 1)})"

        expr = f"{build(1 + difficulty)} {rng.choice(symbols)} {build(1)}"
        data = {"operators": ops, "expression": expr}
        defs = "\n".join(f"a {s} b = {body}" for s, body in ops.items())
        q = (
            f"New operators are defined as follows (a and b are integers):\n{defs}\n"
            "All these operators have the same precedence and are applied from left to right; parentheses "
            f"come first.\nCompute {expr}.\nAnswer with the integer only, like <<<42>>>."
        )
        return q, data, self.solve(data)

    def check(self, answer, instance):
        return float(number_equal(answer, instance.answer))


# ---------------------------------------------------------------- game24


def search_expression(values, target):
    """An expression (string) combining all (float, text) pairs to `target`, or None."""
    if len(values) == 1:
        return values[0][1] if abs(values[0][0] - target) < 1e-6 else None
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            (a, ea), (b, eb) = values[i], values[j]
            rest = [values[k] for k in range(len(values)) if k not in (i, j)]
            options = [(a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (b - a, f"({eb} - {ea})"), (a * b, f"({ea} * {eb})")]
            if b != 0:
                options.append((a / b, f"({ea} / {eb})"))
            if a != 0:
                options.append((b / a, f"({eb} / {ea})"))
            for value, text in options:
                found = search_expression(rest + [(value, text)], target)
                if found:
                    return found
    return None


def solve_game24(data):
    found = search_expression([(float(n), str(n)) for n in data["numbers"]], data["target"])
    return found[1:-1] if found and found.startswith("(") else found


class Game24(SymbenchTask):
    name = "game24"
    kind = "planning"
    solver = (search_expression, solve_game24)

    def make(self, rng, difficulty):
        answer = None
        while answer is None:
            numbers = sorted(rng.randint(1, 11 + 2 * difficulty) for _ in range(4))  # 1-13: the classic deck
            answer = _game24_cached(tuple(numbers))
        data = {"numbers": numbers, "target": 24}
        q = (
            f"Use the numbers {numbers}, each exactly once, with +, -, *, / and parentheses to make 24. "
            "Answer with the expression only, like <<<(1 + 2 + 3) * 4>>>."
        )
        return q, data, answer

    def check(self, answer, instance):
        value, used = eval_arithmetic(answer)
        return float(value == instance.data["target"] and sorted(used) == sorted(instance.data["numbers"]))


_GAME24_CACHE: dict[tuple[int, ...], str | None] = {}


def _game24_cached(numbers: tuple[int, ...]) -> str | None:
    if numbers not in _GAME24_CACHE:
        _GAME24_CACHE[numbers] = solve_game24({"numbers": list(numbers), "target": 24})
    return _GAME24_CACHE[numbers]


# ---------------------------------------------------------------- combinatorial_calculation


def ordered_expressions(numbers):
    """For every value reachable by inserting + - * / and parentheses between `numbers`
    (order kept), one expression text: {Fraction: str}."""
    if len(numbers) == 1:
        return {Fraction(numbers[0]): str(numbers[0])}
    out = {}
    for cut in range(1, len(numbers)):
        left, right = ordered_expressions(numbers[:cut]), ordered_expressions(numbers[cut:])
        for a, ea in left.items():
            for b, eb in right.items():
                for value, op in ((a + b, "+"), (a - b, "-"), (a * b, "*"), (a / b if b else None, "/")):
                    if value is not None and value not in out:
                        out[value] = f"({ea} {op} {eb})"
    return out


def solve_combinatorial_calculation(data):
    return ordered_expressions(data["numbers"])[Fraction(data["target"])]


class CombinatorialCalculation(SymbenchTask):
    name = "combinatorial_calculation"
    kind = "planning"
    solver = (ordered_expressions, solve_combinatorial_calculation)

    def make(self, rng, difficulty):
        numbers = [rng.randint(1, 12) for _ in range(3 + min(difficulty, 3))]
        expr = str(numbers[0])
        for n in numbers[1:]:
            op = rng.choice("+-*")
            expr = f"({expr} {op} {n})" if rng.random() < 0.5 else f"{expr} {op} {n}"
        value, _ = eval_arithmetic(expr)
        data = {"numbers": numbers, "target": int(value)}
        q = (
            f"Insert the operators +, -, *, / and parentheses between the numbers {numbers}, keeping them in this "
            f"order and using each exactly once, so that the expression equals {int(value)}. "
            f"Answer with the expression only, like <<<(1 + 2) * 3 - 4>>>."
        )
        return q, data, expr

    def check(self, answer, instance):
        value, used = eval_arithmetic(answer)
        return float(value == instance.data["target"] and used == instance.data["numbers"])


# ---------------------------------------------------------------- logical_equation


def holds(constraint, values):
    kind, names, k = constraint["type"], constraint["vars"], constraint["value"]
    xs = [values[v] for v in names]
    if kind == "sum":
        return sum(xs) == k
    if kind == "diff":
        return xs[0] - xs[1] == k
    if kind == "times":
        return xs[0] == k * xs[1]
    if kind == "greater":
        return xs[0] > xs[1]
    raise ValueError(kind)


def solve_logical_equation(data):
    letters = data["letters"]
    for perm in itertools.permutations(data["numbers"]):
        values = dict(zip(letters, perm))
        if all(holds(c, values) for c in data["constraints"]):
            return str(list(perm))
    return None


def constraint_text(c):
    a = c["vars"]
    if c["type"] == "sum":
        return f"{' + '.join(a)} = {c['value']}"
    if c["type"] == "diff":
        return f"{a[0]} - {a[1]} = {c['value']}"
    if c["type"] == "times":
        return f"{a[0]} = {c['value']} * {a[1]}"
    return f"{a[0]} > {a[1]}"


class LogicalEquation(SymbenchTask):
    name = "logical_equation"
    kind = "execution"
    solver = (holds, solve_logical_equation)

    def make(self, rng, difficulty):
        size = 5 + min(difficulty, 2)  # 7 letters = 5040 orders to rule out; more makes generation slow
        letters = [chr(ord("A") + i) for i in range(size)]
        numbers = sorted(rng.sample([1, 2, 3, 5, 6, 7, 9, 10, 12, 14, 15, 16, 20, 24, 28, 30, 36, 45], size))
        truth = dict(zip(letters, rng.sample(numbers, size)))
        candidates = list(itertools.permutations(numbers))
        constraints = []
        while len(candidates) > 1:
            c = self._random_constraint(rng, letters, truth)
            kept = [p for p in candidates if holds(c, dict(zip(letters, p)))]
            if len(kept) < len(candidates):
                constraints.append(c)
                candidates = kept
        data = {"letters": letters, "numbers": numbers, "constraints": constraints}
        listing = "\n".join(f"{i + 1}. {constraint_text(c)}" for i, c in enumerate(constraints))
        q = (
            f"The letters {', '.join(letters)} stand for the numbers {numbers}, each letter a different number. "
            f"They satisfy:\n{listing}\nFind the value of every letter. Answer with the values in the order "
            f"{', '.join(letters)} as a list, like <<<{numbers}>>>."
        )
        return q, data, str([truth[x] for x in letters])

    @staticmethod
    def _random_constraint(rng, letters, truth):
        kind = rng.choice(["sum", "sum", "diff", "times", "greater", "sum3"])
        if kind == "sum3":
            names = rng.sample(letters, 3)
            return {"type": "sum", "vars": names, "value": sum(truth[v] for v in names)}
        a, b = rng.sample(letters, 2)
        if kind == "times" and truth[a] % truth[b] == 0:
            return {"type": "times", "vars": [a, b], "value": truth[a] // truth[b]}
        if kind == "greater":
            a, b = (a, b) if truth[a] > truth[b] else (b, a)
            return {"type": "greater", "vars": [a, b], "value": 0}
        if kind == "diff":
            return {"type": "diff", "vars": [a, b], "value": truth[a] - truth[b]}
        return {"type": "sum", "vars": [a, b], "value": truth[a] + truth[b]}

    def check(self, answer, instance):
        values = numbers_in(answer)
        letters = instance.data["letters"]
        if len(values) != len(letters) or sorted(values) != sorted(map(Fraction, instance.data["numbers"])):
            return 0.0
        assignment = dict(zip(letters, values))
        return float(all(holds(c, assignment) for c in instance.data["constraints"]))


TASKS = [NumberMultiply, NewOperator, Game24, CombinatorialCalculation, LogicalEquation]
