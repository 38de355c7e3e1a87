"""Trajectories to training tensors: which ones train (`trainable`), how a batch splits into
per-rank micro-batches (`plan_micro_batches`), and one pure `collate`, shared by RL and SFT.

Per-token tensors are *response-aligned* `[B, R]`: column j is response token j, predicted
by the logits at input position `positions[b, j] = len(prompt) + j - 1`. That is the loss
mask shifted onto next-token logprobs, and it lets the learner run the LM head on model
tokens only (prompts and interpreter output can be long; the vocabulary is large).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from r1ci import protocol
from r1ci.config import ProtocolConfig
from r1ci.trajectory import STOP_ERROR, Trajectory


@dataclass
class Batch:
    input_ids: Tensor  # [B, L] long: prompt + response, right-padded with 0
    attention_mask: Tensor  # [B, L] long: 1 on real tokens
    positions: Tensor  # [B, R] long: input position whose logits predict response token j (0 on padding)
    response_ids: Tensor  # [B, R] long: response tokens, right-padded with 0
    mask: Tensor  # [B, R] float: 1 on model-written tokens; 0 on interpreter tokens and padding
    sampling_logprobs: Tensor  # [B, R] float: the engine's logprobs from the rollout (0 where mask is 0)
    rewards: Tensor  # [B] float
    group_ids: list  # B group ids (GRPO normalizes within a group)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def model_tokens(self) -> tuple[Tensor, Tensor]:
        """(rows, columns) of the model-written tokens, [N] each: the only positions whose
        logits the loss reads."""
        rows, cols = self.mask.nonzero(as_tuple=True)
        return rows, cols

    @property
    def padded_tokens(self) -> int:
        """Input positions the forward runs over, padding included (B x L)."""
        return self.input_ids.numel()

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


def collate(trajectories: list[Trajectory]) -> Batch:
    """Right-pad trajectories into a `Batch` (CPU tensors), to the longest of them."""
    for t in trajectories:
        check_trajectory(t)
    B = len(trajectories)
    L = max(len(t.prompt_ids) + len(t.response_ids) for t in trajectories)
    R = max([len(t.response_ids) for t in trajectories] + [1])
    input_ids = torch.zeros(B, L, dtype=torch.long)
    attention_mask = torch.zeros(B, L, dtype=torch.long)
    positions = torch.zeros(B, R, dtype=torch.long)
    response_ids = torch.zeros(B, R, dtype=torch.long)
    mask = torch.zeros(B, R)
    sampling_logprobs = torch.zeros(B, R)
    for i, t in enumerate(trajectories):
        p, n = len(t.prompt_ids), len(t.response_ids)
        input_ids[i, : p + n] = torch.tensor(t.prompt_ids + t.response_ids, dtype=torch.long)
        attention_mask[i, : p + n] = 1
        if n:
            positions[i, :n] = torch.arange(p - 1, p + n - 1)
            response_ids[i, :n] = torch.tensor(t.response_ids, dtype=torch.long)
            mask[i, :n] = torch.tensor(t.loss_mask, dtype=torch.float32)
            sampling_logprobs[i, :n] = torch.tensor(t.logprobs, dtype=torch.float32) * mask[i, :n]
    rewards = torch.tensor([float(t.reward) for t in trajectories])
    return Batch(input_ids, attention_mask, positions, response_ids, mask, sampling_logprobs, rewards, [t.group_id for t in trajectories])


def has_void_turn(traj: Trajectory, cfg: ProtocolConfig) -> bool:
    """True when a turn holds neither a complete code block nor a final answer (SimpleTIR's void turn)."""
    return any(protocol.find_code_block(t.text, cfg) is None and not protocol.find_answers(t.text, cfg) for t in traj.turns)


def trainable(trajectories: list[Trajectory], drop_void_turns: bool, cfg: ProtocolConfig) -> tuple[list[Trajectory], dict[str, float]]:
    """The trajectories a step trains on, and what was left out.

    A trajectory that ended because the engine or executor failed (stop reason "error") is
    left out: its tokens say nothing about the policy, and it may hold no tokens at all.
    With `drop_void_turns`, one with a void turn stays in (its reward still counts in its
    group's baseline) with a zero loss mask. Returns (trajectories, {"failed_trajectories",
    "void_turn_trajectories"} counts).
    """
    kept = [t for t in trajectories if t.stop_reason != STOP_ERROR]
    void = [has_void_turn(t, cfg) for t in kept] if drop_void_turns else [False] * len(kept)
    kept = [dataclasses.replace(t, loss_mask=[0] * len(t.loss_mask)) if v else t for t, v in zip(kept, void)]
    return kept, {"failed_trajectories": float(len(trajectories) - len(kept)), "void_turn_trajectories": float(sum(void))}


def shard(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, end) of `rank`'s contiguous share of `n` rows; shares differ by at most one."""
    return rank * n // world_size, (rank + 1) * n // world_size


def plan_micro_batches(lengths: list[int], world_size: int, max_rows: int, max_tokens: int = 0) -> list[list[list[int]]]:
    """Every rank's micro-batches: per rank, lists of row indices into the batch.

    Each rank takes its `shard`; its rows, shortest first, fill micro-batches of at most
    `max_rows` rows and (if `max_tokens`) rows x longest length <= `max_tokens` (a longer
    sequence goes alone). Every rank gets the same number of micro-batches, since ZeRO's
    collectives run once per forward and backward: a rank with fewer splits its largest
    ones, and an empty list marks a padding micro-batch (a rank with fewer rows than the
    others have micro-batches runs a forward that carries no loss).
    """
    plans = []
    for rank in range(world_size):
        start, end = shard(len(lengths), world_size, rank)
        chunks: list[list[int]] = []
        for i in sorted(range(start, end), key=lambda i: lengths[i]):
            if chunks and len(chunks[-1]) < max_rows and (not max_tokens or (len(chunks[-1]) + 1) * lengths[i] <= max_tokens):
                chunks[-1].append(i)
            else:
                chunks.append([i])
        plans.append(chunks)
    count = max(1, *(len(p) for p in plans))
    for chunks in plans:
        while len(chunks) < count and any(len(c) > 1 for c in chunks):
            k = max(range(len(chunks)), key=lambda k: len(chunks[k]))
            big = chunks.pop(k)
            chunks[k:k] = [big[: len(big) // 2], big[len(big) // 2:]]
        chunks += [[] for _ in range(count - len(chunks))]
    return plans
