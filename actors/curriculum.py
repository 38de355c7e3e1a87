"""The curriculum coordinator: one Ray actor that owns the RL data order and the stage.

A thin shell over `r1ci.curriculum`: jobs ask it for sample ids ("task/seed/index"), rebuild
instances from the ids through the task registry, and report each round's group results.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray

from r1ci.config import Config, from_dict
from r1ci.curriculum import GroupResult, make_sampler


@ray.remote(num_cpus=0)
class CurriculumCoordinator:
    """Remote `CurriculumSampler` / `UniformSampler` (chosen by `curriculum.sampler`)."""

    def __init__(self, cfg: Config | dict, ids: Sequence[str], pass_rates: dict[str, float] | None = None):
        self.sampler = make_sampler(cfg if isinstance(cfg, Config) else from_dict(cfg), ids, pass_rates)

    def next_batch(self, n: int) -> list[str]:
        return self.sampler.next_batch(n)

    def refill(self, n: int) -> list[str]:
        return self.sampler.refill(n)

    def report(self, results: Sequence[GroupResult]) -> list[str]:
        return self.sampler.report(results)

    def stage_info(self) -> dict[str, Any]:
        return self.sampler.stage_info()

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def make_coordinator(cfg: Config, ids: Sequence[str], pass_rates: dict[str, float] | None = None) -> Any:
    """Start the coordinator actor (no CPU reserved: it only shuffles ids)."""
    return CurriculumCoordinator.remote(cfg, list(ids), pass_rates)
