"""The 33 SymBench tasks of R1-Code-Interpreter, written as generators and validators in the
project (no downloaded data): each task draws instances from a seed at a difficulty, scores
answers by rules, and ships a reference program that solves its instances by computation."""

from __future__ import annotations

from r1ci.tasks.base import Task
from r1ci.tasks.symbench import arithmetic, constraints, grids, planning, rules, word_problems

_ORDER = [
    "permutations_and_combinations", "logical_equation", "combinatorial_calculation", "eight_queens", "pooling",
    "reversi", "light_puzzles", "new_operator", "mahjong_pattern", "statistical_counting", "synthesis_decomposition",
    "2048", "matrix_transformation", "pattern_recognition", "constrained_linear_arrangement", "string_synthesis",
    "logic_puzzle", "string_insertion", "letter_logic_diagram", "standard_sudoku", "string_deletion_and_modification",
    "string_splitting", "cryptanalysis", "number_multiply", "letters", "game24", "path_plan", "blocksworld",
    "boxlift", "boxnet", "gsm", "counting_and_probability", "geometry",
]  # fmt: skip

_BY_NAME = {t.name: t for m in (arithmetic, constraints, grids, planning, rules, word_problems) for t in m.TASKS}

SYMBENCH_TASKS: list[type[Task]] = [_BY_NAME[name] for name in _ORDER]

__all__ = ["SYMBENCH_TASKS"]
