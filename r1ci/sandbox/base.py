"""What running one snippet of untrusted Python returns, and the one protocol every code runner meets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# killed_reason values for the code's own end (decided by the supervisor, never by the code)
TIMEOUT = "timeout"  # ran past its wall-clock limit
CPU_LIMIT = "cpu_limit"  # used its CPU time (sandbox.cpu_time_s)
MEMORY_LIMIT = "memory_limit"  # the run's memory limit (cgroup OOM kill, or MemoryError at the address-space limit)
OUTPUT_LIMIT = "output_limit"  # printed more than sandbox.output_kill_mb
CODE_TOO_LARGE = "code_too_large"  # the snippet itself is larger than the executor accepts
SIGNAL_PREFIX = "signal:"  # killed by a signal, e.g. "signal:SIGSEGV"

# killed_reason values with which a runner reports its own failure, not the code's
EXECUTOR_DIED = "executor_died"  # the fork server or the executor actor died during the call
EXECUTOR_UNRESPONSIVE = "executor_unresponsive"  # no result within the timeout plus sandbox.grace_s
SANDBOX_ERROR = "sandbox_error"  # the sandbox could not start or set up the run
EXECUTOR_FAILURES = frozenset({EXECUTOR_DIED, EXECUTOR_UNRESPONSIVE, SANDBOX_ERROR})


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when killed by a signal
    timed_out: bool = False
    killed_reason: str = ""  # "" or one of the names above
    duration_s: float = 0.0
    truncated_bytes: int = 0  # output dropped beyond the byte cap

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def executor_failed(self) -> bool:
        """The runner failed (not the code): the result says nothing about the code."""
        return self.killed_reason in EXECUTOR_FAILURES


class Sandbox(Protocol):
    """Runs snippets: `r1ci.sandbox.Executor` on this machine, `actors.executor.ExecutorPool` on Ray.

    `timeout_s` is each call's wall-clock limit in seconds (None: `sandbox.timeout_s`). Neither
    call raises for anything the code does or for the runner's own failures: those come back
    as an ExecResult (`executor_failed` for the latter). `close` ends the runner and any run
    still going; it is safe to call twice.
    """

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult: ...

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult: ...

    def close(self) -> None: ...
