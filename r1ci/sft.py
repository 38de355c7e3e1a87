"""Multi-turn SFT data handling: held-out split, length fitting, weighted length-bucketed batches, LR schedule.

Pure functions over `Trajectory` lists; `jobs/sft.py` feeds their batches to the learner,
whose loss already counts only model-written tokens (loss_mask == 1).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

from r1ci.config import SFTConfig
from r1ci.trajectory import Trajectory


def load_trajectories(rows: list[dict[str, Any]]) -> tuple[list[Trajectory], list[float]]:
    """Trajectories and their SFT weights (the `weight` column, 1.0 where absent)."""
    return [Trajectory.from_row(r) for r in rows], [float(r.get("weight") or 1.0) for r in rows]


def fit_length(traj: Trajectory, max_seq_len: int) -> Trajectory | None:
    """Cut the response so prompt + response <= max_seq_len tokens; None if no model token is left."""
    room = max_seq_len - len(traj.prompt_ids)
    if room <= 0:
        return None
    if len(traj.response_ids) > room:
        traj = dataclasses.replace(
            traj, response_ids=traj.response_ids[:room], loss_mask=traj.loss_mask[:room], logprobs=traj.logprobs[:room]
        )
    return traj if sum(traj.loss_mask) else None


def split_held_out(trajs: list[Trajectory], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) indices; whole instances are held out, so no prompt is in both halves."""
    ids = sorted({t.sample_id for t in trajs})
    n_eval = round(len(ids) * fraction)
    if fraction > 0 and n_eval == 0 and len(ids) > 1:
        n_eval = 1
    held = set(random.Random(seed).sample(ids, n_eval))
    train = [i for i, t in enumerate(trajs) if t.sample_id not in held]
    evals = [i for i, t in enumerate(trajs) if t.sample_id in held]
    return train, evals


def plan_epoch(lengths: list[int], weights: list[float], batch_size: int, rng: random.Random, bucket: bool, multiple: int = 1) -> list[list[int]]:
    """One epoch's batches of indices into `lengths`.

    A trajectory of weight w appears floor(w) times, plus once more with probability
    frac(w). With `bucket`, batches hold trajectories of similar length (less padding);
    batch order is shuffled either way. Batch sizes are cut to a multiple of `multiple`
    (the learner ranks); a tail smaller than that is dropped.
    """
    picks = [i for i, w in enumerate(weights) for _ in range(int(w) + (rng.random() < w - int(w)))]
    rng.shuffle(picks)
    if bucket:
        picks.sort(key=lambda i: lengths[i])  # stable: equal lengths keep their shuffled order
    batches = [picks[k : k + batch_size] for k in range(0, len(picks), batch_size)]
    batches = [b[: len(b) - len(b) % multiple] for b in batches]
    batches = [b for b in batches if b]
    rng.shuffle(batches)
    return batches


def lr_at(step: int, total_steps: int, cfg: SFTConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then constant/linear/cosine decay."""
    warmup = math.ceil(cfg.warmup_fraction * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - warmup) / max(total_steps - warmup - 1, 1)
    progress = min(max(progress, 0.0), 1.0)
    shape = 1.0 - progress if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape)
