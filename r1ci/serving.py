"""Serving: an OpenAI-compatible chat API whose replies run the code-interpreter loop on the server.

`ChatService` owns request checking, prompt building, the rollout and the response mapping,
whole or streamed as server-sent events; `build_api` puts it behind HTTP routes (FastAPI)
with OpenAI-style errors for every failure, size and depth limits, request ids and metrics.
No Ray here: `actors/serve.py` hosts the app in a Ray Serve deployment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException

from r1ci import protocol
from r1ci.config import Config
from r1ci.engines.base import Completion, Engine, Sampling
from r1ci.rollout import rollout_from_prompt
from r1ci.sandbox.base import ExecResult, Sandbox
from r1ci.trajectory import STOP_ANSWER, STOP_EOS, STOP_ERROR, STOP_LENGTH, STOP_MAX_CALLS, Trajectory

log = logging.getLogger(__name__)

# OpenAI's finish_reason for each trajectory stop reason; STOP_ERROR becomes an HTTP 500 instead.
FINISH_REASONS = {STOP_ANSWER: "stop", STOP_EOS: "stop", STOP_MAX_CALLS: "stop", STOP_LENGTH: "length"}

# "developer" is OpenAI's newer name for the system role.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

# Temperatures above 0 but below this sample greedily, as vLLM does: logits / T would overflow.
GREEDY_BELOW = 1e-5

INT64 = (-(2**63), 2**63 - 1)

# OpenAI request fields the server refuses unless absent or at their no-op value, and why.
UNSUPPORTED = {
    "stop": ((None, [], ""), "custom stop sequences are not supported: the server stops at closing code fences and the final answer itself"),
    "tools": ((None, []), "tools are not supported: the model's tool is the server's Python interpreter, used through code blocks"),
    "tool_choice": ((None, "none"), "tool_choice is not supported: the model's tool is the server's Python interpreter"),
    "functions": ((None, []), "functions are not supported: the model's tool is the server's Python interpreter, used through code blocks"),
    "function_call": ((None, "none"), "function_call is not supported: the model's tool is the server's Python interpreter"),
    "logprobs": ((None, False), "logprobs are not returned by this server"),
    "top_logprobs": ((None, 0), "logprobs are not returned by this server"),
    "logit_bias": ((None, {}), "logit_bias is not supported"),
    "presence_penalty": ((None, 0), "presence_penalty is not supported"),
    "frequency_penalty": ((None, 0), "frequency_penalty is not supported"),
    "response_format": ((None, {"type": "text"}), "response_format is not supported: replies are text with code blocks and <<<answer>>>"),
    "modalities": ((None, ["text"]), "only the text modality is supported"),
    "audio": ((None,), "audio output is not supported"),
    "prediction": ((None,), "predicted outputs are not supported"),
    "reasoning_effort": ((None,), "reasoning_effort is not supported: the model reasons with the interpreter until it answers"),
    "verbosity": ((None,), "verbosity is not supported"),
    "web_search_options": ((None,), "web search is not supported"),
}

# OpenAI request fields that change nothing here; checked for their type, then ignored.
IGNORED = {"user": str, "metadata": dict, "store": bool, "service_tier": str, "parallel_tool_calls": bool,
           "safety_identifier": str, "prompt_cache_key": str}

USED = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed", "stream",
        "stream_options"}

MESSAGE_FIELDS = {"role", "content", "name"}


class RequestError(Exception):
    """A request the server refuses or could not complete; `body()` is the OpenAI error object sent with `status`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", code: str | None = None, headers: dict | None = None):
        message, param = _printable(message), None if param is None else _printable(param)
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _printable(text: str) -> str:
    """Text that encodes as UTF-8: an error quoting the client's own words (a field name, a model
    id) may hold a lone surrogate from a JSON escape, which would fail the error response itself."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def server_error(message: str) -> RequestError:
    return RequestError(message, status=500, type="server_error", code="server_error")


# -- the body: bytes to JSON, with every limit checked before the parser sees it ------------------

# Possessive, and an unterminated string runs to the end: one pass, never a rescan from inside a
# string (the plain pattern rescans from every quote of '"\\"\\"...' and takes quadratic time).
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in JSON text, found without parsing it (strings skipped)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode()
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)).max())


def _constant(name: str) -> Any:
    raise RequestError(f"the request body contains {name}, which is not valid JSON: numbers must be finite")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(f"the request body contains the number {text[:40]}, which overflows: numbers must be finite")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(f"the request body gives the field '{key[:80]}' twice: give each field once", key[:80])
        out[key] = value
    return out


def decode_body(raw: bytes, max_depth: int) -> Any:
    """The JSON value of a request body: strict UTF-8, nesting at most `max_depth` (checked before
    parsing), finite numbers only (no NaN, Infinity or overflowing exponents), no duplicated keys."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the request body is not valid UTF-8 (byte {exc.start}): send UTF-8 JSON") from None
    if not text.strip():
        raise RequestError("the request body is empty: send a JSON object with model and messages")
    depth = json_depth(text)
    if depth > max_depth:
        raise RequestError(f"the request body nests arrays and objects {depth} deep; this server accepts at most "
                           f"{max_depth} (serve.max_json_depth)")
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_finite, object_pairs_hook=_object)
    except RequestError:
        raise
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"the request body is not valid JSON: {str(exc)[:200]}") from None


def check_content_type(value: str | None) -> None:
    """Refuse (415) a body that is not declared as UTF-8 JSON."""
    media, _, params = (value or "").partition(";")
    charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, re.I)
    if media.strip().lower() != "application/json" or (charset and charset.group(1).lower() not in ("utf-8", "utf8")):
        raise RequestError(f"the request's Content-Type is {value!r}: send the body as application/json (UTF-8)"[:300],
                           status=415, code="unsupported_media_type")


# -- the request: a decoded body to a checked ChatRequest --------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completion request. `max_tokens` (None: as many as fit) counts model and
    interpreter tokens together."""

    messages: list[dict[str, str]]
    temperature: float
    top_p: float
    max_tokens: int | None
    n: int
    seed: int | None
    stream: bool = False
    include_usage: bool = False


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{key} must be a number, got {_show(value)}", key)
    if value < low or (low_open and value == low) or value > high:
        raise RequestError(f"{key} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value!r}"[:300], key)
    return float(value)


def _integer(body: dict, key: str, default: int | None, low: int, high: int, why: str = "") -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer, got {_show(value)}", key)
    if value < low:
        raise RequestError(f"{key} must be at least {low}, got {value}"[:300], key)
    if value > high:
        raise RequestError(f"{key} must be at most {high}{why}, got {value}"[:300], key)
    return value


def _same(value: Any, allowed: Any) -> bool:
    """Equal, and a bool only to a bool (0.0 is 0, False is not)."""
    return value == allowed and isinstance(value, bool) == isinstance(allowed, bool)


def _show(value: Any) -> str:
    return repr(value)[:80] if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def _text(value: Any, where: str) -> str:
    """A string that is valid Unicode (JSON escapes can smuggle in lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"{where} contains an unpaired surrogate ({value[exc.start]!r}): send valid Unicode", where) from None
    return value


def _content(value: Any, where: str) -> str:
    """A message's text: a non-empty string, or a non-empty list of text parts (joined by newlines)."""
    if isinstance(value, str):
        if not value:
            raise RequestError(f"{where} is empty: give the message some text", where)
        return _text(value, where)
    if isinstance(value, list) and value:
        texts = []
        for j, part in enumerate(value):
            at = f"{where}[{j}]"
            if not isinstance(part, dict):
                raise RequestError(f"{at} must be an object like {{\"type\": \"text\", \"text\": \"...\"}}, got {_show(part)}", at)
            if part.get("type") != "text":
                raise RequestError(f"{at}.type is {_show(part.get('type'))}: only text parts are supported "
                                   "(no images, audio or files)", f"{at}.type")
            extra = sorted(set(part) - {"type", "text"})
            if extra:
                raise RequestError(f"{at}.{extra[0][:80]}: unrecognized field of a text part", f"{at}.{extra[0][:80]}")
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{at}.text must be a string, got {_show(part.get('text'))}", f"{at}.text")
            texts.append(_text(part["text"], f"{at}.text"))
        if not any(texts):
            raise RequestError(f"{where} has only empty text parts: give the message some text", where)
        return "\n".join(texts)
    if value is None:
        raise RequestError(f"{where} is missing: every message needs text content", where)
    raise RequestError(f"{where} must be a string or a list of text parts, got {_show(value)}", where)


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise RequestError("messages is required: a list of {role, content} objects", "messages")
    if not isinstance(value, list) or not value:
        raise RequestError(f"messages must be a non-empty list of {{role, content}} objects, got {_show(value)}", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with role and content, got {_show(m)}", where)
        role = m.get("role")
        if role in ("tool", "function"):
            raise RequestError(f"{where}.role is '{role}': tool messages are not supported (the server runs the "
                               "model's code itself); use system, user or assistant", f"{where}.role")
        if not isinstance(role, str) or role not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {_show(role)}", f"{where}.role")
        extra = sorted(set(m) - MESSAGE_FIELDS)
        if extra:
            raise RequestError(f"{where}.{extra[0][:80]}: not supported in a message (only role, content and name)",
                               f"{where}.{extra[0][:80]}")
        if "name" in m and not isinstance(m["name"], str):
            raise RequestError(f"{where}.name must be a string, got {_show(m['name'])}", f"{where}.name")
        out.append({"role": ROLES[role], "content": _content(m.get("content"), f"{where}.content")})
    return out


def parse_chat_request(body: Any, cfg: Config, max_model_len: int) -> ChatRequest:
    """Check a decoded /v1/chat/completions body; raise RequestError (400, or 404 for an unknown model).

    Defaults: temperature `sampling.eval_temperature`, top_p `sampling.top_p`, n 1, max_tokens
    as many as fit the context, at most `sampling.max_total_tokens` (tokens, model and interpreter
    output together). The prompt's own length is checked once it is tokenized (`ChatService.prepare`).
    """
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - USED - set(UNSUPPORTED) - set(IGNORED))
    if unknown:
        raise RequestError(f"unrecognized request argument supplied: {unknown[0][:80]}", unknown[0][:80])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(f"model is required: this server serves '{cfg.serve.model_name}'", "model")
    if model != cfg.serve.model_name:
        raise RequestError(f"the model '{model[:80]}' does not exist: this server serves '{cfg.serve.model_name}'",
                           "model", status=404, code="model_not_found")
    for key, (allowed, why) in UNSUPPORTED.items():
        if key in body and not any(_same(body[key], a) for a in allowed):
            raise RequestError(f"{key}: {why}", key)
    for key, typ in IGNORED.items():
        if body.get(key) is not None and not isinstance(body[key], typ):
            raise RequestError(f"{key} must be a {typ.__name__}, got {_show(body[key])}", key)
    messages = _messages(body.get("messages"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(f"stream must be true or false, got {_show(stream)}", "stream")
    include_usage = _stream_options(body.get("stream_options"), bool(stream))
    context = " (the model's context, generator.max_model_len)"
    limit = _integer(body, "max_completion_tokens", None, 1, max_model_len - 1, context)
    limit = _integer(body, "max_tokens", limit, 1, max_model_len - 1, context)
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") not in (None, limit):
        raise RequestError("max_tokens and max_completion_tokens differ: give one of them", "max_tokens")
    temperature = _number(body, "temperature", cfg.sampling.eval_temperature, 0.0, 2.0)
    return ChatRequest(
        messages=messages,
        temperature=0.0 if temperature < GREEDY_BELOW else temperature,
        top_p=_number(body, "top_p", cfg.sampling.top_p, 0.0, 1.0, low_open=True),
        max_tokens=limit,
        n=_integer(body, "n", 1, 1, cfg.serve.max_n, " on this server (serve.max_n)"),
        seed=_integer(body, "seed", None, *INT64),
        stream=bool(stream),
        include_usage=include_usage,
    )


def _stream_options(value: Any, stream: bool) -> bool:
    """include_usage from stream_options, which only a streamed request may carry."""
    if value is None:
        return False
    if not stream:
        raise RequestError("stream_options is only allowed when stream is true", "stream_options")
    if not isinstance(value, dict):
        raise RequestError(f"stream_options must be an object, got {_show(value)}", "stream_options")
    extra = sorted(set(value) - {"include_usage"})
    if extra:
        raise RequestError(f"stream_options.{extra[0][:80]}: not supported (only include_usage)", "stream_options")
    usage = value.get("include_usage", False)
    if not isinstance(usage, bool):
        raise RequestError(f"stream_options.include_usage must be true or false, got {_show(usage)}", "stream_options")
    return usage


# -- prompts and replies ----------------------------------------------------------------------------


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
        raise RequestError(f"the model's chat template refused these messages: {str(exc)[:300]}", "messages") from None


def longest_token_chars(tokenizer: Any) -> int:
    """Characters in the vocabulary's longest token: a prompt of C characters has at least C / this tokens."""
    return max(len(t or "") for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))


def r1ci_extras(traj: Trajectory) -> dict:
    """What OpenAI has no field for: the stop reason, code calls, the extracted final answer and
    how many of the completion tokens the model (not the interpreter) wrote."""
    return {"stop_reason": traj.stop_reason, "code_calls": traj.code_calls, "answer": traj.answer,
            "model_tokens": traj.num_model_tokens}


def choice(index: int, traj: Trajectory) -> dict:
    """One OpenAI choice: the whole interleaved text (reasoning, code, observations) as the content."""
    return {
        "index": index,
        "message": {"role": "assistant", "content": traj.text},
        "finish_reason": FINISH_REASONS.get(traj.stop_reason, "stop"),
        "logprobs": None,
        "r1ci": r1ci_extras(traj),
    }


def usage(prompt_tokens: int, trajs: list[Trajectory]) -> dict:
    completion = sum(len(t.response_ids) for t in trajs)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def sse(data: dict | str) -> bytes:
    """One server-sent event carrying `data` (a JSON object, or the literal [DONE])."""
    return b"data: " + (data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)).encode() + b"\n\n"


# -- metrics ------------------------------------------------------------------------------------------

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


class ServeMetrics:
    """Prometheus counters of one replica (requests, code calls, tokens and their outcomes), exposed
    at /metrics; Serve's own ray_serve_* metrics count requests across replicas too."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active = 0  # requests being answered now
        r = self.registry
        self.requests = Counter("r1ci_requests", "HTTP requests by route and status.", ["route", "status"], registry=r)
        self.request_seconds = Histogram("r1ci_request_seconds", "Request latency until the last byte, seconds.",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        Gauge("r1ci_requests_in_flight", "Requests being answered now.", registry=r).set_function(lambda: self.active)
        self.first_token_seconds = Histogram("r1ci_time_to_first_token_seconds",
                                             "Streamed requests: seconds until the first model token.",
                                             buckets=LATENCY_BUCKETS, registry=r)
        self.code_calls = Counter("r1ci_code_calls", "Code calls by outcome: ok, error (exception or nonzero exit), "
                                  "timeout, killed (a limit), executor_failed (the sandbox, not the code).",
                                  ["outcome"], registry=r)
        self.code_call_seconds = Histogram("r1ci_code_call_seconds", "Code-call latency, seconds.",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("r1ci_tokens", "Tokens by kind: prompt, model (written by the model), "
                              "interpreter (observations).", ["kind"], registry=r)
        self.choices = Counter("r1ci_choices", "Finished choices by stop reason.", ["stop_reason"], registry=r)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def code_call(self, result: ExecResult, seconds: float) -> None:
        if result.executor_failed:
            outcome = "executor_failed"
        elif result.timed_out:
            outcome = "timeout"
        elif result.killed_reason:
            outcome = "killed"
        else:
            outcome = "ok" if result.exit_code == 0 else "error"
        self.code_calls.labels(outcome).inc()
        self.code_call_seconds.observe(seconds)

    def trajectories(self, prompt_tokens: int, trajs: list[Trajectory]) -> None:
        self.tokens.labels("prompt").inc(prompt_tokens)
        for t in trajs:
            self.tokens.labels("model").inc(t.num_model_tokens)
            self.tokens.labels("interpreter").inc(len(t.response_ids) - t.num_model_tokens)
            self.choices.labels(t.stop_reason).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class CodeCalls:
    """The replica's executor as its rollouts see it: a call the executor itself failed (its fork
    server died mid-run, perhaps killed by another request's code) runs again, up to
    `serve.code_call_retries` times and one rerun at a time, so one request's code cannot fail
    another request; every call is counted in the metrics."""

    def __init__(self, executor: Sandbox, retries: int, metrics: ServeMetrics):
        self.executor, self.retries, self.metrics = executor, retries, metrics
        self._rerun = asyncio.Lock()

    async def _call(self, code: str, timeout: float | None) -> ExecResult:
        start = time.perf_counter()
        result = await self.executor.arun(code, timeout)
        self.metrics.code_call(result, time.perf_counter() - start)
        return result

    async def arun(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run one snippet; `timeout` in seconds (the sandbox's own default when None)."""
        result = await self._call(code, timeout)
        for _ in range(self.retries):
            if not result.executor_failed:
                break
            async with self._rerun:
                result = await self._call(code, timeout)
        return result


# -- the service ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A checked request with its prompt tokenized and its token budget fixed."""

    request: ChatRequest
    prompt_ids: list[int]
    max_tokens: int


class StreamingEngine:
    """An engine view that hands every token it samples to `on_tokens` (one per choice)."""

    def __init__(self, engine: Engine, on_tokens: Callable[[list[int]], None]):
        self.engine, self.on_tokens = engine, on_tokens
        self.tokenizer, self.max_model_len = engine.tokenizer, engine.max_model_len

    async def generate(self, prompt_ids: list[int], sampling: Sampling) -> Completion:
        return await self.engine.generate(prompt_ids, sampling, on_tokens=self.on_tokens)


class StreamedChoice:
    """What one streamed choice has sent: the text of its current model turn is decoded as its
    tokens arrive, a few tokens at a time (held back while it ends in a partial character), the
    interpreter's output is sent whole, and what was sent is always a prefix of the final content.
    Each decode covers the last step's tokens and the step before it (as vLLM's incremental
    detokenizer does), so a turn of T tokens costs O(T) decoding on the event loop, not O(T^2)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.turn_ids: list[int] = []
        self.turn_sent = ""  # text of the current turn already sent
        self.prefix_at = self.read_at = 0  # turn_ids[prefix_at:read_at] was decoded last time, for context
        self.sent_chars = 0
        self.code_calls = 0
        self.first_token_at: float | None = None

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def model_text(self, final: bool = False) -> str:
        """The turn's text not sent yet; `final` (the turn ended) decodes the whole turn once."""
        if final:
            text = self._decode(self.turn_ids)
            if not text.startswith(self.turn_sent):  # the decoder changed its mind: the reply's end sends the rest
                return ""
            delta = text[len(self.turn_sent):]
        else:
            before = self._decode(self.turn_ids[self.prefix_at:self.read_at])
            text = self._decode(self.turn_ids[self.prefix_at:])
            if len(text) <= len(before) or text.endswith("\ufffd") or not text.startswith(before):
                return ""  # nothing new, or a partial character: wait for the next tokens
            delta = text[len(before):]
            self.prefix_at, self.read_at = self.read_at, len(self.turn_ids)
        self.turn_sent += delta
        self.sent_chars += len(delta)
        return delta

    def observation(self, text: str) -> tuple[str, str]:
        """(rest of the model's turn, the observation) when a code call returns."""
        rest = self.model_text(final=True)
        self.turn_ids, self.turn_sent, self.prefix_at, self.read_at = [], "", 0, 0
        self.code_calls += 1
        self.sent_chars += len(text)
        return rest, text

    def rest(self, content: str) -> str:
        """The part of the final content not sent yet."""
        return content[self.sent_chars:]


def _plain(part: dict) -> bool:
    """A stream part that is only model text (no role, finish reason or r1ci extras)."""
    return part["finish_reason"] is None and "r1ci" not in part and set(part["delta"]) == {"content"}


def pack_chunks(parts: list[dict]) -> list[list[dict]]:
    """Stream parts, in order, packed into as few chunks as carry at most one part per choice
    index (OpenAI clients read one delta per choice from a chunk): a choice's consecutive model
    text merges, anything else for a choice already in the chunk starts the next chunk."""
    chunks: list[list[dict]] = [[]]
    for part in parts:
        same = next((q for q in chunks[-1] if q["index"] == part["index"]), None)
        if same is None:
            chunks[-1].append(part)
        elif _plain(same) and _plain(part):
            same["delta"]["content"] += part["delta"]["content"]
        else:
            chunks.append([part])
    return [c for c in chunks if c]


def _outcome(task: asyncio.Task) -> tuple[Trajectory | None, str]:
    """A finished rollout task's trajectory, or None and why it failed."""
    if task.cancelled():
        return None, "the rollout was cancelled"
    if task.exception() is not None:
        return None, f"rollout failed: {task.exception()!r}"
    traj = task.result()
    return (None, traj.error) if traj.stop_reason == STOP_ERROR else (traj, "")


class ChatService:
    """The server's work for one replica: an engine, a code executor, the config and the metrics."""

    def __init__(self, engine: Engine, executor: Sandbox, cfg: Config):
        self.engine, self.executor, self.cfg = engine, executor, cfg
        self.metrics = ServeMetrics()
        self.code = CodeCalls(executor, cfg.serve.code_call_retries, self.metrics)
        self.created = int(time.time())
        self.max_token_chars = longest_token_chars(engine.tokenizer)
        self.closed = False

    def models(self) -> dict:
        """The /v1/models body: the one model this server serves."""
        return {"object": "list", "data": [self.model_card()]}

    def model_card(self) -> dict:
        return {"id": self.cfg.serve.model_name, "object": "model", "created": self.created, "owned_by": "r1ci",
                "max_model_len": self.engine.max_model_len}

    def health(self) -> dict:
        """The /health body; raises RequestError (503) once the service is closed."""
        if self.closed:
            raise RequestError("the server is shutting down", status=503, type="server_error", code="unavailable")
        return {"status": "ok", "model": self.cfg.serve.model_name, "in_flight": self.metrics.active}

    async def prepare(self, raw: bytes) -> Prepared:
        """Check a raw body and tokenize its prompt, both off the event loop; raises RequestError."""
        return await asyncio.to_thread(self._prepare, raw)

    def _prepare(self, raw: bytes) -> Prepared:
        context = self.engine.max_model_len
        req = parse_chat_request(decode_body(raw, self.cfg.serve.max_json_depth), self.cfg, context)
        # too long for sure (each message takes a token at least): not worth rendering and tokenizing
        at_least = max(sum(len(m["content"]) for m in req.messages) // self.max_token_chars, len(req.messages))
        if at_least > context:
            raise self._too_long(f"at least {at_least}")
        prompt = chat_prompt_ids(self.engine.tokenizer, req.messages, self.cfg)
        room = context - len(prompt)
        if room <= 0:
            raise self._too_long(str(len(prompt)))
        if req.max_tokens is not None and req.max_tokens > room:
            raise RequestError(
                f"the model's context is {context} tokens (generator.max_model_len), but {len(prompt) + req.max_tokens} "
                f"were asked for ({len(prompt)} in the messages, {req.max_tokens} in the completion): lower max_tokens "
                "or shorten the messages", "max_tokens", code="context_length_exceeded")
        return Prepared(req, prompt, req.max_tokens or min(room, self.cfg.sampling.max_total_tokens))

    def _too_long(self, tokens: str) -> RequestError:
        return RequestError(
            f"the messages take {tokens} tokens (chat template and system prompt included) but the model's context is "
            f"{self.engine.max_model_len} tokens (generator.max_model_len): shorten them",
            "messages", code="context_length_exceeded")

    async def _rollout(self, prep: Prepared, request_id: str, i: int, engine: Engine | None = None,
                       on_observation: Callable[[str], None] | None = None) -> Trajectory:
        req = prep.request
        sampling = Sampling(
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=min(self.cfg.sampling.max_tokens_per_turn, prep.max_tokens),
            seed=None if req.seed is None else req.seed + i,
        )
        cfg = dataclasses.replace(self.cfg, sampling=dataclasses.replace(self.cfg.sampling, max_total_tokens=prep.max_tokens))
        traj = Trajectory(task="serve", sample_id=f"{request_id}/{i}", group_id=request_id, prompt_ids=list(prep.prompt_ids),
                          prompt_style=self.cfg.serve.prompt_style)
        return await rollout_from_prompt(engine or self.engine, self.code, traj, cfg, sampling, on_observation=on_observation)

    def _finished(self, prep: Prepared, trajs: list[Trajectory]) -> None:
        """Count the trajectories; raise a 500 when one of them failed (its error names the engine or executor)."""
        self.metrics.trajectories(len(prep.prompt_ids), trajs)
        failed = [t for t in trajs if t.stop_reason == STOP_ERROR]
        if failed:
            raise server_error(f"the server failed to complete the request: {failed[0].error}"[:500])

    async def complete(self, prep: Prepared, request_id: str) -> dict:
        """The chat.completion body; raises RequestError (500) when the engine or the executor failed."""
        trajs = list(await asyncio.gather(*(self._rollout(prep, request_id, i) for i in range(prep.request.n))))
        self._finished(prep, trajs)
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.cfg.serve.model_name,
            "choices": [choice(i, t) for i, t in enumerate(trajs)],
            "usage": usage(len(prep.prompt_ids), trajs),
        }

    async def stream(self, prep: Prepared, request_id: str) -> AsyncIterator[bytes]:
        """Server-sent chat.completion.chunk events: each choice's model tokens as they are sampled,
        the interpreter's output as each code call returns, a last chunk per choice with its
        finish_reason and r1ci extras, usage if asked, then [DONE]. A failure mid-stream is an
        error event. Leaving early (the client went away) cancels the rollouts."""
        n, start = prep.request.n, time.perf_counter()
        events: asyncio.Queue = asyncio.Queue()
        choices = [StreamedChoice(self.engine.tokenizer) for _ in range(n)]

        def rollout(i: int) -> asyncio.Task:
            engine = StreamingEngine(self.engine, lambda ids: events.put_nowait((i, "tokens", ids)))
            task = asyncio.create_task(self._rollout(prep, request_id, i, engine, lambda text: events.put_nowait((i, "observation", text))))
            task.add_done_callback(lambda t: events.put_nowait((i, "done", t)))
            return task

        head = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.cfg.serve.model_name}

        def chunk(parts: list[dict]) -> bytes:
            return sse({**head, "choices": parts, **({"usage": None} if prep.request.include_usage else {})})

        def part(i: int, delta: dict, finish: str | None = None, **extra: Any) -> dict:
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}

        tasks = [rollout(i) for i in range(n)]
        trajs: list[Trajectory | None] = [None] * n
        try:
            yield chunk([part(i, {"role": "assistant", "content": ""}) for i in range(n)])
            while any(t is None for t in trajs):
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                parts, fresh = [], set()  # fresh: choices with tokens not decoded yet, decoded once per batch
                for i, kind, payload in batch:
                    c = choices[i]
                    if kind == "tokens":
                        if c.first_token_at is None:
                            c.first_token_at = time.perf_counter()
                            self.metrics.first_token_seconds.observe(c.first_token_at - start)
                        c.turn_ids += payload
                        fresh.add(i)
                        continue
                    fresh.discard(i)  # an observation or the end sends the turn's text first
                    if kind == "observation":
                        rest, text = c.observation(payload)
                        if rest:
                            parts.append(part(i, {"content": rest}))
                        parts.append(part(i, {"content": text}, r1ci={"source": "interpreter", "code_call": c.code_calls}))
                    else:
                        traj, why = _outcome(payload)
                        if traj is None:
                            self.metrics.trajectories(len(prep.prompt_ids), [t for t in trajs if t is not None])
                            log.error("request %s: choice %d failed: %s", request_id, i, why)
                            for out in [chunk(packed) for packed in pack_chunks(parts)] + [
                                    sse(server_error(f"the server failed to complete the request: {why}"[:500]).body()),
                                    sse("[DONE]")]:
                                yield out
                            return
                        trajs[i] = traj
                        rest = c.rest(traj.text)
                        if rest:
                            parts.append(part(i, {"content": rest}))
                        parts.append(part(i, {}, FINISH_REASONS.get(traj.stop_reason, "stop"), r1ci=r1ci_extras(traj)))
                for i in sorted(fresh):
                    text = choices[i].model_text()
                    if text:
                        parts.append(part(i, {"content": text}))
                for packed in pack_chunks(parts):
                    yield chunk(packed)
            done = [t for t in trajs if t is not None]
            self._finished(prep, done)
            if prep.request.include_usage:
                yield sse({**head, "choices": [], "usage": usage(len(prep.prompt_ids), done)})
            yield sse("[DONE]")
        finally:
            for task in tasks:
                task.cancel()

    def close(self) -> None:
        self.closed = True
        self.engine.shutdown()
        self.executor.close()


# -- HTTP ---------------------------------------------------------------------------------------------------

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

ROUTES = ("/v1/chat/completions", "/v1/models", "/health", "/metrics")


def _route(path: str) -> str:
    """The metrics label for a path: a known route, or 'other' (so clients cannot grow the label set)."""
    return next((r for r in ROUTES if path == r or path.startswith(r + "/")), "other")


async def read_body(receive_chunks: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The request body, refused with a 413 once it is declared or found to exceed `limit` bytes."""
    too_big = RequestError(f"the request body is larger than {limit} bytes (serve.max_request_bytes): send less",
                           status=413, code="request_too_large")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(f"the Content-Length header {declared[:40]!r} is not a number")
        if int(declared) > limit:
            raise too_big
    body = bytearray()
    async for piece in receive_chunks:
        body += piece
        if len(body) > limit:
            raise too_big
    return bytes(body)


def build_api(service: ChatService, echo_request_id: bool = True) -> FastAPI:
    """The ASGI app: POST /v1/chat/completions, GET /v1/models[/id], /health and /metrics.

    Every answer that is not a result is an OpenAI error object with its status (400, 404 for an
    unknown model or route, 405, 413, 415, 500, 503). Each request has an id: the client's
    `x-request-id` header, or a new one; `echo_request_id` sends it back in that header (Ray
    Serve's proxy, which sets and echoes the header itself, does not need it).
    """
    api = FastAPI(title="r1ci", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = service.metrics

    def error(exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            return error(RequestError(f"{request.method} is not allowed on {request.url.path[:200]}: use {allow}",
                                      status=405, code="method_not_allowed", headers={"Allow": allow}))
        if exc.status_code == 404:
            return error(RequestError(f"there is no route {request.url.path[:200]}: the API has POST /v1/chat/completions "
                                      "and GET /v1/models", status=404, code="not_found"))
        return error(RequestError(str(exc.detail)[:300], status=exc.status_code, code=str(exc.status_code)))

    @api.get("/health")
    def health() -> JSONResponse:
        try:
            return JSONResponse(service.health())
        except RequestError as exc:
            return error(exc)

    @api.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/v1/models")
    def list_models() -> JSONResponse:
        return JSONResponse(service.models())

    @api.get("/v1/models/{model_id:path}")
    def get_model(model_id: str) -> JSONResponse:
        name = service.cfg.serve.model_name
        if model_id != name:
            return error(RequestError(f"the model '{model_id[:80]}' does not exist: this server serves '{name}'",
                                      "model", 404, code="model_not_found"))
        return JSONResponse(service.model_card())

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        request_id = request.state.request_id
        try:
            check_content_type(request.headers.get("content-type"))
            raw = await read_body(request.stream(), request.headers.get("content-length"), service.cfg.serve.max_request_bytes)
            prep = await service.prepare(raw)
            if prep.request.stream:
                return StreamingResponse(service.stream(prep, request_id), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            return JSONResponse(await service.complete(prep, request_id))
        except RequestError as exc:
            if exc.status >= 500:
                log.error("request %s failed: %s", request_id, exc.message)
            return error(exc)
        except Exception as exc:  # a bug: the client gets one line, the log the traceback
            log.exception("request %s failed", request_id)
            return error(server_error(f"the server failed to complete the request: {exc!r}"[:500]))

    class RequestIds:
        """Request ids and metrics around every request (a stream counts until its last byte)."""

        def __init__(self, app: Any):
            self.app = app

        async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
            request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
            scope.setdefault("state", {})["request_id"] = request_id
            path, root = scope.get("path", ""), scope.get("root_path", "")
            route, start, status = _route(path[len(root):] if root and path.startswith(root) else path), time.perf_counter(), [500]

            async def send_with_id(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    if echo_request_id:
                        message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                await send(message)

            metrics.active += 1
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                metrics.active -= 1
                metrics.request(route, status[0], time.perf_counter() - start)

    api.add_middleware(RequestIds)
    return api


def base_url(cfg: Config, host: str | None = None, port: int | None = None) -> str:
    """The URL OpenAI clients take as base_url (ends in /v1): the HTTP server at `host:port`
    (default serve.host:serve.port) and the application's route prefix."""
    host = cfg.serve.host if host is None else host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    prefix = "" if cfg.serve.route_prefix == "/" else cfg.serve.route_prefix
    return f"http://{host}:{cfg.serve.port if port is None else port}{prefix}/v1"
