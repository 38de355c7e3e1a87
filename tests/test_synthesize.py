"""Trajectory synthesis: the scripted teacher end to end, resume, and an OpenAI-compatible endpoint."""

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from r1ci.config import load_config
from r1ci.synthesis import EndpointTeacher, ShardWriter, SynthesisRun, read_rows
from r1ci import rewards
from r1ci.tasks import generate_instances, get_task
from r1ci.trajectory import Trajectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
from synthesize import synthesize  # noqa: E402

TASKS = ["toy_run_code", "multistep_arithmetic_two"]


def _cfg(model_dir, out, *extra):
    return load_config(None, [
        f"model.path={model_dir}", f"tasks.train=[{','.join(TASKS)}]", f"synthesis.output_dir={out}",
        "synthesis.instances_per_task=6", "synthesis.max_per_task=4", "synthesis.self_correction_fraction=0.5",
        "sandbox.timeout_s=10", *extra,
    ])


@pytest.fixture(scope="module")
def executor():
    from r1ci.sandbox import Executor

    ex = Executor(load_config(None, ["sandbox.timeout_s=10"]).sandbox)
    yield ex
    ex.close()


def test_offline_teacher_writes_verified_trajectories_with_masked_observations(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    cfg = _cfg(tiny_model_dir, tmp_path / "sft")
    counts = synthesize(cfg, show_progress=False)
    rows = read_rows(tmp_path / "sft")
    assert counts["kept"] == len(rows) == 8 and counts["variant/self_correction"] >= 1
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for row in rows:
        inst = generate_instances(row["task"], 1, 6)[int(row["sample_id"].rsplit("/", 1)[1])]
        assert rewards.score(Trajectory.from_row(row), get_task(row["task"]), inst, cfg.reward, cfg.protocol).correct
        assert row["correct"] and row["reward"] == cfg.reward.correct + cfg.reward.well_formed
        turns = json.loads(row["turns"])
        observations = "".join(t["observation"] for t in turns if t["observation"])
        masked = [i for i, m in zip(row["response_ids"], row["loss_mask"]) if m == 0]
        assert tok.decode(masked) == observations  # exactly the interpreter's tokens are masked
        assert f"Code Execution Results:\n{row['answer']}" in observations  # the real executed output
        assert row["response_ids"][-1] == tok.eos_token_id and row["loss_mask"][-1] == 1
        assert row["weight"] == (3.0 if row["variant"] == "self_correction" else 1.0)
        if row["variant"] == "self_correction":
            assert "Error" in turns[0]["observation"] and row["code_calls"] == 2
    assert {r["prompt_style"] for r in rows} <= {"code", "agent", "guided"}  # no stated reasoning: no text style


def test_rerun_resumes_without_duplicating_work(tiny_model_dir, tmp_path):
    out = tmp_path / "sft"
    first = synthesize(_cfg(tiny_model_dir, out, "synthesis.max_per_task=2"), show_progress=False)
    again = synthesize(_cfg(tiny_model_dir, out, "synthesis.max_per_task=2"), show_progress=False)
    assert first["kept"] == 4 and again.get("kept", 0) == 0 and again["tasks_full"] == 2
    more = synthesize(_cfg(tiny_model_dir, out, "synthesis.max_per_task=3"), show_progress=False)
    rows = read_rows(out)
    assert more["kept"] == 2 and len(rows) == 6 and len({r["sample_id"] for r in rows}) == 6
    assert len(ShardWriter(out).shards()) == 2


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Answers like a chat model that runs the shown program, with one 429 and one garbage reply."""

    calls: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions" and self.headers["Authorization"] == "Bearer sk-test"
        self.calls.append(body)
        if len(self.calls) == 1:
            return self._send(429, b'{"error": "rate limited"}', {"Retry-After": "0"})
        messages = body["messages"]
        program = re.search(r"```\n(.*?)\n```", messages[1]["content"], re.S).group(1)
        if len(messages) == 2:
            if len([c for c in self.calls if len(c["messages"]) == 2]) == 2:
                return self._send(200, b"<html>upstream hiccup</html>")  # garbage, not JSON
            text = f"Let me run it.\n```python\n{program}\n"  # the stop string swallowed the closing fence
            return self._reply(text, "stop")
        output = messages[-1]["content"].split("\n")[1]
        return self._reply(f"The program printed {output}.\n<<<{output}>>>", "stop")

    def _reply(self, text, finish):
        data = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}
        self._send(200, json.dumps(data).encode())

    def _send(self, code, payload, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_endpoint_teacher_retries_rate_limits_and_skips_garbage(tiny_model_dir, tmp_path, executor):
    from transformers import AutoTokenizer

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeOpenAI.calls = []
    try:
        cfg = _cfg(tiny_model_dir, tmp_path / "sft", f"synthesis.base_url=http://127.0.0.1:{server.server_port}/v1",
                   "synthesis.concurrency=1", "synthesis.backoff_s=0.01", "synthesis.styles=[agent]")
        teacher = EndpointTeacher(executor, cfg, api_key="sk-test")
        run = SynthesisRun(teacher, AutoTokenizer.from_pretrained(tiny_model_dir), cfg, ShardWriter(tmp_path / "sft"))
        counts = run.run([get_task("toy_run_code")], lambda t: generate_instances(t.name, 1, 4))
    finally:
        server.shutdown()
    assert counts["rate_limited"] == 1 and counts["retries"] == 1
    assert counts["garbage"] == 1 and counts["kept"] == 3 and counts["tried"] == 4
    rows = read_rows(tmp_path / "sft")
    assert all(r["teacher"] == "endpoint" and r["code_calls"] == 1 for r in rows)
    assert all("Code Execution Results:" in json.loads(r["turns"])[0]["observation"] for r in rows)
    assert _FakeOpenAI.calls[1]["model"] == "gpt-4o" and _FakeOpenAI.calls[1]["stop"] == ["\n```\n"]


@pytest.mark.slow
def test_generator_teacher_rolls_out_the_local_model_and_keeps_only_verified_answers(tiny_model_dir, tmp_path, executor):
    from transformers import AutoTokenizer

    from r1ci.engines import make_engine
    from r1ci.synthesis import GeneratorTeacher

    cfg = _cfg(tiny_model_dir, tmp_path / "sft", "generator.backend=hf", "generator.max_model_len=512",
               "sampling.max_tokens_per_turn=16", "sampling.max_total_tokens=32", "synthesis.concurrency=2",
               "synthesis.styles=[agent]")
    teacher = GeneratorTeacher(make_engine(cfg, tiny_model_dir), executor, cfg)
    try:
        run = SynthesisRun(teacher, AutoTokenizer.from_pretrained(tiny_model_dir), cfg, ShardWriter(tmp_path / "sft"))
        counts = run.run([get_task("toy_run_code")], lambda t: generate_instances(t.name, 1, 3))
    finally:
        teacher.close()
    # a random tiny model never answers right: every rollout ran and was judged, none kept
    assert counts["tried"] == 3 and counts["no_answer"] + counts["wrong"] == 3 and counts["kept"] == 0
