"""The reward of one trajectory: the task verifier's verdict plus the paper's format and turn terms.

Pure: it reads a finished `Trajectory`, the task and the instance, and returns the parts;
every weight lives in `RewardConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from r1ci import protocol
from r1ci.config import ProtocolConfig, RewardConfig
from r1ci.tasks.base import Instance, Task
from r1ci.trajectory import Trajectory


@dataclass(frozen=True)
class RewardParts:
    correctness: float  # the verifier's score in [0, 1], times RewardConfig.correct
    format: float  # well_formed or ill_formed
    turns: float  # too_many_turns or 0
    correct: bool

    @property
    def total(self) -> float:
        return self.correctness + self.format + self.turns


def well_formed(traj: Trajectory, cfg: ProtocolConfig) -> bool:
    """Every turn but the last runs one closed code block; the last one answers exactly once."""
    if not traj.turns:
        return False
    last = len(traj.turns) - 1
    return all(protocol.is_well_formed(t.text, cfg, final=i == last) for i, t in enumerate(traj.turns))


def score(traj: Trajectory, task: Task, instance: Instance, cfg: RewardConfig, proto: ProtocolConfig) -> RewardParts:
    """Score a finished trajectory; a verifier that raises counts as a wrong answer."""
    try:
        verdict = float(task.score(traj.answer, instance)) if traj.answer is not None else 0.0
    except Exception:  # a verifier must never take a training step down
        verdict = 0.0
    fmt = cfg.well_formed if well_formed(traj, proto) else cfg.ill_formed
    turns = cfg.too_many_turns if len(traj.turns) > cfg.max_turns_unpenalized else 0.0
    return RewardParts(correctness=cfg.correct * verdict, format=fmt, turns=turns, correct=verdict >= 1.0)


def assign(traj: Trajectory, parts: RewardParts) -> Trajectory:
    traj.reward = parts.total
    traj.correct = parts.correct
    return traj
