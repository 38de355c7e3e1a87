"""The 33 SymBench tasks: deterministic generation, verifiers that accept gold answers and
reject corrupted ones, reference programs that solve their instances when run, and the
planning validators judging plans by the rules rather than by string match."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from fractions import Fraction

import pytest

from r1ci.tasks.base import KINDS, Instance, Task
from r1ci.tasks.symbench import SYMBENCH_TASKS
from r1ci.tasks.symbench.arithmetic import Game24
from r1ci.tasks.symbench.constraints import EightQueens, LogicPuzzle, StandardSudoku, queen_solutions
from r1ci.tasks.symbench.grids import Game2048, MatrixTransformation, solve_2048
from r1ci.tasks.symbench.planning import PATH_WALLS, Blocksworld, BoxLift, BoxNet, PathPlan
from r1ci.tasks.symbench.word_problems import Geometry, Gsm

PAPER_NAMES = {
    "permutations_and_combinations", "logical_equation", "combinatorial_calculation", "eight_queens", "pooling",
    "reversi", "light_puzzles", "new_operator", "mahjong_pattern", "statistical_counting", "synthesis_decomposition",
    "2048", "matrix_transformation", "pattern_recognition", "constrained_linear_arrangement", "string_synthesis",
    "logic_puzzle", "string_insertion", "letter_logic_diagram", "standard_sudoku", "string_deletion_and_modification",
    "string_splitting", "cryptanalysis", "number_multiply", "letters", "game24", "path_plan", "blocksworld",
    "boxlift", "boxnet", "gsm", "counting_and_probability", "geometry",
}  # fmt: skip

_CACHE: dict[tuple[str, int, int], list[Instance]] = {}


def instances(task: Task, seed: int, n: int = 200) -> list[Instance]:
    key = (task.name, seed, n)
    if key not in _CACHE:
        _CACHE[key] = task.generate(seed, n)
    return _CACHE[key]


def corruptions(answer: str, limit: int = 3) -> list[str]:
    """The answer with one of its first `limit` digits (or letters, if it has no digits) changed."""
    spots = list(re.finditer(r"\d", answer)) or list(re.finditer(r"[A-Za-z]", answer))
    out = []
    for m in spots[:limit]:
        ch = m.group()
        new = str((int(ch) + 1) % 10) if ch.isdigit() else ("b" if ch.lower() == "a" else "a")
        out.append(answer[: m.start()] + new + answer[m.end() :])
    return out


def test_all_33_paper_tasks_are_listed_once_with_family_and_kind():
    assert {t.name for t in SYMBENCH_TASKS} == PAPER_NAMES and len(SYMBENCH_TASKS) == 33
    assert all(t.family == "symbench" and t.kind in KINDS for t in SYMBENCH_TASKS)


@pytest.fixture(params=SYMBENCH_TASKS, ids=lambda t: t.name)
def task(request) -> Task:
    return request.param()


def test_generation_is_deterministic_by_seed_with_200_distinct_questions(task):
    first = instances(task, 0)
    again = task.generate(0, 200)
    assert [(x.question, x.answer, x.data) for x in first] == [(x.question, x.answer, x.data) for x in again]
    assert len({x.question for x in first}) == 200
    assert [x.id for x in first[:2]] == [f"{task.name}/0/0", f"{task.name}/0/1"]
    other = instances(task, 1, 20)
    assert [x.question for x in other] != [x.question for x in first[:20]]
    assert "<<<" in first[0].question  # every question states the answer format


def test_gold_answers_score_one_and_corrupted_answers_less(task):
    first_rejected = 0
    for inst in instances(task, 0)[:50]:
        assert inst.answer is not None
        assert task.score(inst.answer, inst) == 1.0, (inst.question, inst.answer)
        variants = corruptions(inst.answer)
        # where many answers are right one changed character may still be right; never all of them
        assert min(task.score(v, inst) for v in variants) < 1.0, (inst.question, inst.answer, variants)
        first_rejected += task.score(variants[0], inst) < 1.0
    assert first_rejected >= 40


def test_gold_answers_in_other_list_formats_still_score_one(task):
    for inst in instances(task, 0)[:20]:
        double_quoted = inst.answer.replace("'", '"')
        spaced = re.sub(r",\s*", " ,  ", inst.answer)
        assert task.score(double_quoted, inst) == 1.0, double_quoted
        assert task.score(f"  {spaced}\n", inst) == 1.0, spaced


def test_large_integer_answers_must_be_exact():
    task = next(cls() for cls in SYMBENCH_TASKS if cls.name == "number_multiply")
    inst = task.generate(3, 1)[0]
    assert task.score(inst.answer, inst) == 1.0
    assert task.score(str(int(inst.answer) + 1), inst) == 0.0
    assert task.score(f"{int(inst.answer):,}", inst) == 1.0  # thousands separators are fine


@pytest.mark.parametrize("garbage", [None, "", "   ", "banana", "[[[", "{'a': 1}", "__import__('os').getcwd()", "1/0"])
def test_none_and_garbage_score_zero_without_raising(task, garbage):
    inst = instances(task, 0)[0]
    assert task.score(garbage, inst) == 0.0


def test_reference_solution_prints_an_answer_that_scores_one(task):
    for inst in instances(task, 0)[:3]:
        code = task.reference_solution(inst)
        assert code is not None
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
        assert run.returncode == 0, run.stderr[-2000:]
        assert task.score(run.stdout.strip(), inst) == 1.0, (inst.question, run.stdout)


def test_difficulty_changes_instances_and_stays_fast_and_solvable(task):
    easy, hard = task.generate(3, 10, difficulty=1), task.generate(3, 10, difficulty=2)
    assert sum(len(x.question) for x in hard) > sum(len(x.question) for x in easy) * 0.9
    assert [x.question for x in easy] != [x.question for x in hard]
    for inst in task.generate(3, 3, difficulty=6):  # sizes are capped where search would explode
        assert task.score(inst.answer, inst) == 1.0


def test_instance_data_survives_json_and_still_verifies(task):
    for inst in instances(task, 0)[:20]:
        data = json.loads(json.dumps(inst.data))
        assert task.score(inst.answer, dataclasses.replace(inst, data=data)) == 1.0


# ---------------------------------------------------------------- planning validators


def _instance(task: Task, data: dict) -> Instance:
    return Instance(task.name, 0, 0, "handmade", None, data)


def test_blocksworld_accepts_any_legal_plan_within_the_limit_and_rejects_illegal_moves():
    task = Blocksworld()
    inst = _instance(task, {"initial": ["AB", "C", ""], "goal": ["", "", "CBA"], "max_moves": 4})
    assert task.score("Move C from 2 to 3\nMove B from 1 to 3\nMove A from 1 to 3", inst) == 1.0
    assert task.score("Move B from 1 to 2\nMove C from 2 to 3\nMove B from 2 to 3\nMove A from 1 to 3", inst) == 0.0
    assert task.score("move C from 2 to 3; move B from 1 to 2; move B from 2 to 3; move A from 1 to 3", inst) == 1.0
    assert task.score("Move A from 1 to 3\nMove C from 2 to 3\nMove B from 1 to 3", inst) == 0.0  # A is under B
    assert task.score("Move C from 2 to 3\nMove B from 1 to 3", inst) == 0.0  # goal not reached
    long_plan = "Move C from 2 to 1\nMove C from 1 to 3\nMove B from 1 to 2\nMove B from 2 to 3\nMove A from 1 to 3"
    assert task.score(long_plan, inst) == 0.0  # legal but over the move limit


def test_eight_queens_accepts_every_valid_placement_and_rejects_attacks():
    task = EightQueens()
    inst = _instance(task, {"n": 8, "queens": [], "blocked": [[0, 0]]})
    valid = [cols for cols in queen_solutions(8) if cols[0] != 0]
    assert len(valid) > 10
    for cols in valid[:5]:
        assert task.score(str([[r, c] for r, c in enumerate(cols)]), inst) == 1.0
    attacking = [[r, r] for r in range(8)]
    assert task.score(str(attacking), inst) == 0.0
    on_blocked = next(cols for cols in queen_solutions(8) if cols[0] == 0)
    assert task.score(str([[r, c] for r, c in enumerate(on_blocked)]), inst) == 0.0


def test_sudoku_check_accepts_any_layout_and_rejects_changed_givens():
    task = StandardSudoku()
    inst = task.generate(5, 1)[0]
    rows = [re.findall(r"\d", row) for row in re.findall(r"\[[^\[\]]*\]", inst.answer)]
    as_strings = "\n".join("".join(r) for r in rows)
    assert task.score(as_strings, inst) == 1.0
    swapped = as_strings.translate(str.maketrans("12", "21"))  # still a valid grid, but givens change
    assert task.score(swapped, inst) == 0.0


def test_game24_judges_the_expression_not_the_string():
    task = Game24()
    inst = _instance(task, {"numbers": [3, 3, 8, 8], "target": 24})
    assert task.score("8 / (3 - 8 / 3)", inst) == 1.0
    assert task.score("8/(3-8/3) = 24", inst) == 1.0
    assert task.score("24 = 8/(3-8/3)", inst) == 1.0
    assert task.score("8 * 3 + 3 - 3", inst) == 0.0  # numbers not used exactly once
    assert task.score("(8 + 8) + 3 + 3", inst) == 0.0  # 22
    assert task.score("__import__('os').system('echo hi')", inst) == 0.0
    assert task.score("8 ** 3 / 8 / 3", inst) == 0.0  # powers are not allowed
    assert task.score("[8, /, (, 3, -, 8, /, 3, )]", inst) == 1.0  # SymBench's token-list form


def test_generation_does_not_depend_on_the_process_hash_seed():
    code = (
        "import hashlib, json\n"
        "from r1ci.tasks.symbench import SYMBENCH_TASKS\n"
        "h = hashlib.sha256()\n"
        "for cls in SYMBENCH_TASKS:\n"
        "    for x in cls().generate(9, 20):\n"
        "        h.update(json.dumps([x.question, x.answer, x.data], sort_keys=True).encode())\n"
        "print(h.hexdigest())\n"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout  # fmt: skip
        for seed in ("1", "2")
    }
    assert len(digests) == 1 and len(digests.pop()) == 65


def test_path_plan_judges_trajectories_by_the_boxes_they_touch_as_symbench_does():
    task = PathPlan()
    data = {"walls": PATH_WALLS, "boxes": {"green": [0.2, 0.7, 0.8, 1.2], "blue": [-0.5, 0.5, -0.5, 0.5]},
            "start": [-1.3, -1.3], "end": [1.3, 1.3], "visit": ["green"], "avoid": ["blue"]}  # fmt: skip
    inst = _instance(task, data)
    assert task.score("[(-1.3, -1.3), (-1.3, 1.0), (1.3, 1.3)]", inst) == 1.0  # crosses green on the way
    assert task.score("[[-1.30, -1.3], [-1.3, 1], [1.3, 1.30]]", inst) == 1.0  # any list format
    assert task.score("[(-1.3, -1.3), (1.3, 1.3)]", inst) == 0.0  # straight through blue, misses green
    assert task.score("[(-1.3, -1.3), (-1.3, 1.0), (1.2, 1.2)]", inst) == 0.0  # stops short of the end
    assert task.score("[(-1.3, -1.3), (-1.3, 1.45), (1.3, 1.3)]", inst) == 0.0  # touches the top wall
    assert task.score("[(-1.3, -1.3), (0.5, -0.6), (0.6, 0.8), (1.3, 1.3)]", inst) == 1.0
    assert task.score("[(-1.3, -1.3), (0.5, -0.5), (0.6, 0.8), (1.3, 1.3)]", inst) == 0.0  # grazes blue's corner
    corner = dataclasses.replace(inst, data={**data, "end": [0.2, 0.8]})  # ending on green's corner enters it
    assert task.score("[(-1.3, -1.3), (-1.3, 0.8), (0.2, 0.8)]", corner) == 1.0


def test_2048_moves_one_number_along_the_steps_as_symbench_does():
    task = Game2048()
    # SymBench's sample 0: (1, 2) holds 16; 'd' is blocked by the 2, 'l' slides into the empty cell
    data = {"grid": [[0, 16], [4, 2]], "start": [0, 1], "moves": "dl"}
    inst = dataclasses.replace(_instance(task, data), answer=solve_2048(data))
    assert inst.answer == "[[16, 0], [4, 2]]"
    assert task.score("16, 0\n4, 2", inst) == 1.0  # SymBench's own answer format
    assert task.score("[[16, 0], [4, 2]]", inst) == 1.0
    assert task.score("[[16, 0, 4, 2]]", inst) == 0.0  # same numbers, wrong shape
    merged = {"grid": [[2, 2, 4], [0, 0, 0], [0, 0, 0]], "start": [0, 0], "moves": "rrd"}
    assert solve_2048(merged) == "[[0, 0, 0], [0, 0, 8], [0, 0, 0]]"  # 2+2 -> 4, then 4+4 -> 8 moves on down


def test_logic_puzzle_accepts_any_selection_that_meets_the_symbench_rules():
    task = LogicPuzzle()
    grid = [[3, -2, 5], [-4, 1, -6], [2, -3, 4]]  # the first pick is (0, 2), value 5
    inst = _instance(task, {"grid": grid, "select": 4, "rule": "product_gt_0"})
    assert task.score("0 2, 1 1, 2 0, 2 2", inst) == 1.0  # 5, 1, 2, 4: all positive
    assert task.score("[[0, 2], [0, 0], [1, 1], [2, 0]]", inst) == 1.0  # 5, 3, 1, 2
    assert task.score("0 2, 1 1, 2 0", inst) == 0.0  # three cells, four asked
    assert task.score("0 0, 1 1, 2 0, 2 2", inst) == 0.0  # the first pick is missing
    assert task.score("0 2, 0 1, 1 1, 2 0", inst) == 0.0  # row 0: 5 * -2 < 0
    assert task.score("0 2, 1 0, 1 2, 0 0", inst) == 0.0  # rows are positive, but column 2: 5 * -6 < 0
    same = _instance(task, {"grid": [[1, 2], [2, 1]], "select": 3, "rule": "sum_le_4"})
    assert task.score("0 1, 1 1, 0 0", same) == 0.0  # values 2, 1, 1 are not three different numbers
    assert task.score("0 1, 1 0, 1 1", same) == 0.0  # sums are fine, but the values 2, 2, 1 repeat
    for inst in task.generate(0, 30, difficulty=6):  # up to SymBench's 10x10 grid with 25 picks
        assert task.score(inst.answer, inst) == 1.0


def test_grid_answers_of_the_wrong_shape_are_wrong():
    task = MatrixTransformation()
    inst = _instance(task, {"grid": [["A", "B", "C"], ["D", "E", "F"]], "ops": ["transpose"]})
    inst = dataclasses.replace(inst, answer=task.solve(inst.data))
    assert inst.answer == "['AD', 'BE', 'CF']"
    for good in ("['AD', 'BE', 'CF']", '["ad", "be", "cf"]', "[['A', 'D'], ['B', 'E'], ['C', 'F']]", "AD\nBE\nCF"):
        assert task.score(good, inst) == 1.0, good
    for bad in ("['ADB', 'ECF']", "['ADBECF']", "ADBECF", "['AD', 'BE']"):
        assert task.score(bad, inst) == 0.0, bad


def test_numbers_asked_to_two_decimals_must_round_to_the_gold():
    geometry, gsm = Geometry(), Gsm()
    inst = next(i for i in geometry.generate(0, 60) if i.data["template"] == "circle_area")
    gold = Fraction(inst.answer)
    assert geometry.score(inst.answer, inst) == 1.0 and geometry.score(str(gold + Fraction(3, 1000)), inst) == 1.0
    assert geometry.score(str(gold + Fraction(1, 100)), inst) == 0.0 and geometry.score(str(gold - Fraction(1, 100)), inst) == 0.0
    cents = next(i for i in gsm.generate(0, 60) if i.data["template"] == "discount")
    assert gsm.score(f"${cents.answer}", cents) == 1.0 and gsm.score(str(Fraction(cents.answer) + Fraction(1, 100)), cents) == 0.0
    whole = next(i for i in gsm.generate(0, 60) if i.data["template"] == "trip")
    assert gsm.score(whole.answer + ".01", whole) == 0.0  # a whole number asked: exact


def test_word_problems_never_ask_ill_posed_questions():
    for inst in Gsm().generate(0, 400) + Gsm().generate(0, 100, difficulty=3):
        if inst.data["template"] == "defects":  # toys come whole
            assert "/" not in inst.answer, inst.question
    for inst in Geometry().generate(0, 400):
        if inst.data["template"] == "triangle_area":  # no collinear vertices
            assert inst.answer != "0", inst.question
        if inst.data["template"] == "distance":
            assert inst.answer != "0.00", inst.question


def test_boxlift_accepts_other_team_choices_and_rejects_overloads():
    task = BoxLift()
    inst = _instance(task, {"weights": [100, 50, 30], "capacities": [60, 50, 40], "max_steps": 2})
    assert task.score("[[[0, [0, 2]], [1, [1]]], [[2, [0]]]]", inst) == 1.0
    assert task.score("[[[0, [0, 1]], [2, [2]]], [[1, [0]]]]", inst) == 1.0
    assert task.score("[[[0, [0]], [1, [1]], [2, [2]]]]", inst) == 0.0  # 60 cannot lift 100
    assert task.score("[[[0, [0, 2]], [1, [2]]], [[2, [0]]]]", inst) == 0.0  # lifter 2 used twice in a step
    assert task.score("[[[0, [0, 2]]], [[1, [1]]], [[2, [0]]]]", inst) == 0.0  # over the step limit
    assert task.score("[{0: [0, 2], 1: [1]}, {2: [0]}]", inst) == 1.0  # steps as {box: lifters}


def test_boxnet_accepts_parallel_or_sequential_plans_and_rejects_two_actions_per_agent():
    task = BoxNet()
    data = {"rows": 2, "cols": 2, "boxes": {"box_red": [0, 0], "box_blue": [1, 1]},
            "targets": {"box_red": [0, 1], "box_blue": [1, 0]}, "max_steps": 4}  # fmt: skip
    inst = _instance(task, data)
    parallel = "[[['box_red', [0, 1]], ['box_blue', [1, 0]]], [['box_red', 'target'], ['box_blue', 'target']]]"
    assert task.score(parallel, inst) == 1.0
    sequential = "[[['box_red', [0, 1]]], [['box_red', 'target']], [['box_blue', [0, 1]]], [['box_blue', [0, 0]]]]"
    assert task.score(sequential, inst) == 0.0  # legal moves, but blue never reaches its target
    assert task.score("[[['box_red', [1, 1]]]]", inst) == 0.0  # not adjacent
    data2 = dict(data, boxes={"box_red": [0, 0], "box_blue": [0, 0]}, targets={"box_red": [0, 0], "box_blue": [0, 0]})
    inst2 = _instance(task, data2)
    assert task.score("[[['box_red', 'target'], ['box_blue', 'target']]]", inst2) == 0.0  # one agent, two actions
    assert task.score("[[['box_red', 'target']], [['box_blue', 'target']]]", inst2) == 1.0
