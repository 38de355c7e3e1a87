"""Multi-turn SFT on the DeepSpeed learner group: the warm start before RL.

    python jobs/sft.py --config configs/demo.yaml sft.data=data/sft sft.epochs=3

Trains on the trajectories jobs/synthesize.py wrote (loss only on model-written tokens),
evaluates on held-out instances, logs to TensorBoard and metrics.jsonl under
`sft.output_dir`, and writes `sft.output_dir/final`, the Hugging Face folder that
`jobs/rl.py model.path=<that folder>` starts from.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import sys
from pathlib import Path

from r1ci.cli import job_main
from r1ci.config import Config
from r1ci.errors import UserError
from r1ci.metrics import MetricsLogger
from r1ci.models import resolve_model
from r1ci.sft import fit_length, load_trajectories, lr_at, plan_epoch, split_held_out
from r1ci.synthesis import read_rows
from r1ci.trajectory import Trajectory

log = logging.getLogger("sft")


def learner_config(cfg: Config) -> Config:
    """The learner settings for SFT: the SFT peak LR; the job owns the schedule."""
    out = copy.deepcopy(cfg)
    out.learner.lr = cfg.sft.lr
    out.learner.warmup_steps = 0
    return out


def evaluate(group, trajs: list[Trajectory], batch_size: int) -> float:
    """Masked NLL over `trajs`, nats per model token (batches weighted by their model tokens)."""
    total, tokens = 0.0, 0
    for k in range(0, len(trajs), batch_size):
        batch = trajs[k : k + batch_size]
        n = sum(t.num_model_tokens for t in batch)
        total += group.eval_loss(batch) * n
        tokens += n
    return total / max(tokens, 1)


def check_vocabulary(trajs: list[Trajectory], model_dir: str, data: str) -> None:
    """Refuse SFT data whose token ids the model has no embedding for (it was tokenized for
    another model), before any learner starts."""
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    top = max(max(t.input_ids) for t in trajs)
    if top >= vocab:
        raise UserError(f"'{data}' holds token id {top}, beyond the {vocab} tokens of '{model_dir}': it was "
                        "synthesized for another model; run jobs/synthesize.py with the same model.path")


def run_sft(cfg: Config, show_progress: bool = True, verbose: bool = False) -> dict:
    """Train, evaluate and save; returns a summary (losses, steps, the final folder)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from actors.learner import LearnerGroup
    from actors.runtime import init_ray

    sc = cfg.sft
    trajs, weights = load_trajectories(read_rows(sc.data))
    fitted = [(fit_length(t, sc.max_seq_len), w) for t, w in zip(trajs, weights)]
    dropped = sum(t is None for t, _ in fitted)
    trajs, weights = [t for t, _ in fitted if t is not None], [w for t, w in fitted if t is not None]
    if not trajs:
        raise UserError(f"no usable trajectories in '{sc.data}' (all longer than sft.max_seq_len={sc.max_seq_len}?)")
    train_idx, eval_idx = split_held_out(trajs, sc.eval_fraction, cfg.run.seed)
    train = [trajs[i] for i in train_idx]
    held_out = [trajs[i] for i in eval_idx]
    rng = random.Random(cfg.run.seed)
    multiple = cfg.learner.num_learners
    plans = [
        plan_epoch([len(t.input_ids) for t in train], [weights[i] for i in train_idx], sc.batch_size, rng, sc.bucket_by_length, multiple)
        for _ in range(sc.epochs)
    ]
    total = sum(len(p) for p in plans)
    if total == 0:
        raise UserError(f"{len(train)} training trajectories make no batch of {multiple} (learner.num_learners)")
    log.info("SFT on %d trajectories (%d held out, %d too long), %d steps", len(train), len(held_out), dropped, total)

    model_dir = resolve_model(cfg.model.path, cfg.model.data_dir)
    check_vocabulary(trajs, model_dir, sc.data)
    out = Path(sc.output_dir)
    init_ray(cfg.run.ray_address, cfg.run.ray_num_cpus, log_dir=out / "logs", verbose=verbose)
    group = LearnerGroup.create(learner_config(cfg), model_dir, sft=True)
    logger = MetricsLogger(out)
    summary: dict = {"train_trajectories": len(train), "eval_trajectories": len(held_out), "too_long": dropped, "steps": total}
    try:
        if held_out:
            summary["eval_loss_before"] = evaluate(group, held_out, sc.batch_size)
            logger.log(0, {"sft/eval_loss": summary["eval_loss_before"]})
        losses: list[float] = []
        step = 0
        with Progress(TextColumn("sft {task.fields[info]}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not show_progress) as progress:
            bar = progress.add_task("steps", total=total, info="")
            for epoch, plan in enumerate(plans, 1):
                for batch in plan:
                    lr = lr_at(step, total, sc)
                    group.set_lr(lr)
                    m = group.sft_step([train[i] for i in batch])
                    step += 1
                    losses.append(m["loss"])
                    scalars = {"sft/loss": m["loss"], "sft/lr": lr, "sft/grad_norm": m["grad_norm"], "sft/tokens": m["tokens"], "sft/epoch": epoch}
                    if held_out and sc.eval_every and step % sc.eval_every == 0:
                        scalars["sft/eval_loss"] = evaluate(group, held_out, sc.batch_size)
                    logger.log(step, scalars)
                    progress.update(bar, advance=1, info=f"epoch {epoch} loss {m['loss']:.3f}")
                if held_out and not sc.eval_every:
                    summary["eval_loss_after"] = evaluate(group, held_out, sc.batch_size)
                    logger.log(step, {"sft/eval_loss": summary["eval_loss_after"]})
                if sc.save_every_epoch:
                    group.save_hf(str((out / f"epoch_{epoch}").resolve()))
        if held_out and sc.eval_every:
            summary["eval_loss_after"] = evaluate(group, held_out, sc.batch_size)
        final = (out / "final").resolve()
        group.save_hf(str(final))
        summary.update(train_loss_first=losses[0], train_loss_last=losses[-1], final_dir=str(final))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        logger.close()
        group.shutdown()


def main() -> None:
    sys.exit(job_main(__doc__, "sft", run_sft, lambda cfg: cfg.sft.output_dir))


if __name__ == "__main__":
    main()
