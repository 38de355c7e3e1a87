"""Serving: an OpenAI-compatible chat API whose replies run the code-interpreter loop on the server.

`ChatService` owns request checking, prompt building, the rollout and the response mapping
and is tested without Ray; the Ray Serve deployment is built here too, lazily in `serve_app`,
because it is only HTTP glue over ChatService and importing this module must not need Serve.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations (Request) at runtime.
import asyncio
import dataclasses
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from r1ci import protocol
from r1ci.config import Config
from r1ci.engines.base import Engine, Sampling
from r1ci.rollout import rollout_from_prompt
from r1ci.sandbox.base import Sandbox
from r1ci.trajectory import STOP_ANSWER, STOP_EOS, STOP_ERROR, STOP_LENGTH, STOP_MAX_CALLS, Trajectory

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")

# OpenAI's finish_reason for each trajectory stop reason; STOP_ERROR becomes an HTTP 500 instead.
FINISH_REASONS = {STOP_ANSWER: "stop", STOP_EOS: "stop", STOP_MAX_CALLS: "stop", STOP_LENGTH: "length"}

# Request fields the server refuses unless left at their default, and why.
UNSUPPORTED = {
    "stream": (False, "streaming is not supported: the reply is sent once the episode (all code calls) ends; send stream=false"),
    "stop": (None, "custom stop sequences are not supported: the server stops at closing code fences and the final answer itself"),
    "tools": (None, "tools are not supported: the model's tool is the server's Python interpreter, used through code blocks"),
    "functions": (None, "functions are not supported: the model's tool is the server's Python interpreter, used through code blocks"),
    "tool_choice": (None, "tool_choice is not supported: the model's tool is the server's Python interpreter"),
    "logprobs": (False, "logprobs are not returned by this server"),
    "top_logprobs": (None, "logprobs are not returned by this server"),
    "logit_bias": (None, "logit_bias is not supported"),
    "presence_penalty": (0, "presence_penalty is not supported"),
    "frequency_penalty": (0, "frequency_penalty is not supported"),
}


class RequestError(Exception):
    """A request the server refuses; `body()` is the OpenAI error object sent with `status`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completion request; `max_tokens` counts model and interpreter tokens together."""

    messages: list[dict[str, str]]
    temperature: float
    top_p: float
    max_tokens: int
    n: int
    seed: int | None


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{key} must be a number, got {value!r}", key)
    if value < low or (low_open and value == low) or value > high:
        raise RequestError(f"{key} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value!r}", key)
    return float(value)


def _integer(body: dict, key: str, default: int | None, low: int | None = None, high: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer, got {value!r}", key)
    if low is not None and value < low:
        raise RequestError(f"{key} must be at least {low}, got {value}", key)
    if high is not None and value > high:
        raise RequestError(f"{key} must be at most {high} on this server, got {value}", key)
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise RequestError("messages is required: a list of {role, content} objects", "messages")
    if not isinstance(value, list) or not value:
        raise RequestError(f"messages must be a non-empty list of {{role, content}} objects, got {value!r}"[:300], "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with role and content, got {m!r}"[:300], where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
        if not isinstance(content, str):
            raise RequestError(f"{where}.content must be a string (content parts and images are not supported), "
                               f"got {type(content).__name__}", f"{where}.content")
        out.append({"role": role, "content": content})
    return out


def parse_chat_request(body: Any, cfg: Config) -> ChatRequest:
    """Check a decoded /v1/chat/completions body; raise RequestError (400, or 404 for an unknown model).

    Defaults: temperature `sampling.eval_temperature`, top_p `sampling.top_p`, max_tokens
    `sampling.max_total_tokens` (tokens, model and interpreter output together), n 1.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(f"model is required: this server serves '{cfg.serve.model_name}'", "model")
    if model != cfg.serve.model_name:
        raise RequestError(f"the model '{model}' does not exist: this server serves '{cfg.serve.model_name}'",
                           "model", status=404, code="model_not_found")
    for key, (default, why) in UNSUPPORTED.items():
        value = body.get(key)
        if value is not None and value != default and value != [] and value != {}:
            raise RequestError(f"{key}: {why}", key)
    messages = _messages(body.get("messages"))
    max_tokens = _integer(body, "max_completion_tokens", None, low=1)
    max_tokens = _integer(body, "max_tokens", max_tokens, low=1)
    return ChatRequest(
        messages=messages,
        temperature=_number(body, "temperature", cfg.sampling.eval_temperature, 0.0, 2.0),
        top_p=_number(body, "top_p", cfg.sampling.top_p, 0.0, 1.0, low_open=True),
        max_tokens=max_tokens or cfg.sampling.max_total_tokens,
        n=_integer(body, "n", 1, low=1, high=cfg.serve.max_n),
        seed=_integer(body, "seed", None),
    )


def with_system_prompt(messages: list[dict[str, str]], cfg: Config) -> list[dict[str, str]]:
    """The messages with the protocol's system prompt (style `serve.prompt_style`) first, unless one is there."""
    if any(m["role"] == "system" for m in messages):
        return list(messages)
    return [{"role": "system", "content": protocol.system_prompt(cfg.serve.prompt_style, cfg.protocol)}, *messages]


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]], cfg: Config) -> list[int]:
    """Chat-template token ids of the conversation, ending with the assistant header."""
    messages = with_system_prompt(messages, cfg)
    try:
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
    except Exception as exc:  # e.g. a template that demands alternating user/assistant turns (jinja2 raises)
        raise RequestError(f"the model's chat template refused these messages: {exc}", "messages") from None


def choice(index: int, traj: Trajectory) -> dict:
    """One OpenAI choice: the whole interleaved text (reasoning, code, observations) as the content.

    `r1ci` carries what OpenAI has no field for: the stop reason, code calls, the extracted
    final answer and how many of the completion tokens the model (not the interpreter) wrote.
    """
    return {
        "index": index,
        "message": {"role": "assistant", "content": traj.text},
        "finish_reason": FINISH_REASONS.get(traj.stop_reason, "stop"),
        "logprobs": None,
        "r1ci": {
            "stop_reason": traj.stop_reason,
            "code_calls": traj.code_calls,
            "answer": traj.answer,
            "model_tokens": traj.num_model_tokens,
        },
    }


class ChatService:
    """The server's work for one replica: an engine, a code executor and the config."""

    def __init__(self, engine: Engine, executor: Sandbox, cfg: Config):
        self.engine, self.executor, self.cfg = engine, executor, cfg
        self.created = int(time.time())

    def models(self) -> dict:
        """The /v1/models body: the one model this server serves."""
        return {"object": "list", "data": [self.model_card()]}

    def model_card(self) -> dict:
        return {"id": self.cfg.serve.model_name, "object": "model", "created": self.created, "owned_by": "r1ci",
                "max_model_len": self.engine.max_model_len}

    async def chat(self, body: Any) -> dict:
        """The /v1/chat/completions body for a decoded request; raises RequestError for bad input
        and RuntimeError when the engine or the executor failed."""
        req = parse_chat_request(body, self.cfg)
        prompt = chat_prompt_ids(self.engine.tokenizer, req.messages, self.cfg)
        if len(prompt) >= self.engine.max_model_len:
            raise RequestError(
                f"the messages take {len(prompt)} tokens (chat template and system prompt included) but the model's context is "
                f"{self.engine.max_model_len} tokens (generator.max_model_len): shorten them",
                "messages", code="context_length_exceeded")
        cfg = dataclasses.replace(self.cfg, sampling=dataclasses.replace(self.cfg.sampling, max_total_tokens=req.max_tokens))
        request_id = f"chatcmpl-{uuid.uuid4().hex}"

        async def one(i: int) -> Trajectory:
            sampling = Sampling(
                temperature=req.temperature,
                top_p=req.top_p,
                max_tokens=min(cfg.sampling.max_tokens_per_turn, req.max_tokens),
                seed=None if req.seed is None else req.seed + i,
            )
            traj = Trajectory(task="serve", sample_id=f"{request_id}/{i}", group_id=request_id, prompt_ids=list(prompt),
                              prompt_style=self.cfg.serve.prompt_style)
            return await rollout_from_prompt(self.engine, self.executor, traj, cfg, sampling)

        trajs = await asyncio.gather(*(one(i) for i in range(req.n)))
        failed = [t for t in trajs if t.stop_reason == STOP_ERROR]
        if failed:
            raise RuntimeError(failed[0].error or "the rollout failed")
        completion = sum(len(t.response_ids) for t in trajs)
        return {
            "id": request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.cfg.serve.model_name,
            "choices": [choice(i, t) for i, t in enumerate(trajs)],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": completion, "total_tokens": len(prompt) + completion},
        }

    async def handle_chat(self, raw: bytes) -> tuple[int, dict]:
        """HTTP status and JSON body for a raw request body; never raises (bad input: 400/404, failures: 500)."""
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError) as exc:
            err = RequestError(f"the request body is not valid JSON: {exc}")
            return err.status, err.body()
        try:
            return 200, await self.chat(body)
        except RequestError as exc:
            return exc.status, exc.body()
        except Exception as exc:  # the client gets one line, the replica's log the traceback
            log.exception("chat completion failed")
            err = RequestError(f"the server failed to complete the request: {exc}", status=500, type="server_error")
            return err.status, err.body()

    def close(self) -> None:
        self.engine.shutdown()
        self.executor.close()


def serve_app(cfg: Config, model_dir: str) -> Any:
    """The Ray Serve application: one deployment with `serve.num_replicas` replicas, each loading
    the engine on `model_dir` and a local sandbox; FastAPI routes /v1/models and /v1/chat/completions."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    from r1ci.config import to_dict

    api = FastAPI(title="r1ci", docs_url=None, redoc_url=None, openapi_url=None)
    s = cfg.serve

    @serve.deployment(
        name="ChatServer",
        num_replicas=s.num_replicas,
        max_ongoing_requests=s.max_ongoing_requests,
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
    )
    @serve.ingress(api)
    class ChatServer:
        def __init__(self, cfg_dict: dict, model_dir: str):
            from r1ci.config import from_dict
            from r1ci.engines import make_engine
            from r1ci.sandbox import Executor

            cfg = from_dict(cfg_dict)
            executor = Executor(cfg.sandbox)
            self.service = ChatService(make_engine(cfg, model_dir), executor, cfg)

        @api.get("/v1/models")
        def list_models(self) -> dict:
            return self.service.models()

        @api.get("/v1/models/{model_id}")
        def get_model(self, model_id: str) -> JSONResponse:
            if model_id != self.service.cfg.serve.model_name:
                err = RequestError(f"the model '{model_id}' does not exist: this server serves "
                                   f"'{self.service.cfg.serve.model_name}'", "model", 404, code="model_not_found")
                return JSONResponse(err.body(), status_code=err.status)
            return JSONResponse(self.service.model_card())

        @api.post("/v1/chat/completions")
        async def chat_completions(self, request: Request) -> JSONResponse:
            status, body = await self.service.handle_chat(await request.body())
            return JSONResponse(body, status_code=status)

        def __del__(self):
            service = getattr(self, "service", None)
            if service is not None:
                service.close()

    return ChatServer.bind(to_dict(cfg), model_dir)


def base_url(cfg: Config) -> str:
    """The URL OpenAI clients take as base_url (ends in /v1)."""
    host = "127.0.0.1" if cfg.serve.host in ("0.0.0.0", "::", "") else cfg.serve.host
    prefix = "" if cfg.serve.route_prefix == "/" else cfg.serve.route_prefix
    return f"http://{host}:{cfg.serve.port}{prefix}/v1"


def deploy(cfg: Config, model_dir: str) -> str:
    """Start Serve's HTTP proxy on `serve.host:serve.port` (on the connected Ray) and run the
    application; returns the base URL once every replica has loaded the model."""
    from ray import serve

    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(serve_app(cfg, model_dir), name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
    return base_url(cfg)
