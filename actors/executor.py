"""The executor pool: Ray actors that each hold one `r1ci.sandbox.Executor`, behind one handle.

`ExecutorPool` is a plain picklable object (actor handles plus limits), so the driver can
pass it to generator actors, which `await pool.arun(code)` from their own event loops.
Back-pressure: each handle keeps at most `executor.max_queued` calls pending per actor
(Ray's max_pending_calls); a caller past that waits. A dead actor is restarted by Ray,
and the call that was on it returns an ExecResult with killed_reason "executor_died".
"""

from __future__ import annotations

import asyncio
import itertools
import time

import ray
from ray.exceptions import GetTimeoutError, PendingCallsLimitExceeded, RayActorError

from r1ci.config import Config, SandboxConfig
from r1ci.sandbox import ExecResult, Executor

BACKOFF_S = 0.005  # first wait of a caller turned away by back-pressure, doubled up to 0.1 s


@ray.remote
class ExecutorActor:
    """One warm Executor; an async actor so `sandbox.workers` snippets run at once."""

    def __init__(self, cfg: SandboxConfig):
        self.executor = Executor(cfg)

    async def run(self, code: str, timeout: float | None = None) -> ExecResult:
        return await self.executor.arun(code, timeout)

    async def stats(self) -> dict[str, float]:
        return self.executor.stats()

    async def containment(self) -> str:
        return self.executor.containment

    async def pid(self) -> int:
        import os

        return os.getpid()


def _died(exc: Exception) -> ExecResult:
    return ExecResult("", f"r1ci executor pool: the executor actor died during this call ({type(exc).__name__}); "
                      "it is being restarted", None, killed_reason="executor_died")


class ExecutorPool:
    """Driver-side handle over `executor.num_actors` executor actors (see module docstring)."""

    def __init__(self, actors: list, sandbox: SandboxConfig):
        self.actors = actors
        self.sandbox = sandbox
        self._next = itertools.count()

    @classmethod
    def create(cls, cfg: Config) -> ExecutorPool:
        """Start the actors (num_cpus, custom resources and queue bound from `cfg.executor`) and wait until each is warm."""
        ex = cfg.executor
        options = dict(
            num_cpus=ex.num_cpus, resources=dict(ex.resources) or None, max_concurrency=cfg.sandbox.workers + ex.max_queued,
            max_restarts=ex.max_restarts, max_task_retries=0, max_pending_calls=ex.max_queued,
        )
        actors = [ExecutorActor.options(**options).remote(cfg.sandbox) for _ in range(ex.num_actors)]
        ray.get([a.containment.remote() for a in actors], timeout=ex.start_timeout_s)
        return cls(actors, cfg.sandbox)

    def __getstate__(self) -> dict:
        return {"actors": self.actors, "sandbox": self.sandbox}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["actors"], state["sandbox"])

    def _limit(self, timeout: float | None) -> float:
        """Seconds a caller waits for one result before declaring the actor unresponsive."""
        return float(timeout or self.sandbox.timeout_s) + 2 * self.sandbox.grace_s

    def _submit(self, code: str, timeout: float | None):
        """A call on the next actor that has room; None when every actor is at its bound."""
        for _ in range(len(self.actors)):
            actor = self.actors[next(self._next) % len(self.actors)]
            try:
                return actor.run.remote(code, timeout)
            except PendingCallsLimitExceeded:
                continue
        return None

    async def arun(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run one snippet on some executor actor; `timeout` in seconds (default sandbox.timeout_s).

        Callable from inside other actors' event loops. Never raises for the code's or the
        actor's failures: they come back as an ExecResult with killed_reason set.
        """
        backoff = BACKOFF_S
        while (ref := self._submit(code, timeout)) is None:
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 0.1)
        try:
            return await asyncio.wait_for(ref, self._limit(timeout))
        except RayActorError as exc:
            return _died(exc)
        except asyncio.TimeoutError:
            return ExecResult("", "r1ci executor pool: no answer from the executor actor", None, timed_out=True,
                              killed_reason="executor_unresponsive")

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Blocking `arun`, for the driver."""
        backoff = BACKOFF_S
        while (ref := self._submit(code, timeout)) is None:
            time.sleep(backoff)
            backoff = min(2 * backoff, 0.1)
        try:
            return ray.get(ref, timeout=self._limit(timeout))
        except RayActorError as exc:
            return _died(exc)
        except GetTimeoutError:
            return ExecResult("", "r1ci executor pool: no answer from the executor actor", None, timed_out=True,
                              killed_reason="executor_unresponsive")

    def stats(self, timeout: float = 60.0) -> dict[str, float]:
        """Counters summed over live actors: runs, timeouts, kills, restarts, run_time_s, queue_wait_s."""
        total: dict[str, float] = {}
        for ref in [a.stats.remote() for a in self.actors]:
            try:
                per = ray.get(ref, timeout=timeout)
            except (RayActorError, GetTimeoutError):
                continue
            for key, value in per.items():
                total[key] = total.get(key, 0) + value
        return total

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
