"""jobs/rl.py end to end on CPU: steps, metrics, checkpoints, resume, faults, bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from r1ci.metrics import read_metrics

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "jobs"))

import rl  # noqa: E402


def tiny_overrides(model_dir, out, steps=2, **extra):
    items = {
        "model.path": model_dir,
        "generator.backend": "hf",
        "generator.num_cpus": 0.25,
        "learner.num_cpus": 0.25,
        "executor.num_cpus": 0.25,
        "learner.lr": 1e-4,
        "learner.zero_stage": 2,
        "tasks.train": "[toy_run_code]",
        "tasks.instances_per_task": 20,
        "sampling.max_tokens_per_turn": 48,
        "sampling.max_total_tokens": 160,
        "sandbox.timeout_s": 5,
        "algorithm.group_size": 2,
        "run.prompts_per_step": 2,
        "run.steps": steps,
        "run.checkpoint_every": 2,
        "run.output_dir": str(out),
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


@pytest.mark.slow
def test_rl_job_runs_steps_writes_metrics_checkpoint_and_final_model(ray_cluster, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert rl.main(["--config", str(ROOT / "configs/demo.yaml"), *tiny_overrides(tiny_model_dir, out)]) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1]
    for key in ("reward/mean", "accuracy/mean", "learner/grad_norm", "time/generation_s", "time/learner_s",
                "time/sync_s", "rollout/code_calls", "generation/tokens_per_s", "weights/version"):
        assert key in rows[-1], key
    assert rows[-1]["weights/version"] == 2
    assert (out / "checkpoints" / "latest").read_text() == "step_000002"
    assert (out / "final_model" / "config.json").exists()
    assert list((out / "tensorboard").iterdir())


@pytest.mark.slow
def test_resumed_run_repeats_the_uninterrupted_run(ray_cluster, tiny_model_dir, tmp_path):
    cfg = str(ROOT / "configs/demo.yaml")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert rl.main(["--config", cfg, *tiny_overrides(tiny_model_dir, full, steps=4)]) == 0
    assert rl.main(["--config", cfg, *tiny_overrides(tiny_model_dir, cut, steps=2)]) == 0
    assert rl.main(["--config", cfg, "--resume", *tiny_overrides(tiny_model_dir, cut, steps=4)]) == 0
    a, b = read_metrics(full), read_metrics(cut)
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for ra, rb in zip(a[2:], b[2:]):
        # Same batches and seeds after resume; logprobs agree to float tolerance, so the
        # sampled tokens and hence rewards agree.
        assert rb["reward/mean"] == pytest.approx(ra["reward/mean"], abs=1e-6)
        assert rb["learner/policy_loss"] == pytest.approx(ra["learner/policy_loss"], abs=1e-4)


def test_bad_config_value_is_one_clear_error_and_exit_code_2():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs/rl.py"), "--config", str(ROOT / "configs/demo.yaml"), "learner.zero_stage=7"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: learner.zero_stage: 7 is not one of 1, 2, 3"


def test_test_split_task_in_training_config_is_refused():
    from r1ci.config import ConfigError, load_config
    from r1ci.tasks import list_tasks

    test_task = list_tasks(split="test")[0].name
    cfg = load_config(None, [f"tasks.train=[{test_task}]"])
    with pytest.raises(ConfigError, match="test split"):
        rl.training_samples(cfg)
