"""The vLLM engine: vLLM's async engine (continuous batching) on CPU or GPU.

Each `generate` is one vLLM request on token ids, so trajectories that wait on code simply
have no request in flight while the others keep decoding. Logprobs are vLLM's
"processed_logprobs": log_softmax(logits / T) of the sampled token (renormalized to the
top-p nucleus when top_p < 1), what the learner recomputes when top_p = 1.

AsyncLLM binds itself to the event loop it first runs in, so it lives on its own loop in a
background thread and `generate` may be awaited from any loop (a Ray actor's, or several
`asyncio.run` calls in a script).

New weights reach the workers as one file in /dev/shm that they map (the RPC carries only
its path and a header), and load with the model runner's `reload_weights`, the path that
works on vLLM's CPU build (see ENVIRONMENT.md). The workers must share the generator's node,
as vLLM's tensor-parallel workers do.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import threading
import uuid
from typing import Callable, Iterable

import numpy as np

from r1ci.config import Config
from r1ci.engines.base import BusyClock, Completion, EngineStats, Sampling


def weights_dir(nbytes: int) -> str:
    """/dev/shm (memory) when it has room for `nbytes`, else the temp dir (page cache)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * nbytes:
        return shm
    return tempfile.gettempdir()


def write_weights(weights: Iterable[tuple[str, np.ndarray]]) -> tuple[list[tuple[str, str, list[int]]], str]:
    """(header of (name, dtype, shape), path of one file holding the arrays back to back): the
    one copy on this side. vLLM's RPC would pickle and relay a blob through its engine
    process (measured: 4 s for SmolLM2's 0.5 GB), while its workers, on this node, map the file."""
    arrays = [(name, np.ascontiguousarray(array)) for name, array in weights]
    fd, path = tempfile.mkstemp(prefix="r1ci-weights-", dir=weights_dir(sum(a.nbytes for _, a in arrays)))
    try:
        with open(fd, "wb", buffering=0) as f:
            for _, array in arrays:
                f.write(memoryview(array.reshape(-1)).cast("B"))
    except BaseException:
        os.unlink(path)
        raise
    return [(name, a.dtype.str, list(a.shape)) for name, a in arrays], path


def read_weights(header: list, path: str) -> list[tuple[str, np.ndarray]]:
    """The arrays of `write_weights` as views of a copy-on-write mapping of its file (no copy)."""
    out, offset = [], 0
    if not header:
        return out
    data = np.memmap(path, dtype=np.uint8, mode="c")
    for name, dtype, shape in header:
        dt = np.dtype(dtype)
        count = math.prod(shape)
        out.append((name, np.frombuffer(data, dtype=dt, count=count, offset=offset).reshape(shape)))
        offset += count * dt.itemsize
    return out


def _reload_in_worker(worker, header: list, path: str) -> int:
    """Runs inside each vLLM worker process: load checkpoint-format (HF-named) tensors in place."""
    import torch

    tensors = [(name, torch.from_numpy(array)) for name, array in read_weights(header, path)]
    worker.model_runner.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
    return len(tensors)


def engine_env(cfg: Config) -> dict[str, str]:
    """Environment vLLM reads at start-up: its engine queue on loopback unless told otherwise
    (else it binds the public interface), the CPU build's KV cache in whole GiB and its threads."""
    env = {
        "VLLM_HOST_IP": os.environ.get("VLLM_HOST_IP", "127.0.0.1"),
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, math.ceil(cfg.generator.kv_cache_gb))),
    }
    threads = cfg.generator.threads
    if threads > 0 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:  # the CPU build's worker threads, on cores 0..n-1
        env["VLLM_CPU_OMP_THREADS_BIND"] = "0" if threads == 1 else f"0-{threads - 1}"
    return env


def engine_args(model_dir: str, cfg: Config) -> dict:
    """vLLM engine arguments besides the model (the same for r1ci's engine and ray.serve.llm's)."""
    from transformers import AutoConfig

    max_model_len = min(cfg.generator.max_model_len, AutoConfig.from_pretrained(model_dir).max_position_embeddings)
    return dict(
        dtype=cfg.model.dtype,
        max_model_len=max_model_len,
        # Chunked prefill off: on the CPU build a seeded request whose prompt is split across
        # steps crashes the engine ("CPU Generator does not use offset"); whole prompts only.
        enable_chunked_prefill=False,
        max_num_batched_tokens=max(max_model_len, 2048),
        enforce_eager=True,
        seed=cfg.run.seed,
        gpu_memory_utilization=cfg.generator.gpu_memory_utilization,
        logprobs_mode="processed_logprobs",
        disable_log_stats=True,
    )


def finish_reason(vllm_finish_reason: str | None, stop_reason: int | str | None) -> str:
    """r1ci's finish reason for a vLLM output: "length", "stop" (a stop string) or "eos"
    (the eos token, stop_reason None, or a stop token id)."""
    if vllm_finish_reason == "length":
        return "length"
    return "stop" if isinstance(stop_reason, str) else "eos"


class VLLMEngine:
    """vLLM AsyncLLM on a Hugging Face folder; implements `r1ci.engines.base.Engine`."""

    def __init__(self, model_dir: str, cfg: Config):
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # lets load_weights send a function
        for key, value in engine_env(cfg).items():
            os.environ[key] = value
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        args = AsyncEngineArgs(model=model_dir, **engine_args(model_dir, cfg))
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="vllm-engine-loop", daemon=True).start()

        async def start() -> AsyncLLM:
            return AsyncLLM.from_engine_args(args)

        self.engine = asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        self.max_model_len = self.engine.model_config.max_model_len
        self._clock = BusyClock()
        self._staged: list[tuple[str, np.ndarray]] = []  # parts of a weight sync until its final part
        self._staged_version: int | None = None
        self._stats = EngineStats()

    async def _on_engine_loop(self, coro):
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def generate(
        self, prompt_ids: list[int], sampling: Sampling, on_tokens: Callable[[list[int]], None] | None = None
    ) -> Completion:
        """Continue `prompt_ids` as one vLLM request; vLLM batches it with all others in flight."""
        caller = asyncio.get_running_loop()
        relay = None if on_tokens is None else lambda ids: caller.call_soon_threadsafe(on_tokens, ids)
        return await self._on_engine_loop(self._generate(prompt_ids, sampling, relay))

    async def _generate(self, prompt_ids: list[int], sampling: Sampling, on_tokens=None) -> Completion:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit max_model_len {self.max_model_len}")
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=min(sampling.max_tokens, self.max_model_len - len(prompt_ids)),
            stop=list(sampling.stop),
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's logprob only
            seed=sampling.seed,
        )
        self._clock.start()
        try:
            final, streamed = None, 0
            async for final in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params, uuid.uuid4().hex):
                if on_tokens is not None and len(final.outputs[0].token_ids) > streamed:  # cumulative outputs
                    on_tokens(list(final.outputs[0].token_ids[streamed:]))
                    streamed = len(final.outputs[0].token_ids)
        finally:
            self._clock.stop()
        out = final.outputs[0]
        token_ids = list(out.token_ids)
        logprobs = [step[token].logprob for token, step in zip(token_ids, out.logprobs)]
        reason = finish_reason(out.finish_reason, out.stop_reason)
        self._stats.generated_tokens += len(token_ids)
        self._stats.requests += 1
        return Completion(
            token_ids=token_ids,
            logprobs=logprobs,
            text=self.tokenizer.decode(token_ids, skip_special_tokens=True),  # all tokens, as the rollout keeps them
            finish_reason=reason,
            stop_str=out.stop_reason if reason == "stop" else None,
        )

    async def load_weights(self, weights: Iterable[tuple[str, np.ndarray]], version: int, final: bool = True) -> None:
        """Reload HF-named numpy arrays in every worker, then drop the prefix cache built on the old
        weights. vLLM reloads a whole model at once (on CPU it repacks every linear layer), so
        parts are kept (views, no copy) until the final one arrives."""
        if self._staged_version != version:  # parts of an abandoned sync are dropped
            self._staged, self._staged_version = [], version
        self._staged += list(weights)
        if not final:
            return
        staged, self._staged = self._staged, []
        twice = len(staged) - len({name for name, _ in staged})
        if twice:
            raise ValueError(f"weights version {version}: {twice} tensors came twice in one sync")
        header, path = await asyncio.to_thread(write_weights, staged)

        async def reload() -> None:
            await self.engine.collective_rpc(_reload_in_worker, args=(header, path))
            await self.engine.reset_prefix_cache()

        try:
            await self._on_engine_loop(reload())
        finally:
            os.unlink(path)
        self._stats.weight_version = version

    def stats(self) -> EngineStats:
        self._stats.generate_seconds = self._clock.total()
        return self._stats

    def shutdown(self) -> None:
        self.engine.shutdown()
        self.engine = None  # collected now, not at interpreter exit where its __del__ fails noisily
        self._loop.call_soon_threadsafe(self._loop.stop)
