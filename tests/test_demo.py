"""`make demo`'s pipeline, shortened: the Makefile's own stages run on the tiny model, in order,
each stage's output feeding the next, and a rerun skips what is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SHORT = {
    "tasks.train": "[toy_run_code]",
    "tasks.instances_per_task": 6,
    "synthesis.instances_per_task": 6,
    "synthesis.max_per_task": 6,
    "synthesis.styles": "[agent]",
    "sft.epochs": 1,
    "sft.batch_size": 2,
    "sft.eval_fraction": 0.2,
    "profile.samples_per_style": 2,
    "profile.temperatures": "[1.0,1.0]",
    "profile.chunk_size": 3,
    "algorithm.group_size": 2,
    "run.prompts_per_step": 2,
    "run.steps": 2,
    "curriculum.drop_uniform_groups": "false",  # the untrained tiny model's groups mostly agree
    "eval.instances_per_task": 3,
    "eval.samples": 1,
    "eval.bootstrap": 100,
    "generator.backend": "hf",
    "generator.num_cpus": 0.25,
    "learner.num_cpus": 0.25,
    "executor.num_cpus": 0.25,
    "sampling.max_tokens_per_turn": 32,
    "sampling.max_total_tokens": 64,
    "sft.max_seq_len": 512,
    "sandbox.timeout_s": 5,
    "run.ray_address": "local",
}


def make_demo(demo: Path, base: str) -> subprocess.CompletedProcess:
    overrides = " ".join(f"{k}={v}" for k, v in SHORT.items())
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "demo-stages", f"PY={sys.executable}",
         f"DEMO={demo}", f"DEMO_BASE={base}", f"DEMO_SET={overrides}"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_make_demo_runs_every_stage_in_order_and_a_rerun_skips_them(tiny_model_dir, tmp_path):
    demo = tmp_path / "demo"
    done = make_demo(demo, tiny_model_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stages = [line for line in done.stdout.splitlines() if line.startswith("== demo")]
    assert [s.split(":")[0] for s in stages] == [f"== demo {k}/5" for k in range(1, 6)]
    assert json.loads((demo / "sft_data/counts.json").read_text())
    assert (demo / "sft/final/config.json").exists() and (demo / "potentials.parquet").exists()
    rl = json.loads((demo / "rl/summary.json").read_text())
    assert rl["trained_now"] == 2 and Path(rl["final_dir"], "config.json").exists()
    results = (demo / "eval/results.md").read_text()
    for model in ("base", "sft", "rl"):
        assert f"| {model} " in results or f"| {model}|" in results, results[:1500]
    assert "Traceback" not in done.stdout + done.stderr
    assert "jobs/serve.py" in done.stdout.splitlines()[-1]

    again = make_demo(demo, tiny_model_dir)
    assert again.returncode == 0 and "== demo" not in again.stdout, again.stdout
