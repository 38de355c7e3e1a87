"""SFT trajectories from a teacher: scripted from reference solutions, or an OpenAI-compatible API.

A teacher turns one task instance and one prompt style into `Turn`s whose code really ran
in the executor (observations are what it printed). `to_trajectory` tokenizes them with
the target model's tokenizer (interpreter tokens masked 0); `SynthesisRun` keeps only
verified answers, caps trajectories per task, weights multi-turn ones up and writes
resumable Parquet shards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from r1ci import protocol, rewards
from r1ci.config import Config, ProtocolConfig, SynthesisConfig
from r1ci.errors import MissingInput
from r1ci.rollout import exec_note, prompt_ids, rollout, sampling_from_config
from r1ci.sandbox.base import ExecResult, Sandbox
from r1ci.tasks.base import Instance, Task
from r1ci.trajectory import STOP_ANSWER, STOP_ERROR, Trajectory, Turn


@dataclass
class Episode:
    """A teacher's finished conversation for one instance in one style."""

    turns: list[Turn]
    answer: str | None
    variant: str  # "single", "multi_turn", "self_correction", "text"


def observation_of(result: ExecResult, cfg: Config) -> str:
    """The observation text for an executor result (the same text the rollout appends)."""
    return protocol.format_observation(result.stdout, result.stderr, cfg.protocol, note=exec_note(result, cfg.sandbox.timeout_s))


def code_turn(text: str, code: str, cfg: ProtocolConfig) -> str:
    """Model text that ends with one closed code block (where the rollout stops a turn)."""
    return f"{text}\n{cfg.code_open}\n{code.rstrip()}\n{cfg.code_close}\n"


# -- offline scripted teacher --------------------------------------------------------------

_INTROS = {
    "code": [
        "I will write one program that solves the task and prints the answer.",
        "A complete program can compute this exactly; it prints the final answer.",
    ],
    "agent": [
        "Let me compute this with Python instead of by hand.",
        "This is easy to get wrong by hand, so I will let Python do the work.",
        "I'll write code that works out the answer and prints it.",
    ],
    "guided": [
        "Code helps here: the task needs exact search or counting, which a program does reliably.",
        "Reasoning in text alone risks mistakes in the details; a short program settles it.",
    ],
}
_CONCLUSIONS = [
    "The program ran without errors and printed the answer.",
    "The output above is the result I need.",
    "The code printed the result, so that is the answer.",
]


def _misspell_print(code: str) -> tuple[str, str] | None:
    if "print(" not in code:
        return None
    return code.replace("print(", "prnt(", 1), "The error says `prnt` is not defined: I misspelled `print`. Here is the fixed program."


def _drop_import(code: str) -> tuple[str, str] | None:
    lines = code.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*(?:import (\w+)|from (\w+) import)", line)
        if m:
            return "\n".join(lines[:i] + lines[i + 1 :]), "The error shows a missing name: I forgot an import. Adding it back."
    return None


def _unclosed_paren(code: str) -> tuple[str, str] | None:
    lines = code.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip().endswith(")"):
            lines[i] = lines[i].rstrip()[:-1]
            return "\n".join(lines), "That is a syntax error: a closing parenthesis is missing. Fixed below."
    return None


BUGS: list[Callable[[str], tuple[str, str] | None]] = [_misspell_print, _drop_import, _unclosed_paren]


class ScriptedTeacher:
    """Writes short reasoning around a task's reference program and runs it for real.

    With probability `self_correction_fraction` a code trajectory starts with a small bug
    (misspelled name, missing import or parenthesis) that really fails in the executor,
    followed by the fix: the self-correction pattern the paper's SFT data teaches.
    """

    name = "offline"

    def __init__(self, runner: Sandbox, cfg: Config):
        self.runner, self.full, self.proto, self.cfg = runner, cfg, cfg.protocol, cfg.synthesis
        self.timeout_s, self.seed = cfg.sandbox.timeout_s, cfg.run.seed

    def supports(self, task: Task) -> bool:
        """A task with a reference program (or stated reasoning for the text style)."""
        return type(task).reference_solution is not Task.reference_solution or hasattr(task, "reference_reasoning")

    def episode(self, task: Task, instance: Instance, style: str) -> Episode | None:
        rng = random.Random(f"{self.seed}/{instance.id}/{style}")
        if style == "text":
            reasoning = getattr(task, "reference_reasoning", lambda _: None)(instance)
            if not reasoning or instance.answer is None:
                return None
            return Episode([Turn(text=f"{reasoning.rstrip()}\n{protocol.format_answer(instance.answer, self.proto)}")], instance.answer, "text")
        code = task.reference_solution(instance)
        if not code:
            return None
        result = self.runner.run(code, timeout_s=self.timeout_s)
        answer = result.stdout.strip()
        if not result.ok or not answer:
            return None
        turns: list[Turn] = []
        variant = "single"
        intro = rng.choice(_INTROS[style])
        if style != "code" and rng.random() < self.cfg.self_correction_fraction:
            for bug in rng.sample(BUGS, len(BUGS)):
                made = bug(code)
                if made is None:
                    continue
                buggy, fix_text = made
                failed = self.runner.run(buggy, timeout_s=self.timeout_s)
                if failed.ok:
                    continue
                turns.append(Turn(text=code_turn(intro, buggy, self.proto), code=buggy, observation=observation_of(failed, self.full)))
                intro, variant = fix_text, "self_correction"
                break
        turns.append(Turn(text=code_turn(intro, code, self.proto), code=code, observation=observation_of(result, self.full)))
        turns.append(Turn(text=f"{rng.choice(_CONCLUSIONS)}\n{protocol.format_answer(answer, self.proto)}"))
        return Episode(turns, answer, variant)


# -- endpoint teacher ----------------------------------------------------------------------


class TeacherUnavailable(RuntimeError):
    """The endpoint kept failing after every retry."""


class GarbageReply(ValueError):
    """The endpoint answered with something that is not a chat completion."""


class EndpointTeacher:
    """Any OpenAI-compatible chat API as the teacher, in a multi-turn interpreter loop.

    Each reply is cut where its first code block closes; the block runs in the executor and
    the observation goes back as a user message. Network errors, 429 and 5xx are retried
    with exponential back-off (a Retry-After header wins); counts go to `self.counts`.
    """

    name = "endpoint"

    def __init__(self, runner: Sandbox, cfg: Config, api_key: str, sleep: Callable[[float], None] = time.sleep):
        import httpx

        self.runner, self.full, self.proto, self.cfg = runner, cfg, cfg.protocol, cfg.synthesis
        self.timeout_s, self.sleep = cfg.sandbox.timeout_s, sleep
        self.client = httpx.Client(
            base_url=cfg.synthesis.base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=cfg.synthesis.request_timeout_s,
        )
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def chat(self, messages: list[dict[str, str]]) -> str:
        """One completion's text; raises TeacherUnavailable after the retries, GarbageReply on junk."""
        import httpx

        body = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            "stop": [f"\n{self.proto.code_close}\n"],
        }
        delay = self.cfg.backoff_s
        for attempt in range(self.cfg.max_retries + 1):
            self._count("requests")
            wait = delay
            try:
                resp = self.client.post("/chat/completions", json=body)
            except httpx.TransportError:
                self._count("network_errors")
            else:
                if resp.status_code == 200:
                    return self._content(resp)
                if resp.status_code == 429 or resp.status_code >= 500:
                    self._count("rate_limited" if resp.status_code == 429 else "server_errors")
                    retry_after = resp.headers.get("retry-after", "")
                    wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else delay
                else:
                    raise TeacherUnavailable(f"{self.cfg.base_url} answered HTTP {resp.status_code}: {resp.text[:200]} (check synthesis.base_url, synthesis.model and ${self.cfg.api_key_env})")
            if attempt < self.cfg.max_retries:
                self._count("retries")
                self.sleep(wait)
                delay *= 2
        raise TeacherUnavailable(f"{self.cfg.base_url} still failing after {self.cfg.max_retries} retries")

    def _content(self, resp: Any) -> str:
        try:
            choice = resp.json()["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise GarbageReply(f"not a chat completion: {resp.text[:200]!r}") from None
        if not isinstance(text, str) or not text.strip():
            raise GarbageReply("empty completion")
        if choice.get("finish_reason") == "stop" and protocol.has_unclosed_block(text, self.proto):
            text = text.rstrip("\n") + f"\n{self.proto.code_close}\n"  # the API swallowed our stop string
        return text

    def supports(self, task: Task) -> bool:
        return True

    def episode(self, task: Task, instance: Instance, style: str) -> Episode | None:
        messages = protocol.build_messages(instance.question, style, self.proto)
        turns: list[Turn] = []
        for call in range(self.proto.max_code_calls + 1):
            text = self.chat(messages)
            block = protocol.find_code_block(text, self.proto)
            if style == "text" or block is None or protocol.answer_before_code(text, self.proto) or call == self.proto.max_code_calls:
                turns.append(Turn(text=text))
                break
            text = text[: block.end]
            result = self.runner.run(block.code, timeout_s=self.timeout_s)
            obs = observation_of(result, self.full)
            turns.append(Turn(text=text, code=block.code, observation=obs))
            messages += [{"role": "assistant", "content": text}, {"role": "user", "content": obs}]
        return Episode(turns, protocol.extract_answer(turns[-1].text, self.proto), variant_of(turns))


class GeneratorTeacher:
    """r1ci's own engine (a local model) as the teacher, through the real rollout loop.

    `episode` may be called from many threads: rollouts run on one background event loop,
    so the engine batches them like it batches RL rollouts.
    """

    name = "generator"

    def __init__(self, engine: Any, executor: Sandbox, cfg: Config):
        self.engine, self.executor, self.cfg = engine, executor, cfg
        self.sampling = dataclasses.replace(sampling_from_config(cfg), temperature=cfg.synthesis.temperature, seed=cfg.run.seed)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="generator-teacher", daemon=True).start()

    def supports(self, task: Task) -> bool:
        return True

    def episode(self, task: Task, instance: Instance, style: str) -> Episode | None:
        coro = rollout(self.engine, self.executor, instance, self.cfg, f"synth/{instance.id}/{style}", self.sampling, style)
        traj = asyncio.run_coroutine_threadsafe(coro, self.loop).result()
        if traj.stop_reason == STOP_ERROR:
            raise TeacherUnavailable(traj.error)
        return Episode(traj.turns, traj.answer, variant_of(traj.turns)) if traj.turns else None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def variant_of(turns: list[Turn]) -> str:
    """self_correction when a code call failed and a later turn went on; else multi_turn / single."""
    failed = any(t.observation and ("Traceback" in t.observation or "Error" in t.observation) for t in turns[:-1])
    calls = sum(t.code is not None for t in turns)
    return "self_correction" if failed else "multi_turn" if calls > 1 else "single"


# -- tokenizing ----------------------------------------------------------------------------


def to_trajectory(tokenizer: Any, instance: Instance, style: str, episode: Episode, cfg: Config) -> Trajectory:
    """Tokenize an episode turn by turn: model text mask 1, observations mask 0, then EOS (mask 1)."""
    traj = Trajectory(
        task=instance.task,
        sample_id=instance.id,
        group_id=f"synth/{instance.id}/{style}",
        prompt_ids=prompt_ids(tokenizer, instance.question, style, cfg),
        prompt_style=style,
    )
    for turn in episode.turns:
        traj.append(tokenizer.encode(turn.text, add_special_tokens=False), None, trainable=True)
        if turn.observation is not None:
            traj.append(tokenizer.encode(turn.observation, add_special_tokens=False), None, trainable=False)
    traj.append([tokenizer.eos_token_id], None, trainable=True)
    traj.turns = episode.turns
    traj.code_calls = sum(t.code is not None for t in episode.turns)
    traj.answer = episode.answer
    traj.stop_reason = STOP_ANSWER
    return traj


def weight_of(variant: str, code_calls: int, cfg: SynthesisConfig) -> float:
    """SFT weight: self-correcting > multi-turn (more than one code call) > the rest (1.0)."""
    if variant == "self_correction":
        return cfg.self_correction_weight
    return cfg.multi_turn_weight if code_calls > 1 else 1.0


# -- the run: verification, caps, shards, resume -------------------------------------------


class ShardWriter:
    """Parquet shards `shard-NNNNN.parquet` in one folder; knows what earlier runs wrote."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.attempted_path = self.dir / "attempted.txt"

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.parquet"))

    def existing(self) -> tuple[Counter, set[str]]:
        """(kept trajectories per task, instance ids already tried) from earlier runs."""
        import pyarrow.parquet as pq

        kept: Counter = Counter()
        tried: set[str] = set()
        for shard in self.shards():
            table = pq.read_table(shard, columns=["task", "sample_id"])
            kept.update(table.column("task").to_pylist())
            tried.update(table.column("sample_id").to_pylist())
        if self.attempted_path.exists():
            tried.update(x for x in self.attempted_path.read_text().split("\n") if x)
        return kept, tried

    def write(self, rows: list[dict[str, Any]], attempted: Iterable[str]) -> None:
        """One new shard (written under a temporary name, then renamed), then the tried ids."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if rows:
            index = len(self.shards())
            tmp = self.dir / f".shard-{index:05d}.tmp"
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            tmp.rename(self.dir / f"shard-{index:05d}.parquet")
        with open(self.attempted_path, "a") as f:
            f.write("".join(f"{x}\n" for x in attempted))


class SynthesisRun:
    """Drives a teacher over tasks: verify, cap, weight, shard; resumable.

    `counts` after `run`: tried, kept, wrong (verifier rejected), no_answer, skipped (no
    episode, e.g. text style without stated reasoning), garbage, teacher_errors, plus the
    teacher's own request counters.
    """

    def __init__(self, teacher: Any, tokenizer: Any, cfg: Config, writer: ShardWriter):
        self.teacher, self.tokenizer, self.full, self.cfg, self.writer = teacher, tokenizer, cfg, cfg.synthesis, writer
        self.counts: Counter = Counter()

    def one(self, task: Task, instance: Instance, style: str) -> tuple[dict[str, Any] | None, str]:
        """(row, outcome) for one instance in one style; outcome is the count it adds to."""
        try:
            episode = self.teacher.episode(task, instance, style)
        except GarbageReply:
            return None, "garbage"
        except TeacherUnavailable:
            return None, "teacher_errors"
        if episode is None:
            return None, "skipped"
        if episode.answer is None:
            return None, "no_answer"
        traj = to_trajectory(self.tokenizer, instance, style, episode, self.full)
        parts = rewards.score(traj, task, instance, self.full.reward, self.full.protocol)  # judged as RL judges it
        if not parts.correct:
            return None, "wrong"
        row = rewards.assign(traj, parts).to_row()
        row.update(weight=weight_of(episode.variant, traj.code_calls, self.cfg), variant=episode.variant, teacher=self.teacher.name)
        return row, "kept"

    def first(self, task: Task, instance: Instance) -> tuple[dict[str, Any] | None, str]:
        """The instance in its turn's style (styles rotate with the index); a style the
        teacher cannot write for this task (text without stated reasoning) passes to the next."""
        styles = self.cfg.styles
        for k in range(len(styles)):
            row, outcome = self.one(task, instance, styles[(instance.index + k) % len(styles)])
            if outcome != "skipped":
                return row, outcome
        return None, "skipped"

    def run(self, tasks: list[Task], instances_of: Callable[[Task], list[Instance]], progress: Callable[[int], None] = lambda n: None) -> Counter:
        """Synthesize for each task over `instances_of(task)` until max_per_task rows are kept.

        Tasks already at the cap and instances tried by an earlier run (kept or not) are
        skipped; `progress(n)` is told how many instances were dealt with.
        """
        kept, tried = self.writer.existing()
        pending: list[dict[str, Any]] = []
        pending_ids: list[str] = []
        n_per_task = self.cfg.instances_per_task
        with ThreadPoolExecutor(self.cfg.concurrency) as pool:
            for task in tasks:
                if kept[task.name] >= self.cfg.max_per_task or not self.teacher.supports(task):
                    self.counts["tasks_full" if kept[task.name] >= self.cfg.max_per_task else "tasks_unsupported"] += 1
                    progress(n_per_task)
                    continue
                todo = [inst for inst in instances_of(task) if inst.id not in tried]
                progress(n_per_task - len(todo))
                while todo and kept[task.name] < self.cfg.max_per_task:
                    chunk, todo = todo[: self.cfg.concurrency], todo[self.cfg.concurrency :]
                    for inst, (row, outcome) in zip(chunk, pool.map(lambda inst: self.first(task, inst), chunk)):
                        self.counts["tried"] += 1
                        pending_ids.append(inst.id)
                        if row is not None and kept[task.name] >= self.cfg.max_per_task:
                            outcome = "over_cap"
                        self.counts[outcome] += 1
                        if outcome == "kept":
                            kept[task.name] += 1
                            self.counts[f"variant/{row['variant']}"] += 1
                            pending.append(row)
                    progress(len(chunk))
                    if len(pending) >= self.cfg.shard_size:
                        self.writer.write(pending, pending_ids)
                        pending, pending_ids = [], []
                progress(len(todo))
        self.writer.write(pending, pending_ids)
        self.counts.update(getattr(self.teacher, "counts", {}))
        return self.counts


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file or of every shard in a folder (what jobs/sft.py trains on)."""
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    files = sorted(path.glob("shard-*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise MissingInput(f"no SFT data at '{path}': run jobs/synthesize.py first or set sft.data")
    rows: list[dict[str, Any]] = []
    for f in files:
        rows += pq.read_table(f).to_pylist()
    return rows

