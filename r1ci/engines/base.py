"""The generation-engine interface: continue token sequences, load new weights.

Engines batch concurrent requests themselves (vLLM's continuous batching, or a small
batching loop for transformers), so the rollout awaits one request per trajectory and
never waits for a whole batch turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()  # generation ends after the first of these strings (kept in the output)
    seed: int | None = None


@dataclass
class Completion:
    token_ids: list[int]  # new tokens only
    logprobs: list[float]  # sampling logprob of each new token
    text: str  # detokenized new tokens
    finish_reason: str  # "stop" (a stop string), "eos", or "length"
    stop_str: str | None = None


@dataclass
class EngineStats:
    generated_tokens: int = 0
    generate_seconds: float = 0.0  # wall time while at least one request was in flight
    requests: int = 0
    weight_version: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.generate_seconds if self.generate_seconds else 0.0


class Engine(Protocol):
    tokenizer: object  # a transformers tokenizer; the rollout encodes observations with it
    max_model_len: int

    async def generate(
        self, prompt_ids: list[int], sampling: Sampling, on_tokens: Callable[[list[int]], None] | None = None
    ) -> Completion:
        """Continue one token sequence; concurrent calls are batched by the engine. `on_tokens`,
        if given, is called on the caller's event loop with each step's new token ids as they
        are sampled (the server streams them), always before the call returns."""

    async def load_weights(self, weights: Iterable[tuple[str, np.ndarray]], version: int, final: bool = True) -> None:
        """Replace the model's weights (HF parameter names, numpy arrays) and record the version.

        A sync may come in parts (one per weight bucket, as they arrive); the engine serves
        `version` once the part marked `final` is in. Async because vLLM's engine is: the
        weights reach its worker through an RPC."""

    def stats(self) -> EngineStats:
        """Counters since start: tokens, seconds, tokens/s, weight version."""

    def shutdown(self) -> None:
        """Stop any processes the engine started (vLLM's engine core and workers)."""


class BusyClock:
    """Wall time during which at least one request was in flight (the denominator of tokens/s)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.seconds = 0.0
        self._since = 0.0

    def start(self) -> None:
        if self.in_flight == 0:
            self._since = time.perf_counter()
        self.in_flight += 1

    def stop(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.seconds += time.perf_counter() - self._since

    def total(self) -> float:
        return self.seconds + (time.perf_counter() - self._since if self.in_flight else 0.0)
