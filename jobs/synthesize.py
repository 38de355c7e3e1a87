"""Write verified multi-turn SFT trajectories for the training tasks from a teacher.

    python jobs/synthesize.py --config configs/demo.yaml synthesis.teacher=offline
    OPENAI_API_KEY=... python jobs/synthesize.py synthesis.teacher=endpoint synthesis.model=gpt-4o
    python jobs/synthesize.py synthesis.teacher=generator model.path=runs/sft/final

Trajectories are tokenized with `model.path`'s tokenizer (the model SFT will train) and
written as Parquet shards to `synthesis.output_dir`; rerunning resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from r1ci.cli import job_main
from r1ci.config import Config, ConfigError
from r1ci.models import resolve_model
from r1ci.synthesis import EndpointTeacher, GeneratorTeacher, ScriptedTeacher, ShardWriter, SynthesisRun
from r1ci.tasks import generate_instances, get_task, resolve_task_names

log = logging.getLogger("synthesize")


def make_runner(cfg: Config, stack: ExitStack, verbose: bool = False):
    """A code runner (`r1ci.sandbox.Sandbox`), closed with `stack`: a local Executor, or the Ray executor pool."""
    if cfg.synthesis.executor == "pool":
        from actors.executor import ExecutorPool
        from actors.runtime import init_ray

        init_ray(cfg.run.ray_address, cfg.run.ray_num_cpus, log_dir=Path(cfg.synthesis.output_dir) / "logs", verbose=verbose)
        runner = ExecutorPool.create(cfg)
    else:
        from r1ci.sandbox import Executor

        runner = Executor(cfg.sandbox)
    stack.callback(runner.close)
    return runner


def make_teacher(cfg: Config, runner, model_dir: str, stack: ExitStack):
    if cfg.synthesis.teacher == "offline":
        return ScriptedTeacher(runner, cfg)
    if cfg.synthesis.teacher == "endpoint":
        key = os.environ.get(cfg.synthesis.api_key_env, "")
        if not key and "127.0.0.1" not in cfg.synthesis.base_url and "localhost" not in cfg.synthesis.base_url:
            raise ConfigError(f"synthesis.teacher=endpoint needs an API key in ${cfg.synthesis.api_key_env} (or set synthesis.api_key_env)")
        return EndpointTeacher(runner, cfg, key)
    from r1ci.engines import make_engine

    teacher = GeneratorTeacher(make_engine(cfg, model_dir), runner, cfg)
    stack.callback(teacher.close)
    return teacher


def synthesize(cfg: Config, show_progress: bool = True, verbose: bool = False) -> dict[str, int]:
    """Run the configured teacher over cfg.tasks.train; returns the counts (also saved as counts.json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from transformers import AutoTokenizer

    model_dir = resolve_model(cfg.model.path, cfg.model.data_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = resolve_task_names(cfg.tasks.train)
    writer = ShardWriter(cfg.synthesis.output_dir)
    with ExitStack() as stack:
        runner = make_runner(cfg, stack, verbose)
        teacher = make_teacher(cfg, runner, model_dir, stack)
        run = SynthesisRun(teacher, tokenizer, cfg, writer)
        progress = stack.enter_context(
            Progress(TextColumn("synthesize"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not show_progress)
        )
        bar = progress.add_task("instances", total=len(names) * cfg.synthesis.instances_per_task)
        counts = run.run(
            [get_task(n) for n in names],
            lambda task: generate_instances(task.name, cfg.synthesis.seed, cfg.synthesis.instances_per_task),
            lambda n: progress.advance(bar, n),
        )
    counts = dict(sorted(counts.items()))
    (Path(writer.dir) / "counts.json").write_text(json.dumps(counts, indent=1))
    return counts


def main() -> None:
    sys.exit(job_main(__doc__, "synthesize", synthesize, lambda cfg: cfg.synthesis.output_dir))


if __name__ == "__main__":
    main()
