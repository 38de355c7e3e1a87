"""The task interface: deterministic instances from a seed, and a verifier for answers.

Every one of the 144 tasks (SymBench, BIG-Bench-Hard, Reasoning-Gym) and the toy tasks
used in tests implement `Task`; the registry (`r1ci.tasks`) looks them up by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

FAMILIES = ("symbench", "bbh", "reasoning_gym")
KINDS = ("execution", "planning", "reasoning")


@dataclass(frozen=True)
class Instance:
    """One question. `id` is stable: "task/seed/index"."""

    task: str
    seed: int
    index: int
    question: str
    answer: str | None  # gold answer text; None when only a validator can judge
    data: dict[str, Any] = field(default_factory=dict)  # validator data (JSON-serializable)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.task}/{self.seed}/{self.index}"


class Task:
    """A task family member. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    family: ClassVar[str]
    kind: ClassVar[str]  # execution, planning or reasoning

    def generate(self, seed: int, n: int, difficulty: int = 1) -> list[Instance]:
        """`n` distinct instances, identical for the same (seed, n, difficulty)."""
        raise NotImplementedError

    def score(self, answer: str | None, instance: Instance) -> float:
        """Score in [0, 1] of the payload of <<<...>>> (already extracted); None scores 0."""
        raise NotImplementedError

    def pool_size(self) -> int | None:
        """Distinct questions the task has when source data fixes them (BBH), else None (generated)."""
        return None

    def reference_solution(self, instance: Instance) -> str | None:
        """A Python program whose printed output is a correct answer, or None if there is none."""
        return None
