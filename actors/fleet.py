"""The driver's handle on all generator actors: spreads rollouts, survives a dead generator.

A generator that dies mid-step is replaced, given the current weights, and its unfinished
rollouts are redone (the ones it returned are kept); a trajectory sampled by any other
weight version than the current one is refused, so stale weights are never trained on
silently.
"""

from __future__ import annotations

import logging
from typing import Iterable

import ray

from actors.generator import make_generators
from r1ci.config import Config
from r1ci.rollout import RolloutRequest
from r1ci.trajectory import Trajectory

log = logging.getLogger(__name__)


class StaleWeights(RuntimeError):
    pass


class GeneratorFleet:
    def __init__(self, cfg: Config, model_dir: str, executor):
        self.cfg, self.model_dir, self.executor = cfg, model_dir, executor
        self.actors = make_generators(cfg, model_dir, executor)
        self.max_redos, self.timeout_s = cfg.generator.max_redos, cfg.generator.call_timeout_s
        self.weights: tuple[list, int] | None = None  # (bucket refs, version) of the last sync
        self.closed = False  # after shutdown a failed call is not redone (nothing restarts a generator)

    def _replace(self, i: int) -> None:
        try:
            ray.kill(self.actors[i])
        except Exception:  # already gone
            pass
        self.actors[i] = make_generators(self.cfg, self.model_dir, self.executor, count=1)[0]
        if self.weights is not None:
            refs, version = self.weights
            ray.get(self.actors[i].load_weights.remote(refs, version), timeout=self.timeout_s)
        log.warning("generator %d restarted%s", i, f" at weight version {self.weights[1]}" if self.weights else "")

    def rollout(self, requests: list[RolloutRequest], version: int) -> list[Trajectory]:
        """Run every request once; returns trajectories in request order. Each request is its
        own call (a generator's event loop runs them all at once and its engine batches them),
        so when a generator dies or gives no answer within `generator.call_timeout_s`, the
        trajectories it already returned are kept and only its unfinished requests are redone,
        on a replacement, up to `generator.max_redos` times."""
        out: list[Trajectory | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        for attempt in range(self.max_redos + 1):
            n = len(self.actors)
            calls = {self.actors[k % n].generate.remote([requests[i]]): (i, k % n) for k, i in enumerate(todo)}
            ready, late = ray.wait(list(calls), num_returns=len(calls), timeout=self.timeout_s)
            failed: dict[int, str] = {calls[ref][1]: "GetTimeoutError" for ref in late}
            for ref in ready:
                i, actor = calls[ref]
                try:
                    out[i] = ray.get(ref)[0]
                except ray.exceptions.RayActorError as exc:
                    failed.setdefault(actor, type(exc).__name__)
            todo = [i for i in todo if out[i] is None]
            if not todo:
                break
            if attempt == self.max_redos or self.closed:
                raise RuntimeError(f"generators {sorted(failed)} failed {attempt + 1} times ({', '.join(sorted(set(failed.values())))}); "
                                   f"{len(todo)} of {len(requests)} rollouts unfinished")
            log.warning("generators %s failed (%s); redoing their %d unfinished rollouts", sorted(failed),
                        ", ".join(sorted(set(failed.values()))), len(todo))
            for actor in failed:
                self._replace(actor)
        stale = [t.sample_id for t in out if t.weight_version != version]
        if stale:
            raise StaleWeights(f"{len(stale)} trajectories were sampled with old weights (expected version {version})")
        return out  # type: ignore[return-value]

    def load_weights(self, bucket_refs: Iterable[ray.ObjectRef], version: int) -> None:
        """Every generator loads each bucket of the sync as soon as it is published (so loading
        overlaps the learner's export); returns once all of them serve `version`."""
        refs, loads = [], []
        for ref in bucket_refs:
            refs.append(ref)
            loads += [a.load_bucket.remote(ref) for a in self.actors]
        self.weights = (refs, version)
        answers = ray.get(loads, timeout=self.timeout_s)
        # An async actor may run its bucket loads in another order than they were sent: the one
        # it ran last completes the sync and answers `version`, whichever bucket it was.
        served = [version if version in answers[i::len(self.actors)] else max(answers[i::len(self.actors)])
                  for i in range(len(self.actors))]
        if any(v != version for v in served):
            raise StaleWeights(f"after the sync of version {version} the generators serve versions {served}")

    def stats(self) -> dict[str, float]:
        per = ray.get([a.stats.remote() for a in self.actors], timeout=60)
        return {"tokens_per_s": sum(s.get("tokens_per_s", 0.0) for s in per)}

    def shutdown(self) -> None:
        """Stop each engine's own processes (vLLM's engine core and workers), then the actors."""
        self.closed = True
        try:
            ray.get([a.shutdown.remote() for a in self.actors], timeout=60)
        except ray.exceptions.RayError:  # a dead generator has nothing left to stop
            pass
        for a in self.actors:
            ray.kill(a)
