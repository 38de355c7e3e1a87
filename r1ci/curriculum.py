"""The RL data order: improvement potential 4p(1-p), stages by potential, batch sampling.

`CurriculumSampler` runs the paper's multi-stage schedule (each stage adds the next group
of samples, ranked by potential, to the pool in use); `UniformSampler` samples all training
samples alike (the ablation baseline). Both filter uninformative groups (DAPO-style),
re-estimate pass rates online, and save their whole state for RL checkpoints. Pure: no Ray.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from r1ci.config import Config, CurriculumConfig
from r1ci.errors import MissingInput
from r1ci.trajectory import STOP_ERROR, Trajectory


def improvement_potential(p: float) -> float:
    """4p(1-p) for a pass rate p in [0, 1]: 1 at p = 0.5, 0 for always or never solved."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"pass rate must be in [0, 1], got {p}")
    return 4.0 * p * (1.0 - p)


def task_of(sample_id: str) -> str:
    """The task name of a sample id "task/seed/index"."""
    return sample_id.rsplit("/", 2)[0]


def sample_ids(task_names: Sequence[str], seed: int, instances_per_task: int) -> list[str]:
    """The ids "task/seed/index" of `instances_per_task` instances of each task, in order."""
    return [f"{t}/{seed}/{i}" for t in task_names for i in range(instances_per_task)]


def partition_stages(potentials: dict[str, float], bounds: Sequence[float]) -> list[list[str]]:
    """Group sample ids by potential: stage k holds [bounds[k], bounds[k-1]), stage 0 [bounds[0], 1].

    `bounds` are lower bounds, highest first (`curriculum.stage_bounds`, whose rules the config
    checks). Within a stage samples are ranked by potential, highest first (ties by id), so
    the order never depends on dict order.
    """
    stages: list[list[str]] = [[] for _ in bounds]
    for sid, pot in sorted(potentials.items(), key=lambda kv: (-kv[1], kv[0])):
        for k, low in enumerate(bounds):
            if pot >= low - 1e-9:  # 4*0.8*0.2 is 0.6399999999999999 in floats
                stages[k].append(sid)
                break
    return stages


@dataclass(frozen=True)
class GroupResult:
    """One group's outcome as the coordinator sees it: the G rollouts of one sample in one round."""

    group_id: str
    sample_id: str
    rewards: tuple[float, ...]  # what the filter compares: the group's advantages come from these
    correct: tuple[bool, ...]  # what the pass rates count


def group_results(trajectories: list[Trajectory]) -> list[GroupResult]:
    """One result per group (so a sample drawn twice in a round is two groups), in first-seen
    order. Trajectories that ended because the engine or executor failed (stop reason
    "error") say nothing about the sample and are left out; a group of only those is none."""
    groups: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        if t.stop_reason != STOP_ERROR:
            groups.setdefault(t.group_id, []).append(t)
    return [GroupResult(g, ts[0].sample_id, tuple(float(t.reward) for t in ts), tuple(bool(t.correct) for t in ts))
            for g, ts in groups.items()]


def informative_groups(results: Sequence[GroupResult]) -> list[str]:
    """Ids of the groups whose rewards do not all agree (a group that agrees has zero advantage)."""
    return [r.group_id for r in results if r.rewards and max(r.rewards) - min(r.rewards) > 1e-9]


def read_pass_rates(path: str | Path) -> dict[str, float]:
    """{sample_id: pass rate} from the Parquet file `jobs/profile_samples.py` writes."""
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    if not path.exists():
        raise MissingInput(f"curriculum.potentials file '{path}' not found: run jobs/profile_samples.py first or set curriculum.potentials=''")
    table = pq.read_table(path, columns=["sample_id", "pass_rate"])
    return dict(zip(table.column("sample_id").to_pylist(), map(float, table.column("pass_rate").to_pylist())))


def potential_rows(outcomes: dict[str, list[bool]]) -> list[dict[str, Any]]:
    """One profile row per sample: sample_id, task, n answers, correct, pass_rate p, potential 4p(1-p)."""
    rows = []
    for sid in sorted(outcomes):
        n, k = len(outcomes[sid]), sum(map(bool, outcomes[sid]))
        p = k / n if n else 0.0
        rows.append({"sample_id": sid, "task": task_of(sid), "n": n, "correct": k, "pass_rate": p, "potential": improvement_potential(p)})
    return rows


def write_potentials(rows: list[dict[str, Any]], path: str | Path) -> None:
    """The Parquet `curriculum.potentials` points to (written under a temporary name, then renamed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.rename(path)


class CurriculumSampler:
    """Hands out training sample ids step by step, stage by stage.

    Stage k (k = step // steps_per_stage) draws from the union of groups 0..k; groups come
    from `partition_stages` over the profiled potentials (a sample without a pass rate is
    treated as p = 0.5, the highest potential). Per step: `next_batch(n)` starts the step,
    `report(results)` records each group's outcomes and returns the informative group ids,
    `refill(n)` draws more ids for the same step when groups were dropped.
    """

    kind = "curriculum"

    def __init__(self, ids: Sequence[str], cfg: CurriculumConfig, seed: int = 0, pass_rates: dict[str, float] | None = None):
        if not ids:
            raise ValueError("the curriculum needs at least one training sample: check tasks.train and tasks.instances_per_task")
        self.cfg = cfg
        self.ids = list(dict.fromkeys(ids))
        self.prior = {sid: float((pass_rates or {}).get(sid, 0.5)) for sid in self.ids}
        self.stats: dict[str, list[int]] = {}  # sample id -> [rollouts, correct rollouts]
        self.rng = random.Random(seed)
        self.step = 0  # steps started so far
        self.stage = 0
        self.stages = self._partition()
        self.pool: list[str] = self._pool_for(0)
        self._queues: dict[str, list[str]] = {}
        self._task_queue: list[str] = []

    # -- stages -------------------------------------------------------------------------

    def pass_rate(self, sid: str) -> float:
        """Current estimate of p: the profiled rate, updated by rollouts when online_pass_rate is on."""
        if not self.cfg.online_pass_rate or sid not in self.stats:
            return self.prior[sid]
        n, k = self.stats[sid]
        w = self.cfg.prior_rollouts
        return (self.prior[sid] * w + k) / (w + n)

    def _partition(self) -> list[list[str]]:
        return partition_stages({sid: improvement_potential(self.pass_rate(sid)) for sid in self.ids}, self.cfg.stage_bounds)

    def _pool_for(self, stage: int) -> list[str]:
        """Groups 0..stage; if those are all empty, up to the first non-empty group."""
        pool: list[str] = []
        for k, group in enumerate(self.stages):
            if k > stage and pool:
                break
            pool.extend(group)
        return pool

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def _enter_stage(self, stage: int) -> None:
        if self.cfg.online_pass_rate:  # re-rank by what rollouts have shown so far
            self.stages = self._partition()
        self.stage = stage
        self.pool = self._pool_for(stage)
        self._queues, self._task_queue = {}, []

    # -- sampling -----------------------------------------------------------------------

    def _draw_one(self) -> str:
        if not self.cfg.task_balanced:
            queue = self._queues.setdefault("", [])
            if not queue:
                queue.extend(self.rng.sample(self.pool, len(self.pool)))
            return queue.pop()
        if not self._task_queue:
            tasks = sorted({task_of(s) for s in self.pool})
            self._task_queue = self.rng.sample(tasks, len(tasks))
        task = self._task_queue.pop()
        queue = self._queues.setdefault(task, [])
        if not queue:
            members = [s for s in self.pool if task_of(s) == task]
            queue.extend(self.rng.sample(members, len(members)))
        return queue.pop()

    def refill(self, n: int) -> list[str]:
        """`n` more sample ids for the current step (to replace dropped groups); no step advance."""
        return [self._draw_one() for _ in range(n)]

    def next_batch(self, n: int) -> list[str]:
        """Start the next RL step and return its `n` sample ids (seeded, epoch-shuffled pool).

        Every pool sample is drawn once before any is drawn again (so ids repeat within a
        batch only when the pool is smaller than `n`); with `task_balanced`, tasks take
        turns and samples take turns within a task.
        """
        stage = min(self.step // self.cfg.steps_per_stage, self.num_stages - 1)
        if stage != self.stage:
            self._enter_stage(stage)
        self.step += 1
        return self.refill(n)

    # -- results ------------------------------------------------------------------------

    def report(self, results: Sequence[GroupResult]) -> list[str]:
        """Record one round's group results (`group_results`): every rollout counts towards its
        sample's pass rate (correct or not). Returns the ids of the groups to train on: all
        of them, or with `drop_uniform_groups` only those whose rewards do not all agree.
        """
        for r in results:
            n, k = self.stats.get(r.sample_id, (0, 0))
            self.stats[r.sample_id] = [n + len(r.correct), k + sum(r.correct)]
        return informative_groups(results) if self.cfg.drop_uniform_groups else [r.group_id for r in results]

    def stage_info(self) -> dict[str, Any]:
        """Where the schedule is: step, stage, pool size, group sizes, mean estimated pass rate."""
        seen = [self.pass_rate(s) for s in self.stats]
        return {
            "kind": self.kind,
            "step": self.step,
            "stage": self.stage,
            "num_stages": self.num_stages,
            "pool_size": len(self.pool),
            "stage_sizes": [len(g) for g in self.stages],
            "samples_seen": len(self.stats),
            "mean_pass_rate_seen": sum(seen) / len(seen) if seen else 0.0,
        }

    # -- checkpoint ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the next batches depend on: step, stage, groups, pool, stats, queues, RNG."""
        return {
            "kind": self.kind,
            "ids": list(self.ids),
            "step": self.step,
            "stage": self.stage,
            "stages": [list(g) for g in self.stages],
            "pool": list(self.pool),
            "stats": {k: list(v) for k, v in self.stats.items()},
            "queues": {k: list(v) for k, v in self._queues.items()},
            "task_queue": list(self._task_queue),
            "rng": self.rng.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint holds a '{state.get('kind')}' sampler but curriculum.sampler is '{self.kind}'")
        if set(state["ids"]) != set(self.ids):
            raise ValueError("checkpoint's training samples differ from this run's: keep tasks.train, tasks.seed and tasks.instances_per_task as they were")
        self.step, self.stage = state["step"], state["stage"]
        self.stages = [list(g) for g in state["stages"]]
        self.pool = list(state["pool"])
        self.stats = {k: list(v) for k, v in state["stats"].items()}
        self._queues = {k: list(v) for k, v in state["queues"].items()}
        self._task_queue = list(state["task_queue"])
        self.rng.setstate(state["rng"])


class UniformSampler(CurriculumSampler):
    """The ablation baseline: one stage holding every training sample, sampled alike."""

    kind = "uniform"

    def _partition(self) -> list[list[str]]:
        return [sorted(self.ids)]


def make_sampler(cfg: Config, ids: Sequence[str], pass_rates: dict[str, float] | None = None) -> CurriculumSampler:
    """The sampler `cfg.curriculum.sampler` names; pass rates from `cfg.curriculum.potentials` if not given."""
    if pass_rates is None and cfg.curriculum.potentials:
        pass_rates = read_pass_rates(cfg.curriculum.potentials)
    cls = {"curriculum": CurriculumSampler, "uniform": UniformSampler}.get(cfg.curriculum.sampler)
    if cls is None:
        raise ValueError(f"curriculum.sampler '{cfg.curriculum.sampler}' is not one of curriculum, uniform")
    return cls(ids, cfg.curriculum, seed=cfg.run.seed, pass_rates=pass_rates)
