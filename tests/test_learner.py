"""The DeepSpeed learner on the tiny model: logprobs, RL and SFT steps, export, checkpoints, two ranks."""

import numpy as np
import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from actors.learner import LearnerGroup, LearnerGroupError
from r1ci.config import Config
from r1ci.learner import Learner
from r1ci.trajectory import Trajectory
from r1ci.weight_sync import check_complete, unpack_bucket

TEMPERATURE = 0.7


def make_cfg(**learner) -> Config:
    cfg = Config()
    cfg.sampling.temperature = TEMPERATURE
    cfg.learner.lr = 1e-3
    cfg.learner.micro_batch_size = 2
    cfg.learner.zero_stage = 2
    cfg.algorithm.kl_coef = 0.001
    for k, v in learner.items():
        setattr(cfg.learner, k, v)
    return cfg


def make_batch(n: int = 4, seed: int = 0) -> list[Trajectory]:
    """Two-turn trajectories: model tokens, interpreter tokens (mask 0), model tokens; uneven lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(5, 500, (k,), generator=g).tolist()  # noqa: E731
    out = []
    for i in range(n):
        t = Trajectory(task="toy", sample_id=f"toy/0/{i}", group_id=f"g{i // 2}", prompt_ids=ids(3 + i))
        t.append(ids(4), [-1.0] * 4, trainable=True)
        t.append(ids(2), None, trainable=False)
        t.append(ids(1 + i % 3), [-1.0] * (1 + i % 3), trainable=True)
        t.reward = float(i % 2)
        out.append(t)
    return out


def hf_logprobs(model, traj: Trajectory, temperature: float = TEMPERATURE) -> torch.Tensor:
    """The reference computation: a plain transformers forward of one unpadded sequence."""
    with torch.no_grad():
        logits = model(torch.tensor([traj.input_ids])).logits[0, len(traj.prompt_ids) - 1 : -1]
    lp = torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(traj.response_ids)[:, None]).squeeze(-1)
    return lp * torch.tensor(traj.loss_mask, dtype=torch.float32)


def hf_model_with(model_dir: str, weights: dict[str, np.ndarray]):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected  # tied head comes from the embeddings
    return model.eval()


def mean_logprob(lps: list[list[float]], trajs: list[Trajectory], reward: float) -> float:
    vals = [lp for l, t in zip(lps, trajs) if t.reward == reward for lp, m in zip(l, t.loss_mask) if m]
    return float(np.mean(vals))


@pytest.fixture(scope="module")
def learner(tiny_model_dir):
    return Learner(make_cfg(), tiny_model_dir)


def test_logprobs_match_a_plain_transformers_forward_of_the_exported_weights(learner, tiny_model_dir):
    trajs = make_batch(5)
    model = hf_model_with(tiny_model_dir, learner.export_weights())
    for traj, lp in zip(trajs, learner.compute_logprobs(trajs)):
        assert len(lp) == len(traj.response_ids)
        assert torch.allclose(torch.tensor(lp), hf_logprobs(model, traj), atol=1e-5)
    ref = learner.ref_logprobs(trajs)  # the frozen reference is the starting model
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert torch.allclose(torch.tensor(ref[0]), hf_logprobs(start, trajs[0]), atol=1e-5)


def test_train_step_moves_probability_towards_rewarded_rollouts(learner):
    trajs = make_batch(4)
    before = learner.compute_logprobs(trajs)
    for _ in range(3):
        metrics = learner.train_step(trajs)
    after = learner.compute_logprobs(trajs)
    assert mean_logprob(after, trajs, 1.0) > mean_logprob(before, trajs, 1.0) + 0.05
    assert mean_logprob(after, trajs, 0.0) < mean_logprob(before, trajs, 0.0) - 0.05
    assert metrics["tokens"] == sum(t.num_model_tokens for t in trajs)
    assert metrics["kl"] > 0 and metrics["grad_norm"] > 0 and metrics["entropy"] > 0
    assert metrics["clip_frac"] == 0.0  # one epoch: the ratio is exactly 1


def test_ppo_epochs_clip_the_ratio_on_later_passes(tiny_model_dir):
    cfg = make_cfg()
    cfg.algorithm.ppo_epochs, cfg.algorithm.kl_coef, cfg.algorithm.clip_ratio = 4, 0.0, 0.01
    metrics = Learner(cfg, tiny_model_dir).train_step(make_batch(4))
    assert metrics["clip_frac"] > 0 and metrics["approx_kl"] > 0


def test_sft_step_lowers_the_loss_on_repeated_data(learner):
    trajs = make_batch(4, seed=1)
    before = learner.eval_loss(trajs)
    learner.set_lr(2e-3)
    losses = [learner.sft_step(trajs)["loss"] for _ in range(5)]
    assert losses[0] == pytest.approx(before, rel=1e-5)
    assert learner.eval_loss(trajs) < before - 0.1
    assert learner.sft_step(trajs)["lr"] == pytest.approx(2e-3)


def test_checkpoint_round_trip_gives_same_logprobs_and_same_next_step(learner, tiny_model_dir, tmp_path):
    trajs = make_batch(4, seed=2)
    learner.train_step(trajs)
    learner.save_checkpoint(str(tmp_path / "ckpt"))
    restored = Learner(make_cfg(), tiny_model_dir)
    restored.load_checkpoint(str(tmp_path / "ckpt"))
    assert restored.step == learner.step
    assert np.allclose(sum(restored.compute_logprobs(trajs), []), sum(learner.compute_logprobs(trajs), []), atol=1e-6)
    a, b = learner.train_step(trajs), restored.train_step(trajs)
    for key in ("policy_loss", "kl", "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7)
    wa, wb = learner.export_weights(), restored.export_weights()
    assert all(np.allclose(wa[k], wb[k], atol=1e-7) for k in wa)  # optimizer moments came back too


def test_zero3_exports_the_full_state_dict_and_saves_a_loadable_hf_folder(tiny_model_dir, tmp_path):
    cfg = make_cfg(zero_stage=3)
    cfg.algorithm.advantage = "gae"  # with the value head and a sharded reference model
    z3 = Learner(cfg, tiny_model_dir)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    weights = z3.export_weights()
    expected = {k: v for k, v in start.state_dict().items() if k != "lm_head.weight"}
    assert set(weights) == set(expected)
    assert all(np.array_equal(weights[k], expected[k].numpy()) for k in expected)
    metrics = z3.train_step(make_batch(4))
    assert "value_loss" in metrics
    z3.save_hf(str(tmp_path / "hf"))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    traj = make_batch(1)[0]
    assert torch.allclose(hf_logprobs(saved, traj), torch.tensor(z3.compute_logprobs([traj])[0]), atol=1e-5)
    assert (tmp_path / "hf" / "tokenizer_config.json").exists()


@pytest.mark.slow
def test_two_rank_group_matches_a_single_rank_and_fails_clearly(ray_cluster, tiny_model_dir, tmp_path):
    """ZeRO-3 over two Ray actors against ZeRO-2 in one process, with PPO/GAE: the value head,
    the KL-in-reward and the whole-batch advantages all cross ranks."""
    trajs = make_batch(4, seed=3)
    cfg = make_cfg(num_learners=2, num_cpus=0.25, timeout_s=300.0, zero_stage=3)
    single_cfg = make_cfg()
    for c in (cfg, single_cfg):
        c.algorithm.advantage, c.algorithm.kl_coef = "gae", 0.05
    group = LearnerGroup.create(cfg, tiny_model_dir)
    single = Learner(single_cfg, tiny_model_dir)
    try:
        odd = trajs[:3]  # not a multiple of 2: padded with loss-free copies
        assert np.allclose(sum(group.compute_logprobs(odd), []), sum(single.compute_logprobs(odd), []), atol=1e-5)
        for _ in range(2):
            g, s = group.train_step(trajs), single.train_step(trajs)
        for key in ("policy_loss", "value_loss", "kl", "entropy", "grad_norm", "tokens"):
            assert g[key] == pytest.approx(s[key], rel=1e-4, abs=1e-6), key
        buckets = ray.get(list(group.publish_weights(version=7)), timeout=60)
        check_complete(buckets, version=7)
        published = dict(pair for b in buckets for pair in unpack_bucket(b))
        local = single.export_weights()
        assert set(published) == set(local)
        assert all(np.allclose(published[k], local[k], atol=1e-4) for k in local)  # two ranks' reductions round differently
        assert group.sft_step(trajs)["loss"] == pytest.approx(single.sft_step(trajs)["loss"], rel=1e-4)
        group.save(str(tmp_path / "ckpt"))
        before = group.compute_logprobs(trajs)
        group.train_step(trajs)
        group.load(str(tmp_path / "ckpt"))
        assert np.allclose(sum(group.compute_logprobs(trajs), []), sum(before, []), atol=1e-6)
        with pytest.raises(ValueError, match="multiple of learner.num_learners"):
            group.train_step(trajs[:3])
        ray.kill(group.actors[1])
        with pytest.raises(LearnerGroupError, match="learner rank 1 failed during train_step"):
            group.train_step(trajs)
        assert group.actors == []
    finally:
        group.shutdown()
