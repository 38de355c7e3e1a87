"""The 84 Reasoning-Gym tasks: one adapter over the `reasoning-gym` package's generators and verifiers.

Generation is `reasoning_gym.create_dataset(name, size, seed)`; scoring is the dataset's own
`score_answer` where it is right, and r1ci's check where it is too lenient or unsafe
(`r1ci.tasks.rg_checks` says where and why). An instance keeps (seed, index) in `data`, enough to rebuild the exact
entry later in any process, so a verifier never depends on the generating process's memory.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import io
import warnings
from typing import Any

from r1ci.tasks import rg_checks
from r1ci.tasks.base import Instance, Task

# (dataset name, kind). 84 of the package's 106 datasets, in the paper's mix: arithmetic,
# algorithmic, logic, games and puzzles, graphs, grids, cognition.
# Left out (and why):
#   answer is None (several valid solutions, checked only against metadata): boxnet,
#     graph_color, propositional_logic, rubiks_cube, rush_hour;
#   broken verifier (accepts any non-empty answer): game_of_life_halting;
#   too slow to make 200 instances on a CPU (>= 25 s): knight_swap, intermediate_integration, futoshiki,
#     number_sequence;
#   fewer than 200 distinct questions in 1000 draws: tower_of_hanoi (90);
#   very long questions or bundled external data: codeio, arc_agi, rearc;
#   same name as a SymBench or BBH task: string_insertion, string_splitting, string_synthesis, word_sorting;
#   near-copies of SymBench tasks: puzzle24 (game24), gsm_symbolic (gsm), sudoku (standard_sudoku);
#   composite (a mixer of other datasets, not a task).
REASONING_GYM_TASKS: list[tuple[str, str]] = [
    # arithmetic and numbers
    ("basic_arithmetic", "execution"),
    ("bitwise_arithmetic", "execution"),
    ("chain_sum", "execution"),
    ("complex_arithmetic", "execution"),
    ("decimal_arithmetic", "execution"),
    ("decimal_chain_sum", "execution"),
    ("fraction_simplification", "execution"),
    ("gcd", "execution"),
    ("lcm", "execution"),
    ("power_function", "execution"),
    ("prime_factorization", "execution"),
    ("products", "execution"),
    ("count_bits", "execution"),
    ("count_primes", "execution"),
    ("number_format", "execution"),
    ("base_conversion", "execution"),
    ("calendar_arithmetic", "execution"),
    ("time_intervals", "execution"),
    ("dice", "execution"),
    ("leg_counting", "reasoning"),
    ("number_filtering", "execution"),
    ("number_sorting", "execution"),
    ("polynomial_equations", "execution"),
    ("polynomial_multiplication", "execution"),
    ("simple_equations", "execution"),
    ("simple_integration", "execution"),
    ("simple_geometry", "reasoning"),
    ("advanced_geometry", "execution"),
    # algorithmic: strings, lists, matrices, programs
    ("ab", "execution"),
    ("bf", "execution"),
    ("binary_alternation", "execution"),
    ("binary_matrix", "execution"),
    ("caesar_cipher", "execution"),
    ("cryptarithm", "planning"),
    ("group_anagrams", "execution"),
    ("isomorphic_strings", "execution"),
    ("letter_counting", "execution"),
    ("letter_jumble", "reasoning"),
    ("manipulate_matrix", "execution"),
    ("palindrome_generation", "execution"),
    ("palindrome_partitioning", "execution"),
    ("pool_matrix", "execution"),
    ("ransom_note", "execution"),
    ("rotate_matrix", "execution"),
    ("rotten_oranges", "execution"),
    ("spell_backward", "execution"),
    ("spiral_matrix", "execution"),
    ("string_manipulation", "execution"),
    ("word_sequence_reversal", "execution"),
    ("sentence_reordering", "reasoning"),
    ("game_of_life", "execution"),
    # logic
    ("aiw", "reasoning"),
    ("circuit_logic", "reasoning"),
    ("knights_knaves", "reasoning"),
    ("self_reference", "reasoning"),
    ("syllogism", "reasoning"),
    ("zebra_puzzles", "reasoning"),
    ("coin_flip", "reasoning"),
    # graphs
    ("course_schedule", "execution"),
    ("family_relationships", "reasoning"),
    ("largest_island", "execution"),
    ("shortest_path", "planning"),
    ("path_star", "planning"),
    # games and puzzles
    ("countdown", "planning"),
    ("jugs", "planning"),
    ("kakurasu", "planning"),
    ("maze", "planning"),
    ("mini_sudoku", "planning"),
    ("n_queens", "planning"),
    ("sokoban", "planning"),
    ("survo", "planning"),
    ("tsumego", "planning"),
    ("word_ladder", "planning"),
    ("quantum_lock", "planning"),
    ("mahjong_puzzle", "reasoning"),
    # cognition: patterns, grids, perception
    ("acre", "reasoning"),
    ("arc_1d", "reasoning"),
    ("color_cube_rotation", "reasoning"),
    ("emoji_mystery", "execution"),
    ("figlet_font", "reasoning"),
    ("list_functions", "reasoning"),
    ("needle_haystack", "reasoning"),
    ("rectangle_count", "reasoning"),
    ("modulo_grid", "reasoning"),
]

# Every dataset is built with this one size, so "task/seed/index" names the same question
# whatever n is asked (some generators, e.g. acre, draw their items from a size-dependent pool).
POOL_SIZE = 2048


@functools.lru_cache(maxsize=256)
def _dataset(name: str, seed: int) -> Any:
    import reasoning_gym

    with _quiet():
        return reasoning_gym.create_dataset(name, size=POOL_SIZE, seed=seed)


@contextlib.contextmanager
def _quiet():
    """Keep the package's side effects in: progress dots on stdout (bf), and the process-wide
    decimal precision that decimal_arithmetic sets to 12 digits."""
    with contextlib.redirect_stdout(io.StringIO()), decimal.localcontext():
        yield


@functools.lru_cache(maxsize=65536)
def _entry(name: str, seed: int, index: int) -> dict:
    with _quiet():
        return _dataset(name, seed)[index]


class ReasoningGymTask(Task):
    """One Reasoning-Gym dataset behind the Task interface."""

    family = "reasoning_gym"

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind

    def generate(self, seed: int, n: int, difficulty: int = 1) -> list[Instance]:
        """`n` instances with distinct questions; the package's default config (difficulty is not used)."""
        out: list[Instance] = []
        seen: set[str] = set()
        for index in range(POOL_SIZE):
            if len(out) == n:
                break
            entry = _entry(self.name, seed, index)
            if entry["question"] in seen:
                continue
            seen.add(entry["question"])
            out.append(
                Instance(
                    task=self.name,
                    seed=seed,
                    index=len(out),
                    question=entry["question"],
                    answer=str(entry["answer"]),
                    data={"rg_seed": seed, "rg_index": index},
                    metadata={"source": f"reasoning_gym/{self.name}"},
                )
            )
        if len(out) < n:
            raise RuntimeError(f"reasoning_gym/{self.name}: only {len(out)} distinct questions in {POOL_SIZE} draws (asked {n})")
        return out

    def score(self, answer: str | None, instance: Instance) -> float:
        """The package's verifier on the tidied answer, replaced or tightened where it is too
        lenient or unsafe (`r1ci.tasks.rg_checks`); anything it cannot handle scores 0."""
        from reasoning_gym.dataset import ProceduralDataset

        if answer is None:
            return 0.0
        d = instance.data
        try:
            entry = _entry(self.name, d["rg_seed"], d["rg_index"])
            dataset = _dataset(self.name, d["rg_seed"])
            default = type(dataset).score_answer is ProceduralDataset.score_answer
            with warnings.catch_warnings(), _quiet():  # e.g. numpy's loadtxt warns on empty answers
                warnings.simplefilter("ignore")
                value = rg_checks.check(
                    self.name, rg_checks.tidy(self.name, answer, str(entry["answer"])), entry,
                    lambda a: float(dataset.score_answer(answer=a, entry=entry)), default,
                )  # fmt: skip
        except Exception:  # e.g. prime_factorization raises ValueError on non-numeric text
            return 0.0
        return min(max(value, 0.0), 1.0)


def reasoning_gym_tasks() -> list[Task]:
    return [ReasoningGymTask(name, kind) for name, kind in REASONING_GYM_TASKS]
