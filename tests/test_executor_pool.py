"""The Ray executor pool: real actors running real snippets, back-pressure, dead and broken actors."""

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
    p.close()


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
    result = pool.run("while True: pass", timeout_s=1)
    assert result.timed_out and result.killed_reason == "timeout"
    assert pool.run("print('alive')").stdout == "alive\n"
    assert pool.stats()["timeouts"] >= 1


def test_dead_actor_gives_a_clear_result_and_is_restarted(pool):
    actor_pid = ray.get(pool.actors[0].pid.remote(), timeout=60)
    loop = asyncio.new_event_loop()
    pending = loop.create_task(pool.arun("import time; time.sleep(30)", timeout_s=40))
    loop.run_until_complete(asyncio.sleep(1.0))
    os.kill(actor_pid, signal.SIGKILL)
    result = loop.run_until_complete(asyncio.wait_for(pending, 60))
    loop.close()
    assert result.killed_reason == "executor_died" and result.exit_code is None
    deadline = time.monotonic() + 120
    while True:  # Ray restarts the actor (max_restarts=-1); it warms its fork server again
        result = pool.run("print(6 * 7)", timeout_s=10)
        if result.ok or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.stdout == "42\n"


def test_calls_route_around_a_dead_actor_at_once(ray_cluster):
    cfg = Config()
    cfg.executor.num_actors = 2
    cfg.executor.num_cpus = 0.1
    cfg.sandbox.preload = ["math"]
    cfg.sandbox.warm_up = ""
    cfg.sandbox.workers = 1
    cfg.sandbox.spares = 1
    pool = ExecutorPool.create(cfg)
    try:
        doomed = pool.actors[0]
        os.kill(ray.get(doomed.pid.remote(), timeout=60), signal.SIGKILL)
        results = [pool.run(f"print({i})", timeout_s=10) for i in range(12)]
        died = [r for r in results if r.executor_failed]
        assert len(died) <= 1, died  # the one call that found it dead; the rest went to the live actor
        assert [r.stdout for r in results if not r.executor_failed] == [f"{i}\n" for i in range(12) if not results[i].executor_failed]
        deadline = time.monotonic() + 120
        while 0 in pool._probes and time.monotonic() < deadline:  # Ray restarts it; the probe lets it back in
            pool.run("print(1)", timeout_s=10)
            time.sleep(0.5)
        assert 0 not in pool._probes
        assert pool.run("print('both')", timeout_s=10).stdout == "both\n"
    finally:
        pool.close()


def test_a_failing_actor_call_comes_back_as_a_result(ray_cluster):
    @ray.remote(num_cpus=0.1)
    class Broken:
        async def run(self, code, timeout_s=None):
            raise ValueError("garbage from the sandbox")

        async def containment(self):
            return "none"

    broken = Broken.remote()
    pool = ExecutorPool([broken], Config().sandbox)
    result = asyncio.run(pool.arun("print(1)"))
    assert result.killed_reason == "sandbox_error" and result.executor_failed and "garbage from the sandbox" in result.stderr
    ray.kill(broken)
    assert pool.run("print(1)").killed_reason == "executor_died"
