"""Correctness and reward of one trajectory: the one scoring function every stage uses.

RL, profiling (the curriculum's pass rates), synthesis filtering and evaluation all call
`score` with the run's `RewardConfig` and `ProtocolConfig`, so "correct" means the same
thing everywhere: the task verifier says the final answer is fully right. The reward is
that 0/1 correctness (the paper's) plus the format and turn terms; every weight lives in
`RewardConfig`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from r1ci import protocol
from r1ci.config import ProtocolConfig, RewardConfig
from r1ci.tasks.base import Instance, Task
from r1ci.trajectory import Trajectory

# control characters (bar tab and newlines) and lone surrogates: bytes decoded as text, never an answer
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class RewardParts:
    correctness: float  # RewardConfig.correct if correct, else 0 (graded with RewardConfig.partial_credit)
    format: float  # well_formed or ill_formed
    turns: float  # too_many_turns or 0
    correct: bool  # the verifier accepts the final answer as fully right

    @property
    def total(self) -> float:
        return self.correctness + self.format + self.turns


def well_formed(traj: Trajectory, cfg: ProtocolConfig) -> bool:
    """Every turn but the last runs one closed code block; the last one gives one non-empty answer."""
    if not traj.turns:
        return False
    last = len(traj.turns) - 1
    return all(protocol.is_well_formed(t.text, cfg, final=i == last) for i, t in enumerate(traj.turns))


def final_answer(traj: Trajectory, cfg: ProtocolConfig) -> str | None:
    """The answer the model's own text gives under the run's protocol (its last <<<...>>>);
    None for nested markers (`<<<<<<42>>>>>>`), which no verifier should have to untangle."""
    answer = protocol.extract_answer("".join(t.text for t in traj.turns), cfg)
    return None if answer is not None and cfg.answer_open in answer else answer


def verdict(task: Task, answer: str | None, instance: Instance, cfg: RewardConfig) -> float:
    """The verifier's graded score in [0, 1] of an extracted answer.

    No answer, an empty, binary or over-long one (`cfg.max_answer_chars`), and one the
    verifier raises on all score 0: a malformed answer is a wrong answer, and a verifier
    must never take a training step down.
    """
    if not isinstance(answer, str):
        return 0.0
    answer = answer.strip()
    if not answer or len(answer) > cfg.max_answer_chars or _BINARY.search(answer):
        return 0.0
    try:
        value = float(task.score(answer, instance))
    except Exception:
        return 0.0
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


def score(traj: Trajectory, task: Task, instance: Instance, reward_cfg: RewardConfig, protocol_cfg: ProtocolConfig) -> RewardParts:
    """Correctness and reward of a finished trajectory (weights from `reward_cfg`).

    `correct` is True when the verifier gives the final answer full marks; `correctness` is
    `reward_cfg.correct` then and 0 otherwise, or the graded score times it with
    `reward_cfg.partial_credit`.
    """
    graded = verdict(task, final_answer(traj, protocol_cfg), instance, reward_cfg)
    correct = graded >= 1.0
    correctness = reward_cfg.correct * (graded if reward_cfg.partial_credit else float(correct))
    fmt = reward_cfg.well_formed if well_formed(traj, protocol_cfg) else reward_cfg.ill_formed
    turns = reward_cfg.too_many_turns if len(traj.turns) > reward_cfg.max_turns_unpenalized else 0.0
    return RewardParts(correctness=correctness, format=fmt, turns=turns, correct=correct)


def assign(traj: Trajectory, parts: RewardParts) -> Trajectory:
    traj.reward = parts.total
    traj.correct = parts.correct
    return traj
