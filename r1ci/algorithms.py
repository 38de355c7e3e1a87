"""RL math of r1ci: advantage estimators, the clipped policy loss, KL estimators, entropy.

Pure functions over right-padded token tensors `[B, T]` (B sequences, T response
positions) and a `mask` that is 1 on model-written tokens and 0 on prompt, interpreter
and padding tokens; a masked-out token never counts. Estimators, KL estimators and
loss aggregations are registered by name, so the learner never branches on names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor


# ---------------------------------------------------------------------------- masked stats


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of `x` where `mask` is 1 (over all elements, or along `dim`)."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over positions where `mask` is 1; 0 where the mask is empty."""
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize `x` to mean 0 (if `shift_mean`) and std 1 over masked positions; masked-out -> 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


# ---------------------------------------------------------------------------- KL and entropy

KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}


def _registrar(table: dict):
    """A decorator factory that files functions in `table` under a name."""

    def register(name: str):
        def deco(fn):
            table[name] = fn
            return fn

        return deco

    return register


register_kl = _registrar(KL_ESTIMATORS)


@register_kl("k1")
def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token log(pi/pi_ref): unbiased, high variance, can be negative. Shapes [B, T]."""
    return logprobs - ref_logprobs


@register_kl("k2")
def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token 0.5 * log(pi/pi_ref)^2: biased, low variance, >= 0. Shapes [B, T]."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


@register_kl("k3")
def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token pi_ref/pi - 1 - log(pi_ref/pi) (Schulman's k3, GRPO's KL): unbiased, >= 0. [B, T]."""
    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return torch.exp(log_ratio) - 1.0 - log_ratio


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token KL of the policy to the reference with the named estimator, [B, T] nats."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator '{estimator}'; choose one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logprobs, ref_logprobs)


def log_softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log_softmax(logits / temperature) in fp32, [..., V]: the formula the generation engines use
    for sampling logprobs, so learner and engine logprobs agree."""
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


def entropy_from_logprobs(logp: Tensor) -> Tensor:
    """Entropy of each next-token distribution given its log-probabilities: [B, T, V] -> [B, T] nats."""
    return -(logp.exp() * logp).sum(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at each position: [B, T, V] -> [B, T] nats."""
    return entropy_from_logprobs(log_softmax(logits))


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log_softmax(logits / temperature) of the taken tokens: [B, T, V], [B, T] -> [B, T] nats."""
    return log_softmax(logits, temperature).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------------------- advantages


@dataclass(frozen=True)
class AdvantageEstimator:
    fn: Callable[..., tuple[Tensor, Tensor]]
    needs_values: bool  # the learner adds a value head and passes `values`
    kl_in_reward: bool  # KL to the reference is a per-token reward, not a loss term


ADVANTAGES: dict[str, AdvantageEstimator] = {}


def register_advantage(name: str, needs_values: bool = False, kl_in_reward: bool = False):
    """Register `fn(rewards, mask, **inputs) -> (advantages [B, T], returns [B, T])` under `name`."""

    def deco(fn):
        ADVANTAGES[name] = AdvantageEstimator(fn, needs_values, kl_in_reward)
        return fn

    return deco


def get_advantage(name: str) -> AdvantageEstimator:
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator '{name}'; choose one of {sorted(ADVANTAGES)}")
    return ADVANTAGES[name]


def last_token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """Put each sequence's scalar reward on its last model token: [B], [B, T] -> [B, T]."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask > 0, positions, -1).max(dim=1).values  # [B]; -1 for an empty mask
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    has = last >= 0
    out[has, last[has]] = rewards[has].float()
    return out


def discounted_returns(token_rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Return-to-go over model tokens only: interpreter tokens (mask 0) are skipped, not steps. [B, T]."""
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros(token_rewards.shape[0], device=token_rewards.device)
    for t in reversed(range(token_rewards.shape[1])):
        m = mask[:, t]
        running = torch.where(m > 0, token_rewards[:, t] + gamma * running, running)
        returns[:, t] = running * m
    return returns


@register_advantage("grpo")
def grpo_advantages(
    rewards: Tensor, mask: Tensor, group_ids: Sequence, norm_by_std: bool = True, eps: float = 1e-6, **_
) -> tuple[Tensor, Tensor]:
    """GRPO: (r - mean(group)) / (std(group) + eps), broadcast over the sequence's model tokens.

    rewards [B], mask [B, T], group_ids: B hashable ids (the G rollouts of one prompt share
    one). std is the unbiased sample std of the group (a group of one has advantage 0).
    `norm_by_std=False` skips the division (Dr.GRPO). Returns (advantages, returns) [B, T];
    returns are the broadcast rewards.
    """
    rewards = rewards.float()
    scores = torch.zeros_like(rewards)
    index: dict = {}
    for i, g in enumerate(group_ids):
        index.setdefault(g, []).append(i)
    for members in index.values():
        idx = torch.tensor(members, device=rewards.device)
        r = rewards[idx]
        if len(members) == 1:
            continue
        centred = r - r.mean()
        scores[idx] = centred / (r.std() + eps) if norm_by_std else centred
    return scores[:, None] * mask, rewards[:, None] * mask


@register_advantage("reinforce_pp", kl_in_reward=True)
def reinforce_pp_advantages(
    rewards: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0, gamma: float = 1.0, **_
) -> tuple[Tensor, Tensor]:
    """REINFORCE++: token rewards = reward on the last model token - kl_coef * kl per token,
    discounted return-to-go over model tokens, then whitened over the whole batch's tokens.

    rewards [B], mask [B, T], kl [B, T] (per-token KL to the reference, or None).
    Returns (advantages, returns) [B, T].
    """
    token_rewards = last_token_rewards(rewards, mask)
    if kl is not None and kl_coef:
        token_rewards = token_rewards - kl_coef * kl * mask
    returns = discounted_returns(token_rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


@register_advantage("gae", needs_values=True, kl_in_reward=True)
def gae_advantages(
    rewards: Tensor,
    mask: Tensor,
    values: Tensor,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 1.0,
    **_,
) -> tuple[Tensor, Tensor]:
    """PPO's generalized advantage estimation over model tokens (interpreter tokens are skipped).

    delta_t = r_t + gamma * V(next model token) - V_t (V after the last token is 0);
    A_t = delta_t + gamma * lam * A(next model token); returns = A + V; A is then whitened
    over the batch. rewards [B], mask [B, T], values [B, T], kl [B, T] or None.
    Returns (advantages, returns) [B, T].
    """
    token_rewards = last_token_rewards(rewards, mask)
    if kl is not None and kl_coef:
        token_rewards = token_rewards - kl_coef * kl * mask
    values = values.float() * mask
    B, T = mask.shape
    adv = torch.zeros_like(token_rewards)
    next_value = torch.zeros(B, device=mask.device)
    next_adv = torch.zeros(B, device=mask.device)
    for t in reversed(range(T)):
        m = mask[:, t] > 0
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = torch.where(m, a, torch.zeros_like(a))
        next_value = torch.where(m, values[:, t], next_value)
        next_adv = torch.where(m, a, next_adv)
    returns = (adv + values) * mask
    return masked_whiten(adv, mask), returns


# ---------------------------------------------------------------------------- losses

LOSS_AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {}


register_loss_agg = _registrar(LOSS_AGGREGATIONS)


@register_loss_agg("token_mean")
def agg_token_mean(loss: Tensor, mask: Tensor, normalizer: float | None = None) -> Tensor:
    """Sum of per-token losses / number of model tokens (or `normalizer`: the whole batch's count,
    so micro-batches and ranks add up to the batch mean). [B, T] -> scalar."""
    total = mask.sum() if normalizer is None else normalizer
    return masked_sum(loss, mask) / max(float(total), 1.0)


@register_loss_agg("seq_mean")
def agg_seq_mean(loss: Tensor, mask: Tensor, normalizer: float | None = None) -> Tensor:
    """Mean over sequences of each sequence's token mean (or their sum / `normalizer` sequences).
    Sequences without model tokens count in neither. [B, T] -> scalar."""
    per_seq = masked_mean(loss, mask, dim=1)
    has = (mask.sum(1) > 0).float()
    total = has.sum() if normalizer is None else normalizer
    return (per_seq * has).sum() / max(float(total), 1.0)


def aggregate(loss: Tensor, mask: Tensor, how: str, normalizer: float | None = None) -> Tensor:
    if how not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation '{how}'; choose one of {sorted(LOSS_AGGREGATIONS)}")
    return LOSS_AGGREGATIONS[how](loss, mask, normalizer)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_ratio: float = 0.2,
    loss_agg: str = "token_mean",
    normalizer: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate, per token: max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    All inputs [B, T]; ratio = exp(logprobs - old_logprobs). Returns the aggregated loss and
    masked-mean stats: clip_frac (share of tokens where clipping was active) and
    approx_kl (k3 of old vs new policy).
    """
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio)
    per_token = torch.maximum(unclipped, clipped)
    stats = {
        "clip_frac": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": masked_mean(kl_k3(logprobs, old_logprobs), mask),
    }
    return aggregate(per_token, mask, loss_agg, normalizer), stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float = 0.2,
    loss_agg: str = "token_mean",
    normalizer: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Clipped value loss 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2), [B, T].

    Returns the aggregated loss and the fraction of tokens where the clipped term won.
    """
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    a = (values - returns) ** 2
    b = (clipped_values - returns) ** 2
    return 0.5 * aggregate(torch.maximum(a, b), mask, loss_agg, normalizer), masked_mean((b > a).float(), mask)
