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
        "curriculum.drop_uniform_groups": "false",  # the demo's is on; these tests count every step
        **extra,
    }
    return [f"{k}={v}" for k, v in items.items()]


@pytest.mark.slow
def test_rl_job_runs_steps_writes_metrics_checkpoint_and_final_model_folder(ray_cluster, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert rl.main(["--config", str(ROOT / "configs/demo.yaml"), *tiny_overrides(tiny_model_dir, out)]) == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1]
    for key in ("reward/mean", "accuracy/mean", "learner/grad_norm", "time/generation_s", "time/learner_s",
                "time/sync_s", "rollout/code_calls", "generation/tokens_per_s", "weights/version", "rollout/failed",
                "learner/skipped", "learner/tokens"):
        assert key in rows[-1], key
    assert rows[-1]["weights/version"] == 2
    assert (out / "checkpoints" / "latest").read_text() == "step_000002"
    assert (out / "final" / "config.json").exists()
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
    assert proc.stderr.strip().splitlines()[-1] == "rl: error: learner.zero_stage: 7 is not one of 1, 2, 3"


def test_test_split_task_in_training_config_is_refused():
    from r1ci.config import ConfigError, load_config
    from r1ci.tasks import list_tasks

    test_task = list_tasks(split="test")[0].name
    cfg = load_config(None, [f"tasks.train=[{test_task}]"])
    with pytest.raises(ConfigError, match="test split"):
        rl.training_samples(cfg)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_rl_on_a_head_started_on_loopback(tiny_model_dir, tmp_path):
    import os
    import signal
    import tempfile
    import time
    import urllib.request

    from actors.runtime import LOCAL_ENV

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **LOCAL_ENV}
    env.pop("RAY_ADDRESS", None)
    dash = _free_port()
    temp = tempfile.mkdtemp(prefix="r1ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
         "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--temp-dir={temp}", "--disable-usage-stats",
         # own ports for the per-node agents, so another Ray on this machine cannot clash
         f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
         f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/version", timeout=5)
                break
            except OSError:
                assert head.poll() is None and time.time() < deadline, "ray head did not come up"
                time.sleep(2)
        out = tmp_path / "submitted"
        submit = [str(bin_dir / "ray"), "job", "submit", f"--address=http://127.0.0.1:{dash}", "--",
                  sys.executable, str(ROOT / "jobs/rl.py"), "--config", str(ROOT / "configs/demo.yaml"),
                  *tiny_overrides(tiny_model_dir, out, steps=1), "run.checkpoint_every=1"]
        while True:  # the head's job agent comes up a little after its dashboard
            proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
            if "No available agent" not in proc.stderr or time.time() > deadline:
                break
            time.sleep(3)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "joined Ray cluster" in proc.stdout + proc.stderr
        assert [r["step"] for r in read_metrics(out)] == [0]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)


@pytest.mark.slow
def test_dead_generator_is_replaced_and_dead_learner_ends_the_job_with_a_resumable_checkpoint(
    ray_cluster, tiny_model_dir, tmp_path
):
    import ray

    from r1ci.config import load_config

    out = tmp_path / "faults"
    cfg = load_config(ROOT / "configs/demo.yaml", tiny_overrides(tiny_model_dir, out, steps=3, **{"run.checkpoint_every": 1}))
    job = rl.RLJob(cfg)
    try:
        first = job.generators.actors[0]
        ray.kill(first, no_restart=True)  # the generator dies; its prompts must be redone elsewhere
        job.cfg.run.steps = 1
        job.run(show_progress=False)  # step 0, checkpoint step_000001
        assert job.generators.actors[0] != first
        job.start_step, job.cfg.run.steps = 1, 3
        ray.kill(job.learners.actors[0], no_restart=True)
        with pytest.raises(SystemExit, match=r"learner failed at step 1: .*resume from .*step_000001 with --resume"):
            job.run(show_progress=False)
    finally:
        job.close()
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0] and rows[0]["weights/version"] == 1


@pytest.fixture(scope="module")
def warm_started_tiny_model(ray_cluster, tiny_model_dir, tmp_path_factory):
    """The tiny model after a short SFT on toy_run_expression trajectories written by the
    offline teacher: it has half learned the format and none of the arithmetic, so RL has
    room to raise the reward (the paper's SFT-then-RL order, in miniature)."""
    import random

    from transformers import AutoTokenizer

    from actors.learner import LearnerGroup
    from r1ci.config import load_config
    from r1ci.sandbox import Executor
    from r1ci.synthesis import ScriptedTeacher, to_trajectory
    from r1ci.tasks import generate_instances, get_task

    cfg = load_config(None, ["learner.lr=3e-3", "learner.num_cpus=0.25", "learner.micro_batch_size=16",
                             "algorithm.kl_coef=0", "synthesis.self_correction_fraction=0"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = get_task("toy_run_expression")
    with Executor(cfg.sandbox) as executor:
        teacher = ScriptedTeacher(executor, cfg)
        trajs = [to_trajectory(tok, inst, "agent", teacher.episode(task, inst, "agent"), cfg)
                 for inst in generate_instances(task.name, 99, 200)]  # seed 99: not the RL instances
    group = LearnerGroup.create(cfg, tiny_model_dir)
    rng = random.Random(0)
    try:
        for _ in range(40):
            group.sft_step(rng.sample(trajs, 16))
        out = tmp_path_factory.mktemp("warm") / "model"
        group.save_hf(str(out))
    finally:
        group.shutdown()
    return str(out)


@pytest.mark.slow
def test_rl_raises_the_reward_of_a_warm_started_tiny_model(warm_started_tiny_model, tmp_path):
    out = tmp_path / "learn"
    overrides = tiny_overrides(warm_started_tiny_model, out, steps=12, **{
        "tasks.train": "[toy_run_expression]", "tasks.instances_per_task": 200, "learner.lr": 1e-3,
        "learner.micro_batch_size": 16, "algorithm.kl_coef": 0, "algorithm.group_size": 8,
        "run.prompts_per_step": 8, "sampling.max_tokens_per_turn": 40, "sampling.max_total_tokens": 120,
        "run.checkpoint_every": 100,
    })
    assert rl.main(["--config", str(ROOT / "configs/demo.yaml"), *overrides]) == 0
    rewards = [r["reward/mean"] for r in read_metrics(out)]
    print("mean reward per step:", [round(r, 3) for r in rewards])
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.08, rewards


@pytest.mark.slow
def test_refilled_groups_whose_rewards_differ_are_trained_on(warm_started_tiny_model, tmp_path):
    # The warm-started model is right some of the time: some groups agree and are dropped,
    # and the refill rounds draw new prompts, whose groups that differ are kept and trained.
    out = tmp_path / "refill"
    overrides = tiny_overrides(warm_started_tiny_model, out, steps=2, **{
        "tasks.train": "[toy_run_expression]", "tasks.instances_per_task": 200, "algorithm.kl_coef": 0,
        "algorithm.group_size": 4, "run.prompts_per_step": 4, "sampling.max_tokens_per_turn": 40,
        "sampling.max_total_tokens": 120, "run.checkpoint_every": 100,
        "curriculum.drop_uniform_groups": "true", "curriculum.max_refill_rounds": 3})
    assert rl.main(["--config", str(ROOT / "configs/demo.yaml"), *overrides]) == 0
    rows = read_metrics(out)
    assert sum(r["curriculum/refilled_groups"] for r in rows) > 0, rows
    assert all(0 < r["curriculum/groups"] <= 4 for r in rows)
    assert all(r["learner/skipped"] == 0 for r in rows)  # every kept group has an advantage to learn from


@pytest.mark.slow
def test_groups_whose_rewards_all_agree_are_dropped_and_refilled(ray_cluster, tiny_model_dir, tmp_path, caplog):
    # The untrained tiny model answers nothing right: every group agrees, every refill too,
    # so the step trains on nothing and says so instead of wasting an update.
    out = tmp_path / "dapo"
    overrides = tiny_overrides(tiny_model_dir, out, steps=1, **{
        "curriculum.drop_uniform_groups": "true", "curriculum.max_refill_rounds": 1})
    with caplog.at_level("WARNING", logger="r1ci.rl"):
        assert rl.main(["--config", str(ROOT / "configs/demo.yaml"), *overrides]) == 0
    assert "every group's rewards agreed" in caplog.text
    assert read_metrics(out) == []


ASYNC = {"run.max_staleness": 1, "algorithm.rollout_correction": "true"}


@pytest.mark.slow
@pytest.mark.parametrize("max_staleness, behind", [(0, [0, 0, 0]), (1, [0, 1, 1])])
def test_each_step_is_sampled_once_by_weights_at_most_max_staleness_versions_old(ray_cluster, tiny_model_dir, tmp_path,
                                                                                  max_staleness, behind):
    from r1ci.config import load_config

    out = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, out, steps=3, **{**ASYNC, "run.max_staleness": max_staleness})
    job = rl.RLJob(load_config(ROOT / "configs/demo.yaml", overrides))
    try:
        job.run(show_progress=False)
        generated = sum(ray_cluster.get([a.stats.remote() for a in job.generators.actors], timeout=60)[i]["trajectories"]
                        for i in range(len(job.generators.actors)))
    finally:
        job.close()
    assert generated == 3 * 2 * 2  # steps x prompts x group size: no step is generated twice
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2]
    # With max_staleness 1, step 1 is sampled by the initial weights while step 0 trains,
    # and step 2 by version 1 while step 1 trains; it trains at version 2.
    assert [r["staleness/max"] for r in rows] == behind
    assert [r["weights/version"] for r in rows] == [1, 2, 3]
    assert all(r["staleness/dropped_groups"] == 0 for r in rows)
    assert (out / "final" / "config.json").exists()


@pytest.mark.slow
def test_interrupted_asynchronous_run_resumes_as_the_uninterrupted_run_goes_on(ray_cluster, tiny_model_dir, tmp_path):
    # The driver dies after checkpoint step_000002, which holds step 2's trajectories (already
    # sampled by version 1): the resumed run trains on them, as the uninterrupted run does,
    # instead of sampling step 2 again with version 2.
    from r1ci.config import load_config

    cfg_file = str(ROOT / "configs/demo.yaml")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert rl.main(["--config", cfg_file, *tiny_overrides(tiny_model_dir, full, steps=4, **ASYNC)]) == 0

    class DriverDied(Exception):
        pass

    job = rl.RLJob(load_config(cfg_file, tiny_overrides(tiny_model_dir, cut, steps=4, **ASYNC)))
    learn = job.learn

    def dies_at_step_2(batch):
        if batch.step == 2:
            raise DriverDied
        return learn(batch)

    job.learn = dies_at_step_2
    try:
        with pytest.raises(DriverDied):
            job.run(show_progress=False)
    finally:
        job.close()
    assert (cut / "checkpoints" / "latest").read_text() == "step_000002"
    assert rl.main(["--config", cfg_file, "--resume", *tiny_overrides(tiny_model_dir, cut, steps=4, **ASYNC)]) == 0
    a, b = read_metrics(full), read_metrics(cut)
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for ra, rb in zip(a, b):
        assert rb["staleness/max"] == ra["staleness/max"]
        assert rb["reward/mean"] == pytest.approx(ra["reward/mean"], abs=1e-6)
        assert rb["learner/policy_loss"] == pytest.approx(ra["learner/policy_loss"], abs=1e-4)


def test_generation_job_after_a_failed_one_fails_without_running():
    queue, ran = rl.GenerationQueue(), []

    def load_weights():
        raise ConnectionError("generator gone")

    try:
        queue.submit(load_weights)
        after = queue.submit(ran.append, "rollout on the old weights")
        with pytest.raises(RuntimeError, match="an earlier generation job failed") as info:
            after.result(timeout=10)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert ran == []
    finally:
        queue.close(wait=True)
