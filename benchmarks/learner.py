"""r1ci's learner step against a plain PyTorch training step over the same tokens, model and threads.

    python benchmarks/learner.py [--json] [--model smollm2] [--sequences 8] [--repeats 2] [--phases plain,kl,gae]

The batch: `--sequences` trajectories (groups of 4) whose prompts are the agent-style prompts
of demo tasks through the model's chat template, and whose responses are seeded random tokens
shaped like demo rollouts: a model turn, an interpreter observation (loss mask 0) and a final
model turn, ~250 tokens per trajectory in all. Rewards differ within each group, so no step
is skipped. Every side splits the batch into the same micro-batches (`learner.micro_batch_size`,
`learner.micro_batch_tokens`), each padded to its own longest sequence.

Sides (each phase runs in its own process, its sides' steps alternating so that load from
other processes hits them alike; seconds are medians of --repeats steps after one warm-up):
- `plain`: the HF model and torch AdamW as a plain training loop writes it:
  `model(input_ids, attention_mask, labels=...)` (logits and loss at every position),
  `loss.backward()` per micro-batch, gradient clipping, `optimizer.step()`.
- `r1ci`: `Learner.train_step`, DeepSpeed ZeRO-2 on one rank, GRPO without KL, one epoch: the
  update needs no pass but its own forward and backward. Alternates with `plain` (phase plain).
- `r1ci_kl`: the demo's algorithm (GRPO, KL 0.001): adds the reference model's no-grad
  forward (`pass/reference_s`). `actor`: the same inside a `LearnerActor` with the demo
  config's resources (learner.num_cpus 0.5), alternating with `r1ci_kl` (phase kl): the
  actor's step, its Ray round trip included, should cost what the in-process one costs.
- `r1ci_gae`: PPO/GAE with KL: adds the policy's frozen forward for its values
  (`pass/policy_s`) and the reference's (phase gae).
`bound_s`: the step's matmul FLOPs (3x a forward for the update, 1x per frozen pass:
transformer layers over the padded micro-batches with attention, the LM head where each side
runs it: every position for `plain`, model tokens only for r1ci) at the fp32 matmul rates
measured in the same process with the same threads. Memory: the rise of the process's RSS
(the actor's for `actor`) over a step, sampled every 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from common import stdout_to_stderr
from r1ci.batch import collate, plan_micro_batches
from r1ci.config import Config
from r1ci.models import resolve_model
from r1ci.rollout import prompt_ids
from r1ci.tasks import generate_instances
from r1ci.trajectory import Trajectory

PHASES = {"plain": ("plain", "r1ci"), "kl": ("r1ci_kl", "actor"), "gae": ("r1ci_gae",)}
GROUP = 4  # rollouts per prompt, as in the demo config


def make_cfg(side: str, args) -> Config:
    """The learner config of a side: the demo's learner and sampling knobs, the side's algorithm."""
    cfg = Config()
    cfg.learner.micro_batch_size, cfg.learner.micro_batch_tokens = args.micro_batch_size, args.micro_batch_tokens
    cfg.learner.num_cpus, cfg.learner.lr, cfg.learner.zero_stage = 0.5, 1e-6, 2  # configs/demo.yaml
    cfg.learner.threads = args.threads
    cfg.sampling.temperature = 0.7
    cfg.algorithm.kl_coef = 0.0 if side == "r1ci" else 0.001
    cfg.algorithm.advantage = "gae" if side == "r1ci_gae" else "grpo"
    return cfg


def make_trajectories(model_dir: str, n: int, seed: int) -> list[Trajectory]:
    """Real agent prompts of the demo's tasks; responses of seeded random tokens shaped like demo rollouts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = Config()
    g = torch.Generator().manual_seed(seed)

    def ids(lo: int, hi: int) -> list[int]:
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return torch.randint(100, tok.vocab_size, (k,), generator=g).tolist()

    instances = [i for task in ("number_multiply", "toy_run_code") for i in generate_instances(task, 0, -(-n // GROUP))]
    out = []
    for k in range(n):
        inst = instances[k // GROUP]
        t = Trajectory(task=inst.task, sample_id=inst.id, group_id=f"g{k // GROUP}",
                       prompt_ids=prompt_ids(tok, inst.question, "agent", cfg))
        for part, trainable in ((ids(50, 110), True), (ids(8, 30), False), (ids(10, 40), True)):
            t.append(part, [-1.0] * len(part) if trainable else None, trainable)
        t.reward = [1.1, -0.1][k % 2]
        out.append(t)
    return out


class PeakRSS:
    """The peak resident memory of process `pid` while the block runs (sampled every 10 ms), GiB."""

    def __init__(self, pid: int):
        self.path = Path(f"/proc/{pid}/status")

    def rss(self) -> float:
        for line in self.path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
        return 0.0

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())


def matmul_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Best fp32 GFLOP/s of an [m, k] x [k, n] matmul over ~`seconds`, with this process's threads."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def matmul_rates(model_dir: str, batches) -> dict[str, float]:
    """fp32 GFLOP/s of the step's two kinds of matmul: an MLP projection over a micro-batch's
    positions, and the LM head over its model tokens."""
    from transformers import AutoConfig

    mc = AutoConfig.from_pretrained(model_dir)
    rows = max(b.padded_tokens for b in batches)
    head_rows = sum(int(b.mask.sum()) for b in batches) // len(batches)
    return {"mlp": matmul_gflops(rows, mc.hidden_size, mc.intermediate_size),
            "lm_head": matmul_gflops(head_rows, mc.hidden_size, mc.vocab_size)}


def forward_flops(model_config, batches, lm_tokens) -> tuple[float, float]:
    """(transformer, LM head) matmul FLOPs of one forward over `batches`; `lm_tokens(batch)`:
    the positions the LM head runs at."""
    c = model_config
    h, inter, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    per_token = 2 * layers * (2 * h * h + 2 * h * kv + 3 * h * inter)  # q, o; k, v; gate, up, down
    body = sum(b.padded_tokens * per_token + layers * 4 * len(b) * b.input_ids.shape[1] ** 2 * h for b in batches)
    return float(body), float(sum(2 * h * c.vocab_size * lm_tokens(b) for b in batches))


class Plain:
    """The plain PyTorch training step."""

    def __init__(self, model_dir: str, cfg: Config):
        from transformers import AutoModelForCausalLM

        torch.manual_seed(cfg.run.seed)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)
        self.clip = cfg.learner.grad_clip

    def step(self, batches) -> dict:
        t0 = time.perf_counter()
        tokens = sum(float(b.mask.sum()) for b in batches)
        self.model.train()
        for b in batches:
            labels = torch.full_like(b.input_ids, -100)  # the label at input position p is the token at p
            rows, cols = b.model_tokens
            labels[rows, b.positions[rows, cols] + 1] = b.response_ids[rows, cols]
            loss = self.model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=labels).loss
            (loss * float(b.mask.sum()) / tokens).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {"seconds": time.perf_counter() - t0}


class InProcess:
    """`Learner.train_step` in this process."""

    def __init__(self, model_dir: str, cfg: Config):
        from r1ci.learner import Learner

        self.learner = Learner(cfg, model_dir)
        self.threads = self.learner.threads

    def step(self, trajectories) -> dict:
        t0 = time.perf_counter()
        metrics = self.learner.train_step(trajectories)
        assert not metrics["skipped"]
        return {**metrics, "seconds": time.perf_counter() - t0}


class InActor:
    """`LearnerGroup.train_step`: one rank in a `LearnerActor`, timed from this driver (round trip included)."""

    def __init__(self, model_dir: str, cfg: Config):
        import ray

        from actors.learner import LearnerGroup
        from actors.runtime import init_ray

        init_ray("local", 0)
        self.group = LearnerGroup.create(cfg, model_dir)
        self.threads = self.group.threads[0]
        self.pid = ray.get(self.group.actors[0].__ray_call__.remote(lambda _self: os.getpid()), timeout=60)

    def step(self, trajectories) -> dict:
        t0 = time.perf_counter()
        metrics = self.group.train_step(trajectories)
        assert not metrics["skipped"]
        return {**metrics, "in_actor_seconds": metrics["seconds"], "seconds": time.perf_counter() - t0}

    def close(self) -> None:
        import ray

        self.group.shutdown()
        ray.shutdown()


def run_phase(phase: str, args) -> dict:
    """Load the phase's sides, alternate their steps, return per-side timings, memory, passes and FLOPs."""
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    model_dir = resolve_model(args.model, Config().model.data_dir)
    trajs = make_trajectories(model_dir, args.sequences, args.seed)
    lengths = [len(t.input_ids) for t in trajs]
    micro = plan_micro_batches(lengths, 1, args.micro_batch_size, args.micro_batch_tokens)[0]
    batches = [collate([trajs[i] for i in idx]) for idx in micro]
    before = matmul_rates(model_dir, batches)
    sides = {}
    for side in PHASES[phase]:
        cfg = make_cfg(side, args)
        runner = {"plain": Plain, "actor": InActor}.get(side, InProcess)(model_dir, cfg)
        sides[side] = {"runner": runner, "pid": getattr(runner, "pid", os.getpid()), "steps": [], "rss_rise_gb": [], "peak_rss_gb": []}
    for rep in range(1 + args.repeats):
        for side, s in sides.items():
            with PeakRSS(s["pid"]) as mem:
                s["steps"].append(s["runner"].step(batches if side == "plain" else trajs))
            s["rss_rise_gb"].append(mem.peak - mem.start)
            s["peak_rss_gb"].append(mem.peak)
            print(f"{side} step {rep} ({'warm-up' if rep == 0 else 'timed'}): {s['steps'][-1]['seconds']:.2f} s, "
                  f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    rates = {k: max(before[k], v) for k, v in matmul_rates(model_dir, batches).items()}  # the least disturbed
    from transformers import AutoConfig

    mc = AutoConfig.from_pretrained(model_dir)
    out = {"rates_gflops": rates, "threads": torch.get_num_threads(), "sides": {}}
    chunk = make_cfg("r1ci", args).learner.logits_chunk_tokens
    for side, s in sides.items():
        timed = s["steps"][1:]
        seconds = statistics.median(x["seconds"] for x in timed)
        everywhere = side == "plain"
        body, head = forward_flops(mc, batches, lambda b: b.padded_tokens if everywhere else float(b.mask.sum()))
        passes = {k: statistics.median(x[k] for x in timed) for k in timed[0] if k.startswith("pass/")}
        frozen = sum(1 for k in passes if k != "pass/update_s")
        recompute = 0 if everywhere or all(float(b.mask.sum()) <= chunk for b in batches) else 1
        flops_body, flops_head = (3 + frozen) * body, (3 + frozen + recompute) * head
        bound = flops_body / rates["mlp"] / 1e9 + flops_head / rates["lm_head"] / 1e9
        out["sides"][side] = {
            "seconds": seconds, "seconds_all": [x["seconds"] for x in s["steps"]],
            "threads": getattr(s["runner"], "threads", torch.get_num_threads()),
            "passes_s": passes, "extra_passes": frozen,
            "in_actor_seconds": statistics.median(x["in_actor_seconds"] for x in timed) if side == "actor" else None,
            "bound_s": bound, "fraction_of_bound": bound / seconds, "gflop": (flops_body + flops_head) / 1e9,
            "rss_rise_gb": max(s["rss_rise_gb"][1:]), "peak_rss_gb": max(s["peak_rss_gb"][1:]),
        }
    for s in sides.values():
        if hasattr(s["runner"], "close"):
            s["runner"].close()
    return out


def summarize(phases: dict, args, trajs_info: dict) -> dict:
    sides = {name: side for p in phases.values() for name, side in p["sides"].items()}
    for side in sides.values():
        side["tokens_per_s"] = trajs_info["tokens"] / side["seconds"]
        side["model_tokens_per_s"] = trajs_info["model_tokens"] / side["seconds"]
    out = {"model": args.model, **trajs_info, "threads": {n: s["threads"] for n, s in sides.items()},
           "matmul_gflops": {p: v["rates_gflops"] for p, v in phases.items()}, "sides": sides,
           "load_average": os.getloadavg()}
    if "plain" in sides and "r1ci" in sides:
        out["ratio"] = sides["r1ci"]["seconds"] / sides["plain"]["seconds"]
        for name in ("r1ci_kl", "r1ci_gae"):
            if name in sides:
                s = sides[name]
                extra = sum(v for k, v in s["passes_s"].items() if k != "pass/update_s")
                s["extra_pass_s"] = extra
                s["ratio_without_extra_passes"] = (s["seconds"] - extra) / sides["plain"]["seconds"]
    if "actor" in sides and "r1ci_kl" in sides:
        out["actor_ratio"] = sides["actor"]["seconds"] / sides["r1ci_kl"]["seconds"]
    return out


def batch_info(args) -> dict:
    model_dir = resolve_model(args.model, Config().model.data_dir)
    trajs = make_trajectories(model_dir, args.sequences, args.seed)
    micro = plan_micro_batches([len(t.input_ids) for t in trajs], 1, args.micro_batch_size, args.micro_batch_tokens)[0]
    batches = [collate([trajs[i] for i in idx]) for idx in micro]
    return {"sequences": len(trajs), "tokens": sum(len(t.input_ids) for t in trajs),
            "model_tokens": sum(t.num_model_tokens for t in trajs), "micro_batches": len(batches),
            "padded_tokens": sum(b.padded_tokens for b in batches)}


def print_table(r: dict) -> None:
    print(f"{r['model']}: {r['sequences']} sequences, {r['tokens']} tokens ({r['model_tokens']} model tokens), "
          f"{r['micro_batches']} micro-batches padded to {r['padded_tokens']} positions; load average {r['load_average'][0]:.1f}")
    print(f"{'side':10} {'threads':>7} {'seconds':>8} {'vs plain':>8} {'tokens/s':>8} {'bound s':>8} {'of bound':>8} "
          f"{'RSS rise GB':>11} {'extra passes (s)':>24}")
    plain = r["sides"].get("plain", {}).get("seconds")
    for name, s in r["sides"].items():
        extra = ", ".join(f"{k[5:-2]} {v:.1f}" for k, v in s["passes_s"].items() if k != "pass/update_s") or "-"
        ratio = f"{s['seconds'] / plain:8.2f}" if plain else f"{'':8}"
        print(f"{name:10} {s['threads']:7d} {s['seconds']:8.2f} {ratio} {s['tokens_per_s']:8.1f} {s['bound_s']:8.2f} "
              f"{s['fraction_of_bound']:8.2f} {s['rss_rise_gb']:11.2f} {extra:>24}")
    if "ratio" in r:
        print(f"r1ci / plain (no extra pass): {r['ratio']:.3f}")
    for name in ("r1ci_kl", "r1ci_gae"):
        if "ratio_without_extra_passes" in r["sides"].get(name, {}):
            s = r["sides"][name]
            print(f"{name} / plain without its extra passes ({s['extra_pass_s']:.1f} s): {s['ratio_without_extra_passes']:.3f}")
    if "actor_ratio" in r:
        a = r["sides"]["actor"]
        print(f"actor / in-process (r1ci_kl): {r['actor_ratio']:.3f} (step inside the actor {a['in_actor_seconds']:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per side after one warm-up step")
    parser.add_argument("--phases", default="plain,kl,gae", help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores, as a CPU learner takes them)")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--micro-batch-tokens", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase, print its JSON
    args = parser.parse_args()
    if args.phase:
        with stdout_to_stderr():
            result = run_phase(args.phase, args)
        print(json.dumps(result))
        return
    phases = {}
    for phase in args.phases.split(","):
        if phase not in PHASES:
            raise SystemExit(f"--phases: unknown phase '{phase}'; choose from {', '.join(PHASES)}")
        cmd = [sys.executable, __file__, "--phase", phase, *sys.argv[1:]]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            raise SystemExit(f"phase {phase} failed (exit {proc.returncode}); its log is above")
        phases[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
    result = summarize(phases, args, batch_info(args))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
