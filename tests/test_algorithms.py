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
    logprobs = t([[1.0, 0.0, 5.0, 2.0], [0.0, 1.0, 0.0, 0.0]]) - 3.0
    ref = torch.full((2, 4), -3.0)  # log pi - log pi_ref (k1): 1, 0, 5, 2 / 0, 1, 0, 0
    adv, returns = A.reinforce_pp_advantages(rewards, mask, logprobs=logprobs, ref_logprobs=ref, kl_coef=0.1, gamma=0.5)
    # row 0 token rewards: -0.1, 0, (skipped), 1 - 0.2 -> returns 0.1, 0.4, 0, 0.8
    # row 1 token rewards: 0, -0.1 -> returns -0.05, -0.1
    expected_returns = t([[0.1, 0.4, 0.0, 0.8], [-0.05, -0.1, 0.0, 0.0]])
    assert torch.allclose(returns, expected_returns, atol=1e-6)
    vals = torch.tensor([0.1, 0.4, 0.8, -0.05, -0.1])
    mean, std = vals.mean(), vals.std(unbiased=False)
    assert torch.allclose(adv[mask > 0], (vals - mean) / std, atol=1e-4)
    assert adv[0, 2] == 0 and adv[1, 3] == 0


def test_kl_in_the_reward_is_k1_whose_policy_gradient_is_the_kl_gradient():
    """A categorical policy near its reference: the score-function gradient of the reward
    -kl_coef * k(x) is -kl_coef * grad KL(pi || ref) exactly for k1, a few percent of it for k3."""
    ref_logits = torch.tensor([0.3, -0.2, 0.1, 0.0])
    logits = (ref_logits + torch.tensor([0.05, -0.03, 0.02, -0.04])).requires_grad_()
    logp, ref = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)
    true_grad, = torch.autograd.grad((logp.exp() * (logp - ref)).sum(), logits, retain_graph=True)
    tokens = torch.arange(4)[:, None]  # every token as a one-token trajectory; weight it by pi
    mask = torch.ones(4, 1)

    def score_function_gradient(penalty: torch.Tensor) -> torch.Tensor:
        grads = [torch.autograd.grad(logp[x], logits, retain_graph=True)[0] for x in range(4)]
        return sum(logp[x].exp().detach() * penalty[x, 0] * grads[x] for x in range(4))

    rewards = A.penalized_token_rewards(torch.zeros(4), mask, logp.detach()[tokens], ref[tokens], kl_coef=1.0)
    assert torch.allclose(score_function_gradient(-rewards), true_grad, atol=1e-6)
    k3 = A.kl_k3(logp.detach()[tokens], ref[tokens])
    assert score_function_gradient(k3).norm() < 0.1 * true_grad.norm()


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


def test_k3_is_clamped_as_verl_clamps_it():
    # a token the reference finds e^15 times likelier: exp(15) - 16 would be 3.3 million
    far = A.kl_k3(t([-20.0]), t([-5.0]))
    assert far.item() == 10.0
    assert A.kl_k3(t([-5.0]), t([-20.0])).item() == 10.0  # e^-15 - 1 + 15 = 14 the other way
    assert A.kl_k3(t([-5.0]), t([-12.0])).item() == pytest.approx(math.exp(-7) - 1 + 7, abs=1e-5)  # inside: as is


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


def test_clip_higher_lets_positive_advantage_ratios_rise_further():
    ratios, mask = t([[1.25, 1.25]]), torch.ones(1, 2)
    adv = t([[1.0, -1.0]])
    sym, s_stats = A.policy_loss(torch.log(ratios), torch.zeros(1, 2), adv, mask, clip_ratio=0.2)
    high, h_stats = A.policy_loss(torch.log(ratios), torch.zeros(1, 2), adv, mask, clip_ratio=0.2, clip_ratio_high=0.28)
    assert sym.item() == pytest.approx((-1.2 + 1.25) / 2)  # the positive-advantage token is clipped at 1.2
    assert high.item() == pytest.approx((-1.25 + 1.25) / 2)  # ... and not at 1.28
    assert s_stats["clip_frac"].item() == 0.5 and h_stats["clip_frac"].item() == 0.0


def test_truncated_importance_weights_cap_the_ratio_and_scale_the_token_loss():
    old, sampling = t([[-1.0, -1.0, -2.0]]), t([[-1.0, -1.0 - math.log(5), -2.0 + math.log(2)]])
    w = A.truncated_is_weights(old, sampling, cap=2.0)
    assert torch.allclose(w, t([[1.0, 2.0, 0.5]]))  # 5 is truncated to the cap
    adv, mask = t([[1.0, 1.0, 1.0]]), torch.ones(1, 3)
    weighted, _ = A.policy_loss(old, old, adv, mask, weights=w)
    assert weighted.item() == pytest.approx(-(1.0 + 2.0 + 0.5) / 3)


def test_logprobs_and_entropy_apply_the_sampling_temperature():
    logits = t([[2.0, 0.0], [0.0, 0.0]])
    lp, ent = A.logprobs_and_entropy(logits, torch.tensor([0, 1]), temperature=2.0)
    assert lp[0].item() == pytest.approx(math.log(math.e / (math.e + 1)), abs=1e-6)
    assert lp[1].item() == pytest.approx(math.log(0.5), abs=1e-6)
    p = math.e / (math.e + 1)
    assert ent[0].item() == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-6)
    assert ent[1].item() == pytest.approx(math.log(2), abs=1e-6)
    assert not ent.requires_grad


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


def test_config_refuses_combinations_that_would_train_on_a_wrong_ratio():
    from r1ci.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="algorithm.old_logprobs: 'sampling'.*top_p=0.7.*nucleus mass"):
        load_config(None, ["algorithm.old_logprobs=sampling", "sampling.top_p=0.7"])
    assert load_config(None, ["algorithm.old_logprobs=recompute", "sampling.top_p=0.7"])  # the learner's own ratio
    assert load_config(None, ["algorithm.old_logprobs=sampling"])  # top_p 1: the same distribution
    with pytest.raises(ConfigError, match="rollout_correction"):
        load_config(None, ["algorithm.old_logprobs=sampling", "algorithm.rollout_correction=true"])
    cfg = load_config(None, [])
    assert not cfg.algorithm.rollout_correction and not cfg.algorithm.drop_void_turns
    assert cfg.algorithm.clip_ratio_high == 0.0 and cfg.algorithm.kl_coef > 0  # the paper's recipe by default
