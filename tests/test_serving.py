"""The OpenAI-compatible server: request checking and response mapping, the interpreter loop on
the server (a scripted engine, the real sandbox), and end to end over HTTP with Ray Serve, the
tiny model and the real `openai` client.
"""

import asyncio
import json
import socket

import pytest

from r1ci.config import Config, ConfigError, load_config
from r1ci.engines.base import Completion
from r1ci.protocol import system_prompt
from r1ci.serving import ChatService, base_url, chat_prompt_ids, parse_chat_request, with_system_prompt

USER = [{"role": "user", "content": "What is 6 * 7?"}]


class ScriptedEngine:
    """Writes scripted text chunks as tokens, one per generate call; records the prompts it was given."""

    def __init__(self, tokenizer, script, max_model_len=2048):
        self.tokenizer, self.max_model_len, self.script = tokenizer, max_model_len, list(script)
        self.prompts = []

    async def generate(self, prompt_ids, sampling):
        await asyncio.sleep(0)
        self.prompts.append(list(prompt_ids))
        text, reason = self.script.pop(0)
        ids = self.tokenizer.encode(text, add_special_tokens=False)[: sampling.max_tokens]
        return Completion(ids, [-0.1] * len(ids), self.tokenizer.decode(ids), reason)

    def shutdown(self):
        pass


class NoExecutor:
    async def arun(self, code, timeout=None):
        raise AssertionError("a refused request must not run code")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def cfg():
    c = Config()
    c.sandbox.timeout_s = 5.0
    return c


def body(**fields):
    return {"model": "r1ci", "messages": USER, **fields}


def handle(service, payload):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return asyncio.run(service.handle_chat(raw))


def test_request_defaults_come_from_the_config(cfg):
    cfg.sampling.eval_temperature, cfg.sampling.max_total_tokens = 0.3, 321
    req = parse_chat_request(body(), cfg)
    assert (req.temperature, req.top_p, req.max_tokens, req.n, req.seed) == (0.3, 1.0, 321, 1, None)
    req = parse_chat_request(body(temperature=0, top_p=0.5, max_tokens=7, n=2, seed=3, stream=False, stop=None, user="x"), cfg)
    assert (req.temperature, req.top_p, req.max_tokens, req.n, req.seed) == (0.0, 0.5, 7, 2, 3)
    assert parse_chat_request(body(max_completion_tokens=9), cfg).max_tokens == 9


def test_protocol_system_prompt_goes_first_only_when_the_request_has_none(cfg, tokenizer):
    assert with_system_prompt(USER, cfg) == [{"role": "system", "content": system_prompt("agent", cfg.protocol)}, *USER]
    own = [{"role": "system", "content": "Be brief."}, *USER]
    assert with_system_prompt(own, cfg) == own
    text = tokenizer.decode(chat_prompt_ids(tokenizer, USER, cfg))
    assert "Code Execution Results:" in text and text.index("run Python code") < text.index("What is 6 * 7?")


@pytest.mark.parametrize(
    "payload,param,words",
    [
        ({"model": "r1ci"}, "messages", "messages is required"),
        (body(messages=[]), "messages", "non-empty list"),
        (body(messages="hi"), "messages", "non-empty list"),
        (body(messages=["hi"]), "messages[0]", "must be an object"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].role", "one of system, user, assistant"),
        (body(messages=[{"role": "user"}]), "messages[0].content", "must be a string"),
        (body(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]), "messages[0].content", "must be a string"),
        (body(n=0), "n", "at least 1"),
        (body(n=99), "n", "at most 8"),
        (body(n=1.5), "n", "must be an integer"),
        (body(temperature=-0.1), "temperature", "must be in [0, 2]"),
        (body(temperature="hot"), "temperature", "must be a number"),
        (body(top_p=0), "top_p", "must be in (0, 1]"),
        (body(max_tokens=0), "max_tokens", "at least 1"),
        (body(seed="x"), "seed", "must be an integer"),
        (body(stream=True), "stream", "streaming is not supported"),
        (body(stop=["\n"]), "stop", "stop sequences are not supported"),
        (body(tools=[{"type": "function"}]), "tools", "Python interpreter"),
        ({"messages": USER}, "model", "model is required"),
        ([1, 2], None, "must be a JSON object"),
    ],
)
def test_bad_request_is_a_400_naming_the_field(cfg, tokenizer, payload, param, words):
    status, out = handle(ChatService(ScriptedEngine(tokenizer, []), NoExecutor(), cfg), payload)
    assert status == 400, out
    assert out["error"]["type"] == "invalid_request_error" and out["error"]["param"] == param
    assert words in out["error"]["message"]


def test_unknown_model_is_a_404_that_names_the_served_model(cfg, tokenizer):
    status, out = handle(ChatService(ScriptedEngine(tokenizer, []), NoExecutor(), cfg), body(model="gpt-4o"))
    assert status == 404 and out["error"]["code"] == "model_not_found" and "serves 'r1ci'" in out["error"]["message"]


def test_body_that_is_not_json_is_a_400(cfg, tokenizer):
    status, out = handle(ChatService(ScriptedEngine(tokenizer, []), NoExecutor(), cfg), b"{not json")
    assert status == 400 and "not valid JSON" in out["error"]["message"]


def test_prompt_longer_than_the_context_is_a_400_before_any_generation(cfg, tokenizer):
    engine = ScriptedEngine(tokenizer, [], max_model_len=64)
    status, out = handle(ChatService(engine, NoExecutor(), cfg), body(messages=[{"role": "user", "content": "word " * 200}]))
    assert status == 400 and out["error"]["code"] == "context_length_exceeded"
    assert "context is 64 tokens" in out["error"]["message"] and engine.prompts == []


def test_messages_the_chat_template_refuses_are_a_400(cfg, tokenizer):
    class StrictTokenizer:
        def apply_chat_template(self, messages, **kwargs):
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")

    engine = ScriptedEngine(tokenizer, [])
    engine.tokenizer = StrictTokenizer()
    status, out = handle(ChatService(engine, NoExecutor(), cfg), body(messages=[*USER, *USER]))
    assert status == 400 and "roles must alternate" in out["error"]["message"] and out["error"]["param"] == "messages"


def test_engine_failure_is_a_500_with_one_line_not_a_traceback(cfg, tokenizer):
    class BrokenEngine(ScriptedEngine):
        async def generate(self, prompt_ids, sampling):
            raise RuntimeError("CUDA out of memory")

    status, out = handle(ChatService(BrokenEngine(tokenizer, []), NoExecutor(), cfg), body())
    assert status == 500 and out["error"]["type"] == "server_error"
    assert "CUDA out of memory" in out["error"]["message"] and "Traceback" not in out["error"]["message"]


def test_server_runs_the_code_in_the_sandbox_and_returns_the_observation_in_the_content(cfg, tokenizer):
    from r1ci.sandbox import Executor

    script = [("Let me compute.\n```python\nprint(6 * 7)\n```\n", "stop"), ("So the answer is <<<42>>>", "stop")]
    engine = ScriptedEngine(tokenizer, script)
    executor = Executor(cfg.sandbox)
    try:
        status, out = handle(ChatService(engine, executor, cfg), body(messages=[{"role": "system", "content": "Use Python."}, *USER]))
    finally:
        executor.close()
    assert status == 200, out
    (choice,) = out["choices"]
    content = choice["message"]["content"]
    assert "```python\nprint(6 * 7)\n```" in content and "Code Execution Results:\n42\n" in content
    assert content.endswith("<<<42>>>") and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    assert choice["r1ci"] == {"stop_reason": "answer", "code_calls": 1, "answer": "42", "model_tokens": choice["r1ci"]["model_tokens"]}
    # the second turn continued from the prompt, the first turn and the observation's tokens
    first_prompt, second_prompt = engine.prompts
    assert second_prompt[: len(first_prompt)] == first_prompt and tokenizer.decode(second_prompt).endswith("42\n")
    assert "Use Python." in tokenizer.decode(first_prompt) and "run Python code" not in tokenizer.decode(first_prompt)
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(first_prompt)
    assert usage["completion_tokens"] == len(second_prompt) - len(first_prompt) + len(tokenizer.encode("So the answer is <<<42>>>", add_special_tokens=False))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert out["object"] == "chat.completion" and out["model"] == "r1ci" and out["id"].startswith("chatcmpl-")


def test_max_tokens_cuts_the_reply_with_finish_reason_length(cfg, tokenizer):
    engine = ScriptedEngine(tokenizer, [("one two three four five six seven eight nine ten", "length")])
    status, out = handle(ChatService(engine, NoExecutor(), cfg), body(max_tokens=3))
    assert status == 200 and out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 3


def test_serve_config_rejects_a_bad_port_and_route_prefix():
    with pytest.raises(ConfigError, match="serve.port"):
        load_config(None, ["serve.port=70000"])
    with pytest.raises(ConfigError, match="serve.route_prefix"):
        load_config(None, ["serve.route_prefix=/api/"])
    assert base_url(load_config(None, ["serve.route_prefix=/r1ci", "serve.port=9000"])) == "http://127.0.0.1:9000/r1ci/v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_openai_client_talks_to_the_tiny_model_through_ray_serve(ray_cluster, tiny_model_dir):
    import openai
    from ray import serve

    from r1ci.serving import deploy

    cfg = load_config(None, [
        "generator.backend=hf", "serve.num_cpus=0.25", f"serve.port={_free_port()}", "serve.model_name=tiny",
        "sandbox.preload=[math]", "sandbox.warm_up=''", "sandbox.timeout_s=5",
    ])
    try:
        url = deploy(cfg, tiny_model_dir)
        assert url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0, seed=0, n=2)
        assert len(reply.choices) == 2 and reply.choices[0].message.content == reply.choices[1].message.content
        choice = reply.choices[0]
        assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
        assert choice.r1ci["code_calls"] >= 0  # the extras reach the client as extra fields
        assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 24
        with pytest.raises(openai.BadRequestError, match="temperature"):
            client.chat.completions.create(model="tiny", messages=USER, temperature=-1)
        with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
            client.chat.completions.create(model="gpt-4o", messages=USER)
    finally:
        serve.shutdown()
