"""The generator fleet under faults: a generator that dies mid-batch loses none of the
trajectories it already returned, and only its unfinished rollouts are redone."""

import asyncio
import os

import pytest
import ray

from actors.fleet import GeneratorFleet
from r1ci.config import load_config
from r1ci.rollout import RolloutRequest
from r1ci.tasks import generate_instances
from r1ci.trajectory import Trajectory


@ray.remote
class DiesAfterAnswering:
    """Stands in for a generator (the unit under test is the fleet): answers its first `k`
    calls at once, then dies with the others in flight."""

    def __init__(self, k: int):
        self.k, self.answered = k, 0

    async def generate(self, requests: list[RolloutRequest]) -> list[Trajectory]:
        if self.answered < self.k:
            self.answered += 1
            r = requests[0]
            return [Trajectory(task=r.instance.task, sample_id=r.instance.id, group_id=r.group_id, prompt_ids=[],
                               error="answered before dying")]
        await asyncio.sleep(1.0)
        os._exit(1)


@pytest.mark.slow
def test_a_generator_that_dies_mid_batch_keeps_what_it_returned_and_only_the_rest_is_redone(ray_cluster, tiny_model_dir):
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "generator.backend=hf", "generator.num_cpus=0.25",
                             "sampling.max_tokens_per_turn=8", "sampling.max_total_tokens=16"])
    fleet = GeneratorFleet(cfg, tiny_model_dir, None)
    try:
        ray.kill(fleet.actors[0])
        fleet.actors[0] = DiesAfterAnswering.options(num_cpus=0).remote(3)
        requests = [RolloutRequest(inst, f"g{i}", "agent") for i, inst in enumerate(generate_instances("toy_run_code", 0, 8))]
        trajs = fleet.rollout(requests, version=0)
        assert [t.sample_id for t in trajs] == [r.instance.id for r in requests]
        assert sum(t.error == "answered before dying" for t in trajs) == 3
        assert ray.get(fleet.actors[0].stats.remote(), timeout=60)["trajectories"] == 5  # the replacement redid five
    finally:
        fleet.shutdown()
