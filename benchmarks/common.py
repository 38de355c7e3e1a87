"""What every benchmark shares: one JSON object on stdout, everything else on stderr."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def as_list(estimate) -> list[float]:
    """An `r1ci.evaluation.Estimate` as [value, lo, hi] for JSON."""
    return [round(estimate.value, 4), round(estimate.lo, 4), round(estimate.hi, 4)]


def job(name: str, args: list[str], log: Path) -> float:
    """Run `python jobs/<name>.py args...` with its output in `log`; wall seconds, SystemExit on failure."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{name}.py"), *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"jobs/{name}.py failed (exit {proc.returncode}); log {log}:\n{tail}")
    return time.perf_counter() - start


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr inside the block, for this process and every process it
    starts (vLLM's engine and workers, Ray's log forwarding), so `--json` prints only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)

