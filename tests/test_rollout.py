"""The multi-turn rollout: protocol handling with a scripted engine, and end to end with the tiny model.

The scripted engine isolates the rollout from sampling (a random tiny model rarely writes a
closed code block); the code always runs for real in r1ci's sandbox. The last tests run the
real tiny model through the transformers engine and the generator actor.
"""

import asyncio
import time

import pytest
import torch

from r1ci.config import Config
from r1ci.engines.base import Completion, EngineStats, Sampling
from r1ci.rollout import RolloutRequest, prompt_ids, rollout, rollout_batch, sampling_from_config
from r1ci.sandbox.base import EXECUTOR_DIED, EXECUTOR_FAILURES, ExecResult
from r1ci.tasks.base import Instance
from r1ci.trajectory import STOP_ANSWER, STOP_EOS, STOP_ERROR, STOP_LENGTH, STOP_MAX_CALLS, STOP_PROMPT_TOO_LONG


class ScriptedEngine:
    """Returns scripted text chunks as tokens (cut at max_tokens), recording every request it gets."""

    def __init__(self, tokenizer, script, max_model_len=4096):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.script = list(script)  # (text, finish_reason) or a callable(sampling) -> (text, finish_reason)
        self.calls = []  # (prompt_ids, sampling, completion)

    def next_step(self, prompt_ids, sampling):
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return step(sampling) if callable(step) else step

    async def generate(self, prompt_ids, sampling):
        await asyncio.sleep(0)
        text, reason = self.next_step(prompt_ids, sampling)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if reason == "eos":
            ids.append(self.tokenizer.eos_token_id)
        if len(ids) > sampling.max_tokens:
            ids, reason = ids[: sampling.max_tokens], "length"
        out = Completion(ids, [-0.5 - 0.01 * i for i in range(len(ids))], self.tokenizer.decode(ids, skip_special_tokens=True), reason)
        self.calls.append((list(prompt_ids), sampling, out))
        return out

    async def load_weights(self, weights, version, final=True):
        pass

    def stats(self):
        return EngineStats()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def sandbox():
    from r1ci.sandbox import Executor

    executor = Executor()
    yield executor
    executor.close()


@pytest.fixture
def cfg():
    c = Config()
    c.sandbox.timeout_s = 5.0
    return c


INSTANCE = Instance(task="arith", seed=0, index=3, question="What is 6 * 7?", answer="42")
CODE_TURN = ("Let me compute.\n```python\nprint(6 * 7)\n```\n", "stop")


def run(engine, cfg, executor, instance=INSTANCE, sampling=None, style="agent"):
    sampling = sampling or sampling_from_config(cfg, seed=1)
    return asyncio.run(rollout(engine, executor, instance, cfg, "g0", sampling, style, weight_version=7))


def assert_aligned(traj, engine):
    """Response = engine outputs and encoded observations in order (never re-tokenized); mask and logprobs line up."""
    assert len(traj.response_ids) == len(traj.loss_mask) == len(traj.logprobs)
    observations = iter([engine.tokenizer.encode(t.observation, add_special_tokens=False) for t in traj.turns if t.observation])
    ids, mask, logprobs = [], [], []
    for prompt, _, out in engine.calls:
        gap = prompt[len(traj.prompt_ids) + len(ids) :]
        if gap:  # an observation was appended before this call
            assert gap == next(observations)
            ids, mask, logprobs = ids + gap, mask + [0] * len(gap), logprobs + [0.0] * len(gap)
        assert prompt == traj.prompt_ids + ids
        ids, mask, logprobs = ids + out.token_ids, mask + [1] * len(out.token_ids), logprobs + out.logprobs
    tail = traj.response_ids[len(ids) :]  # an observation after the last call, cut by the budget
    assert tail == next(observations, [])[: len(tail)]
    assert traj.response_ids == ids + tail
    assert traj.loss_mask == mask + [0] * len(tail)
    assert traj.logprobs == pytest.approx(logprobs + [0.0] * len(tail))


def test_code_runs_and_its_output_follows_as_masked_tokens(tokenizer, cfg, sandbox):
    engine = ScriptedEngine(tokenizer, [CODE_TURN, ("So the answer is <<<42>>>", "stop")])
    traj = run(engine, cfg, sandbox)
    assert traj.stop_reason == STOP_ANSWER and traj.answer == "42"
    assert traj.code_calls == 1 and len(traj.turns) == 2
    assert traj.turns[0].code == "print(6 * 7)"
    assert traj.turns[0].observation == "Code Execution Results:\n42\n"
    assert traj.turns[0].killed_reason == ""
    assert traj.prompt_ids == prompt_ids(tokenizer, INSTANCE.question, "agent", cfg)
    assert tokenizer.decode(traj.prompt_ids).endswith("<|im_start|>assistant\n")
    assert (traj.task, traj.sample_id, traj.group_id, traj.weight_version) == ("arith", "arith/0/3", "g0", 7)
    assert traj.code_wait_s > 0
    assert_aligned(traj, engine)
    stops = engine.calls[0][1].stop
    assert ">>>" in stops and "\n```\n" in stops


def test_answer_close_inside_code_keeps_the_same_turn_going(tokenizer, cfg, sandbox):
    engine = ScriptedEngine(tokenizer, [("```python\nprint('>>>", "stop"), ("')\n```\n", "stop"), ("<<<done>>>", "stop")])
    traj = run(engine, cfg, sandbox)
    assert traj.turns[0].code == "print('>>>')"
    assert traj.turns[0].observation == "Code Execution Results:\n>>>\n"
    assert traj.stop_reason == STOP_ANSWER and traj.answer == "done"
    assert_aligned(traj, engine)


def test_answer_before_code_ends_the_episode_without_running_it(tokenizer, cfg, sandbox):
    engine = ScriptedEngine(tokenizer, [("<<<41>>>\n```python\nprint(1)\n```\n", "stop")])
    traj = run(engine, cfg, sandbox)
    assert traj.stop_reason == STOP_ANSWER and traj.answer == "41" and traj.code_calls == 0


def test_after_max_code_calls_the_last_turn_has_no_execution(tokenizer, cfg, sandbox):
    cfg.protocol.max_code_calls = 2

    def step(sampling):
        return CODE_TURN if "\n```\n" in sampling.stop else ("```python\nprint(0)\n```\nDone: <<<42>>>", "stop")

    engine = ScriptedEngine(tokenizer, [step])
    traj = run(engine, cfg, sandbox)
    assert traj.code_calls == 2 and len(engine.calls) == 3
    assert "You have used all 2 code executions" in traj.turns[1].observation
    assert traj.turns[2].code is None and traj.stop_reason == STOP_ANSWER and traj.answer == "42"
    assert_aligned(traj, engine)

    engine = ScriptedEngine(tokenizer, [lambda s: CODE_TURN if "\n```\n" in s.stop else ("I give up.", "eos")])
    assert run(engine, cfg, sandbox).stop_reason == STOP_MAX_CALLS


def test_eos_without_answer_ends_with_eos(tokenizer, cfg, sandbox):
    engine = ScriptedEngine(tokenizer, [("I do not know.", "eos")])
    traj = run(engine, cfg, sandbox)
    assert traj.stop_reason == STOP_EOS and traj.answer is None
    assert traj.response_ids[-1] == tokenizer.eos_token_id and traj.loss_mask[-1] == 1


def test_never_closing_block_ends_at_the_token_budget(tokenizer, cfg, sandbox):
    cfg.sampling.max_total_tokens = 100
    engine = ScriptedEngine(tokenizer, [("```python\n" + "x = 1\n" * 200, "stop")])
    traj = run(engine, cfg, sandbox)
    assert traj.stop_reason == STOP_LENGTH and traj.code_calls == 0
    assert len(traj.response_ids) <= 100 and sum(traj.loss_mask) == len(traj.response_ids)


def test_observation_that_overflows_the_budget_is_cut_and_ends_the_trajectory(tokenizer, cfg, sandbox):
    cfg.sampling.max_total_tokens = 40
    engine = ScriptedEngine(tokenizer, [("```python\nprint('y' * 500)\n```\n", "stop"), ("<<<1>>>", "stop")])
    traj = run(engine, cfg, sandbox)
    assert traj.stop_reason == STOP_LENGTH and len(traj.response_ids) == 40
    assert len(engine.calls) == 1


def test_prompt_longer_than_the_context_is_marked_not_raised(tokenizer, cfg, sandbox):
    engine = ScriptedEngine(tokenizer, [CODE_TURN], max_model_len=32)
    traj = run(engine, cfg, sandbox)
    assert traj.stop_reason == STOP_PROMPT_TOO_LONG and traj.response_ids == [] and engine.calls == []
    assert "max_model_len 32" in traj.error


def test_code_that_never_returns_times_out_in_the_observation(tokenizer, cfg, sandbox):
    cfg.sandbox.timeout_s = 0.5
    engine = ScriptedEngine(tokenizer, [("```python\nwhile True:\n    pass\n```\n", "stop"), ("<<<?>>>", "stop")])
    traj = run(engine, cfg, sandbox)
    assert traj.turns[0].observation.count("0.5 s limit") == 1  # the sandbox's own note, not repeated
    assert traj.turns[0].killed_reason == "timeout"  # what evaluation counts as a timeout
    assert traj.stop_reason == STOP_ANSWER


def test_exec_note_explains_only_what_the_executor_left_unexplained():
    from r1ci.rollout import exec_note

    assert exec_note(ExecResult("", "", None, timed_out=True, killed_reason="timeout"), 2.0) == "Error: the code timed out after 2 seconds and was stopped."
    assert exec_note(ExecResult("", "", None, killed_reason="memory_limit"), 2.0) == "Error: the code was stopped (memory_limit)."
    assert exec_note(ExecResult("", "TimeoutError: killed", None, timed_out=True), 2.0) == ""
    assert exec_note(ExecResult("1\n", "", 0), 2.0) == ""


class DyingExecutor:
    async def arun(self, code, timeout_s=None):
        raise RuntimeError("executor actor died")


class HangingExecutor:
    async def arun(self, code, timeout_s=None):
        await asyncio.sleep(3600)


class ReportsItsDeathExecutor:
    async def arun(self, code, timeout_s=None):
        return ExecResult("", "r1ci sandbox: the fork server died during this run", None, killed_reason=EXECUTOR_DIED)


@pytest.mark.parametrize(
    "executor,message",
    [(DyingExecutor(), "executor actor died"), (HangingExecutor(), "no result within"), (ReportsItsDeathExecutor(), "fork server died")],
)
def test_executor_failure_marks_the_trajectory_and_keeps_it(tokenizer, cfg, executor, message):
    cfg.sandbox.timeout_s, cfg.generator.exec_grace_s = 0.2, 0.3
    engine = ScriptedEngine(tokenizer, [CODE_TURN, ("<<<42>>>", "stop")])
    traj = run(engine, cfg, executor)
    assert traj.stop_reason == STOP_ERROR and message in traj.error
    assert traj.turns[0].code == "print(6 * 7)" and traj.code_calls == 0
    assert traj.turns[0].killed_reason in EXECUTOR_FAILURES  # what evaluation counts as an executor failure
    assert len(traj.response_ids) == len(traj.loss_mask) == len(traj.logprobs) > 0


class SleepExecutor:
    """Runs nothing; each snippet 'sleep S' takes S seconds. Records when calls end."""

    def __init__(self):
        self.ends = []

    async def arun(self, code, timeout_s=None):
        await asyncio.sleep(float(code.split()[-1]))
        self.ends.append((code, time.perf_counter()))
        return ExecResult(stdout="ok\n", stderr="", exit_code=0)


def test_trajectories_advance_independently_while_one_waits_on_code(tokenizer, cfg):
    slow = Instance(task="t", seed=0, index=0, question="slow", answer=None)
    fast = Instance(task="t", seed=0, index=1, question="fast", answer=None)
    turns = {}

    class PerQuestion(ScriptedEngine):
        def next_step(self, prompt_ids, sampling):
            key = "slow" if "slow" in self.tokenizer.decode(prompt_ids) else "fast"
            turns[key] = turns.get(key, 0) + 1
            if turns[key] > 3:
                return "<<<x>>>", "stop"
            return f"```python\nsleep {1.5 if key == 'slow' else 0.05}\n```\n", "stop"

    executor = SleepExecutor()
    engine = PerQuestion(tokenizer, [CODE_TURN])
    requests = [RolloutRequest(slow, "g", "agent"), RolloutRequest(fast, "g", "agent")]
    trajs = asyncio.run(rollout_batch(engine, executor, requests, cfg))
    assert [t.sample_id for t in trajs] == ["t/0/0", "t/0/1"], trajs
    first_slow_end = min(t for code, t in executor.ends if "1.5" in code)
    fast_ends = [t for code, t in executor.ends if "0.05" in code]
    assert len(fast_ends) == 3 and max(fast_ends) < first_slow_end  # fast did all 3 calls during slow's first


def test_rollout_batch_keeps_a_trajectory_whose_rollout_crashed(tokenizer, cfg, sandbox):
    class Broken(ScriptedEngine):
        @property
        def max_model_len(self):
            raise RuntimeError("boom")

        @max_model_len.setter
        def max_model_len(self, value):
            pass

    trajs = asyncio.run(rollout_batch(Broken(tokenizer, [CODE_TURN]), sandbox, [RolloutRequest(INSTANCE, "g", "agent")], cfg))
    assert len(trajs) == 1 and trajs[0].stop_reason == STOP_ERROR and "boom" in trajs[0].error


# --- end to end with the real tiny model (transformers engine) ---


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    from r1ci.engines import make_engine

    c = Config()
    c.generator.backend = "hf"
    return make_engine(c, tiny_model_dir)


def test_tiny_model_rollouts_have_aligned_tokens_masks_and_true_logprobs(hf_engine, cfg, sandbox):
    cfg.sampling.max_tokens_per_turn = 48
    cfg.sampling.max_total_tokens = 96
    requests = [RolloutRequest(INSTANCE, f"g{i // 2}", style, Sampling(1.0, 1.0, 48, seed=i)) for i, style in enumerate(["agent", "guided", "code", "text"])]
    trajs = asyncio.run(rollout_batch(hf_engine, sandbox, requests, cfg))
    model = hf_engine.model
    for traj in trajs:
        assert traj.stop_reason in (STOP_ANSWER, STOP_EOS, STOP_LENGTH), traj.error
        assert len(traj.response_ids) == len(traj.loss_mask) == len(traj.logprobs) <= 96
        ids = torch.tensor([traj.input_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(traj.prompt_ids) - 1 : -1].float()
        recomputed = torch.log_softmax(logits, -1).gather(1, torch.tensor(traj.response_ids)[:, None])[:, 0]
        mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
        assert torch.allclose(recomputed[mask], torch.tensor(traj.logprobs)[mask], atol=1e-4)
    again = asyncio.run(rollout_batch(hf_engine, sandbox, requests[:1], cfg))
    assert again[0].response_ids == trajs[0].response_ids  # seeded


# --- the generator actor (transformers engine, real sandbox executor, real Ray) ---


@pytest.mark.slow
def test_generator_actor_rolls_out_loads_weights_and_reports_stats(ray_cluster, tiny_model_dir):
    import ray
    from transformers import AutoModelForCausalLM

    from actors.executor import ExecutorPool
    from actors.generator import make_generators
    from r1ci.weight_sync import pack_buckets

    cfg = Config()
    cfg.generator.backend, cfg.generator.num_cpus, cfg.generator.num_generators = "hf", 0.25, 1
    cfg.executor.num_cpus = 0.25
    cfg.sampling.max_tokens_per_turn, cfg.sampling.max_total_tokens = 16, 32
    pool = ExecutorPool.create(cfg)
    (actor,) = make_generators(cfg, tiny_model_dir, pool)
    requests = [RolloutRequest(INSTANCE, "g0", "agent", Sampling(1.0, 1.0, 16, seed=i)) for i in range(3)]
    first = ray.get(actor.generate.remote(requests), timeout=120)
    assert [t.weight_version for t in first] == [0, 0, 0] and all(t.response_ids for t in first)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = {k: v.detach().numpy() * 1.5 for k, v in model.state_dict().items()}
    refs = [ray.put(b) for b in pack_buckets(changed, bucket_mb=0.5, version=5)]
    assert len(refs) > 1
    assert ray.get(actor.load_weights.remote(refs, 5), timeout=60) == 5
    second = ray.get(actor.generate.remote(requests), timeout=120)
    assert [t.weight_version for t in second] == [5, 5, 5]
    assert [t.logprobs for t in second] != [t.logprobs for t in first]

    stats = ray.get(actor.stats.remote(), timeout=30)
    assert stats["weight_version"] == 5 and stats["trajectories"] == 6
    assert stats["tokens_per_s"] > 0 and stats["turns_per_trajectory"] >= 1
    ray.get(actor.shutdown.remote(), timeout=30)
    ray.kill(actor)
    pool.close()


@pytest.mark.slow
def test_generator_serves_a_new_version_only_once_every_bucket_is_loaded(ray_cluster, tiny_model_dir):
    import ray
    from transformers import AutoModelForCausalLM

    from actors.generator import make_generators
    from r1ci.weight_sync import MIXED_WEIGHTS, pack_buckets

    cfg = Config()
    cfg.generator.backend, cfg.generator.num_cpus, cfg.generator.num_generators = "hf", 0.25, 1
    cfg.sampling.max_tokens_per_turn, cfg.sampling.max_total_tokens = 8, 16
    (actor,) = make_generators(cfg, tiny_model_dir, executor=None)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = {k: v.detach().numpy() * 1.5 for k, v in model.state_dict().items()}
    refs = [ray.put(b) for b in pack_buckets(changed, bucket_mb=0.5, version=6)]
    assert len(refs) >= 3
    request = [RolloutRequest(INSTANCE, "g0", "agent", Sampling(1.0, 1.0, 8, seed=0))]

    assert ray.get(actor.load_bucket.remote(refs[-1]), timeout=60) == MIXED_WEIGHTS  # out of order is fine
    (traj,) = ray.get(actor.generate.remote(request), timeout=120)
    assert traj.weight_version == MIXED_WEIGHTS  # what the fleet refuses as stale
    with pytest.raises(ray.exceptions.RayTaskError, match="arrived twice"):
        ray.get(actor.load_bucket.remote(refs[-1]), timeout=60)
    served = ray.get([actor.load_bucket.remote(r) for r in refs[:-1]], timeout=60)
    assert served[:-1] == [MIXED_WEIGHTS] * (len(refs) - 2) and served[-1] == 6
    assert ray.get(actor.stats.remote(), timeout=30)["weight_version"] == 6
    ray.get(actor.shutdown.remote(), timeout=30)
    ray.kill(actor)
