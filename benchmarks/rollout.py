"""Per-trajectory rollout vs a turn-synchronous baseline, on code calls that take real time.

Both sides run the same `r1ci.rollout.rollout` per trajectory on the same engine, model, seeds and
sandbox; the baseline only adds a barrier per turn (every trajectory waits until the
slowest code call of the turn has returned before anyone generates again, as
Search-R1-style loops do). The policy is the real model decoding a seeded number of tokens
per turn (8-48), followed by a forced code block that sleeps a seeded time in the real
sandbox (after K calls, a forced answer), so both sides make exactly the same code calls.
Code-time workloads: `tail` (85 % 0.05-0.2 s, 15 % 1-2 s, like real interpreter calls
where a few searches run long; the headline `speedup`), `uniform` 0.05-0.5 s, `fixed` 0.2 s.
The barrier costs the baseline the gap between each turn's slowest call and the others,
so the gain grows with the spread of call times and with the calls per trajectory (8 by
default, the protocol's whole budget); each row also gives `code_only_speedup_bound`, the
speedup if generation took no time. Also measured: engine tokens/s, and vLLM against
transformers on the same model.

As on a cluster, where executors run on CPU nodes apart from the generators' accelerators,
the sandbox is pinned to the last CPU and the engine to the others (`--no-pin` shares
them all: on 2 cores the engine's busy threads then delay every fork of the sandbox).

    python benchmarks/rollout.py [--backends hf,vllm] [--workloads tail,uniform,fixed] [--calls 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import statistics
import sys
import time

from common import stdout_to_stderr
from r1ci.config import Config
from r1ci.engines import Completion, Sampling, make_engine
from r1ci.models import resolve_model
from r1ci.rollout import RolloutRequest, rollout
from r1ci.tasks.base import Instance


class ForcedCodePolicy:
    """Wraps a real engine: each turn decodes a planned number of real tokens, then a forced code
    block sleeping the planned time (an answer after the last call). Plans are keyed by question."""

    def __init__(self, engine, plans: dict[str, list[tuple[int, float]]], cfg: Config):
        self.engine, self.plans, self.cfg = engine, plans, cfg
        self.tokenizer, self.max_model_len = engine.tokenizer, engine.max_model_len

    async def generate(self, prompt_ids: list[int], sampling: Sampling) -> Completion:
        text = self.tokenizer.decode(prompt_ids)
        question = next(q for q in self.plans if q in text)
        turn = text.split("<|im_start|>assistant")[-1].count(self.cfg.protocol.result_header)
        plan = self.plans[question]
        n_tokens = plan[min(turn, len(plan) - 1)][0]
        real = await self.engine.generate(prompt_ids, dataclasses.replace(sampling, max_tokens=n_tokens, stop=()))
        keep = self._before_markers(real.token_ids)  # the model's own text must not end or open a block
        if turn < len(plan) - 1:
            forced = f"\n```python\nimport time\ntime.sleep({plan[turn][1]:.3f})\nprint({turn})\n```\n"
        else:
            forced = "\n<<<done>>>"
        forced_ids = self.tokenizer.encode(forced, add_special_tokens=False)
        ids = real.token_ids[:keep] + forced_ids
        return Completion(ids, real.logprobs[:keep] + [0.0] * len(forced_ids), self.tokenizer.decode(ids), "stop")

    def _before_markers(self, token_ids: list[int]) -> int:
        """How many leading tokens hold no code fence, answer marker or result header."""
        p = self.cfg.protocol
        markers = (p.code_close, p.answer_open, p.answer_close, p.result_header)
        for k in range(len(token_ids)):
            if any(m in self.tokenizer.decode(token_ids[: k + 1]) for m in markers):
                return k
        return len(token_ids)


class TurnBarrier:
    """Executor wrapper: a code call returns only when every trajectory still running has made
    its call of this turn. A trajectory that ends (answer, error, length) leaves the barrier, so
    one that ends early never holds the others forever."""

    def __init__(self, executor, parties: int):
        self.executor, self.parties, self.arrived, self.turn_done = executor, parties, 0, asyncio.Event()

    async def arun(self, code: str, timeout: float | None = None):
        result = await self.executor.arun(code, timeout)
        self.arrived += 1
        released = self.turn_done
        self._release_if_all_arrived()
        await released.wait()
        return result

    def leave(self) -> None:
        self.parties -= 1
        self._release_if_all_arrived()

    def _release_if_all_arrived(self) -> None:
        if self.arrived and self.arrived >= self.parties:
            self.turn_done.set()
            self.turn_done, self.arrived = asyncio.Event(), 0


CODE_SECONDS = {
    "uniform": lambda rng: rng.uniform(0.05, 0.5),
    "fixed": lambda rng: 0.2,
    "tail": lambda rng: rng.uniform(1.0, 2.0) if rng.random() < 0.15 else rng.uniform(0.05, 0.2),
}


def make_workload(n: int, calls: int, seed: int, workload: str = "uniform") -> tuple[list[RolloutRequest], dict]:
    """`n` requests, each planned as `calls` turns of (tokens, code seconds) plus a final answer turn."""
    rng = random.Random(seed)
    code_s = CODE_SECONDS[workload]
    plans, requests = {}, []
    for i in range(n):
        question = f"Benchmark question number {i}: what is {i} * 7?"
        plans[question] = [(rng.randint(8, 48), code_s(rng)) for _ in range(calls)] + [(rng.randint(8, 48), 0.0)]
        instance = Instance(task="bench", seed=seed, index=i, question=question, answer=str(7 * i))
        requests.append(RolloutRequest(instance, f"g{i // 4}", "agent", Sampling(1.0, 1.0, 64, seed=seed * 1000 + i)))
    return requests, plans


def code_only_bound(plans: dict[str, list[tuple[int, float]]]) -> float:
    """The speedup if generation took no time: the baseline's sum over turns of the slowest
    call, over the slowest trajectory's own sum of calls."""
    seconds = [[s for _, s in plan] for plan in plans.values()]
    baseline = sum(max(turn) for turn in zip(*seconds))
    return round(baseline / max(sum(t) for t in seconds), 3)


async def run_side(policy, executor, requests, cfg, barrier: bool) -> tuple[float, list]:
    """Wall seconds and trajectories of one side; both sides run the same per-trajectory rollouts."""
    ex = TurnBarrier(executor, len(requests)) if barrier else executor

    async def one(req: RolloutRequest):
        try:
            return await rollout(policy, ex, req.instance, cfg, req.group_id, req.sampling, req.prompt_style)
        finally:
            if barrier:
                ex.leave()

    start = time.perf_counter()
    trajs = await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - start, trajs


async def engine_throughput(engine, n: int, tokens: int) -> float:
    """Tokens/s of `n` concurrent requests decoding `tokens` each (no stops)."""
    prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Count to ten."}], add_generation_prompt=True, return_dict=False)
    start = time.perf_counter()
    outs = await asyncio.gather(*(engine.generate(prompt, Sampling(1.0, 1.0, tokens, seed=i)) for i in range(n)))
    return sum(len(o.token_ids) for o in outs) / (time.perf_counter() - start)


def bench_backend(backend: str, model_dir: str, args) -> list[dict]:
    """One engine; for each workload, both sides `repeats` times, interleaved; medians."""
    from r1ci.sandbox import Executor

    cfg = Config()
    cfg.generator.backend = backend
    cfg.generator.max_model_len = 2048
    cfg.sandbox.workers = cfg.sandbox.spares = args.trajectories  # every call of a turn finds a warm child
    cfg.sandbox.cpus = args.executor_cpus
    cfg.sandbox.timeout_s = 5.0  # planned calls take <= 2 s; a lost call costs seconds, not a minute
    cfg.generator.exec_grace_s = 3600.0  # the baseline's barrier waits inside the executor call: no hang guard here
    cfg.sampling.max_total_tokens = 2048
    executor = Executor(cfg.sandbox)
    engine = None
    loop = asyncio.new_event_loop()
    rows = []
    try:
        engine = make_engine(cfg, model_dir)
        loop.run_until_complete(engine_throughput(engine, 4, 16))  # warm-up (vLLM's first request is slow)
        tokens_per_s = loop.run_until_complete(engine_throughput(engine, args.trajectories, 64))
        if args.throughput_only:
            rows.append({"backend": backend, "engine_tokens_per_s": round(tokens_per_s, 1)})
        for workload in [] if args.throughput_only else args.workloads.split(","):
            requests, plans = make_workload(args.trajectories, args.calls, args.seed, workload)
            policy = ForcedCodePolicy(engine, plans, cfg)
            walls = {"baseline": [], "r1ci": []}
            code_wait = {}
            before = engine.stats().generated_tokens, engine.stats().generate_seconds
            reruns = []
            for _ in range(args.repeats):
                for side in walls:
                    for attempt in range(3):  # a run in which the sandbox failed a call is redone, and said so
                        wall, trajs = loop.run_until_complete(run_side(policy, executor, requests, cfg, barrier=side == "baseline"))
                        bad = [t for t in trajs if t.code_calls != args.calls or t.stop_reason != "answer"]
                        if not bad:
                            break
                        reruns.append(f"{side}: {len(bad)} off plan ({bad[0].stop_reason}: {bad[0].error[:120]})")
                    else:
                        raise SystemExit(f"{side}: trajectories keep leaving the plan: {reruns[-1]}")
                    walls[side].append(round(wall, 3))
                    print(f"{backend} {workload} {side}: {wall:.2f} s", file=sys.stderr, flush=True)
                    code_wait[side] = statistics.mean(t.code_wait_s for t in trajs)
            after = engine.stats().generated_tokens, engine.stats().generate_seconds
            r1ci_wall, base_wall = statistics.median(walls["r1ci"]), statistics.median(walls["baseline"])
            rows.append({
                "backend": backend,
                "workload": workload,
                "baseline_wall_s": base_wall,
                "r1ci_wall_s": r1ci_wall,
                "speedup": round(base_wall / r1ci_wall, 3),
                "code_calls_each_side": args.trajectories * args.calls,
                "planned_code_s_per_trajectory": round(statistics.mean(sum(s for _, s in p) for p in plans.values()), 3),
                "code_only_speedup_bound": code_only_bound(plans),
                "code_wait_s_per_trajectory": {k: round(v, 3) for k, v in code_wait.items()},
                "engine_tokens_per_s": round(tokens_per_s, 1),
                "rollout_tokens_per_s": round((after[0] - before[0]) / max(after[1] - before[1], 1e-9), 1),
                "walls": walls,
                "reruns": reruns,
            })
    finally:
        executor.close()
        if engine is not None:
            engine.shutdown()
        loop.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="hf,vllm", help="comma-separated engines to measure")
    parser.add_argument("--model", default="tiny", help="model.path: tiny, smollm2, a folder")
    parser.add_argument("--data-dir", default=Config().model.data_dir)
    parser.add_argument("--workloads", default="tail,uniform,fixed", help="code-time workloads; the first gives `speedup`")
    parser.add_argument("--trajectories", type=int, default=32, help="the demo config's batch: 4 prompts x 8 samples")
    parser.add_argument("--calls", type=int, default=8, help="code calls per trajectory (8: the protocol's whole budget)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--throughput-only", action="store_true", help="only engine tokens/s per backend (for big models)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let engine and sandbox share every CPU (by default the sandbox gets the last CPU, the engine the rest)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    model_dir = resolve_model(args.model, args.data_dir)
    cpus = sorted(os.sched_getaffinity(0))
    args.executor_cpus = cpus[-1:] if args.pin and len(cpus) > 1 else []
    if args.executor_cpus:  # as on a cluster: the engine on its cores, code calls on their own
        os.sched_setaffinity(0, cpus[:-1])
    with stdout_to_stderr():  # vLLM's processes log to stdout
        rows = [row for b in args.backends.split(",") for row in bench_backend(b, model_dir, args)]
    tokens = {r["backend"]: r["engine_tokens_per_s"] for r in rows}
    if args.throughput_only:
        out = {"model": args.model, "engine_tokens_per_s": tokens, "batch": args.trajectories}
        if "vllm" in tokens and "hf" in tokens:
            out["vllm_over_hf_tokens_per_s"] = round(tokens["vllm"] / tokens["hf"], 2)
        print(json.dumps(out) if args.json else out)
        return
    first = args.workloads.split(",")[0]
    main_row = next((r for r in rows if r["backend"] == "vllm" and r["workload"] == first), rows[0])
    out = {
        "model": args.model,
        "trajectories": args.trajectories,
        "code_calls_per_trajectory": args.calls,
        "executor_cpus": args.executor_cpus,
        "speedup": main_row["speedup"],
        "speedup_of": f"{main_row['backend']}/{main_row['workload']}",
        "engine_tokens_per_s": tokens,
        "rows": rows,
    }
    if "vllm" in tokens and "hf" in tokens:
        out["vllm_over_hf_tokens_per_s"] = round(tokens["vllm"] / tokens["hf"], 2)
    if args.json:
        print(json.dumps(out))
        return
    print(f"model {args.model}: {args.trajectories} trajectories x {args.calls} code calls, 8-48 tokens per turn")
    print(f"{'backend':8} {'workload':9} {'baseline s':>11} {'r1ci s':>8} {'speedup':>8} {'engine tok/s':>13} {'rollout tok/s':>14}")
    for r in rows:
        print(f"{r['backend']:8} {r['workload']:9} {r['baseline_wall_s']:>11} {r['r1ci_wall_s']:>8} {r['speedup']:>8} "
              f"{r['engine_tokens_per_s']:>13} {r['rollout_tokens_per_s']:>14}")
    if "vllm_over_hf_tokens_per_s" in out:
        print(f"vLLM / transformers engine tokens/s: {out['vllm_over_hf_tokens_per_s']}")


if __name__ == "__main__":
    main()
