"""r1ci.evaluation without Ray: held-out instances, records, self-checking, pass@k, bootstrap
intervals, paired comparisons, the resumable answer file, tables and plots."""

import itertools
import json
import math

import numpy as np
import pytest

from r1ci import evaluation as ev
from r1ci.config import ConfigError, ProtocolConfig, load_config
from r1ci.sandbox.base import EXECUTOR_DIED
from r1ci.trajectory import Trajectory, Turn

PROTO = ProtocolConfig()


def cfg_with(*overrides):
    return load_config(None, ["eval.bootstrap=1000", *overrides])


# ------------------------------------------------------------------ pass@k


def brute_pass_at_k(n, c, k):
    answers = [1] * c + [0] * (n - c)
    draws = list(itertools.combinations(range(n), k))
    return sum(any(answers[i] for i in d) for d in draws) / len(draws)


@pytest.mark.parametrize("n,c,k", [(4, 0, 1), (4, 1, 1), (4, 1, 4), (5, 2, 2), (10, 3, 4), (8, 7, 3), (6, 6, 2)])
def test_pass_at_k_is_the_chance_that_k_of_n_answers_hold_a_correct_one(n, c, k):
    assert ev.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k))


def test_pass_at_1_is_the_fraction_correct_and_bad_counts_are_refused():
    assert ev.pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="k <= n"):
        ev.pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        ev.pass_at_k(4, 5, 1)


# ------------------------------------------------------------------ self-checking


def traj(turns, answer):
    return Trajectory(task="number_multiply", sample_id="number_multiply/2/0", group_id="g", prompt_ids=[1],
                      turns=turns, answer=answer, code_calls=sum(t.observation is not None for t in turns))


def code_turn(prose, code, output):
    return Turn(text=f"{prose}\n```python\n{code}\n```\n", code=code,
                observation=None if output is None else f"Code Execution Results:\n{output}\n")


FINAL = Turn(text="So the answer is <<<10063>>>.")


def test_code_that_first_prints_the_answer_is_not_a_check():
    t = traj([code_turn("Let me compute it.", "print(347 * 29)", "10063"), FINAL], "10063")
    assert ev.self_checks(t, PROTO) == 0


def test_code_run_after_the_output_showed_the_answer_is_a_check():
    t = traj([code_turn("Compute.", "print(347 * 29)", "10063"),
              code_turn("Let me verify by division.", "print(10063 // 29, 10063 % 29)", "347 0"), FINAL], "10063")
    assert ev.self_checks(t, PROTO) == 1


def test_code_run_after_the_prose_states_the_answer_is_a_check():
    t = traj([code_turn("I think 347 * 29 = 10063. Let me check.", "print(347 * 29 == 10063)", "True"), FINAL], "10063")
    assert ev.self_checks(t, PROTO) == 1


def test_the_answer_only_as_a_literal_in_code_or_inside_a_longer_number_does_not_count():
    literal = traj([code_turn("Check a guess.", "print(347 * 29 == 10063)", "True"), FINAL], "10063")
    assert ev.self_checks(literal, PROTO) == 0
    longer = traj([code_turn("Compute.", "print(3470 * 29 + 3)", "100633"),
                   code_turn("Again.", "print(1)", "1"), FINAL], "10063")
    assert ev.self_checks(longer, PROTO) == 0


def test_a_call_whose_executor_failed_ran_nothing_and_checks_nothing():
    t = traj([code_turn("Compute.", "print(347 * 29)", "10063"), code_turn("Verify.", "print(10063 / 29)", None)], "10063")
    assert ev.self_checks(t, PROTO) == 0


def test_no_answer_or_a_one_character_answer_has_no_checks():
    t = traj([code_turn("Compute.", "print(3)", "3"), code_turn("Again: 3.", "print(3)", "3")], None)
    assert ev.self_checks(t, PROTO) == 0
    t.answer = "3"
    assert ev.self_checks(t, PROTO) == 0


def test_every_check_after_the_first_appearance_counts():
    t = traj([code_turn("Compute.", "print(347 * 29)", "10063"), code_turn("Check 1.", "print(10063 % 29)", "0"),
              code_turn("Check 2.", "print(10063 // 347)", "29"), FINAL], "10063")
    assert ev.self_checks(t, PROTO) == 2


# ------------------------------------------------------------------ records


def test_answer_record_scores_with_rewards_and_counts_timeouts_and_executor_failures():
    from r1ci.tasks import generate_instances

    cfg = cfg_with("eval.samples=2", "eval.greedy=false")
    inst = generate_instances("number_multiply", 2, 1)[0]
    slow = Turn(text="```python\nwhile True: pass\n```\n", code="while True: pass",
                observation="Code Execution Results:\nTimeoutError\n", killed_reason="timeout")
    right = traj([slow, Turn(text=f"<<<{inst.answer}>>>")], inst.answer)
    right.response_ids = [5] * 17
    wrong = traj([Turn(text="```python\nprint(1)\n```\n", code="print(1)", killed_reason=EXECUTOR_DIED)], None)
    a, b = ev.answer_record(right, inst, cfg, "m", ev.SAMPLED, 0), ev.answer_record(wrong, inst, cfg, "m", ev.SAMPLED, 1)
    assert a.correct and a.answered and a.timeouts == 1 and not a.executor_failure and a.response_tokens == 17
    assert (a.family, a.kind, a.split) == ("symbench", "execution", "train")
    assert not b.correct and b.executor_failure and not b.answered


def test_requests_give_every_model_the_same_seeds_and_score_answers_names_their_slots():
    from r1ci.tasks import generate_instances

    cfg = cfg_with("eval.samples=3")
    insts = generate_instances("toy_run_code", 2, 2)
    reqs = ev.answer_requests(insts, cfg)
    assert len(reqs) == 2 * 4
    assert [r.sampling.temperature for r in reqs[:4]] == [0.6, 0.6, 0.6, 0.0]
    assert [r.sampling.seed for r in reqs] == [r.sampling.seed for r in ev.answer_requests(insts, cfg)]
    assert len({r.sampling.seed for r in reqs[:3]}) == 3
    trajs = [traj([], None) for _ in reqs]
    records = ev.score_answers(reqs, trajs, cfg, "m")
    assert [(r.mode, r.sample) for r in records[:4]] == [("sampled", 0), ("sampled", 1), ("sampled", 2), ("greedy", 0)]
    assert records[4].instance_id == insts[1].id
    with pytest.raises(ValueError, match="answers per instance"):
        ev.score_answers(reqs[:3], trajs[:3], cfg, "m")


# ------------------------------------------------------------------ held-out instances and config


def test_held_out_instances_never_repeat_a_training_question():
    # toy_run_expression has at most 729 programs: 200 training instances share questions with any other seed
    cfg = cfg_with("tasks.train=[toy_run_expression]", "tasks.instances_per_task=200", "eval.test_tasks=[]",
                   "eval.instances_per_task=30")
    from r1ci.tasks import generate_instances

    train = {i.question for seed, n in ((0, 200), (1, 100)) for i in generate_instances("toy_run_expression", seed, n)}
    naive = generate_instances("toy_run_expression", 2, 30)
    assert any(i.question in train for i in naive)  # the overlap this guards against is real
    held = ev.held_out_instances(cfg)
    assert len(held) == 30 and not any(i.question in train for i in held)
    assert all(i.seed == 2 for i in held)


def test_test_tasks_follow_the_training_tasks_and_a_test_task_in_training_is_refused():
    cfg = cfg_with("tasks.train=[toy_run_code]", "eval.test_tasks=[boolean_expressions]", "eval.instances_per_task=3")
    assert [i.task for i in ev.held_out_instances(cfg)] == ["toy_run_code"] * 3 + ["boolean_expressions"] * 3
    with pytest.raises(ConfigError, match="boolean_expressions belong to the test split"):
        ev.held_out_instances(cfg_with("tasks.train=[toy_run_code, boolean_expressions]"))


def test_unknown_task_names_close_matches():
    from r1ci.tasks import UnknownTaskError

    with pytest.raises(UnknownTaskError, match="unknown task 'number_multiplyy'.*number_multiply"):
        ev.held_out_instances(cfg_with("tasks.train=[number_multiplyy]"))


@pytest.mark.parametrize("override,message", [
    ("eval.seed=0", "eval.seed: 0 is also tasks.seed"),
    ("eval.seed=1", "eval.seed: 1 is also synthesis.seed"),
    ("eval.samples=-1", "eval.samples"),
    ("eval.confidence=1.5", "eval.confidence"),
    ("eval.bootstrap=0", "eval.bootstrap: must be positive"),
    ("eval.prompt_style=chat", "eval.prompt_style"),
])
def test_bad_eval_settings_give_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    with pytest.raises(ConfigError, match="at least one answer"):
        load_config(None, ["eval.samples=0", "eval.greedy=false"])


# ------------------------------------------------------------------ bootstrap and summaries


def test_bootstrap_interval_is_seeded_stratified_and_covers_the_mean():
    rng = np.random.default_rng
    a = [np.array([1, 0, 1, 1, 0, 1, 0, 1.0]), np.array([0.0, 0, 0, 1])]
    first = ev.bootstrap_interval(a, 500, rng(1))
    assert first == ev.bootstrap_interval(a, 500, rng(1))
    est, lo, hi = first
    assert est == pytest.approx((5 / 8 + 1 / 4) / 2)  # each task weighs the same, whatever its size
    assert lo < est < hi
    assert ev.bootstrap_interval([np.ones(10)], 200, rng(0)) == (1.0, 1.0, 1.0)
    narrow = ev.bootstrap_interval([np.tile([1.0, 0.0], 200)], 500, rng(0))
    wide = ev.bootstrap_interval([np.tile([1.0, 0.0], 10)], 500, rng(0))
    assert narrow[2] - narrow[1] < (wide[2] - wide[1]) / 2


def test_bootstrap_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        est, lo, hi = ev.bootstrap_interval([rng.random(60) < 0.4], 1000, rng)
        hits += lo <= 0.4 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def records_for(model, correct_by_instance, task="number_multiply", family="symbench", kind="execution", mode="sampled"):
    out = []
    for i, verdicts in enumerate(correct_by_instance):
        for j, c in enumerate(verdicts):
            out.append(ev.AnswerRecord(model, task, family, kind, "train", f"{task}/2/{i}", mode, j, bool(c), True,
                                       code_calls=j % 3, self_checks=int(c and j == 0), response_tokens=100,
                                       timeouts=0, executor_failure=False, stop_reason="answer", answer="1"))
    return out


def test_identical_models_differ_by_exactly_zero_and_the_report_says_not_significant():
    cfg = cfg_with("eval.samples=2", "eval.greedy=false")
    rng = np.random.default_rng(0)
    verdicts = (rng.random((30, 2)) < 0.5).tolist()
    s = ev.summarize(records_for("a", verdicts) + records_for("b", verdicts), cfg)
    diff = next(c for c in s.comparisons if c.group == "all" and c.metric == "accuracy")
    assert (diff.diff.value, diff.diff.lo, diff.diff.hi) == (0.0, 0.0, 0.0)
    assert not diff.diff.significant and diff.verdict == "not significant (interval contains 0)"
    assert "not significant" in ev.markdown_report(s)


def test_paired_difference_finds_a_consistent_gain_that_overlapping_intervals_hide():
    cfg = cfg_with("eval.samples=1", "eval.greedy=false")
    rng = np.random.default_rng(3)
    base = (rng.random(40) < 0.5).astype(int)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:6]] = 1  # fixes 6 answers, breaks none
    s = ev.summarize(records_for("base", [[v] for v in base]) + records_for("better", [[v] for v in better]), cfg)
    a, b = s.results["all"]["base"].accuracy["accuracy"], s.results["all"]["better"].accuracy["accuracy"]
    assert b.value - a.value == pytest.approx(6 / 40)
    assert a.hi > b.lo  # the separate intervals overlap ...
    diff = next(c for c in s.comparisons if c.group == "all" and c.metric == "accuracy")
    assert (diff.a, diff.b) == ("base", "better") and diff.diff.value == pytest.approx(6 / 40)
    assert diff.diff.significant and diff.diff.lo > 0  # ... the paired difference does not contain 0
    assert diff.verdict.startswith("higher")


def test_summary_groups_by_split_family_kind_and_task_and_leaves_incomplete_instances_out():
    cfg = cfg_with("eval.samples=2", "eval.greedy=true")
    recs = records_for("m", [[1, 0], [1, 1]]) + records_for("m", [[1], [0]], mode="greedy")
    recs += records_for("m", [[0, 0], [0, 1]], task="navigate", family="bbh", kind="reasoning")
    recs += records_for("m", [[0], [0]], task="navigate", family="bbh", kind="reasoning", mode="greedy")
    recs += records_for("m", [[1]], task="maze", family="reasoning_gym", kind="planning")  # incomplete: no 2nd sample, no greedy
    for r in recs:
        if r.task == "navigate":
            r.split = "test"
    s = ev.summarize(recs, cfg)
    assert s.groups[:3] == ["all", "split/train", "split/test"]
    assert {"family/symbench", "family/bbh", "kind/execution", "kind/reasoning", "task/navigate"} <= set(s.groups)
    nm = s.results["task/number_multiply"]["m"].accuracy
    assert nm["accuracy"].value == pytest.approx(0.75) and nm["greedy"].value == pytest.approx(0.5)
    assert nm["pass@2"].value == pytest.approx(1.0)
    assert s.results["all"]["m"].accuracy["accuracy"].value == pytest.approx((0.75 + 0.25) / 2)
    assert s.results["task/maze"]["m"].accuracy["accuracy"].instances == 0
    behaviour = s.results["task/number_multiply"]["m"]
    assert behaviour.answers == 6 and behaviour.self_check == pytest.approx(3 / 6)


def test_scalar_metrics_are_flat_eval_keys_for_tensorboard():
    cfg = cfg_with("eval.samples=2", "eval.greedy=true")
    recs = records_for("p", [[1, 0], [0, 0]]) + records_for("p", [[1], [0]], mode="greedy")
    scalars = ev.scalar_metrics(ev.summarize(recs, cfg), "p")
    assert scalars["eval/accuracy"] == pytest.approx(0.25) and scalars["eval/greedy"] == pytest.approx(0.5)
    assert scalars["eval/accuracy_lo"] <= 0.25 <= scalars["eval/accuracy_hi"]
    assert "eval/accuracy/family/symbench" in scalars and "eval/code_use" in scalars and "eval/pass@2" in scalars
    assert all(isinstance(v, float) for v in scalars.values())


# ------------------------------------------------------------------ answer file


def test_answer_store_resumes_after_a_line_cut_short_and_refuses_other_settings(tmp_path):
    cfg = cfg_with("eval.samples=2", "eval.greedy=false")
    store = ev.AnswerStore(tmp_path, ev.answer_settings(cfg))
    store.check_model("m", "w1", "/models/m")
    store.append(records_for("m", [[1, 0], [0, 1]]))
    with open(store.path, "a") as f:
        f.write('{"model": "m", "task": "numb')  # killed mid-line
    again = ev.AnswerStore(tmp_path, ev.answer_settings(cfg))
    assert again.done("m", 2) == {"number_multiply/2/0", "number_multiply/2/1"}
    again.append(records_for("m", [[1, 1], [1, 1], [0, 0]])[4:])  # instance 2
    third = ev.AnswerStore(tmp_path, ev.answer_settings(cfg))
    assert len(third.records) == 6 and third.done("m", 2) == {f"number_multiply/2/{i}" for i in range(3)}

    with pytest.raises(ev.EvalStateError, match=r"other settings \(samples: 2 then, 3 now\).*another eval.output_dir"):
        ev.AnswerStore(tmp_path, ev.answer_settings(cfg_with("eval.samples=3", "eval.greedy=false")))
    with pytest.raises(ev.EvalStateError, match="model 'm' .* other weights"):
        third.check_model("m", "w2", "/models/m2")
    third.check_model("m2", "w2", "/models/m2")  # a new name is fine


# ------------------------------------------------------------------ tables and plots


def two_model_summary():
    cfg = cfg_with("eval.samples=2", "eval.greedy=true")
    recs = []
    for model, p in (("base", 0.3), ("sft", 0.6)):
        rng = np.random.default_rng(len(model))
        for task, family in (("number_multiply", "symbench"), ("navigate", "bbh")):
            recs += records_for(model, (rng.random((12, 2)) < p).tolist(), task=task, family=family)
            recs += records_for(model, (rng.random((12, 1)) < p).tolist(), task=task, family=family, mode="greedy")
    return cfg, recs, ev.summarize(recs, cfg)


def test_markdown_csv_and_json_put_the_models_side_by_side(tmp_path):
    import csv

    _, _, s = two_model_summary()
    md = ev.markdown_report(s)
    assert "| group | n | base | sft |" in md and "## Greedy accuracy" in md and "| sft - base | all | accuracy |" in md
    row = next(line for line in md.splitlines() if line.startswith("| family/bbh | 12 |"))
    assert row.count("[") == 2  # both models, each with an interval
    rows = list(csv.DictReader(open(ev.write_csv(s, tmp_path / "r.csv"))))
    acc = next(r for r in rows if r["group"] == "all" and r["metric"] == "accuracy")
    assert float(acc["base_lo"]) <= float(acc["base"]) <= float(acc["base_hi"]) and "sft_hi" in acc
    assert next(r for r in rows if r["group"] == "all" and r["metric"] == "code_calls")["sft_lo"] == ""
    comp = list(csv.DictReader(open(ev.write_comparisons_csv(s, tmp_path / "c.csv"))))
    assert {r["metric"] for r in comp} == {"accuracy", "pass@2", "greedy"}
    data = json.loads(json.dumps(s.to_json()))
    assert data["groups"]["all"]["sft"]["accuracy"]["accuracy"]["value"] == s.results["all"]["sft"].accuracy["accuracy"].value
    assert data["comparisons"][0]["verdict"]


def test_family_plot_has_a_bar_series_with_error_bars_per_model(tmp_path):
    from matplotlib.container import BarContainer, ErrorbarContainer

    _, _, s = two_model_summary()
    fig = ev.plot_family_accuracy(s, tmp_path / "fam.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["all", "symbench", "bbh"]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["base", "sft"]
    heights = [rect.get_height() for rect in bars[1]]
    assert heights[0] == pytest.approx(100 * s.results["all"]["sft"].accuracy["accuracy"].value)
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2
    desc = ev.figure_description(tmp_path / "fam.png")  # read back from the file itself
    assert desc[0]["series"] == ["base", "sft"] and "per family" in desc[0]["title"] and desc[0]["xlabel"] == "task family"
    from matplotlib.image import imread

    pixels = imread(tmp_path / "fam.png")
    assert pixels.shape[0] > 200 and pixels.std() > 0.01  # a drawn image, not a blank one


def test_code_call_histogram_shares_sum_to_100_per_model(tmp_path):
    from matplotlib.container import BarContainer

    _, recs, _ = two_model_summary()
    fig = ev.plot_code_calls(recs, tmp_path / "calls.png")
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["base", "sft"]
    assert sum(r.get_height() for r in bars[0]) == pytest.approx(100)
    assert ev.figure_description(tmp_path / "calls.png")[0]["xlabel"] == "code calls per answer"


def test_learning_curves_show_training_and_held_out_series_from_metrics_rows(tmp_path):
    rows = [{"step": s, "reward/mean": 0.1 * s, "accuracy/mean": 0.05 * s, "rollout/code_calls": 1.0,
             "learner/kl": 0.001 * s, "learner/entropy": 1.0 - 0.01 * s} for s in range(6)]
    for s in (0, 3, 6):
        rows.append({"step": s, "eval/accuracy": 0.1 + 0.02 * s, "eval/accuracy_lo": 0.05, "eval/accuracy_hi": 0.3,
                     "eval/code_calls": 1.5})
    fig = ev.plot_learning_curves(rows, tmp_path / "curves.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["Reward", "Accuracy", "Code calls", "KL to reference", "Entropy"]
    acc = next(ax for ax in fig.axes if ax.get_title() == "Accuracy")
    lines = {line.get_label(): line for line in acc.get_lines()}
    assert set(lines) == {"training rollouts", "held-out (sampled)"}
    assert list(lines["held-out (sampled)"].get_xdata()) == [0, 3, 6]
    desc = ev.figure_description(tmp_path / "curves.png")
    assert [d["title"] for d in desc] == titles and desc[1]["series"] == ["training rollouts", "held-out (sampled)"]
    with pytest.raises(ValueError, match="no RL metrics"):
        ev.plot_learning_curves([{"step": 0, "sft/loss": 1.0}], tmp_path / "x.png")


def test_mean_over_seeds_is_a_student_t_interval_and_unknown_for_one_seed():
    e = ev.mean_over_seeds([0.1, 0.2, 0.3])
    assert e.value == pytest.approx(0.2) and e.instances == 3
    assert e.hi - e.value == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2 df) * s / sqrt(n)
    assert not ev.mean_over_seeds([0.05, -0.02, 0.04]).significant
    one = ev.mean_over_seeds([0.3])
    assert one.value == 0.3 and math.isnan(one.lo) and not one.significant
