"""jobs/eval.py: bad input, model folders, and end to end on the tiny model (hf engine) with
an interruption and its resume; the RL job's held-out evaluation every run.eval_every steps."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from r1ci import evaluation as ev
from r1ci.config import load_config
from r1ci.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "jobs"))

eval_job = importlib.import_module("eval")  # jobs/eval.py
DEMO = str(ROOT / "configs/demo.yaml")


def eval_overrides(models, out, **extra):
    items = {
        "eval.models": "[" + ",".join(models) + "]",
        "eval.output_dir": str(out),
        "eval.test_tasks": "[]",
        "eval.instances_per_task": 4,
        "eval.samples": 2,
        "eval.chunk_size": 1,
        "eval.bootstrap": 200,
        "tasks.train": "[toy_run_code]",
        "tasks.instances_per_task": 20,
        "generator.backend": "hf",
        "generator.num_cpus": 0.25,
        "executor.num_cpus": 0.25,
        "sampling.max_tokens_per_turn": 32,
        "sampling.max_total_tokens": 64,
        "sandbox.timeout_s": 5,
        "run.ray_address": "local",
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="module")
def perturbed_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with noise on every weight: another model of the same architecture."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * p.std() * torch.randn(p.shape, generator=gen))
    out = tmp_path_factory.mktemp("perturbed") / "model"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def copy_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model's files in another folder: the same weights, served through a weight sync."""
    import shutil

    out = tmp_path_factory.mktemp("copy") / "model"
    shutil.copytree(tiny_model_dir, out)
    return str(out)


# ------------------------------------------------------------------ bad input: one clear message, nothing lost


def run_main(argv, capsys):
    code = eval_job.main(["--config", DEMO, *argv])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_model_folder_is_one_clear_error_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_main(eval_overrides([f"base={tiny_model_dir}", "sft=runs/nope/final"], out), capsys)
    assert code == 2
    assert err.startswith("eval: error: eval.models: sft: model path 'runs/nope/final' does not exist")
    assert not (out / "answers.jsonl").exists()


def test_unknown_task_and_test_task_in_training_are_one_clear_error_each(tiny_model_dir, tmp_path, capsys):
    code, err = run_main(eval_overrides([tiny_model_dir], tmp_path / "a", **{"tasks.train": "[toy_run_cod]"}), capsys)
    assert code == 2 and err.startswith("eval: error: unknown task 'toy_run_cod': did you mean toy_run_code")
    code, err = run_main(eval_overrides([tiny_model_dir], tmp_path / "b", **{"tasks.train": "[toy_run_code,game24]"}), capsys)
    assert code == 2 and err.startswith("eval: error: tasks.train: game24 belong to the test split")


def test_resume_with_other_answer_settings_is_refused_and_keeps_the_answers(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    cfg = load_config(DEMO, eval_overrides([tiny_model_dir], out))
    store = ev.AnswerStore(out, ev.answer_settings(cfg))
    store.append([ev.AnswerRecord("tiny", "toy_run_code", "toy", "execution", "train", "toy_run_code/2/0", "sampled", 0,
                                  False, False, 0, 0, 10, 0, False, "length", None)])
    before = store.path.read_text()
    code, err = run_main(eval_overrides([tiny_model_dir], out, **{"sampling.eval_temperature": 0.9}), capsys)
    assert code == 2 and "holds answers made with other settings (temperature: 0.6 then, 0.9 now)" in err
    assert store.path.read_text() == before


def test_models_are_named_by_their_folder_and_a_name_used_twice_is_refused(tiny_model_dir, tmp_path):
    from r1ci.config import ConfigError

    run = tmp_path / "runs" / "sft" / "final"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    cfg = load_config(None, [f"eval.models=[{run},b={tiny_model_dir}]"])
    assert [s.name for s in eval_job.model_specs(cfg)] == ["sft/final", "b"]
    with pytest.raises(ConfigError, match="the name b is used twice"):
        eval_job.model_specs(load_config(None, [f"eval.models=[b={run},b={tiny_model_dir}]"]))


def test_same_architecture_shares_engines_and_folder_weights_are_the_models_parameters(
        tiny_model_dir, perturbed_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    assert eval_job.architecture(tiny_model_dir) == eval_job.architecture(perturbed_model_dir)
    assert eval_job.fingerprint(tiny_model_dir) != eval_job.fingerprint(perturbed_model_dir)
    other = tmp_path / "wider"
    other.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "hidden_size": 256}))
    assert eval_job.architecture(str(other)) != eval_job.architecture(tiny_model_dir)

    weights = dict(eval_job.folder_weights(perturbed_model_dir))
    model = AutoModelForCausalLM.from_pretrained(perturbed_model_dir, dtype=torch.float32)
    params = dict(model.named_parameters())
    assert set(weights) <= set(dict(model.named_parameters(remove_duplicate=False)))
    name = "model.layers.0.mlp.up_proj.weight"
    assert weights[name].dtype.name == "float32" and (weights[name] == params[name].detach().numpy()).all()


# ------------------------------------------------------------------ end to end


def answer_lines(out):
    rows = []
    for line in (out / "answers.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the line cut by the interruption
    return rows


@pytest.mark.slow
def test_eval_job_interrupted_then_resumed_compares_models_on_the_same_instances(
        ray_cluster, tiny_model_dir, copy_model_dir, perturbed_model_dir, tmp_path):
    out = tmp_path / "eval"
    models = [f"tiny={tiny_model_dir}", f"copy={copy_model_dir}", f"noisy={perturbed_model_dir}"]
    argv = [sys.executable, str(ROOT / "jobs/eval.py"), "--config", DEMO, *eval_overrides(models, out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", "/tmp")}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not ((out / "answers.jsonl").exists() and answer_lines(out)):  # the first chunk is on disk
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no answers within 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "the answers finished so far are kept in" in stderr and "eval: interrupted; run the same command again" in stderr
    before = answer_lines(out)
    assert 0 < len(before) < 3 * 4 * 3

    cfg = load_config(DEMO, eval_overrides(models, out))
    result = eval_job.run_eval(cfg, show_progress=False)
    rows = answer_lines(out)
    keys = Counter((r["model"], r["instance_id"], r["mode"], r["sample"]) for r in rows)
    assert len(keys) == 3 * 4 * 3 and set(keys.values()) == {1}  # every answer once: nothing redone, nothing missing
    assert rows[: len(before)] == before
    assert sum(result["evaluated_now"].values()) < 3 * 4
    loaded_by = [result["seconds"][m]["loaded_by"] for m in ("tiny", "copy", "noisy") if m in result["seconds"]]
    assert loaded_by[0] == "started" and set(loaded_by[1:]) == {"weight sync"}  # one fleet for all three

    by_model = {m: sorted((r["instance_id"], r["mode"], r["sample"], r["response"]) for r in rows if r["model"] == m)
                for m in ("tiny", "copy", "noisy")}
    assert by_model["copy"] == by_model["tiny"]  # the same weights, loaded by a weight sync, answer alike
    assert by_model["noisy"] != by_model["tiny"]
    assert {r["instance_id"] for r in rows} == {i.id for i in ev.held_out_instances(cfg)}

    data = json.loads(Path(result["outputs"]["json"]).read_text())
    assert data["models"] == ["tiny", "copy", "noisy"] and "task/toy_run_code" in data["groups"]
    same = next(c for c in data["comparisons"] if c["a"] == "tiny" and c["b"] == "copy" and c["group"] == "all"
                and c["metric"] == "accuracy")
    assert same["diff"]["value"] == 0 and not same["significant"]
    md = Path(result["outputs"]["markdown"]).read_text()
    assert "| group | n | tiny | copy | noisy |" in md and "not significant" in md
    assert ev.figure_description(result["outputs"]["family_plot"])[0]["series"] == ["tiny", "copy", "noisy"]
    assert ev.figure_description(result["outputs"]["code_calls_plot"])[0]["series"] == ["tiny", "copy", "noisy"]

    again = eval_job.run_eval(cfg, show_progress=False)  # everything done: nothing is answered again
    assert sum(again["evaluated_now"].values()) == 0 and len(answer_lines(out)) == len(rows)


@pytest.mark.slow
def test_rl_job_evaluates_the_policy_on_held_out_instances_every_eval_every_steps(ray_cluster, tiny_model_dir, tmp_path):
    rl = importlib.import_module("rl")
    from test_rl_job import tiny_overrides

    out = tmp_path / "rl"
    overrides = tiny_overrides(tiny_model_dir, out, steps=3, **{
        "run.eval_every": 2, "eval.rl_instances_per_task": 2, "eval.samples": 1, "run.checkpoint_every": 3})
    assert rl.main(["--config", DEMO, *overrides]) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    evaluated = [r["step"] for r in rows if "eval/accuracy" in r]
    assert evaluated == [0, 2, 3]  # before steps 0 and 2, and the final policy
    assert all("reward/mean" in r for r in rows[:3]) and "reward/mean" not in rows[3]
    for key in ("eval/greedy", "eval/pass@1", "eval/accuracy_lo", "eval/code_use", "eval/self_check", "time/eval_s"):
        assert key in rows[0], key

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [0, 2, 3]
    fig = ev.plot_learning_curves(rows, tmp_path / "curves.png")
    panel = next(ax for ax in fig.axes if ax.get_title() == "Accuracy")
    assert "held-out (sampled)" in [line.get_label() for line in panel.get_lines()]
