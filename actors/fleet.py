"""The driver's handle on all generator actors: spreads rollouts, survives a dead generator.

A generator that dies mid-step is replaced, given the current weights, and its prompts are
redone; a trajectory sampled by any other weight version than the current one is refused,
so stale weights are never trained on silently.
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
        """Run every request once; returns trajectories in request order."""
        n = len(self.actors)
        chunks = {i: requests[i::n] for i in range(n) if requests[i::n]}
        done: dict[int, list[Trajectory]] = {}
        for attempt in range(self.max_redos + 1):
            refs = {i: self.actors[i].generate.remote(chunk) for i, chunk in chunks.items() if i not in done}
            for i, ref in refs.items():
                try:
                    done[i] = ray.get(ref, timeout=self.timeout_s)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                    if attempt == self.max_redos or self.closed:
                        raise RuntimeError(f"generator {i} failed {attempt + 1} times: {exc}") from exc
                    log.warning("generator %d failed (%s); redoing its %d prompts", i, type(exc).__name__, len(chunks[i]))
                    self._replace(i)
            if len(done) == len(chunks):
                break
        out: list[Trajectory] = [None] * len(requests)  # type: ignore[list-item]
        for i, trajs in done.items():
            out[i::n] = trajs
        stale = [t.sample_id for t in out if t.weight_version != version]
        if stale:
            raise StaleWeights(f"{len(stale)} trajectories were sampled with old weights (expected version {version})")
        return out

    def load_weights(self, bucket_refs: Iterable[ray.ObjectRef], version: int) -> None:
        """Every generator loads each bucket of the sync as soon as it is published (so loading
        overlaps the learner's export); returns once all of them serve `version`."""
        refs, loads = [], []
        for ref in bucket_refs:
            refs.append(ref)
            loads += [a.load_bucket.remote(ref) for a in self.actors]
        self.weights = (refs, version)
        served = ray.get(loads, timeout=self.timeout_s)[-len(self.actors):]
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
