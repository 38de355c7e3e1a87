"""Per-call latency and throughput of the r1ci executor against a fresh `python -c` per call, and against the fork floor.

All sides run in the same run, calls interleaved so they see the same machine load:
- latency for a trivial print, a numpy snippet and a CPU-bound loop (executor vs `python -c`);
- the trivial snippet called idle (calls `--idle-gap-ms` apart, spares ready) and sustained
  (a long back-to-back sequence), against the floor of what one isolated run must cost at least: a bare
  fork + exit + wait from this process, and the same with the child in fresh network, IPC,
  mount and UTS namespaces (and pid: the child forks once more, as a run's supervisor does);
- throughput with `--concurrency` callers at once (2 cores here).

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
from r1ci.sandbox import mounts

SNIPPETS = {
    "trivial": "print(1)",
    "numpy": "import numpy as np\nrng = np.random.default_rng(0)\nprint(round(float(np.linalg.svd(rng.random((60, 60)))[1].sum()), 3))",
    "cpu_bound": "print(sum(i * i for i in range(400_000)))",
}
FLOORS = {
    "fork_exit_wait": 0,
    "fork_in_net_ipc_mnt_uts_namespaces": mounts.RUN_NAMESPACES & ~mounts.CLONE_NEWPID,
    "fork_in_all_run_namespaces_and_fork_again": mounts.RUN_NAMESPACES,
}


def baseline(code: str) -> str:
    """What CodeSteer/R1-CI-style harnesses do: a fresh interpreter per call."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def fork_floor(flags: int) -> float:
    """Seconds for one fork + (unshare `flags`, and a second fork when a pid namespace is among them) + exit + wait."""
    lib = mounts.libc()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        if flags and lib.unshare(flags):
            os._exit(1)
        if flags & mounts.CLONE_NEWPID:
            inner = os.fork()
            if inner == 0:
                os._exit(0)
            os.waitpid(inner, 0)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    assert status == 0, f"unshare({flags:#x}) failed"
    return elapsed


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


def idle_sustained_floor(ex: Executor, calls: int, gap_s: float, sustained_calls: int) -> dict[str, list[float]]:
    """Trivial-snippet seconds per call idle (each floor measured between idle calls) and then
    back to back for `sustained_calls` calls, so all but the first few wait on spares being made."""
    out: dict[str, list[float]] = {"idle": [], "sustained": [], **{name: [] for name in FLOORS}}
    for _ in range(calls):
        time.sleep(gap_s)
        t = time.perf_counter()
        assert ex.run("print(1)").stdout == "1\n"
        out["idle"].append(time.perf_counter() - t)
        for name, flags in FLOORS.items():
            out[name].append(fork_floor(flags))
    time.sleep(gap_s)
    for _ in range(sustained_calls):
        t = time.perf_counter()
        assert ex.run("print(1)").stdout == "1\n"
        out["sustained"].append(time.perf_counter() - t)
    return out


def throughput(fn, code: str, calls: int, concurrency: int) -> float:
    """Calls per second with `concurrency` callers."""
    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: fn(code), range(calls)))
        return calls / (time.perf_counter() - start)


def ms(values: list[float], q: float = 0.5) -> float:
    return 1e3 * (statistics.median(values) if q == 0.5 else percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="latency calls per snippet and side (and idle rounds)")
    parser.add_argument("--throughput-calls", type=int, default=40, help="calls per snippet and side in the throughput run")
    parser.add_argument("--concurrency", type=int, default=2, help="callers at once in the throughput run")
    parser.add_argument("--sustained-calls", type=int, default=200, help="back-to-back trivial calls for the sustained latency")
    parser.add_argument("--idle-gap-ms", type=float, default=50.0, help="pause before each idle call (spares are ready)")
    parser.add_argument("--containment", default="auto", help="sandbox.containment for the executor")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    cfg = SandboxConfig(workers=args.concurrency, timeout_s=120, containment=args.containment)
    with Executor(cfg) as ex:
        for code in SNIPPETS.values():  # warm both sides' caches once
            ex.run(code)
            baseline(code)
        pattern = idle_sustained_floor(ex, args.calls, args.idle_gap_ms / 1e3, args.sustained_calls)
        rows = {}
        for name, code in SNIPPETS.items():
            ours, theirs = latency(ex, code, args.calls)
            ours_tp = throughput(ex.run, code, args.throughput_calls, args.concurrency)
            theirs_tp = throughput(baseline, code, args.throughput_calls, args.concurrency)
            rows[name] = {
                "executor_p50_ms": ms(ours), "executor_p99_ms": ms(ours, 0.99),
                "baseline_p50_ms": ms(theirs), "baseline_p99_ms": ms(theirs, 0.99),
                "speedup_p50": statistics.median(theirs) / statistics.median(ours),
                "executor_calls_per_s": ours_tp, "baseline_calls_per_s": theirs_tp, "throughput_ratio": ours_tp / theirs_tp,
            }
        isolation = ex.isolation
    floor = ms(pattern["fork_in_all_run_namespaces_and_fork_again"])
    calls = {name: {"p50_ms": ms(v), "p99_ms": ms(v, 0.99)} for name, v in pattern.items()}
    report = {
        "isolation": isolation,
        "cores": os.cpu_count(),
        "concurrency": args.concurrency,
        "calls_per_snippet": args.calls,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "trivial_calls": calls,
        "idle_p50_over_isolated_floor": calls["idle"]["p50_ms"] / floor,
        "sustained_p50_ms": calls["sustained"]["p50_ms"],
        "speedup_p50": rows["trivial"]["speedup_p50"],
        "snippets": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"isolation: {isolation}\n{os.cpu_count()} cores; load average before {load_before:.1f}, after {report['load_average_1min_after']:.1f}")
    print(f"{'trivial snippet / floor':<46} {'p50 ms':>8} {'p99 ms':>8}")
    for name, v in calls.items():
        print(f"{name:<46} {v['p50_ms']:>8.2f} {v['p99_ms']:>8.2f}")
    print(f"idle p50 / isolated-fork floor p50: {report['idle_p50_over_isolated_floor']:.2f}x (target <= 2); "
          f"sustained p50 {report['sustained_p50_ms']:.2f} ms (target <= 5)\n")
    head = f"{'snippet':<10} {'side':<16} {'p50 ms':>9} {'p99 ms':>9} {'calls/s':>9}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(f"{name:<10} {'r1ci executor':<16} {r['executor_p50_ms']:>9.2f} {r['executor_p99_ms']:>9.2f} {r['executor_calls_per_s']:>9.1f}")
        print(f"{'':<10} {'fresh python -c':<16} {r['baseline_p50_ms']:>9.2f} {r['baseline_p99_ms']:>9.2f} {r['baseline_calls_per_s']:>9.1f}")
        print(f"{'':<10} {'ratio':<16} {r['speedup_p50']:>8.1f}x {'':>9} {r['throughput_ratio']:>8.1f}x")


if __name__ == "__main__":
    main()
