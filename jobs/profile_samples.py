"""Profile every training sample with the SFT model: pass rate p and improvement potential 4p(1-p).

(Named profile_samples.py, not profile.py: jobs/ is sys.path[0] for every job, and a
jobs/profile.py would shadow the stdlib `profile` module that cProfile imports.)

    python jobs/profile_samples.py --config configs/demo.yaml model.path=runs/sft/final

Each sample is answered `len(profile.styles) x profile.samples_per_style` times (20 in the
paper: 4 prompt styles x 5 temperatures) on the generator fleet (the one RL and evaluation use). Finished
chunks land in `<output>.parts/`, so an interrupted run resumes; the merged Parquet at
`profile.output` is what `curriculum.potentials` points RL to.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import zlib
from pathlib import Path

from r1ci import rewards
from r1ci.cli import job_main
from r1ci.config import Config
from r1ci.curriculum import improvement_potential, partition_stages, potential_rows, write_potentials
from r1ci.models import resolve_model
from r1ci.rollout import RolloutRequest, sampling_from_config
from r1ci.tasks import generate_instances, get_task, resolve_task_names
from r1ci.tasks.base import Instance
from r1ci.trajectory import Trajectory

log = logging.getLogger("profile")


def profile_requests(instances: list[Instance], cfg: Config) -> list[RolloutRequest]:
    """Every sample in every style at every profile temperature; seeds fixed by (run seed, sample, style, k)."""
    base = sampling_from_config(cfg)
    out = []
    for inst in instances:
        for style in cfg.profile.styles:
            for k, temperature in enumerate(cfg.profile.temperatures):
                seed = zlib.crc32(f"{cfg.run.seed}/{inst.id}/{style}/{k}".encode())
                sampling = dataclasses.replace(base, temperature=temperature, seed=seed)
                out.append(RolloutRequest(inst, f"profile:{inst.id}", style, sampling))
    return out


def outcomes(trajs: list[Trajectory], samples: dict[str, Instance], cfg: Config) -> dict[str, list[bool]]:
    """Per sample id, whether each answer is correct, judged as RL judges it (the run's reward and protocol config)."""
    out: dict[str, list[bool]] = {}
    for t in trajs:
        parts = rewards.score(t, get_task(t.task), samples[t.sample_id], cfg.reward, cfg.protocol)
        out.setdefault(t.sample_id, []).append(parts.correct)
    return out


def _read_parts(parts: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in sorted(parts.glob("chunk-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def run_profile(cfg: Config, show_progress: bool = True, verbose: bool = False) -> dict:
    """Profile cfg.tasks.train (tasks.instances_per_task each, seed tasks.seed); returns a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from actors.fleet import GeneratorFleet
    from actors.runtime import init_ray

    pc = cfg.profile
    out = Path(pc.output).expanduser()
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    samples = {
        inst.id: inst
        for name in resolve_task_names(cfg.tasks.train)
        for inst in generate_instances(name, cfg.tasks.seed, cfg.tasks.instances_per_task)
    }
    done = {r["sample_id"] for r in _read_parts(parts)}
    todo = [sid for sid in samples if sid not in done]
    chunks = [todo[k : k + pc.chunk_size] for k in range(0, len(todo), pc.chunk_size)]
    next_part = len(list(parts.glob("chunk-*.parquet")))
    log.info("profiling %d samples (%d done before) x %d answers", len(todo), len(done), len(pc.styles) * pc.samples_per_style)

    if chunks:
        init_ray(cfg.run.ray_address, cfg.run.ray_num_cpus, log_dir=out.parent / "logs", verbose=verbose)
        fleet = GeneratorFleet(cfg, resolve_model(cfg.model.path, cfg.model.data_dir), executor=None)
        try:
            with Progress(TextColumn("profile"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not show_progress) as progress:
                bar = progress.add_task("samples", total=len(samples), completed=len(done))
                for chunk in chunks:  # the fleet spreads each chunk over the generators and redoes a dead one's share
                    trajs = fleet.rollout(profile_requests([samples[s] for s in chunk], cfg), version=0)
                    write_potentials(potential_rows(outcomes(trajs, samples, cfg)), parts / f"chunk-{next_part:05d}.parquet")
                    next_part += 1
                    progress.advance(bar, len(chunk))
        finally:
            fleet.shutdown()

    rows = [r for r in _read_parts(parts) if r["sample_id"] in samples]
    write_potentials(rows, out)
    stages = partition_stages({r["sample_id"]: improvement_potential(r["pass_rate"]) for r in rows}, cfg.curriculum.stage_bounds)
    summary = {
        "samples": len(rows),
        "profiled_now": len(todo),
        "answers_per_sample": len(pc.styles) * pc.samples_per_style,
        "mean_pass_rate": sum(r["pass_rate"] for r in rows) / max(len(rows), 1),
        "mean_potential": sum(r["potential"] for r in rows) / max(len(rows), 1),
        "stage_sizes": [len(s) for s in stages],
        "output": str(out),
    }
    log.info("profile: %s", summary)
    return summary


def main() -> None:
    sys.exit(job_main(__doc__, "profile", run_profile, lambda cfg: str(Path(cfg.profile.output).expanduser().parent)))


if __name__ == "__main__":
    main()
