"""Per-call latency and throughput of the r1ci executor against a fresh `python -c` per call.

Both sides run the same snippets in the same run, calls interleaved so they see the same
machine load: a trivial print, a numpy snippet and a CPU-bound loop. Throughput runs
`--concurrency` callers at once (2 cores here). The executor runs with every containment on.

    python benchmarks/sandbox.py [--calls 40] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from r1ci.config import SandboxConfig
from r1ci.sandbox import Executor

SNIPPETS = {
    "trivial": "print(1)",
    "numpy": "import numpy as np\nrng = np.random.default_rng(0)\nprint(round(float(np.linalg.svd(rng.random((60, 60)))[1].sum()), 3))",
    "cpu_bound": "print(sum(i * i for i in range(400_000)))",
}


def baseline(code: str) -> str:
    """What CodeSteer/R1-CI-style harnesses do: a fresh interpreter per call."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency(ex: Executor, code: str, calls: int) -> tuple[list[float], list[float]]:
    """Seconds per call for the executor and the baseline, calls interleaved."""
    ours, theirs = [], []
    expected = baseline(code)
    for _ in range(calls):
        t = time.perf_counter()
        result = ex.run(code)
        ours.append(time.perf_counter() - t)
        assert result.stdout == expected, (result, expected)
        t = time.perf_counter()
        baseline(code)
        theirs.append(time.perf_counter() - t)
    return ours, theirs


def throughput(fn, code: str, calls: int, concurrency: int) -> float:
    """Calls per second with `concurrency` callers."""
    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: fn(code), range(calls)))
        return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="latency calls per snippet and side")
    parser.add_argument("--throughput-calls", type=int, default=40, help="calls per snippet and side in the throughput run")
    parser.add_argument("--concurrency", type=int, default=2, help="callers at once in the throughput run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with Executor(SandboxConfig(workers=args.concurrency, timeout_s=120)) as ex:
        for code in SNIPPETS.values():  # warm both sides' caches once
            ex.run(code)
            baseline(code)
        rows = {}
        for name, code in SNIPPETS.items():
            ours, theirs = latency(ex, code, args.calls)
            ours_tp = throughput(ex.run, code, args.throughput_calls, args.concurrency)
            theirs_tp = throughput(baseline, code, args.throughput_calls, args.concurrency)
            rows[name] = {
                "executor_p50_ms": 1e3 * statistics.median(ours),
                "executor_p99_ms": 1e3 * percentile(ours, 0.99),
                "baseline_p50_ms": 1e3 * statistics.median(theirs),
                "baseline_p99_ms": 1e3 * percentile(theirs, 0.99),
                "speedup_p50": statistics.median(theirs) / statistics.median(ours),
                "executor_calls_per_s": ours_tp,
                "baseline_calls_per_s": theirs_tp,
                "throughput_ratio": ours_tp / theirs_tp,
            }
        containment = ex.containment
    report = {
        "containment": containment,
        "limits": "rlimits cpu/as/nproc/fsize, per-run uid, own process group, capped pipes, fresh workdir",
        "cores": os.cpu_count(),
        "concurrency": args.concurrency,
        "calls_per_snippet": args.calls,
        "load_average_1min_before": load_before,
        "speedup_p50": rows["trivial"]["speedup_p50"],
        "snippets": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"containment: {containment}; {os.cpu_count()} cores; load average before: {load_before:.1f}")
    head = f"{'snippet':<10} {'side':<16} {'p50 ms':>9} {'p99 ms':>9} {'calls/s':>9}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(f"{name:<10} {'r1ci executor':<16} {r['executor_p50_ms']:>9.2f} {r['executor_p99_ms']:>9.2f} {r['executor_calls_per_s']:>9.1f}")
        print(f"{'':<10} {'fresh python -c':<16} {r['baseline_p50_ms']:>9.2f} {r['baseline_p99_ms']:>9.2f} {r['baseline_calls_per_s']:>9.1f}")
        print(f"{'':<10} {'ratio':<16} {r['speedup_p50']:>8.1f}x {'':>9} {r['throughput_ratio']:>8.1f}x")


if __name__ == "__main__":
    main()
