"""The 144-task suite: every task generates deterministically and verifies its own gold answers.

BBH tasks built from BIG-bench data read a small fixture in the same schema
(tests/fixtures/bigbench); one test reads the real fetched files and is skipped when they
are absent. The per-task check uses a few instances per task to stay fast; the
"200 distinct instances" guarantee is checked on a fixed sample of cheap generators here
and measured for all 144 by `python jobs/data.py build` (its manifest lists counts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from r1ci import rewards
from r1ci.config import ModelConfig, ProtocolConfig, RewardConfig
from r1ci.tasks import (
    SPLIT_VERSION,
    UnknownTaskError,
    generate_instances,
    get_task,
    list_tasks,
    resolve_task_names,
    suite_names,
)
from r1ci.tasks.answers import parse_number
from r1ci.tasks import bbh
from r1ci.tasks.bbh import BIGBENCH_SPECS
from r1ci.tasks.split import TEST_TASKS
from r1ci.tasks.toy import run_program
from r1ci.trajectory import Trajectory, Turn

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DATA = ROOT / "tests" / "fixtures"
REAL_DATA = Path(ModelConfig().data_dir).expanduser()
SEED, N = 3, 3


@pytest.fixture(autouse=True)
def bigbench_fixture(monkeypatch):
    """BBH data-built tasks read the small fixture unless a test points elsewhere."""
    monkeypatch.setattr(bbh, "_DATA_DIR", FIXTURE_DATA)


# Tasks with a gold answer that accept any answer consistent with the rules (a one-letter
# change can be another right answer), so a corrupted answer there is a truncated one.
MANY_RIGHT_ANSWERS = {"constrained_linear_arrangement"}

_FLIPS = {"true": "False", "false": "True", "yes": "No", "no": "Yes", "valid": "invalid", "invalid": "valid"}


def corrupt(answer: str, validated: bool = False) -> str:
    """A plausible-looking wrong answer.

    Validated answers (plans, boards: many are right) lose their second half. Others get
    the other yes/no, another option letter, n+1, or their first digit or letter changed
    (the first, not the last: verifiers rightly allow rounding and equivalent endings).
    """
    s = answer.strip()
    if validated:
        return s[: len(s) // 2]
    if s.lower() in _FLIPS:
        return _FLIPS[s.lower()]
    m = re.fullmatch(r"\(([A-Z])\)", s)
    if m:
        return "(B)" if m.group(1) == "A" else "(A)"
    number = parse_number(s)
    if number is not None:
        return str(number + 1)
    alnum = [i for i, c in enumerate(s) if c.isalnum()]
    if not alnum:
        return s + "x"
    i, c = alnum[0], s[alnum[0]]
    new = str((int(c) + 1) % 10) if c.isdigit() else ("y" if c.lower() == "z" else chr(ord(c.lower()) + 1))
    return s[:i] + (new.upper() if c.isupper() else new) + s[i + 1 :]


def correct(name: str, response: str, inst) -> bool:
    """RL's verdict (`rewards.score`) on a response, or on a bare answer written as <<<answer>>>."""
    text = response if "<<<" in response else f"<<<{response}>>>"
    traj = Trajectory(name, inst.id, "g", [], turns=[Turn(text)])
    return rewards.score(traj, get_task(name), inst, RewardConfig(), ProtocolConfig()).correct


def reference_answer(name: str, inst) -> str | None:
    program = get_task(name).reference_solution(inst)
    return run_program(program) if program else None


# --------------------------------------------------------------------------- the 144


def test_suite_has_144_tasks_split_107_37_by_family():
    infos = list_tasks()
    assert len(infos) == len(suite_names()) == 144
    assert len({i.name for i in infos}) == 144
    by_family = {f: [i for i in infos if i.family == f] for f in ("symbench", "bbh", "reasoning_gym")}
    assert {f: len(v) for f, v in by_family.items()} == {"symbench": 33, "bbh": 27, "reasoning_gym": 84}
    assert len(list_tasks(split="train")) == 107 and len(list_tasks(split="test")) == 37
    assert {f: sum(i.split == "test" for i in v) for f, v in by_family.items()} == {"symbench": 9, "bbh": 7, "reasoning_gym": 21}
    assert TEST_TASKS <= set(suite_names()), "every test-split name is a suite task"
    assert {i.kind for i in infos} == {"execution", "planning", "reasoning"}
    assert SPLIT_VERSION


@pytest.mark.parametrize("name", suite_names())
def test_task_generates_deterministically_and_verifies_gold(name):
    task = get_task(name)
    first = task.generate(SEED, N)
    again = task.generate(SEED, N)
    assert [(i.id, i.question, i.answer, i.data) for i in first] == [(i.id, i.question, i.answer, i.data) for i in again]
    assert len(first) == N and len({i.question for i in first}) == N
    assert [i.id for i in first] == [f"{name}/{SEED}/{k}" for k in range(N)]
    json.dumps([i.data for i in first]), json.dumps([i.metadata for i in first])  # serializable
    for inst in first:
        ref = reference_answer(name, inst)
        gold = inst.answer if inst.answer is not None else ref
        assert gold is not None, f"{inst.id}: neither a gold answer nor a reference solution"
        assert correct(name, gold, inst), f"{inst.id}: gold {gold!r} rejected"
        assert correct(name, f"Done.\n<<<{gold}>>>", inst)
        if ref is not None:
            assert correct(name, ref, inst), f"{inst.id}: reference output {ref!r} rejected"
        bad = corrupt(re.sub(r"^<<<(.*)>>>$", r"\1", gold.strip(), flags=re.S), validated=inst.answer is None or name in MANY_RIGHT_ANSWERS)
        assert not correct(name, bad, inst), f"{inst.id}: corrupted {bad!r} accepted (gold {gold!r})"
        assert not correct(name, "", inst) and not correct(name, "no answer given", inst)


# A sample of generators cheap enough to ask for 200: the procedural BBH tasks, the toy,
# and Reasoning-Gym datasets that repeat questions often (coin_flip, self_reference, prime_factorization).
CHEAP_200 = ["boolean_expressions", "multistep_arithmetic_two", "web_of_lies", "toy_run_code", "coin_flip",
             "self_reference", "prime_factorization", "gcd", "largest_island"]  # fmt: skip


@pytest.mark.parametrize("name", CHEAP_200)
def test_cheap_generators_give_200_distinct_questions(name):
    questions = [i.question for i in generate_instances(name, 0, 200)]
    assert len(set(questions)) == 200


def test_instance_ids_name_the_same_question_whatever_n():
    small, large = generate_instances("acre", 5, 2), generate_instances("acre", 5, 6)
    assert [i.question for i in small] == [i.question for i in large[:2]]


def test_generation_differs_by_seed():
    for name in ("web_of_lies", "chain_sum", "toy_run_code"):
        assert generate_instances(name, 0, 3)[0].question != generate_instances(name, 1, 3)[0].question


# --------------------------------------------------------------------------- registry


def test_unknown_task_lists_close_matches():
    with pytest.raises(UnknownTaskError, match=r"unknown task 'logical_deduction_5_objects'.*logical_deduction_five_objects"):
        get_task("logical_deduction_5_objects")
    with pytest.raises(UnknownTaskError, match="jobs/data.py list"):
        get_task("qqqqqq")


def test_list_filters_reject_unknown_values():
    assert all(i.family == "bbh" and i.split == "test" for i in list_tasks(family="bbh", split="test"))
    with pytest.raises(ValueError, match="unknown family 'bigbench'.*symbench, bbh, reasoning_gym"):
        list_tasks(family="bigbench")


def test_resolve_expands_splits_and_keeps_order_without_repeats():
    train = resolve_task_names(["train"])
    assert len(train) == 107 and not set(train) & TEST_TASKS
    names = resolve_task_names(["toy_run_code", "test", "game24", "toy_run_code"])
    assert names[0] == "toy_run_code" and len(names) == 38 and set(names[1:]) == set(TEST_TASKS)
    with pytest.raises(UnknownTaskError):
        resolve_task_names(["train", "nope_task"])


def test_toy_task_is_reachable_but_not_in_the_suite():
    assert "toy_run_code" not in suite_names()
    inst = generate_instances("toy_run_code", 0, 1)[0]
    assert inst.answer == run_program(get_task("toy_run_code").reference_solution(inst))
    assert "print(" in inst.question and "<<<" in inst.question


def test_score_reads_the_last_answer_of_a_response_and_survives_garbage():
    inst = generate_instances("prime_factorization", 0, 1)[0]
    assert correct("prime_factorization", f"<<<1>>> then fixed: <<<{inst.answer}>>>", inst)
    assert not correct("prime_factorization", "<<<no idea>>>", inst)  # its verifier raises here
    unmarked = Trajectory("prime_factorization", inst.id, "g", [], turns=[Turn(f"The answer is {inst.answer}.")])
    assert not rewards.score(unmarked, get_task("prime_factorization"), inst, RewardConfig(), ProtocolConfig()).correct


def test_bbh_choice_answers_are_lenient_about_format_and_reject_hedges():
    inst = generate_instances("date_understanding", 0, 1)[0]
    letter, option = inst.data["letter"], inst.data["option"]
    other = "A" if letter != "A" else "B"
    for good in (letter, f"({letter})", f"({letter}) {option}", option, f"{letter.lower()}", f"Option {letter}.", f"'{letter}'"):
        assert correct("date_understanding", good, inst), good
    for bad in (other, f"({letter}) or ({other})", f"({other}) or ({letter})", f"{letter}, {other}", f"({letter}) {inst.data['options'][ord(other) - 65]}"):
        assert not correct("date_understanding", bad, inst), bad


def test_bbh_dyck_is_strict_about_symbols_not_spacing():
    inst = generate_instances("dyck_languages", 0, 1)[0]
    for good in ("  ".join(inst.answer.split()), inst.answer.replace(" ", ""), f"{inst.answer}.", f'"{inst.answer}"'):
        assert correct("dyck_languages", good, inst), good
    assert not correct("dyck_languages", inst.answer + " )", inst)
    assert "put a space before the closing >>>" in inst.question


def test_dyck_answers_ending_in_angle_brackets_are_read_whole():
    inst = next(i for i in get_task("dyck_languages").generate(0, 50) if i.answer.endswith(">"))
    assert correct("dyck_languages", f"So: <<<{inst.answer}>>>", inst)  # '<<<) >>>>' reads ') >'
    assert correct("dyck_languages", f"<<<{inst.answer} >>>", inst)
    assert not correct("dyck_languages", f"<<<{inst.answer[:-1]}>>>", inst)


def test_colored_objects_keeps_counting_questions_with_word_options():
    insts = get_task("reasoning_about_colored_objects").generate(0, 200)
    counting = [i for i in insts if "how many" in i.question.lower()]
    assert counting, "counting questions are part of the task"
    for inst in counting:
        assert "(A) zero" in inst.question and "\n(B) one" in inst.question
        assert correct("reasoning_about_colored_objects", inst.data["option"], inst)  # the number word
        assert correct("reasoning_about_colored_objects", inst.answer, inst)


def test_bbh_without_data_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setattr(bbh, "_DATA_DIR", tmp_path)
    with pytest.raises(RuntimeError, match=r"python jobs/data.py fetch-bbh") as err:
        get_task("snarks").generate(0, 1)
    assert "\n" not in str(err.value)
    assert len(get_task("web_of_lies").generate(0, 2)) == 2  # procedural tasks need no data


# Pool sizes of the real BIG-bench files after dedup (BBH itself uses <= 250 per task).
SMALL_SOURCES = {"causal_judgement": 186, "penguins_in_a_table": 149, "snarks": 181}


@pytest.mark.skipif(
    not (REAL_DATA / "bigbench" / "snarks" / "task.json").is_file(),
    reason=f"BIG-bench data not fetched into {REAL_DATA} (run `python jobs/data.py fetch-bbh`)",
)
def test_bbh_on_real_bigbench_data(monkeypatch):
    monkeypatch.setattr(bbh, "_DATA_DIR", REAL_DATA)
    for info in list_tasks(family="bbh"):
        insts = get_task(info.name).generate(0, 200)
        want = SMALL_SOURCES.get(info.name, 200)
        assert len(insts) == want and len({i.question for i in insts}) == want, info.name
        assert all(get_task(info.name).score(i.answer, i) == 1.0 for i in insts[:50]), info.name
    q = generate_instances("hyperbaton", 0, 1)[0].question
    assert q.startswith("Which sentence has the correct adjective order:\nOptions:\n(A) ")
    listed = subprocess.run([sys.executable, str(ROOT / "jobs" / "data.py"), "list", "--json", f"model.data_dir={REAL_DATA}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    short = {r["name"]: r["pool_size"] for r in json.loads(listed.stdout) if r["note"]}
    assert short == SMALL_SOURCES  # said, not silently repeated


# --------------------------------------------------------------------------- export and CLI


def test_export_keeps_test_tasks_out_of_training_data(tmp_path):
    import pyarrow.parquet as pq

    from r1ci.tasks.export import build

    manifest = build(tmp_path, SEED, N)
    train = pq.read_table(tmp_path / "train.parquet").to_pylist()
    test = pq.read_table(tmp_path / "test.parquet").to_pylist()
    assert {r["task"] for r in train} == set(resolve_task_names(["train"]))
    assert {r["task"] for r in test} == set(TEST_TASKS)
    assert not {r["task"] for r in train} & TEST_TASKS
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert len(manifest["splits"]["train"]["tasks"]) == 107 and len(manifest["splits"]["test"]["tasks"]) == 37
    assert manifest["split_version"] == SPLIT_VERSION and len(train) == 107 * N


def _run_data(*args: str) -> subprocess.CompletedProcess:
    """jobs/data.py on the fixture's BIG-bench files (options first: the override comes last)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "data.py"), *args, f"model.data_dir={FIXTURE_DATA}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )


def test_data_list_json_prints_144_tasks():
    out = _run_data("list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 144 and all(set(r) == {"name", "family", "split", "kind", "pool_size", "note"} for r in rows)
    small = {r["name"]: r for r in rows if r["pool_size"] is not None}
    assert set(small) == set(BIGBENCH_SPECS) and all(r["family"] == "bbh" for r in small.values())
    assert "only 5 distinct questions" in small["snarks"]["note"]  # the fixture's pools are tiny
    assert all(r["pool_size"] is None and r["note"] == "" for r in rows if r["family"] != "bbh")
    assert {r["family"] for r in rows} == {"symbench", "bbh", "reasoning_gym"}
    assert {r["split"] for r in rows} == {"train", "test"} and {r["kind"] for r in rows} == {"execution", "planning", "reasoning"}


def test_data_show_previews_and_names_unknown_tasks():
    out = _run_data("show", "-n", "2", "web_of_lies")
    assert out.returncode == 0 and "web_of_lies/0/1" in out.stdout and "reference solution" in out.stdout
    bad = _run_data("show", "web_of_lie")
    assert bad.returncode == 2 and "unknown task 'web_of_lie'" in bad.stderr and "web_of_lies" in bad.stderr


def test_data_build_writes_both_splits_for_a_subset(tmp_path):
    import pyarrow.parquet as pq

    out = _run_data("build", "--tasks", "web_of_lies", "boolean_expressions", "--out", str(tmp_path), "-n", "2")
    assert out.returncode == 0, out.stderr
    train, test = (pq.read_table(tmp_path / f"{s}.parquet").to_pylist() for s in ("train", "test"))
    assert {r["task"] for r in train} == {"web_of_lies"} and {r["task"] for r in test} == {"boolean_expressions"}
    assert len(train) == len(test) == 2 and json.loads((tmp_path / "manifest.json").read_text())["split_version"] == SPLIT_VERSION


def test_generation_is_identical_across_processes():
    """Ray workers regenerate instances by id: string hashing must not leak into generation."""
    names = ["web_of_lies", "boolean_expressions", "multistep_arithmetic_two", "toy_run_code", "date_understanding", "chain_sum"]
    code = (
        f"import hashlib, json\nfrom r1ci.tasks import generate_instances\nfrom r1ci.tasks.bbh import set_data_dir\nset_data_dir({str(FIXTURE_DATA)!r})\n"
        f"rows = [(i.id, i.question, i.answer, i.data) for n in {names!r} for i in generate_instances(n, 4, 3)]\n"
        "print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "2")
    ]  # fmt: skip
    digests = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(digests) == 1 and len(digests.pop()) == 64


# --------------------------------------------------------------------------- Reasoning-Gym, tightened


def _first(name: str, where=lambda inst: True, n: int = 60):
    return next(i for i in generate_instances(name, 0, n) if where(i))


def test_reasoning_gym_near_misses_get_no_credit():
    """The issue's examples: the package gives these full or partial credit; RL gets 0."""
    word = _first("spell_backward")
    assert correct("spell_backward", word.answer, word) and not correct("spell_backward", word.answer + word.answer[-1], word)
    jumble = _first("letter_jumble")
    assert not correct("letter_jumble", jumble.answer + " and more words", jumble)
    certain = _first("coin_flip", lambda i: i.answer == "1", n=200)
    assert correct("coin_flip", "1", certain) and correct("coin_flip", "1.0", certain) and not correct("coin_flip", "11", certain)
    three = _first("gcd", lambda i: i.answer == "3", n=400)
    assert get_task("gcd").score("13", three) == 0.0  # the package's substring rule gives 0.5
    days = _first("time_intervals", lambda i: i.answer.endswith(" days"), n=400)
    off = f"{int(days.answer.split()[0]) + 1} days"
    assert get_task("time_intervals").score(off, days) < 1.0 and not correct("time_intervals", off, days)
    partial = RewardConfig(partial_credit=True)  # the graded score is still there for those who ask
    traj = Trajectory("time_intervals", days.id, "g", [], turns=[Turn(f"<<<{off}>>>")])
    assert 0.0 < rewards.score(traj, get_task("time_intervals"), days, partial, ProtocolConfig()).correctness < 1.0


def test_reasoning_gym_answers_are_never_run_as_code(tmp_path):
    marker = tmp_path / "ran"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    for name in ("polynomial_multiplication", "simple_integration", "countdown", "binary_matrix", "spiral_matrix", "n_queens"):
        inst = generate_instances(name, 0, 1)[0]
        assert get_task(name).score(payload, inst) == 0.0 and get_task(name).score("10**10**10", inst) == 0.0
    assert not marker.exists()
    poly = generate_instances("polynomial_multiplication", 0, 1)[0]
    assert correct("polynomial_multiplication", poly.answer, poly)  # a real polynomial still reaches sympy
