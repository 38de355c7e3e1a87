"""The executor pool: Ray actors that each hold one `r1ci.sandbox.Executor`, behind one `Sandbox` handle.

`ExecutorPool` is a plain picklable object (actor handles plus limits), so the driver can
pass it to generator actors, which `await pool.arun(code)` from their own event loops.
Back-pressure: each handle keeps at most `executor.max_queued` calls pending per actor
(Ray's max_pending_calls); a caller past that waits. A call whose actor dies returns an
ExecResult with killed_reason "executor_died"; from then on this handle sends nothing to
that actor (while another one is up) until a probe shows Ray has restarted it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import ray
from ray.exceptions import GetTimeoutError, PendingCallsLimitExceeded, RayActorError, RayError, RayTaskError

from r1ci.config import Config, SandboxConfig
from r1ci.sandbox import ExecResult, Executor
from r1ci.sandbox.base import EXECUTOR_DIED, EXECUTOR_UNRESPONSIVE, SANDBOX_ERROR

BACKOFF_S = 0.005  # first wait of a caller turned away by back-pressure, doubled up to 0.1 s


@ray.remote
class ExecutorActor:
    """One warm Executor; an async actor so `sandbox.workers` snippets run at once."""

    def __init__(self, cfg: SandboxConfig):
        self.executor = Executor(cfg)

    async def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        try:
            return await self.executor.arun(code, timeout_s)
        except Exception as exc:  # noqa: BLE001 - the caller gets a result, never a remote traceback
            return ExecResult("", f"r1ci executor actor: {type(exc).__name__}: {exc}", None, killed_reason=SANDBOX_ERROR)

    async def stats(self) -> dict[str, float]:
        return self.executor.stats()

    async def containment(self) -> str:
        return self.executor.containment

    async def pid(self) -> int:
        return os.getpid()


def failure(exc: Exception) -> ExecResult:
    """The ExecResult for a Ray failure of one call."""
    if isinstance(exc, (GetTimeoutError, asyncio.TimeoutError)):
        return ExecResult("", "r1ci executor pool: no answer from the executor actor", None, timed_out=True,
                          killed_reason=EXECUTOR_UNRESPONSIVE)
    if isinstance(exc, RayTaskError):
        return ExecResult("", f"r1ci executor pool: the executor actor failed: {exc}", None, killed_reason=SANDBOX_ERROR)
    return ExecResult("", f"r1ci executor pool: the executor actor died during this call ({type(exc).__name__}); "
                      "it is being restarted", None, killed_reason=EXECUTOR_DIED)


class ExecutorPool:
    """Driver-side handle over `executor.num_actors` executor actors (see module docstring); a `Sandbox`."""

    def __init__(self, actors: list, sandbox: SandboxConfig):
        self.actors = actors
        self.sandbox = sandbox
        self._next = itertools.count()
        self._probes: dict[int, object] = {}  # index of an actor seen failing -> its pending `containment` call

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

    def _limit(self, timeout_s: float | None) -> float:
        """Seconds a caller waits for one result before declaring the actor unresponsive."""
        return float(timeout_s or self.sandbox.timeout_s) + 2 * self.sandbox.grace_s

    def _mark_down(self, index: int) -> None:
        if index not in self._probes:
            self._probes[index] = self.actors[index].containment.remote()

    def _up(self, index: int) -> bool:
        """Whether actor `index` may take calls: never seen failing, or its probe has answered since."""
        probe = self._probes.get(index)
        if probe is None:
            return True
        ready, _ = ray.wait([probe], timeout=0)
        if not ready:
            return False
        try:
            ray.get(probe, timeout=0)
        except RayError:
            self._probes[index] = self.actors[index].containment.remote()  # still down: probe again
            return False
        del self._probes[index]
        return True

    def _submit(self, code: str, timeout_s: float | None):
        """(actor index, call) on the next actor that is up and has room; actors seen failing only
        when no other is up; None when every candidate is at its bound."""
        start = next(self._next)
        order = [(start + i) % len(self.actors) for i in range(len(self.actors))]
        up = [i for i in order if self._up(i)]
        for index in up or order:
            try:
                return index, self.actors[index].run.remote(code, timeout_s)
            except PendingCallsLimitExceeded:
                continue
        return None

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Run one snippet on some executor actor; `timeout_s` in seconds (default sandbox.timeout_s).

        Callable from inside other actors' event loops. Never raises for the code's or the
        actors' failures: they come back as an ExecResult with killed_reason set.
        """
        backoff = BACKOFF_S
        while (call := self._submit(code, timeout_s)) is None:
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 0.1)
        index, ref = call
        try:
            return await asyncio.wait_for(ref, self._limit(timeout_s))
        except (RayError, asyncio.TimeoutError) as exc:
            return self._failed(index, exc)

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Blocking `arun`, for the driver."""
        backoff = BACKOFF_S
        while (call := self._submit(code, timeout_s)) is None:
            time.sleep(backoff)
            backoff = min(2 * backoff, 0.1)
        index, ref = call
        try:
            return ray.get(ref, timeout=self._limit(timeout_s))
        except RayError as exc:
            return self._failed(index, exc)

    def _failed(self, index: int, exc: Exception) -> ExecResult:
        if isinstance(exc, (RayActorError, GetTimeoutError, asyncio.TimeoutError)):
            self._mark_down(index)
        return failure(exc)

    def stats(self, timeout: float = 60.0) -> dict[str, float]:
        """Counters summed over live actors: runs, timeouts, kills, restarts, run_time_s, queue_wait_s."""
        total: dict[str, float] = {}
        for ref in [a.stats.remote() for a in self.actors]:
            try:
                per = ray.get(ref, timeout=timeout)
            except RayError:
                continue
            for key, value in per.items():
                total[key] = total.get(key, 0) + value
        return total

    def close(self) -> None:
        """Kill the actors (and with them their fork servers and runs)."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
