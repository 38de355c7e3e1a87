"""The DeepSpeed learner on the tiny model: logprobs, RL and SFT steps, export, checkpoints, two ranks."""

import numpy as np
import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from actors.learner import LearnerGroup, LearnerGroupError
from r1ci.batch import collate, plan_micro_batches, trainable
from r1ci.config import Config
from r1ci.learner import Learner, learner_threads
from r1ci.trajectory import STOP_ERROR, Trajectory, Turn
from r1ci.weight_sync import check_complete, unpack_bucket

TEMPERATURE = 0.7


def make_cfg(**learner) -> Config:
    """Learner knobs as keyword arguments; `algorithm` takes a dict of algorithm knobs."""
    algorithm = learner.pop("algorithm", {})
    cfg = Config()
    cfg.sampling.temperature = TEMPERATURE
    cfg.learner.lr = 1e-3
    cfg.learner.micro_batch_size = 2
    cfg.learner.zero_stage = 2
    cfg.algorithm.kl_coef = 0.001
    for k, v in learner.items():
        setattr(cfg.learner, k, v)
    for k, v in algorithm.items():
        setattr(cfg.algorithm, k, v)
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


def with_learner_logprobs(learner: Learner, trajs: list[Trajectory], shift: float = 0.0) -> list[Trajectory]:
    """The trajectories as if an engine had sampled them with exactly the learner's logprobs (+ shift)."""
    for traj, lp in zip(trajs, learner.compute_logprobs(trajs)):
        traj.logprobs = [x + shift if m else 0.0 for x, m in zip(lp, traj.loss_mask)]
    return trajs


def weights_of(learner: Learner) -> dict[str, np.ndarray]:
    return learner.export_weights()


def same_weights(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


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
    ref = learner.compute_logprobs(trajs, reference=True)  # the frozen reference is the starting model
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


def test_an_sft_learner_has_no_reference_and_no_value_head_whatever_the_rl_algorithm(tiny_model_dir):
    cfg = make_cfg()
    cfg.algorithm.advantage, cfg.algorithm.kl_coef = "gae", 0.1
    rl, sft = Learner(cfg, tiny_model_dir), Learner(cfg, tiny_model_dir, sft=True)
    assert rl.reference is not None and rl.module.value_head is not None
    assert sft.reference is None and sft.module.value_head is None


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
        odd = trajs[:3]  # not a multiple of 2: shares of 1 and 2
        assert np.allclose(sum(group.compute_logprobs(odd), []), sum(single.compute_logprobs(odd), []), atol=1e-5)
        for _ in range(2):
            g, s = group.train_step(trajs), single.train_step(trajs)
        for key in ("policy_loss", "value_loss", "kl", "entropy", "grad_norm", "tokens"):
            assert g[key] == pytest.approx(s[key], rel=1e-4, abs=1e-6), key
        cores = len(__import__("os").sched_getaffinity(0))
        assert group.threads == [max(1, cores // 2)] * 2  # the two ranks share this node's cores
        niceness = ray.get([a.__ray_call__.remote(lambda _: __import__("os").getpriority(0, 0)) for a in group.actors])
        own = __import__("os").getpriority(0, 0)  # 0 unless the suite itself runs under `nice`
        assert niceness == [own, own]  # not Ray's nice 15 for workers, under which any busy neighbour wins the CPU
        for uneven in (make_batch(5, seed=4), trajs[:1]):  # G=5 on 2 ranks; a rank with no rows at all
            g, s = group.train_step(uneven), single.train_step(uneven)
            for key in ("policy_loss", "value_loss", "kl", "grad_norm", "tokens"):
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
        ray.kill(group.actors[1])
        with pytest.raises(LearnerGroupError, match="learner rank 1 failed during train_step"):
            group.train_step(trajs)
        assert group.actors == []
    finally:
        group.shutdown()


# ---------------------------------------------------------------- batching and threads


def test_micro_batches_follow_the_token_budget_and_every_rank_gets_as_many():
    lengths = [10, 50, 12, 48, 11, 52, 9, 30]
    (plan,) = plan_micro_batches(lengths, world_size=1, max_rows=4, max_tokens=100)
    assert plan == [[6, 0, 4, 2], [7, 3], [1], [5]]  # similar lengths together, rows x longest <= 100
    assert sorted(i for mb in plan for i in mb) == list(range(8))
    (rows_only,) = plan_micro_batches(lengths, world_size=1, max_rows=4)
    assert [len(mb) for mb in rows_only] == [4, 4]
    uneven = plan_micro_batches([10, 10, 10, 10, 10], world_size=2, max_rows=1)  # G=5 on 2 ranks
    assert [len(p) for p in uneven] == [3, 3] and uneven[0][-1] == []  # rank 0 has 2 rows: a padding micro-batch
    tiny = plan_micro_batches([10, 10, 10, 200], world_size=2, max_rows=4, max_tokens=100)
    assert [len(p) for p in tiny] == [2, 2]  # rank 0 split its one micro-batch to match rank 1


def test_each_micro_batch_is_padded_to_its_own_longest_sequence(learner):
    trajs = make_batch(4) + make_batch(4, seed=1)
    trajs[0].append(list(range(5, 205)), [-1.0] * 200, trainable=True)  # one long rollout
    micro, batches = learner._micro_batches(trajs)
    longest = [max(len(trajs[i].input_ids) for i in idx) for idx in micro]
    assert [b.input_ids.shape[1] for b in batches] == longest
    assert sorted(longest)[0] < len(trajs[0].input_ids) // 4  # the short ones are not padded to the long one


def test_a_learner_uses_the_cpus_it_reserves_and_all_cores_on_a_cpu_node():
    cores = len(__import__("os").sched_getaffinity(0))
    cfg = make_cfg(num_cpus=0.5)
    assert learner_threads(cfg) == cores  # CPU-only: generation is idle during a synchronous step
    assert learner_threads(cfg, ranks_on_node=cores) == 1  # ranks on one node share its cores
    assert learner_threads(make_cfg(num_cpus=3.5, num_gpus=1.0)) == 4
    assert learner_threads(make_cfg(threads=3)) == 3
    cfg.run.max_staleness = 1  # asynchronous: generation runs during the learner step
    assert learner_threads(cfg) == 1


# ---------------------------------------------------------------- passes and memory


def test_chunked_logits_give_the_same_logprobs_and_the_same_update(tiny_model_dir):
    """The LM head in chunks of 3 model tokens (recomputed in backward) against one chunk."""
    trajs = make_batch(4, seed=4)
    whole = Learner(make_cfg(logits_chunk_tokens=4096), tiny_model_dir)
    chunked = Learner(make_cfg(logits_chunk_tokens=3), tiny_model_dir)
    assert np.allclose(sum(whole.compute_logprobs(trajs), []), sum(chunked.compute_logprobs(trajs), []), atol=1e-6)
    a, b = whole.train_step(trajs), chunked.train_step(trajs)
    for key in ("policy_loss", "kl", "entropy", "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    wa, wb = weights_of(whole), weights_of(chunked)
    assert all(np.allclose(wa[k], wb[k], atol=1e-4) for k in wa)  # Adam's m / sqrt(v) makes rounding of ~0 gradients lr-sized


def test_a_batch_whose_advantages_are_all_zero_skips_every_pass_and_says_so(learner):
    trajs = make_batch(4, seed=5)
    for t in trajs:
        t.reward = 1.0  # every group agrees: GRPO advantages are all zero
    before, step = weights_of(learner), learner.step
    metrics = learner.train_step(trajs)
    assert metrics["skipped"] == 1.0 and metrics["grad_norm"] == 0.0 and metrics["advantage_abs_mean"] == 0.0
    assert not any(k.startswith("pass/") for k in metrics)  # not even the reference's forward ran
    assert learner.step == step and same_weights(before, weights_of(learner))  # Adam's momentum moved nothing either
    trajs[0].reward = 0.0
    assert learner.train_step(trajs)["skipped"] == 0.0


def test_only_the_passes_the_result_needs_are_run(tiny_model_dir):
    trajs = make_batch(4, seed=6)
    no_kl = Learner(make_cfg(algorithm={"kl_coef": 0.0, "ppo_epochs": 2}), tiny_model_dir).train_step(trajs)
    assert [k for k in no_kl if k.startswith("pass/")] == ["pass/update_s"]  # epoch 2's old logprobs are epoch 1's
    assert no_kl["clip_frac"] > 0 or no_kl["approx_kl"] > 0  # ... and they are the old policy's: epoch 2 moved away
    grpo_kl = Learner(make_cfg(), tiny_model_dir).train_step(trajs)
    assert sorted(k for k in grpo_kl if k.startswith("pass/")) == ["pass/reference_s", "pass/update_s"]
    gae = Learner(make_cfg(algorithm={"advantage": "gae"}), tiny_model_dir).train_step(trajs)
    assert sorted(k for k in gae if k.startswith("pass/")) == ["pass/policy_s", "pass/reference_s", "pass/update_s"]


# ---------------------------------------------------------------- what is trained on


def crashed(sample: str = "toy/0/9") -> Trajectory:
    """What rollout_batch returns when a rollout raised: no prompt, no tokens, stop reason error."""
    return Trajectory(task="toy", sample_id=sample, group_id="g0", prompt_ids=[], stop_reason=STOP_ERROR,
                      error="rollout failed: RuntimeError('boom')")


def test_a_crashed_rollout_is_left_out_and_counted_not_a_failed_step(tiny_model_dir):
    trajs = make_batch(4, seed=7)
    executor_failed = make_batch(1, seed=8)[0]
    executor_failed.stop_reason, executor_failed.reward, executor_failed.group_id = STOP_ERROR, 5.0, "g0"
    clean = Learner(make_cfg(), tiny_model_dir).train_step(trajs)
    with_failures = Learner(make_cfg(), tiny_model_dir).train_step(trajs + [crashed(), executor_failed])
    assert with_failures["failed_trajectories"] == 2.0 and clean["failed_trajectories"] == 0.0
    for key in ("policy_loss", "grad_norm", "tokens", "sequences"):  # the failures changed nothing, not even g0's baseline
        assert with_failures[key] == pytest.approx(clean[key], rel=1e-6), key


def void_turn_batch() -> list[Trajectory]:
    """Four rollouts of one group; the last turn of rollout 1 holds neither a closed block nor an answer."""
    trajs = make_batch(4)
    texts = ["<<<4>>>", "let me think about", "```python\nprint(2)\n```", "<<<5>>>"]
    for t, text in zip(trajs, texts):
        t.group_id, t.turns = "g", [Turn(text=text)]
    return trajs


def test_dropping_void_turns_zeroes_their_weight_but_keeps_their_reward_in_the_baseline():
    cfg = Config()
    trajs = void_turn_batch()
    kept, counts = trainable(trajs, drop_void_turns=True, cfg=cfg.protocol)
    assert counts == {"failed_trajectories": 0.0, "void_turn_trajectories": 1.0}
    assert [t.num_model_tokens == 0 for t in kept] == [False, True, False, False]
    assert collate(kept).rewards.tolist() == [t.reward for t in trajs]  # still in its group's mean
    off, counts = trainable(trajs, drop_void_turns=False, cfg=cfg.protocol)
    assert counts["void_turn_trajectories"] == 0.0 and all(t.num_model_tokens for t in off)


def test_dropped_void_turns_reach_the_learner_as_zero_weight_rows(learner):
    learner.cfg.algorithm.drop_void_turns = True
    try:
        metrics = learner.train_step(void_turn_batch())
    finally:
        learner.cfg.algorithm.drop_void_turns = False
    trajs = void_turn_batch()
    assert metrics["void_turn_trajectories"] == 1.0
    assert metrics["tokens"] == sum(t.num_model_tokens for i, t in enumerate(trajs) if i != 1)


# ---------------------------------------------------------------- engine/learner mismatch


def test_engine_learner_logprob_mismatch_is_measured_every_step(learner):
    trajs = with_learner_logprobs(learner, make_batch(4, seed=9))
    same = learner.train_step(trajs)
    assert same["mismatch/mean_abs"] < 1e-5 and same["mismatch/max_abs"] < 1e-5 and abs(same["mismatch/kl"]) < 1e-6
    trajs = with_learner_logprobs(learner, make_batch(4, seed=9), shift=-0.1)  # the engine 0.1 nats less sure
    off = learner.train_step(trajs)
    assert off["mismatch/mean_abs"] == pytest.approx(0.1, abs=1e-4)
    assert off["mismatch/max_abs"] == pytest.approx(0.1, abs=1e-4)
    assert off["mismatch/kl"] == pytest.approx(np.exp(0.1) - 1 - 0.1, abs=1e-4)  # k3 of engine to learner


def test_rollout_correction_weights_tokens_by_the_truncated_importance_ratio(tiny_model_dir):
    cfg = make_cfg(algorithm={"kl_coef": 0.0})
    plain = Learner(cfg, tiny_model_dir)
    trajs = with_learner_logprobs(plain, make_batch(4, seed=10), shift=-np.log(3.0))  # pi_learner / pi_engine = 3
    base = plain.train_step(trajs)
    cfg = make_cfg(algorithm={"kl_coef": 0.0, "rollout_correction": True, "rollout_correction_cap": 2.0})
    corrected = Learner(cfg, tiny_model_dir).train_step(trajs)
    assert corrected["rollout_correction/weight"] == pytest.approx(2.0, rel=1e-5)  # 3, truncated to the cap
    assert corrected["rollout_correction/truncated"] == pytest.approx(1.0)
    assert corrected["policy_loss"] == pytest.approx(2.0 * base["policy_loss"], rel=1e-4, abs=1e-7)
    assert "rollout_correction/weight" not in base
