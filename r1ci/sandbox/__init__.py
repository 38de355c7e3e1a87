"""Running untrusted Python: `Executor` (a warm, contained fork server on this machine) behind the `Sandbox` protocol."""

from r1ci.sandbox.base import EXECUTOR_FAILURES, ExecResult, Sandbox
from r1ci.sandbox.executor import Executor, SandboxError

__all__ = ["EXECUTOR_FAILURES", "ExecResult", "Executor", "Sandbox", "SandboxError"]
