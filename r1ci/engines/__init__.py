"""Generation engines behind one interface; `make_engine` is the one place a backend is chosen.

Backends are imported lazily, so a CPU test of the transformers engine never imports vLLM.
"""

from __future__ import annotations

from r1ci.config import Config
from r1ci.engines.base import Completion, Engine, EngineStats, Sampling

__all__ = ["Completion", "Engine", "EngineStats", "Sampling", "make_engine"]


def make_engine(cfg: Config, model_dir: str) -> Engine:
    """The engine named by `cfg.generator.backend` ("vllm" or "hf") on a resolved model folder."""
    if cfg.generator.backend == "vllm":
        from r1ci.engines.vllm import VLLMEngine

        return VLLMEngine(model_dir, cfg)
    if cfg.generator.backend == "hf":
        from r1ci.engines.hf import HFEngine

        return HFEngine(model_dir, cfg)
    raise ValueError(f"generator.backend: unknown engine '{cfg.generator.backend}'; choose vllm or hf")
