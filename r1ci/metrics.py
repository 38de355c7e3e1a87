"""Step metrics: summaries of a batch of trajectories, and the logger that writes them.

Every job logs through `MetricsLogger`: TensorBoard event files for people, and one JSON
line per step (`metrics.jsonl`) for scripts, benchmarks and resume checks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean

import numpy as np

from r1ci.trajectory import Trajectory


def group_pass_rates(trajs: list[Trajectory]) -> dict[str, float]:
    """Fraction of correct rollouts per group (one prompt's G samples)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for t in trajs:
        groups[t.group_id].append(t.correct)
    return {g: sum(v) / len(v) for g, v in groups.items()}


def rollout_metrics(trajs: list[Trajectory], family_of: dict[str, str]) -> dict[str, float]:
    """Reward and accuracy overall and per task family, turns, code calls, lengths, stop reasons."""
    if not trajs:
        return {}
    out = {
        "reward/mean": mean(t.reward for t in trajs),
        "accuracy/mean": mean(float(t.correct) for t in trajs),
        "rollout/code_calls": mean(t.code_calls for t in trajs),
        "rollout/turns": mean(len(t.turns) for t in trajs),
        "rollout/response_tokens": mean(len(t.response_ids) for t in trajs),
        "rollout/model_tokens": mean(t.num_model_tokens for t in trajs),
        "rollout/code_wait_s": mean(t.code_wait_s for t in trajs),
    }
    by_family: dict[str, list[Trajectory]] = defaultdict(list)
    stops: dict[str, int] = defaultdict(int)
    for t in trajs:
        by_family[family_of.get(t.task, "other")].append(t)
        stops[t.stop_reason] += 1
    for fam, ts in by_family.items():
        out[f"reward/{fam}"] = mean(t.reward for t in ts)
        out[f"accuracy/{fam}"] = mean(float(t.correct) for t in ts)
    for reason, count in stops.items():
        out[f"stop/{reason}"] = count / len(trajs)
    return out


class MetricsLogger:
    """TensorBoard scalars and histograms plus `metrics.jsonl`, under one output folder."""

    def __init__(self, out_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.dir / "tensorboard"))
        self.jsonl = open(self.dir / "metrics.jsonl", "a")

    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, list[float]] | None = None) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        for key, values in (histograms or {}).items():
            if values:
                self.writer.add_histogram(key, np.asarray(values, dtype=float), step)
        self.jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self.jsonl.flush()
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The rows of `metrics.jsonl`, one per step: rows of the same step are merged (a step's
    training and held-out evaluation metrics are logged apart) and a later value wins (a
    resumed run rewrites its steps)."""
    path = Path(out_dir) / "metrics.jsonl"
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["step"], {}).update(row)
    return [rows[k] for k in sorted(rows)]
