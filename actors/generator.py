"""Generator actors: each holds one engine and runs batches of multi-turn rollouts.

A thin Ray shell over `r1ci.engines` and `r1ci.rollout`: the actor is async, so the
trajectories of a batch (and the executor calls they await) interleave on its event loop
while the engine batches their generation requests.
"""

from __future__ import annotations

import asyncio
import os
import time

import ray

from r1ci.config import Config, from_dict, to_dict
from r1ci.rollout import RolloutRequest, rollout_batch
from r1ci.sandbox.base import Sandbox
from r1ci.trajectory import Trajectory
from r1ci.weight_sync import MIXED_WEIGHTS, Bucket, WeightSyncError, check_complete, unpack_bucket


@ray.remote
class GeneratorActor:
    """One engine (vLLM or transformers, by `generator.backend`) plus the rollout loop."""

    def __init__(self, cfg: Config | dict, model_dir: str, executor: Sandbox | None = None):
        from r1ci.engines import make_engine

        self.cfg = from_dict(cfg) if isinstance(cfg, dict) else cfg
        if executor is None:  # a local warm sandbox in this actor's process
            from r1ci.sandbox import Executor

            executor = Executor(self.cfg.sandbox)
        self.executor = executor
        self.engine = make_engine(self.cfg, model_dir)
        self.version = 0
        self._incoming: tuple[int | None, set[int]] = (None, set())  # (version, bucket indices) of a sync in progress
        self._sync_lock = asyncio.Lock()
        self._trajectories = 0
        self._turns = 0
        self._code_calls = 0
        self._code_wait_s = 0.0
        self._rollout_s = 0.0

    def ready(self) -> dict:
        """Blocks until the engine is up (the constructor has run); says what it runs."""
        return {
            "backend": self.cfg.generator.backend,
            "max_model_len": self.engine.max_model_len,
            "node": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }

    async def generate(self, requests: list[RolloutRequest]) -> list[Trajectory]:
        """Roll out every request concurrently; trajectories in request order, stamped with the weight version."""
        start = time.perf_counter()
        trajs = await rollout_batch(self.engine, self.executor, requests, self.cfg, weight_version=self.version)
        self._rollout_s += time.perf_counter() - start
        self._trajectories += len(trajs)
        self._turns += sum(len(t.turns) for t in trajs)
        self._code_calls += sum(t.code_calls for t in trajs)
        self._code_wait_s += sum(t.code_wait_s for t in trajs)
        return trajs

    async def load_bucket(self, bucket: Bucket) -> int:
        """Load one bucket of a weight sync the moment it arrives (Ray resolves the ref, zero-copy
        on the same node); returns the version served afterwards. Between the first and the
        last bucket of a sync the weights are mixed, so the version is MIXED_WEIGHTS and any
        trajectory sampled meanwhile is refused as stale."""
        async with self._sync_lock:
            version, seen = self._incoming
            if bucket.version != version:  # a new sync; an unfinished older one is abandoned
                version, seen = bucket.version, set()
            if bucket.index in seen:
                raise WeightSyncError(f"weights version {version}: bucket {bucket.index} arrived twice")
            seen.add(bucket.index)
            final = len(seen) == bucket.count
            self._incoming = (version, seen)
            self.version = MIXED_WEIGHTS
            await self.engine.load_weights(unpack_bucket(bucket), version, final=final)
            if final:
                self.version, self._incoming = version, (None, set())
            return self.version

    async def load_weights(self, bucket_refs: list, version: int) -> int:
        """Load a whole sync (a restarted generator catching up): ObjectRefs of its buckets."""
        buckets = list(await asyncio.gather(*bucket_refs))
        check_complete(buckets, version)
        for bucket in buckets:
            await self.load_bucket(bucket)
        return self.version

    def stats(self) -> dict:
        """Engine tokens/s and counters, rollout time, code wait and turns per trajectory, weight version."""
        engine = self.engine.stats()
        n = max(self._trajectories, 1)
        return {
            "weight_version": self.version,
            "tokens_per_s": engine.tokens_per_s,
            "generated_tokens": engine.generated_tokens,
            "engine_busy_s": engine.generate_seconds,
            "rollout_s": self._rollout_s,
            "trajectories": self._trajectories,
            "turns_per_trajectory": self._turns / n,
            "code_calls_per_trajectory": self._code_calls / n,
            "code_wait_s_per_trajectory": self._code_wait_s / n,
        }

    def shutdown(self) -> None:
        """Stop the engine's own processes (vLLM's engine core and workers) before the actor is killed."""
        self.engine.shutdown()


def make_generators(cfg: Config, model_dir: str, executor: Sandbox | None = None, count: int | None = None) -> list:
    """Start `count` (default `generator.num_generators`) GeneratorActors with the CPUs/GPUs the config asks for.

    Returns their handles once every engine is up (vLLM takes ~45-60 s on CPU).
    """
    g = cfg.generator
    actors = [
        GeneratorActor.options(num_cpus=g.num_cpus, num_gpus=g.num_gpus).remote(to_dict(cfg), model_dir, executor)
        for _ in range(count if count is not None else g.num_generators)
    ]
    ray.get([a.ready.remote() for a in actors], timeout=g.start_timeout_s)
    return actors
