"""Each estimator, loss and KL against numbers worked out by hand, with masks and uneven groups."""

import math

import pytest
import torch

from r1ci import algorithms as A


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_grpo_normalizes_within_groups_of_unequal_size_and_respects_mask():
    rewards = t([1.0, 0.0, 0.5, 0.0, 1.5])
    group_ids = ["a", "a", "b", "a", "b"]  # group a has 3 rollouts, b has 2, interleaved
    mask = t([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1], [1, 0, 1]])
    adv, _ = A.grpo_advantages(rewards, mask, group_ids)
    std_a = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased
    std_b = math.sqrt(0.25 + 0.25)
    per_seq = [(2 / 3) / std_a, -(1 / 3) / std_a, -0.5 / std_b, -(1 / 3) / std_a, 0.5 / std_b]
    expected = t(per_seq)[:, None] * mask
    assert torch.allclose(adv, expected, atol=1e-5)


def test_dr_grpo_skips_the_std_division():
    rewards = t([1.0, 0.0, 0.0, 0.5, 1.5])
    mask = torch.ones(5, 2)
    adv, _ = A.grpo_advantages(rewards, mask, [0, 0, 0, 1, 1], norm_by_std=False)
    assert torch.allclose(adv[:, 0], t([2 / 3, -1 / 3, -1 / 3, -0.5, 0.5]), atol=1e-6)


def test_grpo_gives_zero_advantage_to_groups_that_all_agree():
    adv, _ = A.grpo_advantages(t([1.0, 1.0, 0.0]), torch.ones(3, 2), ["x", "x", "lonely"])
    assert torch.count_nonzero(adv) == 0


def test_reinforce_pp_discounts_over_model_tokens_with_kl_in_reward_then_whitens():
    rewards = t([1.0, 0.0])
    mask = t([[1, 1, 0, 1], [1, 1, 0, 0]])  # position 2 of row 0 is an interpreter token
    kl = t([[1.0, 0.0, 5.0, 2.0], [0.0, 1.0, 0.0, 0.0]])
    adv, returns = A.reinforce_pp_advantages(rewards, mask, kl=kl, kl_coef=0.1, gamma=0.5)
    # row 0 token rewards: -0.1, 0, (skipped), 1 - 0.2 -> returns 0.1, 0.4, 0, 0.8
    # row 1 token rewards: 0, -0.1 -> returns -0.05, -0.1
    expected_returns = t([[0.1, 0.4, 0.0, 0.8], [-0.05, -0.1, 0.0, 0.0]])
    assert torch.allclose(returns, expected_returns, atol=1e-6)
    vals = torch.tensor([0.1, 0.4, 0.8, -0.05, -0.1])
    mean, std = vals.mean(), vals.std(unbiased=False)
    assert torch.allclose(adv[mask > 0], (vals - mean) / std, atol=1e-4)
    assert adv[0, 2] == 0 and adv[1, 3] == 0


def test_gae_skips_interpreter_tokens_and_bootstraps_from_the_next_model_token():
    mask = t([[1, 0, 1]])
    values = t([[0.5, 9.0, 0.2]])  # the 9.0 sits on an interpreter token and must be ignored
    adv, returns = A.gae_advantages(t([1.0]), mask, values, gamma=0.9, lam=0.8)
    # t=2: delta = 1 - 0.2 = 0.8; t=0: delta = 0.9*0.2 - 0.5 = -0.32, A = -0.32 + 0.72*0.8 = 0.256
    assert torch.allclose(returns, t([[0.256 + 0.5, 0.0, 0.8 + 0.2]]), atol=1e-6)
    assert torch.allclose(adv, t([[-1.0, 0.0, 1.0]]), atol=1e-4)  # two values whiten to -1, +1


def test_estimators_are_registered_with_their_needs():
    assert set(A.ADVANTAGES) >= {"grpo", "reinforce_pp", "gae"}
    assert A.get_advantage("gae").needs_values and not A.get_advantage("grpo").needs_values
    assert A.get_advantage("reinforce_pp").kl_in_reward and not A.get_advantage("grpo").kl_in_reward
    with pytest.raises(ValueError, match="grpo"):
        A.get_advantage("nope")


def test_kl_estimators_match_closed_forms():
    lp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    assert A.kl_penalty(lp, ref, "k1").item() == pytest.approx(math.log(2), abs=1e-6)
    assert A.kl_penalty(lp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2, abs=1e-6)
    assert A.kl_penalty(lp, ref, "k3").item() == pytest.approx(0.5 - 1 - math.log(0.5), abs=1e-6)
    assert A.kl_penalty(ref, ref, "k3").item() == 0.0


def test_clipped_policy_loss_token_and_sequence_means():
    ratios = t([[1.5, 0.5, 0.5], [1.1, 3.0, 1.0]])
    adv = t([[1.0, 1.0, -1.0], [-2.0, 100.0, 0.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])  # the 100-advantage token is masked out
    old = torch.zeros(2, 3)
    # per token: max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 0.8 (clipped), 2.2
    loss, stats = A.policy_loss(torch.log(ratios), old, adv, mask, clip_ratio=0.2, loss_agg="token_mean")
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 2.2) / 4, abs=1e-5)
    assert stats["clip_frac"].item() == pytest.approx(2 / 4)
    loss, _ = A.policy_loss(torch.log(ratios), old, adv, mask, clip_ratio=0.2, loss_agg="seq_mean")
    assert loss.item() == pytest.approx(((-1.2 - 0.5 + 0.8) / 3 + 2.2) / 2, abs=1e-5)


def test_loss_normalizer_lets_micro_batches_add_up_to_the_batch_mean():
    loss = t([[1.0, 2.0], [3.0, 0.0], [5.0, 7.0]])
    mask = t([[1, 1], [1, 0], [1, 1]])
    whole = A.aggregate(loss, mask, "token_mean")
    parts = A.aggregate(loss[:2], mask[:2], "token_mean", 5) + A.aggregate(loss[2:], mask[2:], "token_mean", 5)
    assert parts.item() == pytest.approx(whole.item())
    whole = A.aggregate(loss, mask, "seq_mean")
    parts = A.aggregate(loss[:1], mask[:1], "seq_mean", 3) + A.aggregate(loss[1:], mask[1:], "seq_mean", 3)
    assert parts.item() == pytest.approx(whole.item()) == pytest.approx((1.5 + 3 + 6) / 3)


def test_entropy_from_logits():
    logits = t([[[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]]])
    ent = A.entropy_from_logits(logits)
    assert ent[0, 0].item() == pytest.approx(math.log(4), abs=1e-6)
    assert ent[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_token_logprobs_apply_the_sampling_temperature():
    logits = t([[[2.0, 0.0]]])
    lp = A.token_logprobs(logits, torch.tensor([[0]]), temperature=2.0)
    assert lp.item() == pytest.approx(math.log(math.e / (math.e + 1)), abs=1e-6)


def test_value_loss_clips_against_old_values():
    values, old, returns = t([[1.0, 0.0, 4.0]]), t([[0.5, 0.5, 0.0]]), t([[2.0, 0.0, 0.0]])
    mask = t([[1, 1, 0]])
    # token 0: max((1-2)^2, (0.7-2)^2) = 1.69; token 1: max(0, 0.3^2) = 0.09
    loss, frac = A.value_loss(values, old, returns, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2, abs=1e-6)
    assert frac.item() == pytest.approx(1.0)


def test_masked_mean_and_whiten_ignore_masked_positions():
    x, mask = t([[1.0, 100.0], [3.0, -50.0]]), t([[1, 0], [1, 0]])
    assert A.masked_mean(x, mask).item() == 2.0
    assert torch.allclose(A.masked_whiten(x, mask), t([[-1.0, 0.0], [1.0, 0.0]]), atol=1e-4)
