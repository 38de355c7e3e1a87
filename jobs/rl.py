"""RL with a code interpreter: GRPO/PPO over multi-turn rollouts, ordered by a curriculum.

    python jobs/rl.py --config configs/demo.yaml run.steps=3 learner.lr=1e-5
    ray job submit -- python jobs/rl.py --config configs/<recipe>.yaml
    python jobs/rl.py --config ... --resume        # continue from run.output_dir's last checkpoint

One step is the six steps of DESIGN.md, in order: `RLJob.generate` (1-3, on the generators)
then `RLJob.learn` (4-6, on the learner). With `run.max_staleness` s > 0 they overlap: one
generation thread works through an ordered queue of jobs (generate step k, load weights
version v, evaluate) up to s steps ahead of the learner, so step k is sampled by the
weights of version max(0, k - s) and trains at version k. A sync waits in that queue until
the steps sampled before it are finished (a version barrier), so every token of a
trajectory comes from its `weight_version`; the learner's export of the weights overlaps
generation, only the generators' load of them pauses it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import ray
import torch

from actors.curriculum import make_coordinator
from actors.executor import ExecutorPool
from actors.fleet import GeneratorFleet
from actors.learner import LearnerGroup
from actors.runtime import init_ray
from r1ci import checkpoint, evaluation, rewards
from r1ci.cli import job_main
from r1ci.config import Config, to_dict
from r1ci.metrics import MetricsLogger, group_pass_rates, rollout_metrics
from r1ci.models import resolve_model
from r1ci.rollout import RolloutRequest, sampling_from_config
from r1ci.tasks import generate_instances, get_task
from r1ci.tasks.base import Instance
from r1ci.curriculum import group_results, read_pass_rates
from r1ci.trajectory import STOP_ERROR, Trajectory

log = logging.getLogger("r1ci.rl")


class LearnerDied(RuntimeError):
    """A learner rank failed; the job ends and can resume from its last checkpoint."""


def training_samples(cfg: Config) -> dict[str, Instance]:
    """Every training instance by its stable id; test-split tasks are refused."""
    return {
        inst.id: inst
        for name in evaluation.training_task_names(cfg)
        for inst in generate_instances(name, cfg.tasks.seed, cfg.tasks.instances_per_task)
    }


@contextmanager
def timed(timings: dict[str, float], phase: str):
    start = time.perf_counter()
    yield
    timings[f"time/{phase}_s"] = time.perf_counter() - start


@dataclass
class Rollouts:
    """Steps 1-3 of one RL step, as the generation side hands them to the learner side."""

    step: int
    trajectories: list[Trajectory]  # of the groups worth training on
    version: int  # the weights that sampled them
    metrics: dict[str, float]  # generation-side timings, curriculum stage, failures


def done_future(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class GenerationQueue:
    """One thread that runs the generators' jobs (rollouts, weight loads, evaluations) in the
    order they were submitted; a job whose predecessor failed fails too, without running, so
    a failed weight load is never followed by a rollout on the old weights."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="r1ci-generation")
        self.last: Future | None = None

    def submit(self, fn: Callable, *args) -> Future:
        before = self.last

        def job():
            if before is not None and before.exception() is not None:
                raise RuntimeError("an earlier generation job failed") from before.exception()
            return fn(*args)

        self.last = self.pool.submit(job)
        return self.last

    def close(self, wait: bool) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)


class RLJob:
    """The actors of one RL run and the loop over its steps."""

    def __init__(self, cfg: Config, resume: bool = False):
        self.cfg = cfg
        self.out = Path(cfg.run.output_dir)
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        self.samples = training_samples(cfg)
        self.held_out = evaluation.held_out_instances(cfg, cfg.eval.rl_instances_per_task) if cfg.run.eval_every else []
        self.family_of = {name: get_task(name).family for name in {i.task for i in self.samples.values()}}
        model_dir = resolve_model(cfg.model.path, cfg.model.data_dir)
        pass_rates = read_pass_rates(cfg.curriculum.potentials) if cfg.curriculum.potentials else None

        self.coordinator = make_coordinator(cfg, sorted(self.samples), pass_rates)
        self.executor = ExecutorPool.create(cfg)
        self.learners = LearnerGroup.create(cfg, model_dir)
        self.generators = GeneratorFleet(cfg, model_dir, self.executor)
        self.start_step, self.version = 0, 0  # self.version: the learner's weights
        self.served = 0  # the version the generators serve (set in the generation thread)
        self.load_s = 0.0  # seconds of the last weight load, reported with the next generation
        self.ahead: dict[int, Future] = {}  # steps generated (or being generated), not yet trained
        self.log_lock = threading.Lock()
        self.run_start = time.perf_counter()

        ckpt = checkpoint.latest(self.out) if resume else None
        if resume and ckpt is None:
            log.info("--resume: no checkpoint in %s yet, starting from step 0", self.out)
        if ckpt is not None:
            state = checkpoint.load_state(ckpt)
            self.learners.load(str(ckpt / "learner"))
            self.ask(self.coordinator.load_state_dict.remote(state["coordinator"]))
            checkpoint.set_rng_state(state["rng"])
            self.start_step, self.version = state["step"], state["weight_version"]
            self.generators.load_weights(self.learners.publish_weights(self.version), self.version)
            self.served = self.version
            self.ahead = {k: done_future(r) for k, r in state.get("ahead", {}).items()}
            log.info("resumed from %s (step %d)", ckpt, self.start_step)
        self.logger = MetricsLogger(self.out)

    def ask(self, call: ray.ObjectRef):
        """The coordinator's answer to `call` (a stalled call means it died: the job fails)."""
        return ray.get(call, timeout=self.cfg.run.coordinator_timeout_s)

    def requests(self, sample_ids: list[str], step: int, round_: int = 0) -> list[RolloutRequest]:
        """G rollouts per sample; seeds depend only on (run seed, step, round, position, g) so resume repeats them."""
        out = []
        for k, sid in enumerate(sample_ids):
            group = f"{step}:{round_}:{k}:{sid}"  # a sample drawn twice in a step forms two groups
            for g in range(self.cfg.algorithm.group_size):
                sampling = sampling_from_config(self.cfg, seed=zlib.crc32(f"{self.cfg.run.seed}/{group}/{g}".encode()))
                out.append(RolloutRequest(self.samples[sid], group, self.cfg.tasks.prompt_style, sampling))
        return out

    def rollout_and_score(self, sample_ids: list[str], step: int, round_: int) -> tuple[list[Trajectory], int]:
        """Steps 2 and 3 for some prompts: rollouts, rewards, and the coordinator told each
        group's outcomes (without the trajectories the engine or executor failed); returns
        the trajectories of the groups worth training on (all of them, or with
        `curriculum.drop_uniform_groups` those whose rewards differ) and how many failed."""
        trajs = self.generators.rollout(self.requests(sample_ids, step, round_), self.served)
        for traj in trajs:
            inst = self.samples[traj.sample_id]
            rewards.assign(traj, rewards.score(traj, get_task(traj.task), inst, self.cfg.reward, self.cfg.protocol))
        keep = set(self.ask(self.coordinator.report.remote(group_results(trajs))))
        return [t for t in trajs if t.group_id in keep], sum(t.stop_reason == STOP_ERROR for t in trajs)

    def generate(self, step: int) -> Rollouts:
        """Steps 1-3 of `step`, sampled by the weights the generators serve now."""
        t: dict[str, float] = {"time/load_weights_s": self.load_s}
        self.load_s = 0.0
        # 1. The coordinator hands out this step's prompts (sample ids) for the current stage.
        with timed(t, "coordinator"):
            sample_ids = self.ask(self.coordinator.next_batch.remote(self.cfg.run.prompts_per_step))
        # 2. Generators run G multi-turn rollouts per prompt; code runs in the executor pool.
        # 3. Each is scored (task verifier + format and turn terms); the coordinator gets the
        #    per-sample outcomes and may drop groups whose rewards all agree, to be refilled.
        with timed(t, "generation"):
            trajs, failed = self.rollout_and_score(sample_ids, step, 0)
            for round_ in range(1, self.cfg.curriculum.max_refill_rounds + 1):
                missing = self.cfg.run.prompts_per_step - len({x.group_id for x in trajs})
                if missing <= 0 or not self.cfg.curriculum.drop_uniform_groups:
                    break
                refill = self.ask(self.coordinator.refill.remote(missing))
                more, more_failed = self.rollout_and_score(refill, step, round_)
                trajs, failed = trajs + more, failed + more_failed
        stage = self.ask(self.coordinator.stage_info.remote())
        return Rollouts(step, trajs, self.served, {
            **t,
            "curriculum/stage": stage["stage"],
            "curriculum/pool_size": stage["pool_size"],
            "generation/tokens_per_s": sum(len(x.response_ids) for x in trajs) / max(t["time/generation_s"], 1e-9),
            "generation/engine_tokens_per_s": self.generators.stats()["tokens_per_s"],
            "rollout/failed": failed,
        })

    def learn(self, batch: Rollouts) -> tuple[dict[str, float], list | None]:
        """Steps 4-6 of `batch.step`: train, export the new weights, log. Returns the step's
        metrics and the new weights' bucket refs for the generators (None when the step
        trained nothing: every group agreed, or every one was too stale)."""
        step, limit = batch.step, self.cfg.run.max_staleness
        stale = {x.group_id for x in batch.trajectories if self.version - x.weight_version > limit}
        trajs = [x for x in batch.trajectories if x.group_id not in stale]
        if stale:
            log.warning("step %d: %d groups sampled more than %d versions ago are not trained on", step, len(stale), limit)
        if not trajs:
            log.warning("step %d: every group's rewards agreed; nothing to train on", step)
            return {}, None
        t: dict[str, float] = {}
        # 4. The learner computes advantages and takes its optimizer step(s); it leaves out the
        #    failed trajectories and skips a batch with nothing to learn (all advantages zero).
        with timed(t, "learner"):
            try:
                learner_metrics = self.learners.train_step(trajs)
            except ray.exceptions.RayError as exc:
                raise LearnerDied(str(exc).splitlines()[0]) from exc
        # 5. The new weights go once into the object store in buckets (the generators load them
        #    in the generation queue, after the steps already sampled by the old ones).
        behind = [self.version - x.weight_version for x in trajs]
        with timed(t, "sync"):
            self.version += 1
            refs = list(self.learners.publish_weights(self.version))
        # 6. The step's metrics are logged (the coordinator already has the outcomes).
        metrics = {
            **rollout_metrics(trajs, self.family_of),
            **{f"learner/{k}": v for k, v in learner_metrics.items()},
            **batch.metrics,
            **t,
            "curriculum/groups": len({x.group_id for x in trajs}),
            "curriculum/refilled_groups": len({x.group_id for x in trajs if x.group_id.split(":")[1] != "0"}),
            "staleness/mean": sum(behind) / len(behind),
            "staleness/max": max(behind),
            "staleness/dropped_groups": len(stale),
            "weights/version": self.version,
            "time/run_s": time.perf_counter() - self.run_start,  # since this process's loop began
        }
        histograms = {"pass_rate": list(group_pass_rates(trajs).values()), "code_calls": [x.code_calls for x in trajs]}
        with self.log_lock:
            self.logger.log(step, metrics, histograms)
        return metrics, refs

    def load_weights(self, refs: list, version: int) -> None:
        """Every generator loads weights `version` (in the generation queue)."""
        start = time.perf_counter()
        self.generators.load_weights(refs, version)
        self.served, self.load_s = version, time.perf_counter() - start

    def evaluate(self, step: int) -> dict[str, float]:
        """The policy now served (weights version `self.served`) on the fixed held-out set, with
        jobs/eval.py's requests and scoring; logged as eval/... at `step` (the version's own step)."""
        start = time.perf_counter()
        requests = evaluation.answer_requests(self.held_out, self.cfg)
        records = evaluation.score_answers(requests, self.generators.rollout(requests, self.served), self.cfg, "policy")
        metrics = evaluation.scalar_metrics(evaluation.summarize(records, self.cfg), "policy")
        metrics["time/eval_s"] = time.perf_counter() - start
        with self.log_lock:
            self.logger.log(step, metrics)
        return metrics

    def save(self, step: int) -> Path:
        """Checkpoint after `step` steps; with max_staleness > 0 the steps already generated
        are stored too (a resume trains on them, as the uninterrupted run does), so this waits
        for them, and the coordinator's state is taken after their draws."""
        ahead = {k: future.result() for k, future in sorted(self.ahead.items())}
        state = {
            "weight_version": self.version,
            "coordinator": self.ask(self.coordinator.state_dict.remote()),
            "rng": checkpoint.rng_state(),
            "config": to_dict(self.cfg),
            "ahead": ahead,
        }
        return checkpoint.save(self.out, step, state, self.learners.save)

    def run(self, show_progress: bool = True) -> list[dict[str, float]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        history = []
        steps, every, ahead = self.cfg.run.steps, self.cfg.run.eval_every, self.cfg.run.max_staleness
        queue, failed = GenerationQueue(), True
        self.run_start = time.perf_counter()

        def generate_ahead(first: int) -> None:  # queue the generation of steps first..first+s not queued yet
            for k in range(first, min(first + ahead, steps - 1) + 1):
                if k not in self.ahead:
                    self.ahead[k] = queue.submit(self.generate, k)

        with Progress(TextColumn("RL"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), disable=not show_progress) as bar:
            task = bar.add_task("rl", total=steps, completed=self.start_step, info="")
            try:
                if every and self.start_step % every == 0 and self.start_step < steps:
                    queue.submit(self.evaluate, self.start_step)  # the weights the first step samples with
                generate_ahead(self.start_step)
                for step in range(self.start_step, steps):
                    try:
                        m, refs = self.learn(self.ahead.pop(step).result())
                    except LearnerDied as exc:
                        last = checkpoint.latest(self.out)
                        where = f"resume from {last} with --resume" if last else "no checkpoint was written yet"
                        raise SystemExit(f"learner failed at step {step}: {exc}. {where}") from None
                    if refs is not None:
                        loaded = queue.submit(self.load_weights, refs, self.version)
                        if not ahead:
                            loaded.result()  # synchronous: nothing to do until the generators serve it
                    done = step + 1
                    if every and done % every == 0 and done < steps:
                        queue.submit(self.evaluate, done)
                    if done % self.cfg.run.checkpoint_every == 0 or done == steps:
                        self.save(done)
                    generate_ahead(done)
                    if m:
                        history.append(m)
                        bar.update(task, info=f"reward {m['reward/mean']:.3f} acc {m['accuracy/mean']:.2f} "
                                   f"stage {m['curriculum/stage']:.0f}")
                    bar.update(task, advance=1)
                if every and self.start_step < steps:
                    queue.submit(self.evaluate, steps).result()  # the final policy
                if queue.last is not None:
                    queue.last.result()  # the last weight load, and any failure of the queue
                failed = False
            finally:
                queue.close(wait=not failed)  # after a failure, queued jobs are dropped, not run
        self.learners.save_hf(str(self.out / "final"))
        return history

    def close(self) -> None:
        self.logger.close()
        self.generators.shutdown()
        self.learners.shutdown()
        self.executor.close()


def run_rl(cfg: Config, show_progress: bool = True, verbose: bool = False, resume: bool = False) -> None:
    """Start (or join) Ray and the actors, run the steps, save the final model, stop every actor."""
    init_ray(cfg.run.ray_address, cfg.run.ray_num_cpus, log_dir=Path(cfg.run.output_dir) / "logs", verbose=verbose)
    job = RLJob(cfg, resume=resume)
    try:
        history = job.run(show_progress)
    finally:
        job.close()
    last = history[-1] if history else {}
    summary = {"steps": cfg.run.steps, "trained_now": len(history), "last": last,
               "final_dir": str((Path(cfg.run.output_dir) / "final").resolve())}
    (Path(cfg.run.output_dir) / "summary.json").write_text(json.dumps(summary, indent=1))  # written last: the run is done
    print(f"done: {len(history)} steps, last reward {last.get('reward/mean', float('nan')):.3f}, "
          f"outputs in {cfg.run.output_dir}")


def main(argv: list[str] | None = None) -> int:
    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in run.output_dir")

    return job_main(__doc__, "rl", run_rl, lambda cfg: cfg.run.output_dir, flags, argv)


if __name__ == "__main__":
    sys.exit(main())
