"""Trajectories to padded training tensors: one pure `collate`, shared by RL and SFT.

Per-token tensors are *response-aligned* `[B, R]`: column j is response token j, predicted
by the logits at input position `positions[b, j] = len(prompt) + j - 1`. That is the loss
mask shifted onto next-token logprobs, and it lets the learner run the LM head on response
positions only (prompts can be long; the vocabulary is large).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from r1ci.trajectory import Trajectory


@dataclass
class Batch:
    input_ids: Tensor  # [B, L] long: prompt + response, right-padded with 0
    attention_mask: Tensor  # [B, L] long: 1 on real tokens
    positions: Tensor  # [B, R] long: input position whose logits predict response token j (0 on padding)
    response_ids: Tensor  # [B, R] long: response tokens, right-padded with 0
    mask: Tensor  # [B, R] float: 1 on model-written tokens; 0 on interpreter tokens and padding
    old_logprobs: Tensor  # [B, R] float: sampling logprobs from the rollout (0 where mask is 0)
    rewards: Tensor  # [B] float
    group_ids: list  # B group ids (GRPO normalizes within a group)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})


def _to(x, device):
    return x.to(device) if isinstance(x, Tensor) else x


def check_trajectory(t: Trajectory) -> None:
    """Raise ValueError naming the sample when a trajectory cannot be trained on."""
    if not t.prompt_ids:
        raise ValueError(f"trajectory {t.sample_id}: empty prompt; the first response token needs a prompt token before it")
    n = len(t.response_ids)
    if len(t.loss_mask) != n or len(t.logprobs) != n:
        raise ValueError(
            f"trajectory {t.sample_id}: {n} response tokens but {len(t.loss_mask)} loss-mask entries and "
            f"{len(t.logprobs)} logprobs; build trajectories with Trajectory.append"
        )


def collate(trajectories: list[Trajectory], response_len: int | None = None) -> Batch:
    """Right-pad trajectories into a `Batch` (CPU tensors); `response_len` pads R further
    (so tensors of different micro-batches line up with whole-batch advantages)."""
    for t in trajectories:
        check_trajectory(t)
    B = len(trajectories)
    L = max(len(t.prompt_ids) + len(t.response_ids) for t in trajectories)
    R = max([len(t.response_ids) for t in trajectories] + [response_len or 0, 1])
    input_ids = torch.zeros(B, L, dtype=torch.long)
    attention_mask = torch.zeros(B, L, dtype=torch.long)
    positions = torch.zeros(B, R, dtype=torch.long)
    response_ids = torch.zeros(B, R, dtype=torch.long)
    mask = torch.zeros(B, R)
    old_logprobs = torch.zeros(B, R)
    for i, t in enumerate(trajectories):
        p, n = len(t.prompt_ids), len(t.response_ids)
        input_ids[i, : p + n] = torch.tensor(t.prompt_ids + t.response_ids, dtype=torch.long)
        attention_mask[i, : p + n] = 1
        if n:
            positions[i, :n] = torch.arange(p - 1, p + n - 1)
            response_ids[i, :n] = torch.tensor(t.response_ids, dtype=torch.long)
            mask[i, :n] = torch.tensor(t.loss_mask, dtype=torch.float32)
            old_logprobs[i, :n] = torch.tensor(t.logprobs, dtype=torch.float32) * mask[i, :n]
    rewards = torch.tensor([float(t.reward) for t in trajectories])
    return Batch(input_ids, attention_mask, positions, response_ids, mask, old_logprobs, rewards, [t.group_id for t in trajectories])
