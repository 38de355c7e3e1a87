"""Toy tasks outside the 144-task suite, reachable by name for tests of the RL loop.

`toy_run_code` shows a short random Python program and asks what it prints: a model gets
it right reliably only by running the code, which is what the interpreter loop rewards.
"""

from __future__ import annotations

import contextlib
import io
import random

from r1ci.tasks.answers import same_answer
from r1ci.tasks.base import Instance, Task


def _program(rng: random.Random, difficulty: int) -> str:
    names = ["a", "b", "c", "d", "e"][: 2 + difficulty]
    lines = [f"{v} = {rng.randint(2, 99)}" for v in names]
    expr = names[0]
    for v in names[1:]:
        expr = f"({expr} {rng.choice('+-*')} {v})"
    lines.append(f"print({expr} % {rng.randint(7, 997)} + {rng.randint(100, 999)} * {rng.randint(11, 97)})")
    return "\n".join(lines)


def run_program(program: str) -> str:
    """Stdout of a trusted generated program (our own arithmetic, never model text)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(program, {})  # noqa: S102 - the program is produced by _program above
    return out.getvalue().strip()


def _expression(rng: random.Random, difficulty: int) -> str:
    return f"print({rng.randint(2, 9)} {rng.choice('+-*')} {rng.randint(2, 9)} {rng.choice('+-*')} {rng.randint(2, 9)})"


class ToyRunCode(Task):
    name = "toy_run_code"
    family = "toy"
    kind = "execution"
    make_program = staticmethod(_program)

    def generate(self, seed: int, n: int, difficulty: int = 1) -> list[Instance]:
        rng = random.Random(f"{self.name}/{seed}/{difficulty}")
        out: list[Instance] = []
        seen: set[str] = set()
        while len(out) < n:
            program = self.make_program(rng, difficulty)
            if program in seen:
                continue
            seen.add(program)
            question = (
                "What does this Python program print?\n\n```\n" + program + "\n```\n\n"
                "Give the printed output as <<<output>>>."
            )
            out.append(
                Instance(self.name, seed, len(out), question, run_program(program), data={"program": program},
                         metadata={"difficulty": difficulty})
            )
        return out

    def score(self, answer: str | None, instance: Instance) -> float:
        return float(same_answer(answer, instance.answer))

    def reference_solution(self, instance: Instance) -> str | None:
        return instance.data["program"]


class ToyRunExpression(ToyRunCode):
    """One line, three one-digit numbers (at most 729 programs): small enough for a tiny
    model to learn within a CPU test, used to show that RL raises the reward."""

    name = "toy_run_expression"
    make_program = staticmethod(_expression)


TOY_TASKS: list[type[Task]] = [ToyRunCode, ToyRunExpression]
