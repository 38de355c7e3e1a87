"""Running untrusted Python: `run_code` / `arun_code` on a shared warm `Executor`, or your own."""

from __future__ import annotations

import atexit
import threading

from r1ci.config import SandboxConfig
from r1ci.sandbox.base import ExecResult, Sandbox
from r1ci.sandbox.executor import Executor, SandboxError

__all__ = ["ExecResult", "Executor", "Sandbox", "SandboxError", "arun_code", "run_code", "shared_executor"]

_shared: Executor | None = None
_shared_lock = threading.Lock()


def shared_executor(cfg: SandboxConfig | None = None) -> Executor:
    """The process-wide Executor, started on first use (with `cfg`, or defaults)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Executor(cfg)
            atexit.register(_shared.close)
        return _shared


def run_code(code: str, timeout: float | None = None, cfg: SandboxConfig | None = None) -> ExecResult:
    """Run one snippet and return its result; `timeout` in seconds (default sandbox.timeout_s).

    With `cfg`, a dedicated Executor is started and closed for this call (slow: seconds);
    without, the shared warm one serves it in milliseconds.
    """
    if cfg is not None:
        with Executor(cfg) as ex:
            return ex.run(code, timeout)
    return shared_executor().run(code, timeout)


async def arun_code(code: str, timeout: float | None = None, cfg: SandboxConfig | None = None) -> ExecResult:
    """Async `run_code`."""
    if cfg is not None:
        with Executor(cfg) as ex:
            return await ex.arun(code, timeout)
    return await shared_executor().arun(code, timeout)
