"""The stages around RL end to end on CPU: synthesize -> SFT (falling loss) -> profile -> curriculum stages."""

import importlib.util
import json
import random
from pathlib import Path

import pytest

from r1ci.config import SFTConfig, load_config
from r1ci.curriculum import CurriculumSampler, improvement_potential, partition_stages, read_pass_rates
from r1ci.sft import lr_at, plan_epoch

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def load_job(name: str):
    """A jobs/ script as a module (jobs/profile_samples.py would clash with the stdlib `profile` by plain import)."""
    spec = importlib.util.spec_from_file_location(f"r1ci_job_{name}", JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_judges_answers_as_rl_does_with_the_runs_protocol():
    from r1ci.tasks import generate_instances
    from r1ci.trajectory import Trajectory, Turn

    profile = load_job("profile_samples")
    inst = generate_instances("toy_run_code", 0, 1)[0]
    cfg = load_config(None, ['protocol.answer_open="[["', 'protocol.answer_close="]]"'])
    said = lambda text: Trajectory(inst.task, inst.id, "g", [], turns=[Turn(text)])  # noqa: E731
    answers = [said(f"[[{inst.answer}]]"), said(f"<<<{inst.answer}>>>"), said("[[0]]"), said(f"[[{inst.answer} or 0]]")]
    assert profile.outcomes(answers, {inst.id: inst}, cfg) == {inst.id: [True, False, False, False]}


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = SFTConfig(lr=1.0, warmup_fraction=0.2, min_lr_ratio=0.1, lr_schedule="cosine")
    lrs = [lr_at(s, 10, cfg) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == 1.0 and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lr_at(5, 10, SFTConfig(lr=2.0, warmup_fraction=0.0, lr_schedule="constant")) == 2.0
    assert lr_at(9, 10, SFTConfig(lr=1.0, warmup_fraction=0.0, lr_schedule="linear", min_lr_ratio=0.0)) == 0.0


def test_batches_repeat_heavy_trajectories_and_group_similar_lengths():
    lengths = [10, 500, 12, 505, 11, 490, 13, 510]
    batches = plan_epoch(lengths, [1.0] * 4 + [1.0, 1.0, 3.0, 1.0], batch_size=2, rng=random.Random(0), bucket=True)
    flat = [i for b in batches for i in b]
    assert flat.count(6) == 3 and len(flat) == 10
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) < 100 for b in batches)
    assert all(len(b) % 2 == 0 for b in plan_epoch(lengths, [1.0] * 8, 3, random.Random(0), False, multiple=2))


@pytest.fixture(scope="module")
def sft_data(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft_data")
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", "tasks.train=[toy_run_code,multistep_arithmetic_two]", f"synthesis.output_dir={out}",
        "synthesis.instances_per_task=10", "synthesis.max_per_task=10", "sandbox.timeout_s=10",
    ])
    counts = load_job("synthesize").synthesize(cfg, show_progress=False)
    assert counts["kept"] == 20
    return out


@pytest.fixture(scope="module")
def sft_run(ray_cluster, tiny_model_dir, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft_run")
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", f"sft.data={sft_data}", f"sft.output_dir={out}", "sft.epochs=3",
        "sft.batch_size=4", "sft.lr=3e-3", "sft.eval_fraction=0.2", "sft.warmup_fraction=0.1",
        "learner.num_cpus=0.5", "learner.zero_stage=2",
    ])
    return load_job("sft").run_sft(cfg, show_progress=False), out


@pytest.mark.slow
def test_sft_loss_falls_and_leaves_a_model_rl_can_start_from(sft_run):
    from transformers import AutoModelForCausalLM

    from r1ci.metrics import read_metrics

    summary, out = sft_run
    assert summary["train_trajectories"] == 16 and summary["eval_trajectories"] == 4 and summary["steps"] >= 12
    assert summary["train_loss_last"] < summary["train_loss_first"] - 0.5
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 0.5
    rows = read_metrics(out)
    lrs = [r["sft/lr"] for r in rows if "sft/lr" in r]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs)  # warm-up, then cosine decay
    assert sum("sft/eval_loss" in r for r in rows) == 4  # before training and after each epoch
    assert list((out / "tensorboard").iterdir())
    model = AutoModelForCausalLM.from_pretrained(summary["final_dir"])
    assert model.num_parameters() > 0


@pytest.mark.slow
def test_profile_writes_pass_rates_that_build_stages_and_resumes(sft_run, tmp_path):
    summary, _ = sft_run
    args = [
        f"model.path={summary['final_dir']}", "tasks.train=[toy_run_code,multistep_arithmetic_two]", "tasks.instances_per_task=3",
        "generator.backend=hf", "generator.num_generators=2", "generator.num_cpus=0.25", "generator.max_model_len=512",
        "sampling.max_tokens_per_turn=24", "sampling.max_total_tokens=48", "profile.styles=[agent,text]",
        "profile.samples_per_style=2", "profile.temperatures=[0.7,1.0]", "profile.chunk_size=2",
        f"profile.output={tmp_path / 'potentials.parquet'}", "sandbox.timeout_s=10",
    ]
    profile = load_job("profile_samples")
    first = profile.run_profile(load_config(None, args), show_progress=False)
    assert first["samples"] == 6 and first["profiled_now"] == 6 and first["answers_per_sample"] == 4
    rates = read_pass_rates(tmp_path / "potentials.parquet")
    assert sorted(rates) == sorted(f"{t}/0/{i}" for t in ("toy_run_code", "multistep_arithmetic_two") for i in range(3))
    assert all(r in (0.0, 0.25, 0.5, 0.75, 1.0) for r in rates.values())
    stages = partition_stages({s: improvement_potential(p) for s, p in rates.items()}, load_config(None, []).curriculum.stage_bounds)
    assert [len(s) for s in stages] == first["stage_sizes"] and sum(first["stage_sizes"]) == 6
    sampler = CurriculumSampler(list(rates), load_config(None, []).curriculum, pass_rates=rates)
    assert set(sampler.next_batch(2)) <= set(stages[0] or next(s for s in stages if s))
    again = profile.run_profile(load_config(None, args), show_progress=False)
    assert again["profiled_now"] == 0 and again["samples"] == 6
    assert json.dumps(first["stage_sizes"]) == json.dumps(again["stage_sizes"])


def test_sft_refuses_data_tokenized_for_another_model(tiny_model_dir):
    from r1ci.errors import UserError
    from r1ci.trajectory import Trajectory

    sft = load_job("sft")
    fits = Trajectory(task="t", sample_id="t/0/0", group_id="g", prompt_ids=[1, 2], response_ids=[3], loss_mask=[1], logprobs=[0.0])
    sft.check_vocabulary([fits], tiny_model_dir, "data/sft")
    beyond = Trajectory(task="t", sample_id="t/0/1", group_id="g", prompt_ids=[1, 2], response_ids=[49151], loss_mask=[1], logprobs=[0.0])
    with pytest.raises(UserError, match="synthesized for another model"):
        sft.check_vocabulary([fits, beyond], tiny_model_dir, "data/sft")
