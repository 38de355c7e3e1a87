"""Curriculum vs uniform sampling: the same start checkpoint, seed and step count, two RL runs.

    python benchmarks/curriculum.py --json                       # builds an SFT start checkpoint first
    python benchmarks/curriculum.py --model runs/sft/final --steps 20 --set learner.lr=5e-6

Pipeline, each stage a real job in its own process: (1) start checkpoint: `--model`, or
offline synthesis + jobs/sft.py on the training tasks; (2) jobs/profile_samples.py on the training
samples (pass rates -> potentials); (3) jobs/rl.py twice, curriculum.sampler=curriculum and
=uniform, same seed and steps; (4) the start model and both RL results answer the same
held-out instances (another instance seed, or --eval-tasks), scored by the task verifiers.
Prints a table (or one JSON object with --json): accuracy before/after and gain per arm, and
the ratio of the gains.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job(name: str, config: str, overrides: list[str], log: Path) -> float:
    """Run `python jobs/<name>.py --config config overrides...`; returns wall seconds, raises on failure."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(ROOT / "jobs" / f"{name}.py"), "--config", config, *overrides],
                              cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"jobs/{name}.py failed (exit {proc.returncode}); log {log}:\n{tail}")
    return time.perf_counter() - start


def accuracy(potentials: Path) -> float:
    """Mean verifier pass rate over the samples of a profile Parquet."""
    import pyarrow.parquet as pq

    rates = pq.read_table(potentials, columns=["pass_rate"]).column("pass_rate").to_pylist()
    return sum(rates) / len(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--model", default="", help="start checkpoint (HF folder or 'smollm2'); empty: synthesize + SFT one")
    ap.add_argument("--potentials", default="", help="pass rates from an earlier jobs/profile_samples.py run of --model on the same samples; empty: profile now")
    ap.add_argument("--tasks", default="toy_run_code,number_multiply,multistep_arithmetic_two", help="training tasks (comma-separated)")
    ap.add_argument("--eval-tasks", default="", help="evaluation tasks; empty: held-out instances of --tasks")
    ap.add_argument("--instances", type=int, default=16, help="training instances per task")
    ap.add_argument("--eval-instances", type=int, default=12, help="evaluation instances per task")
    ap.add_argument("--eval-samples", type=int, default=2, help="answers per evaluation instance")
    ap.add_argument("--steps", type=int, default=8, help="RL steps per arm")
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--sft-epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="runs/bench_curriculum")
    ap.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every job")
    args = ap.parse_args()

    work = (ROOT / args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)  # profile parts resume: never mix in an earlier run's results
    work.mkdir(parents=True)
    tasks = f"tasks.train=[{args.tasks}]"
    common = [f"run.seed={args.seed}", "run.ray_address=local", *args.set]
    seconds: dict[str, float] = {}

    model = args.model
    if not model:
        data = work / "sft_data"
        seconds["synthesize"] = job("synthesize", args.config, [*common, tasks, f"synthesis.output_dir={data}",
                                    f"synthesis.instances_per_task={args.instances}"], work / "synthesize.log")
        seconds["sft"] = job("sft", args.config, [*common, f"sft.data={data}", f"sft.output_dir={work / 'sft'}",
                             f"sft.epochs={args.sft_epochs}", "sft.batch_size=4"], work / "sft.log")
        model = str(work / "sft" / "final")

    potentials = work / "potentials.parquet"
    if args.potentials:  # profiled before, from the same start checkpoint and samples
        shutil.copy(args.potentials, potentials)
    else:
        seconds["profile"] = job("profile_samples", args.config, [*common, tasks, f"model.path={model}", f"tasks.instances_per_task={args.instances}",
                                 f"profile.output={potentials}"], work / "profile.log")

    eval_seed = 1000 + args.seed
    temps = [0.6] * args.eval_samples

    def evaluate(model_dir: str, name: str) -> float:
        out = work / f"eval_{name}.parquet"
        seconds[f"eval_{name}"] = job("profile_samples", args.config, [
            *common, f"tasks.train=[{args.eval_tasks or args.tasks}]", f"model.path={model_dir}", f"tasks.seed={eval_seed}",
            f"tasks.instances_per_task={args.eval_instances}", "profile.styles=[agent]",
            f"profile.samples_per_style={args.eval_samples}", f"profile.temperatures={json.dumps(temps)}", f"profile.output={out}",
        ], work / f"eval_{name}.log")
        return accuracy(out)

    before = evaluate(model, "start")
    arms: dict[str, dict] = {}
    for sampler in ("curriculum", "uniform"):
        out = work / f"rl_{sampler}"
        seconds[f"rl_{sampler}"] = job("rl", args.config, [
            *common, tasks, f"model.path={model}", f"curriculum.sampler={sampler}", f"curriculum.potentials={potentials}",
            f"curriculum.steps_per_stage={max(args.steps // 4, 1)}", f"run.steps={args.steps}", f"run.output_dir={out}",
            f"run.prompts_per_step={args.prompts_per_step}", f"algorithm.group_size={args.group_size}",
            f"tasks.instances_per_task={args.instances}", f"run.checkpoint_every={args.steps}",
        ], work / f"rl_{sampler}.log")
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        after = evaluate(str(out / "final"), sampler)
        arms[sampler] = {
            "eval_accuracy": after,
            "gain": after - before,
            "train_reward_mean": sum(r.get("reward/mean", 0.0) for r in rows) / max(len(rows), 1),
            "train_accuracy_mean": sum(r.get("accuracy/mean", 0.0) for r in rows) / max(len(rows), 1),
            "minutes": seconds[f"rl_{sampler}"] / 60,
        }

    gain_c, gain_u = arms["curriculum"]["gain"], arms["uniform"]["gain"]
    result = {
        "start_model": model,
        "train_tasks": args.tasks.split(","),
        "eval": {"tasks": (args.eval_tasks or args.tasks).split(","), "seed": eval_seed, "instances_per_task": args.eval_instances,
                 "answers_per_instance": args.eval_samples},
        "steps": args.steps,
        "eval_accuracy_start": before,
        "curriculum": arms["curriculum"],
        "uniform": arms["uniform"],
        "gain_ratio_curriculum_over_uniform": gain_c / gain_u if gain_u else None,
        "stage_seconds": seconds,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"start accuracy {before:.3f} on {result['eval']}")
    print(f"{'sampler':<12}{'eval acc':>10}{'gain':>9}{'train reward':>14}{'minutes':>9}")
    for name, arm in arms.items():
        print(f"{name:<12}{arm['eval_accuracy']:>10.3f}{arm['gain']:>+9.3f}{arm['train_reward_mean']:>14.3f}{arm['minutes']:>9.1f}")
    ratio = result["gain_ratio_curriculum_over_uniform"]
    print(f"gain ratio curriculum/uniform: {ratio:.2f}" if ratio is not None else "gain ratio: undefined (uniform gain 0)")


if __name__ == "__main__":
    main()
