"""Synchronous vs asynchronous RL (`run.max_staleness`), the same config in one run, over seeds.

    python benchmarks/async_rl.py --json --model runs/demo/sft/final --potentials runs/demo/potentials.parquet
    python benchmarks/async_rl.py --staleness 0 1 --seeds 0 1 2 --steps 6

Every arm is jobs/rl.py in its own process with the demo config, the start model and the
overrides given, and the generator and the learner on one core each (`generator.threads=1`,
`learner.threads=1`; on 2 cores: one each), so the synchronous arm leaves each core idle
while the other side works and the asynchronous arms may overlap them. Asynchronous arms
take `algorithm.rollout_correction=true` (the decoupled objective the staleness needs); the
synchronous arm gets it too, so the objectives compare like with like.

Reports per arm, from each run's metrics.jsonl: steps per hour and trained tokens per second
of the training loop (start-up excluded), the share of the loop's time each side was busy,
the staleness trained on, and the reward curve. Each asynchronous arm is compared with the
synchronous one seed by seed (same seed, same start, same prompts drawn): throughput ratio
and the difference of the mean reward over the run, each a mean over seeds with its 95%
t-interval; with fewer than 3 seeds the interval is unknown and the output says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from common import ROOT, as_list, job
from r1ci.evaluation import mean_over_seeds
from r1ci.metrics import read_metrics

GENERATION = ("time/coordinator_s", "time/generation_s", "time/load_weights_s")
LEARNER = ("time/learner_s", "time/sync_s")


def summarize(rows: list[dict]) -> dict:
    """One run's throughput, busy shares, staleness and reward curve from its metrics rows."""
    steps = [r for r in rows if "reward/mean" in r]
    wall = steps[-1]["time/run_s"]
    return {
        "steps": len(steps),
        "loop_s": round(wall, 1),
        "steps_per_hour": len(steps) * 3600 / wall,
        "trained_tokens_per_s": sum(r.get("learner/tokens", 0.0) for r in steps) / wall,
        "busy_generation": sum(r.get(k, 0.0) for r in steps for k in GENERATION) / wall,
        "busy_learner": sum(r.get(k, 0.0) for r in steps for k in LEARNER) / wall,
        "staleness_mean": sum(r["staleness/mean"] for r in steps) / len(steps),
        "staleness_max": max(r["staleness/max"] for r in steps),
        "dropped_groups": sum(r["staleness/dropped_groups"] for r in steps),
        "reward": [round(r["reward/mean"], 4) for r in steps],
        "accuracy": [round(r["accuracy/mean"], 4) for r in steps],
        "reward_mean": sum(r["reward/mean"] for r in steps) / len(steps),
    }


def compare(runs: dict[int, dict[int, dict]], staleness: int, seeds: list[int]) -> dict:
    """Arm `staleness` against the synchronous arm, paired by seed."""
    ratio = [runs[staleness][s]["steps_per_hour"] / runs[0][s]["steps_per_hour"] for s in seeds]
    reward = [runs[staleness][s]["reward_mean"] - runs[0][s]["reward_mean"] for s in seeds]
    r, d = mean_over_seeds(ratio), mean_over_seeds(reward)
    return {
        "throughput_ratio_per_seed": [round(x, 3) for x in ratio],
        "throughput_ratio": as_list(r),
        "reward_diff_per_seed": [round(x, 4) for x in reward],
        "reward_diff": as_list(d),
        "reward_diff_significant": bool(d.lo > 0 or d.hi < 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--model", default="smollm2", help="start model: an HF folder (the demo's runs/demo/sft/final) or smollm2")
    ap.add_argument("--potentials", default="", help="pass rates for the curriculum (jobs/profile_samples.py); empty: uniform sampling")
    ap.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2], help="run.max_staleness of each arm (0, the synchronous baseline, is always run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run.seed of the runs (3 or more for an interval)")
    ap.add_argument("--steps", type=int, default=0, help="RL steps per run (0: the config's run.steps)")
    ap.add_argument("--workdir", default="runs/bench_async")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every run")
    args = ap.parse_args()

    arms = sorted({0, *args.staleness})
    work = (ROOT / args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sampler = [f"curriculum.potentials={args.potentials}"] if args.potentials else ["curriculum.sampler=uniform"]
    common = ["--config", args.config, "run.ray_address=local", f"model.path={args.model}", *sampler,
              "generator.threads=1", "learner.threads=1", "algorithm.rollout_correction=true",
              "run.checkpoint_every=1000", *([f"run.steps={args.steps}"] if args.steps else []), *args.set]
    start = time.perf_counter()
    runs: dict[int, dict[int, dict]] = {arm: {} for arm in arms}
    for seed in args.seeds:  # arms interleaved, so a slow spell of the machine hits every arm alike
        for arm in arms:
            out = work / f"s{arm}_seed{seed}"
            job("rl", [*common, f"run.seed={seed}", f"run.max_staleness={arm}", f"run.output_dir={out}"], work / f"s{arm}_seed{seed}.log")
            runs[arm][seed] = summarize(read_metrics(out))
    result = {
        "model": args.model,
        "seeds": args.seeds,
        "arms": {str(arm): {"per_seed": runs[arm], **{k: as_list(mean_over_seeds([runs[arm][s][k] for s in args.seeds]))
                                                       for k in ("steps_per_hour", "trained_tokens_per_s", "busy_generation",
                                                                 "busy_learner", "reward_mean")}} for arm in arms},
        "vs_synchronous": {str(arm): compare(runs, arm, args.seeds) for arm in arms if arm},
        "minutes_total": round((time.perf_counter() - start) / 60, 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    for arm in arms:
        a = result["arms"][str(arm)]
        print(f"max_staleness {arm}: {a['steps_per_hour'][0]:.1f} steps/h, {a['trained_tokens_per_s'][0]:.1f} trained tokens/s, "
              f"busy generation {a['busy_generation'][0]:.2f} learner {a['busy_learner'][0]:.2f}, mean reward {a['reward_mean'][0]:+.3f}")
    for arm, c in result["vs_synchronous"].items():
        r, d = c["throughput_ratio"], c["reward_diff"]
        print(f"max_staleness {arm} vs 0 over {len(args.seeds)} seeds: throughput x{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}], "
              f"mean reward {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] "
              f"({'interval excludes 0' if c['reward_diff_significant'] else 'not significant' if len(args.seeds) > 1 else 'one seed: no interval'})")
    print(f"minutes: {result['minutes_total']}")


if __name__ == "__main__":
    main()
