"""RL math of r1ci: advantage estimators, the clipped policy loss, KL estimators, token logprobs.

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


K3_LOG_RATIO_CLAMP = 20.0  # verl's low_var_kl: the log ratio is clamped to +-20 before exp ...
K3_CLAMP = 10.0  # ... and the estimate to +-10, so one token far from the reference cannot dominate


@register_kl("k3")
def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token pi_ref/pi - 1 - log(pi_ref/pi) (Schulman's k3, GRPO's KL): unbiased, >= 0,
    clamped to [-10, 10] as verl's low_var_kl (an unclamped exp(20) would swamp the loss). [B, T]."""
    log_ratio = (ref_logprobs - logprobs).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return (torch.exp(log_ratio) - 1.0 - log_ratio).clamp(-K3_CLAMP, K3_CLAMP)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token KL of the policy to the reference with the named estimator, [B, T] nats."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator '{estimator}'; choose one of {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logprobs, ref_logprobs)


def logprobs_and_entropy(logits: Tensor, tokens: Tensor, temperature: float = 1.0,
                         entropy_grad: bool = False) -> tuple[Tensor, Tensor]:
    """log_softmax(logits / temperature) of the taken tokens and the entropy of each
    distribution, both in fp32 (the formula the generation engines use for their sampling
    logprobs, so learner and engine agree). logits [..., V], tokens [...] -> two [...] nats.

    Only the scaled fp32 logits are kept for backward (no separate log-softmax tensor);
    the entropy carries a gradient only with `entropy_grad` (an entropy bonus).
    """
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    with torch.enable_grad() if entropy_grad else torch.no_grad():
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprobs, entropy


# ---------------------------------------------------------------------------- advantages


@dataclass(frozen=True)
class AdvantageEstimator:
    fn: Callable[..., tuple[Tensor, Tensor]]
    needs_values: bool  # the learner adds a value head and passes `values`
    kl_in_reward: bool  # KL to the reference (k1) is a per-token reward, not a loss term: the estimator takes logprobs and ref_logprobs


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


def penalized_token_rewards(rewards: Tensor, mask: Tensor, logprobs: Tensor | None, ref_logprobs: Tensor | None,
                            kl_coef: float) -> Tensor:
    """Each sequence's reward on its last model token, minus kl_coef * k1 on every model token. [B, T].

    k1 = log pi - log pi_ref, as verl puts in the reward: its expectation is the KL, and as a
    reward its score-function gradient is the KL's gradient. k3 there would give a tiny
    fraction of it near the reference (k3 is second order in the log ratio).
    rewards [B], mask [B, T], logprobs and ref_logprobs [B, T] (or None: no penalty).
    """
    token_rewards = last_token_rewards(rewards, mask)
    if logprobs is not None and ref_logprobs is not None and kl_coef:
        token_rewards = token_rewards - kl_coef * kl_k1(logprobs, ref_logprobs) * mask
    return token_rewards


@register_advantage("reinforce_pp", kl_in_reward=True)
def reinforce_pp_advantages(
    rewards: Tensor, mask: Tensor, logprobs: Tensor | None = None, ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0, gamma: float = 1.0, **_
) -> tuple[Tensor, Tensor]:
    """REINFORCE++: token rewards (`penalized_token_rewards`: the reward on the last model token,
    - kl_coef * k1 per token), discounted return-to-go over model tokens, then whitened over
    the whole batch's tokens.

    rewards [B], mask [B, T], logprobs / ref_logprobs [B, T] (policy before the update and
    reference, or None). Returns (advantages, returns) [B, T].
    """
    token_rewards = penalized_token_rewards(rewards, mask, logprobs, ref_logprobs, kl_coef)
    returns = discounted_returns(token_rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


@register_advantage("gae", needs_values=True, kl_in_reward=True)
def gae_advantages(
    rewards: Tensor,
    mask: Tensor,
    values: Tensor,
    logprobs: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 1.0,
    **_,
) -> tuple[Tensor, Tensor]:
    """PPO's generalized advantage estimation over model tokens (interpreter tokens are skipped).

    Token rewards as `penalized_token_rewards`; delta_t = r_t + gamma * V(next model token) - V_t
    (V after the last token is 0); A_t = delta_t + gamma * lam * A(next model token);
    returns = A + V; A is then whitened over the batch. rewards [B], mask [B, T],
    values [B, T], logprobs / ref_logprobs [B, T] or None. Returns (advantages, returns) [B, T].
    """
    token_rewards = penalized_token_rewards(rewards, mask, logprobs, ref_logprobs, kl_coef)
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
    clip_ratio_high: float | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate, per token: max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high)).

    All inputs [B, T]; ratio = exp(logprobs - old_logprobs); eps_low = clip_ratio, eps_high =
    clip_ratio_high (DAPO's clip-higher: an unlikely token may rise further) or clip_ratio.
    `weights` [B, T] (no gradient; e.g. `truncated_is_weights`) multiply each token's loss.
    Returns the aggregated loss and masked-mean stats: clip_frac (share of tokens where
    clipping was active) and approx_kl (k3 of old vs new policy).
    """
    high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    log_ratio = (logprobs - old_logprobs).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    if weights is not None:
        per_token = per_token * weights.detach()
    stats = {
        "clip_frac": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": masked_mean(kl_k3(logprobs, old_logprobs), mask),
    }
    return aggregate(per_token, mask, loss_agg, normalizer), stats


def truncated_is_weights(old_logprobs: Tensor, sampling_logprobs: Tensor, cap: float) -> Tensor:
    """Truncated importance weights min(pi_old / pi_sampling, cap) per token (TIS, as TRL and verl
    offer): they correct the policy gradient for the engine's sampling distribution differing
    from the learner's (bf16, other kernels) without letting one token's weight explode.
    [B, T] logprobs (nats) -> [B, T], no gradient."""
    log_ratio = (old_logprobs - sampling_logprobs).detach().clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return torch.exp(log_ratio).clamp(max=cap)


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
