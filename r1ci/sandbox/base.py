"""What running one snippet of untrusted Python returns, and the protocol every backend meets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when killed by a signal
    timed_out: bool = False
    killed_reason: str = ""  # "", "timeout", "cpu_limit", "memory_limit", "signal:SIGSEGV", "output_limit", ...
    duration_s: float = 0.0
    truncated_bytes: int = 0  # output dropped beyond the byte cap

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class Sandbox(Protocol):
    containment: str  # which isolation is active, e.g. "bwrap", "unshare", "none"

    def run(self, code: str, timeout: float | None = None) -> ExecResult: ...

    async def arun(self, code: str, timeout: float | None = None) -> ExecResult: ...

    def close(self) -> None: ...
