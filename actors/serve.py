"""The Ray Serve side of serving: the ingress deployment that hosts `r1ci.serving`'s app and,
where vLLM serves best, the engine in ray.serve.llm's own LLMServer deployment.

`ChatIngress` replicas each run the interpreter loop with their own sandbox. With
`serve.engine=llm_server` the engine lives in an LLMServer deployment (vLLM, its own replicas,
autoscaling between `serve.llm_min_replicas` and `serve.llm_max_replicas`); the ingress calls it
once per model turn through a deployment handle, token ids in and out (`LLMServerEngine`), so
r1ci's loop, budgets and never-re-tokenized ids are the same whichever side holds the engine.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable

from ray import serve

from r1ci.config import Config, from_dict, to_dict
from r1ci.engines.base import Completion, EngineStats, Sampling
from r1ci.serving import ChatService, base_url, build_api

log = logging.getLogger(__name__)


class LLMServerEngine:
    """r1ci's `Engine` over an LLMServer deployment handle: each `generate` is one completions
    request on token ids (streamed when the caller wants tokens as they come)."""

    def __init__(self, handle: Any, model_dir: str, cfg: Config):
        from transformers import AutoTokenizer

        from r1ci.engines.vllm import engine_args

        self.handle = handle.options(stream=True)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.max_model_len = engine_args(model_dir, cfg)["max_model_len"]
        self.model_id = cfg.serve.model_name
        self._stats = EngineStats()

    async def generate(
        self, prompt_ids: list[int], sampling: Sampling, on_tokens: Callable[[list[int]], None] | None = None
    ) -> Completion:
        from ray.serve.llm.openai_api_models import CompletionRequest

        from r1ci.engines.vllm import finish_reason

        request = CompletionRequest(
            model=self.model_id,
            prompt=list(prompt_ids),
            max_tokens=min(sampling.max_tokens, self.max_model_len - len(prompt_ids)),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop),
            include_stop_str_in_output=True,
            return_token_ids=True,
            logprobs=0,  # the sampled token's logprob only
            stream=on_tokens is not None,
        )
        token_ids: list[int] = []
        logprobs: list[float] = []
        reason, stop = None, None
        async for item in self.handle.completions.remote(request):
            for c in _choices(item):
                new = list(c.get("token_ids") or [])
                token_ids += new
                logprobs += list((c.get("logprobs") or {}).get("token_logprobs") or [])
                if c.get("finish_reason"):
                    reason, stop = c["finish_reason"], c.get("stop_reason")
                if new and on_tokens is not None:
                    on_tokens(new)
        self._stats.generated_tokens += len(token_ids)
        self._stats.requests += 1
        reason = finish_reason(reason, stop)
        return Completion(token_ids, logprobs, self.tokenizer.decode(token_ids, skip_special_tokens=True), reason,
                          stop if reason == "stop" else None)

    async def load_weights(self, weights: Iterable, version: int, final: bool = True) -> None:
        raise NotImplementedError("an LLMServer deployment serves the checkpoint it was started on; redeploy to change it")

    def stats(self) -> EngineStats:
        return self._stats

    def shutdown(self) -> None:
        """Nothing to stop: Serve owns the LLMServer deployment."""


def _choices(item: Any) -> list[dict]:
    """The choices of one item an LLMServer stream yields: a response object (not streamed), or a
    batch of server-sent events (streamed); an error from the engine raises."""
    events = item if isinstance(item, list) else [item]
    out = []
    for event in events:
        if isinstance(event, str):
            data = event.strip().removeprefix("data:").strip()
            if not data or data == "[DONE]":
                continue
            event = json.loads(data)
        elif hasattr(event, "model_dump"):
            event = event.model_dump()
        if event.get("error"):
            raise RuntimeError(f"LLMServer: {event['error'].get('message', event['error'])}")
        out += event.get("choices") or []
    return out


def llm_config(cfg: Config, model_dir: str) -> Any:
    """The ray.serve.llm LLMConfig for `model_dir`: the same vLLM arguments and environment as
    r1ci's own engine (plus vLLM's engine metrics, which LLMServer exports to Ray's Prometheus
    endpoint), CPU or GPU bundles from `serve.llm_num_cpus` and `serve.llm_num_gpus`."""
    import ray
    from ray.serve.llm import LLMConfig

    from r1ci.engines.vllm import engine_args, engine_env

    s = cfg.serve
    scaling = ({"autoscaling_config": {"min_replicas": s.llm_min_replicas, "max_replicas": s.llm_max_replicas}}
               if s.llm_max_replicas > s.llm_min_replicas else {"num_replicas": s.llm_min_replicas})
    gpus = s.llm_num_gpus
    return LLMConfig(
        model_loading_config={"model_id": s.model_name, "model_source": model_dir},
        accelerator_config={"kind": "gpu" if gpus else "cpu"},
        placement_group_config={"bundles": [{"CPU": s.llm_num_cpus, **({"GPU": 1} if gpus else {})}] * max(1, gpus)},
        engine_kwargs={**engine_args(model_dir, cfg), "disable_log_stats": False,
                       **({"tensor_parallel_size": gpus} if gpus > 1 else {})},
        # LLMServer puts these env_vars in place of the job's own (loopback-only Ray, log folder): keep both
        runtime_env={"env_vars": {**ray.get_runtime_context().runtime_env.get("env_vars", {}), **engine_env(cfg)}},
        deployment_config={**scaling, "ray_actor_options": {"num_cpus": 0}},  # the bundle's CPUs are the engine's
    )


@serve.ingress()
class ChatIngress:
    """One ingress replica: `r1ci.serving.ChatService` (engine here, or an LLMServer handle) and its own sandbox."""

    def __init__(self, cfg_dict: dict, model_dir: str, llm: Any = None):
        from r1ci.engines import make_engine
        from r1ci.sandbox import Executor

        cfg = from_dict(cfg_dict)
        engine = LLMServerEngine(llm, model_dir, cfg) if llm is not None else make_engine(cfg, model_dir)
        self.service = ChatService(engine, Executor(cfg.sandbox), cfg)

    def __serve_build_asgi_app__(self) -> Any:
        return build_api(self.service, echo_request_id=False)  # Serve's proxy sets and echoes x-request-id

    def check_health(self) -> None:
        """Serve's periodic health check: raises once the service is closed, and Serve replaces the replica."""
        self.service.health()

    def __del__(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            service.close()


def serve_app(cfg: Config, model_dir: str) -> Any:
    """The Serve application: `serve.num_replicas` ingress replicas, and an LLMServer deployment
    they call when the engine runs there (`serve.engine=llm_server`)."""
    s = cfg.serve
    ingress = serve.deployment(ChatIngress).options(
        name="ChatIngress",
        num_replicas=s.num_replicas,
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
    )
    if cfg.serve.engine != "llm_server":
        return ingress.bind(to_dict(cfg), model_dir)
    from ray.serve.llm.deployment import LLMServer

    config = llm_config(cfg, model_dir)
    llm = serve.deployment(LLMServer).options(name="LLMServer", **LLMServer.get_deployment_options(config)).bind(config)
    return ingress.bind(to_dict(cfg), model_dir, llm)


def deploy(cfg: Config, model_dir: str) -> str:
    """Start Serve's HTTP proxy on `serve.host:serve.port` (on the connected Ray) and run the
    application; returns the base URL once every replica has loaded its model. On a cluster
    where Serve already runs, its proxy keeps the address it was started with: the URL
    returned is that one, and a warning says serve.host/serve.port did not apply."""
    from ray.serve.context import _get_global_client  # the one way to read the proxy's address back

    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    http = _get_global_client().http_config
    if (http.host, http.port) != (cfg.serve.host, cfg.serve.port):
        log.warning("Serve already runs on this cluster with its HTTP proxy on %s:%d, so serve.host/serve.port (%s:%d) "
                    "do not apply; the application is served there", http.host, http.port, cfg.serve.host, cfg.serve.port)
    serve.run(serve_app(cfg, model_dir), name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
    return base_url(cfg, http.host, http.port)
