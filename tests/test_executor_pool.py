"""The Ray executor pool: real actors running real snippets, back-pressure, a dead actor."""

import asyncio
import os
import signal
import time

import pytest
import ray

from actors.executor import ExecutorPool
from r1ci.config import Config

pytestmark = pytest.mark.slow  # starts Ray actors that each warm a fork server


@pytest.fixture(scope="module")
def pool(ray_cluster):
    cfg = Config()
    cfg.executor.num_actors = 1
    cfg.executor.num_cpus = 0.25
    cfg.executor.max_queued = 4
    cfg.sandbox.preload = ["math", "numpy"]
    cfg.sandbox.warm_up = "import numpy"
    cfg.sandbox.timeout_s = 10
    p = ExecutorPool.create(cfg)
    yield p
    p.shutdown()


def test_pool_runs_code_from_the_driver_and_counts_it(pool):
    before = pool.stats()["runs"]
    result = pool.run("import numpy as np\nprint(int(np.arange(5).sum()))")
    assert result.ok and result.stdout == "10\n"
    assert pool.stats()["runs"] == before + 1


def test_pool_handle_works_inside_another_actor(pool):
    @ray.remote(num_cpus=0.1)
    class Caller:
        async def go(self, p, n):
            results = await asyncio.gather(*(p.arun(f"print({i} * {i})") for i in range(n)))
            return [r.stdout for r in results]

    caller = Caller.remote()
    out = ray.get(caller.go.remote(pool, 12), timeout=120)  # 12 > workers + max_queued: callers wait
    assert out == [f"{i * i}\n" for i in range(12)]
    ray.kill(caller)


def test_pool_reports_timeouts_and_keeps_serving(pool):
    result = pool.run("while True: pass", timeout=1)
    assert result.timed_out and result.killed_reason == "timeout"
    assert pool.run("print('alive')").stdout == "alive\n"
    assert pool.stats()["timeouts"] >= 1


def test_dead_actor_gives_a_clear_result_and_is_restarted(pool):
    actor_pid = ray.get(pool.actors[0].pid.remote(), timeout=60)
    loop = asyncio.new_event_loop()
    pending = loop.create_task(pool.arun("import time; time.sleep(30)", timeout=40))
    loop.run_until_complete(asyncio.sleep(1.0))
    os.kill(actor_pid, signal.SIGKILL)
    result = loop.run_until_complete(asyncio.wait_for(pending, 60))
    loop.close()
    assert result.killed_reason == "executor_died" and result.exit_code is None
    deadline = time.monotonic() + 120
    while True:  # Ray restarts the actor (max_restarts=-1); it warms its fork server again
        result = pool.run("print(6 * 7)", timeout=10)
        if result.ok or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.stdout == "42\n"
