"""Curriculum vs uniform sampling, over seeds: the same start model, the same held-out
instances, `curriculum.drop_uniform_groups` on in both arms.

    python benchmarks/curriculum.py --json                          # synthesize + SFT a start model first
    python benchmarks/curriculum.py --model runs/demo/sft/final --potentials runs/demo/potentials.parquet

Each stage is a real job in its own process, with the demo config and the overrides given:
(1) the start model: `--model`, or offline synthesis + jobs/sft.py; (2) jobs/profile_samples.py
on the training samples (or `--potentials`); (3) jobs/rl.py for every seed with
curriculum.sampler=curriculum and =uniform; (4) one jobs/eval.py of the start model and every
RL result on the same held-out instances. Reports each arm's gain over the start model per seed
(paired over instances, bootstrap interval) and its mean over seeds (95% t-interval), the same
for curriculum minus uniform, and the minutes every stage took.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from common import ROOT, as_list, job
from r1ci.evaluation import mean_over_seeds

ARMS = ("curriculum", "uniform")


def analyse(results: dict, seeds: list[int], metric: str = "accuracy") -> dict:
    """Gains from jobs/eval.py's results.json: per seed (paired bootstrap over instances) and
    their mean over seeds (t-interval)."""
    acc = {m: r["accuracy"][metric]["value"] for m, r in results["groups"]["all"].items()}
    paired = {(c["a"], c["b"]): c["diff"] for c in results["comparisons"] if c["group"] == "all" and c["metric"] == metric}

    def diff(a: str, b: str) -> dict:  # b - a on the same instances
        d = paired[(a, b)] if (a, b) in paired else {k: -v for k, v in paired[(b, a)].items()}
        lo, hi = sorted((d["lo"], d["hi"]))
        return {"value": d["value"], "lo": lo, "hi": hi, "significant": lo > 0 or hi < 0}

    out: dict = {"accuracy_start": acc["start"], "metric": metric}
    for arm in ARMS:
        per_seed = {s: diff("start", f"{arm}_s{s}") for s in seeds}
        out[arm] = {"accuracy": {s: acc[f"{arm}_s{s}"] for s in seeds}, "gain_per_seed": per_seed,
                    "gain_mean": as_list(mean_over_seeds([g["value"] for g in per_seed.values()]))}
    per_seed = {s: diff(f"uniform_s{s}", f"curriculum_s{s}") for s in seeds}
    mean = mean_over_seeds([d["value"] for d in per_seed.values()])
    out["curriculum_minus_uniform"] = {"per_seed": per_seed, "mean": as_list(mean),
                                       "significant": bool(mean.lo > 0 or mean.hi < 0)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--model", default="", help="start model (HF folder); empty: synthesize + SFT one with the config")
    ap.add_argument("--potentials", default="", help="pass rates of --model on the same training samples (jobs/profile_samples.py); empty: profile now")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="run.seed of the RL runs (at least 3 for an interval worth reading)")
    ap.add_argument("--steps", type=int, default=0, help="RL steps per run (0: the config's run.steps)")
    ap.add_argument("--workdir", default="runs/bench_curriculum")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every job (e.g. eval.instances_per_task=30)")
    args = ap.parse_args()

    work = (ROOT / args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)  # every stage resumes: never mix in an earlier run's results
    work.mkdir(parents=True)
    base = ["--config", args.config, "run.ray_address=local", *args.set]
    seconds: dict[str, float] = {}
    start_all = time.perf_counter()

    model = args.model
    if not model:
        data = work / "sft_data"
        seconds["synthesize"] = job("synthesize", [*base, f"synthesis.output_dir={data}"], work / "synthesize.log")
        seconds["sft"] = job("sft", [*base, f"sft.data={data}", f"sft.output_dir={work / 'sft'}"], work / "sft.log")
        model = str(work / "sft" / "final")
    potentials = work / "potentials.parquet"
    if args.potentials:
        shutil.copy(args.potentials, potentials)
    else:
        seconds["profile"] = job("profile_samples", [*base, f"model.path={model}", f"profile.output={potentials}"], work / "profile.log")

    models = [f"start={model}"]
    steps = [f"run.steps={args.steps}"] if args.steps else []
    for seed in args.seeds:
        for arm in ARMS:
            out = work / f"rl_{arm}_s{seed}"
            seconds[f"rl_{arm}_s{seed}"] = job("rl", [
                *base, *steps, f"model.path={model}", f"run.seed={seed}", f"curriculum.sampler={arm}",
                f"curriculum.potentials={potentials}", "curriculum.drop_uniform_groups=true", f"run.output_dir={out}",
            ], work / f"rl_{arm}_s{seed}.log")
            models.append(f"{arm}_s{seed}={out / 'final'}")
    seconds["eval"] = job("eval", [*base, f"eval.models=[{','.join(models)}]", f"eval.output_dir={work / 'eval'}"], work / "eval.log")

    results = json.loads((work / "eval" / "results.json").read_text())
    result = {
        "start_model": model,
        "seeds": args.seeds,
        "eval": {k: results["settings"].get(k) for k in ("instances_per_task", "samples", "temperature", "prompt_style")}
                | {"tasks": sorted(results["tasks"]), "instances": results["groups"]["all"]["start"]["accuracy"]["accuracy"]["instances"]},
        **analyse(results, args.seeds),
        "minutes": {k: round(v / 60, 2) for k, v in seconds.items()},
        "minutes_total": round((time.perf_counter() - start_all) / 60, 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"start accuracy {result['accuracy_start']:.3f} on {result['eval']}")
    for arm in ARMS:
        g = result[arm]["gain_mean"]
        print(f"{arm:<12} gain over start, mean over {len(args.seeds)} seeds: {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]")
    d = result["curriculum_minus_uniform"]
    print(f"curriculum - uniform: {d['mean'][0]:+.3f} [{d['mean'][1]:+.3f}, {d['mean'][2]:+.3f}] "
          f"({'interval excludes 0' if d['significant'] else 'not significant: the interval contains 0'})")
    print(f"minutes: {result['minutes']} (total {result['minutes_total']})")


if __name__ == "__main__":
    main()
