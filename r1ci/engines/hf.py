"""A transformers engine with continuous batching, for machines where vLLM cannot run.

One asyncio loop owns the model. Concurrent `generate` calls join the running batch at the
next step (their prompts are prefilled and their KV cache is merged in, left padded) and
leave it as soon as they finish, so a trajectory waiting on its code never holds up the
others. Forward passes run in a worker thread so the event loop stays free.

Logprobs are those of the distribution actually sampled from: log_softmax(logits / T),
restricted and renormalized to the top-p nucleus when top_p < 1 (vLLM's
"processed_logprobs"). With top_p = 1 that is exactly what the learner recomputes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from r1ci.config import Config
from r1ci.engines.base import BusyClock, Completion, EngineStats, Sampling

log = logging.getLogger(__name__)


@dataclass
class _Request:
    prompt_ids: list[int]
    sampling: Sampling
    future: asyncio.Future
    generator: torch.Generator
    max_new: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    cached: int = 0  # real (unpadded) tokens of this row in the KV cache
    finish_reason: str = ""
    stop_str: str | None = None
    on_tokens: Callable[[list[int]], None] | None = None
    streamed: int = 0  # tokens already handed to on_tokens


def sample_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> tuple[int, float]:
    """Sample one token from a [vocab] logit vector; return it and its logprob under the sampling distribution."""
    logits = logits.float()
    if sampling.temperature <= 0:
        token = int(logits.argmax())
        return token, float(torch.log_softmax(logits, -1)[token])
    scaled = logits / sampling.temperature
    if sampling.top_p < 1.0:
        sorted_logits, order = scaled.sort(descending=True)
        probs = torch.softmax(sorted_logits, -1)
        outside = probs.cumsum(-1) - probs >= sampling.top_p  # keep the smallest prefix whose mass reaches top_p
        outside[0] = False  # and always the likeliest token (a top_p below float32's smallest number reads as 0)
        scaled = scaled.clone()
        scaled[order[outside]] = float("-inf")
    logprobs = torch.log_softmax(scaled, -1)
    token = int(torch.multinomial(logprobs.exp(), 1, generator=generator))
    return token, float(logprobs[token])


class HFEngine:
    """transformers model + continuous batching loop; implements `r1ci.engines.base.Engine`."""

    def __init__(self, model_dir: str, cfg: Config):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cfg.generator.threads > 0:
            torch.set_num_threads(cfg.generator.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype = getattr(torch, cfg.model.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        self.max_model_len = min(cfg.generator.max_model_len, self.model.config.max_position_embeddings)
        self.max_batch = cfg.generator.max_batch
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self._seeds = torch.Generator().manual_seed(cfg.run.seed)
        self._shared: set[int] = set()  # ids of parameters that are read-only object-store buffers (_set_weights)
        self._lock = threading.Lock()  # a forward pass and a weight load never overlap
        self._pending: list[_Request] = []
        self._rows: list[_Request] = []
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: keys, values [B, H, T, D]
        self._mask: torch.Tensor | None = None  # [B, T] 1 where the cache holds a real token
        self._loop_task: asyncio.Task | None = None
        self._clock = BusyClock()
        self._stats = EngineStats()

    async def generate(
        self, prompt_ids: list[int], sampling: Sampling, on_tokens: Callable[[list[int]], None] | None = None
    ) -> Completion:
        """Continue `prompt_ids`; joins the running batch at the next decode step."""
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit max_model_len {self.max_model_len}")
        seed = sampling.seed if sampling.seed is not None else int(torch.randint(2**62, (1,), generator=self._seeds))
        request = _Request(
            prompt_ids=list(prompt_ids),
            sampling=sampling,
            future=asyncio.get_running_loop().create_future(),
            generator=torch.Generator().manual_seed(seed),
            max_new=min(sampling.max_tokens, self.max_model_len - len(prompt_ids)),
            on_tokens=on_tokens,
        )
        self._pending.append(request)
        self._clock.start()
        self._ensure_loop()
        try:
            return await request.future
        finally:
            self._clock.stop()

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        """Step the batch until no request is left; `generate` starts it again when needed."""
        while self._pending or self._rows:
            try:
                if self._pending and len(self._rows) < self.max_batch:
                    admitted = self._pending[: self.max_batch - len(self._rows)]
                    del self._pending[: len(admitted)]
                    rows = await asyncio.to_thread(self._locked, self._prefill, admitted)
                else:
                    rows = await asyncio.to_thread(self._locked, self._decode)
                self._stream(rows)
                self._finish(rows)
            except Exception as exc:  # fail every request in flight; the loop itself survives
                log.exception("hf engine step failed")
                for r in self._rows + self._pending:
                    if not r.future.done():
                        r.future.set_exception(RuntimeError(f"hf engine step failed: {exc!r}"))
                self._rows, self._pending, self._cache, self._mask = [], [], None, None

    def _locked(self, fn, *args):
        with self._lock, torch.inference_mode():
            return fn(*args)

    def _prefill(self, new: list[_Request]) -> list[_Request]:
        """Run the new prompts (left padded), sample their first token, merge their cache into the batch."""
        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
            r.cached = len(r.prompt_ids)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._merge(new, cache, mask)
        self._sample(new, out.logits[:, -1])
        return new

    def _decode(self) -> list[_Request]:
        """One step for every row: feed each row's last sampled token, sample the next."""
        from transformers import DynamicCache

        last = torch.tensor([[r.token_ids[-1]] for r in self._rows])
        positions = torch.tensor([[r.cached] for r in self._rows])
        mask = torch.cat([self._mask, torch.ones((len(self._rows), 1), dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=last,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=DynamicCache(self._cache, config=self.model.config),
            use_cache=True,
        )
        self._cache = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._mask = mask
        for r in self._rows:
            r.cached += 1
        self._sample(self._rows, out.logits[:, -1])
        return list(self._rows)

    def _merge(self, new: list[_Request], cache: list, mask: torch.Tensor) -> None:
        if self._cache is None:
            self._rows, self._cache, self._mask = list(new), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        self._cache = [
            (torch.cat([left_pad(k0, 2), left_pad(k1, 2)]), torch.cat([left_pad(v0, 2), left_pad(v1, 2)]))
            for (k0, v0), (k1, v1) in zip(self._cache, cache)
        ]
        self._mask = torch.cat([left_pad(self._mask, 1), left_pad(mask, 1)])
        self._rows += new

    def _sample(self, rows: list[_Request], logits: torch.Tensor) -> None:
        for r, row_logits in zip(rows, logits):
            token, logprob = sample_token(row_logits, r.sampling, r.generator)
            r.token_ids.append(token)
            r.logprobs.append(logprob)
            if token in self.eos_ids:
                r.finish_reason = "eos"
            elif r.sampling.stop and self._stop_hit(r):
                r.finish_reason = "stop"
            elif len(r.token_ids) >= r.max_new:
                r.finish_reason = "length"

    def _stop_hit(self, r: _Request) -> bool:
        """A stop string completed by the newest token (it lies within the last few tokens)."""
        window = max(len(s) for s in r.sampling.stop) + 1
        tail = self.tokenizer.decode(r.token_ids[-window:])
        for s in r.sampling.stop:
            if s in tail:
                r.stop_str = s
                return True
        return False

    def _stream(self, stepped: list[_Request]) -> None:
        """Hand each streaming row its new tokens; scheduled, so a failing callback fails no batch."""
        loop = asyncio.get_running_loop()
        for r in stepped:
            if r.on_tokens is not None and len(r.token_ids) > r.streamed:
                loop.call_soon(r.on_tokens, r.token_ids[r.streamed :])
                r.streamed = len(r.token_ids)

    def _finish(self, stepped: list[_Request]) -> None:
        done = [r for r in stepped if r.finish_reason]
        if not done:
            return
        for r in done:
            self._stats.generated_tokens += len(r.token_ids)
            self._stats.requests += 1
            if not r.future.done():
                r.future.set_result(
                    Completion(
                        token_ids=r.token_ids,
                        logprobs=r.logprobs,
                        text=self.tokenizer.decode(r.token_ids, skip_special_tokens=True),
                        finish_reason=r.finish_reason,
                        stop_str=r.stop_str,
                    )
                )
        keep = [i for i, r in enumerate(self._rows) if not r.finish_reason]
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep)
        mask = self._mask[index]
        first = int(mask.any(0).long().argmax())  # drop padding columns no remaining row needs
        self._rows = [self._rows[i] for i in keep]
        self._mask = mask[:, first:]
        self._cache = [(k[index, :, first:], v[index, :, first:]) for k, v in self._cache]

    async def load_weights(self, weights: Iterable[tuple[str, np.ndarray]], version: int, final: bool = True) -> None:
        """Put HF-named numpy arrays into the model (between decode steps), part by part."""
        await asyncio.to_thread(self._locked, self._set_weights, list(weights))
        if final:
            self._stats.weight_version = version

    def _set_weights(self, weights: list[tuple[str, np.ndarray]]) -> None:
        """A read-only array (an immutable object-store buffer, as `ray.get` maps it) of the
        parameter's dtype becomes the parameter itself: no copy, and every generator on a node
        shares one copy of the weights; the buffer stays pinned while the model uses it.
        Writable arrays (the caller may change them later) and other dtypes are copied. Tied
        weights are one Parameter under two names, so either name sets both."""
        params = {**dict(self.model.named_buffers()), **dict(self.model.named_parameters(remove_duplicate=False))}
        unknown = [name for name, _ in weights if name not in params]
        if unknown:
            raise KeyError(f"weights not in the model: {unknown[:5]} (names must be Hugging Face parameter names)")
        for name, array in weights:
            param, array = params[name], np.asarray(array)
            if tuple(array.shape) != tuple(param.shape):
                raise ValueError(f"weight {name}: shape {tuple(array.shape)}, the model's is {tuple(param.shape)}")
            with warnings.catch_warnings():  # a read-only view: the model only ever reads it
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                tensor = torch.from_numpy(array)
            immutable = not array.flags.writeable and array.flags.c_contiguous
            if immutable and tensor.dtype == param.dtype and param.device.type == "cpu":
                param.data = tensor
                self._shared.add(id(param))
            elif id(param) in self._shared:  # never write into a shared buffer: take a private copy again
                param.data = tensor.to(device=param.device, dtype=param.dtype, copy=True)
                self._shared.discard(id(param))
            else:
                param.data.copy_(tensor)

    def stats(self) -> EngineStats:
        self._stats.generate_seconds = self._clock.total()
        return self._stats

    def shutdown(self) -> None:
        """Nothing to stop: the model lives in this process."""
