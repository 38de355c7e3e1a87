"""The fixed train/test split of the 144 tasks, by task name (the paper's 107 / 37).

Test tasks are never used for training data. Changing the list changes SPLIT_VERSION, so
results and exported datasets name the split they were made with.
"""

from __future__ import annotations

SPLIT_VERSION = "v1"

# 37 test tasks, spread over the families in proportion: 9 SymBench, 7 BBH, 21 Reasoning-Gym,
# with each family's kinds (execution, planning, reasoning) represented.
TEST_TASKS: frozenset[str] = frozenset(
    [
        # SymBench (9 of 33)
        "eight_queens",
        "2048",
        "letter_logic_diagram",
        "string_deletion_and_modification",
        "cryptanalysis",
        "game24",
        "boxlift",
        "counting_and_probability",
        "new_operator",
        # BIG-Bench-Hard (7 of 27)
        "boolean_expressions",
        "date_understanding",
        "logical_deduction_five_objects",
        "tracking_shuffled_objects_seven_objects",
        "navigate",
        "snarks",
        "word_sorting",
        # Reasoning-Gym (21 of 84)
        "basic_arithmetic",
        "fraction_simplification",
        "prime_factorization",
        "calendar_arithmetic",
        "polynomial_equations",
        "bf",
        "caesar_cipher",
        "rotate_matrix",
        "palindrome_partitioning",
        "knights_knaves",
        "zebra_puzzles",
        "course_schedule",
        "shortest_path",
        "maze",
        "n_queens",
        "countdown",
        "sokoban",
        "mini_sudoku",
        "arc_1d",
        "color_cube_rotation",
        "family_relationships",
    ]
)


def split_of(name: str) -> str:
    """'test' for the 37 held-out tasks, 'train' for every other suite task."""
    return "test" if name in TEST_TASKS else "train"
