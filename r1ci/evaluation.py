"""Evaluation: which instances are held out, the answers models give on them, and what they show.

Owns what jobs/eval.py and the RL job's held-out evaluation share: the held-out instances,
the rollout requests of an evaluation (k sampled answers and one greedy answer per
instance), one `AnswerRecord` per scored answer, the statistics (accuracy, pass@k, code use,
self-checking, bootstrap intervals over instances, paired comparisons), the answer file an
interrupted evaluation resumes from, and the Markdown, CSV, JSON and PNG outputs. Pure: no Ray.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from r1ci import protocol, rewards
from r1ci.config import Config, ConfigError, ProtocolConfig
from r1ci.rollout import RolloutRequest, sampling_from_config
from r1ci.sandbox.base import EXECUTOR_FAILURES, TIMEOUT
from r1ci.tasks import FAMILIES, KINDS, Instance, generate_instances, get_task, list_tasks, resolve_task_names
from r1ci.tasks.split import split_of
from r1ci.trajectory import Trajectory

log = logging.getLogger(__name__)

SAMPLED, GREEDY = "sampled", "greedy"  # the two kinds of answers of an evaluation

# ------------------------------------------------------------------ held-out instances


def training_task_names(cfg: Config) -> list[str]:
    """The tasks of `tasks.train`, expanded; a test-split task there is a ConfigError."""
    names = resolve_task_names(cfg.tasks.train)
    leaked = sorted(set(names) & {t.name for t in list_tasks(split="test")})
    if leaked:
        raise ConfigError(f"tasks.train: {', '.join(leaked)} belong to the test split and never reach training; "
                          "list them under eval.test_tasks to evaluate them")
    return names


def _training_questions(name: str, cfg: Config) -> set[str]:
    """Questions of the instances RL (tasks.seed) and synthesis (synthesis.seed) use for task `name`."""
    rl = generate_instances(name, cfg.tasks.seed, cfg.tasks.instances_per_task)
    sft = generate_instances(name, cfg.synthesis.seed, cfg.synthesis.instances_per_task)
    return {inst.question for inst in rl + sft}


def held_out_instances(cfg: Config, per_task: int | None = None) -> list[Instance]:
    """The evaluation instances: held-out instances of every training task, then the test tasks.

    Instances come from seed `eval.seed` (validated to differ from tasks.seed and
    synthesis.seed); a training task's instance whose question also occurs among its RL or
    synthesis instances is left out (tasks with a small fixed pool, such as BBH's, share
    questions across seeds). `per_task` defaults to eval.instances_per_task; a task whose
    pool runs out yields fewer. Test tasks listed in tasks.train are a ConfigError.
    """
    n = per_task or cfg.eval.instances_per_task
    train = training_task_names(cfg)
    out: list[Instance] = []
    for name in train:
        seen = _training_questions(name, cfg)
        fresh = [i for i in generate_instances(name, cfg.eval.seed, n) if i.question not in seen]
        if len(fresh) < n:  # draw past the overlap once; instance generation is deterministic per (seed, n)
            fresh = [i for i in generate_instances(name, cfg.eval.seed, n + len(seen)) if i.question not in seen]
        if len(fresh) < n:
            log.warning("%s: only %d of %d evaluation instances are not among its %d training questions",
                        name, len(fresh), n, len(seen))
        out += fresh[:n]
    for name in resolve_task_names(cfg.eval.test_tasks):
        if name not in train:
            out += generate_instances(name, cfg.eval.seed, n)
    return out


# ------------------------------------------------------------------ requests and records


def answer_slots(cfg: Config) -> list[tuple[str, int]]:
    """(mode, sample index) of each answer an instance gets, in request order: `eval.samples`
    sampled answers, then one greedy answer if `eval.greedy`."""
    return [(SAMPLED, j) for j in range(cfg.eval.samples)] + ([(GREEDY, 0)] if cfg.eval.greedy else [])


def answers_per_instance(cfg: Config) -> int:
    return len(answer_slots(cfg))


def answer_requests(instances: Sequence[Instance], cfg: Config) -> list[RolloutRequest]:
    """The rollouts of an evaluation, `answer_slots` per instance: sampled ones at
    `sampling.eval_temperature`, the greedy one at temperature 0. A sample's seed depends only
    on (eval.seed, instance id, sample index), so every model answers with the same random
    numbers, which makes a paired comparison fairer."""
    base = sampling_from_config(cfg, evaluation=True)
    out = []
    for inst in instances:
        for mode, j in answer_slots(cfg):
            seed = zlib.crc32(f"eval/{cfg.eval.seed}/{inst.id}/{j}".encode())
            sampling = dataclasses.replace(base, seed=seed) if mode == SAMPLED else dataclasses.replace(base, temperature=0.0, seed=0)
            out.append(RolloutRequest(inst, f"eval:{inst.id}", cfg.eval.prompt_style, sampling))
    return out


def answer_settings(cfg: Config) -> dict[str, Any]:
    """Every setting that changes what an answer is; answers made with other settings are not mixed."""
    s = cfg.sampling
    return {
        "samples": cfg.eval.samples, "greedy": cfg.eval.greedy, "seed": cfg.eval.seed, "prompt_style": cfg.eval.prompt_style,
        "temperature": s.eval_temperature, "top_p": s.top_p, "max_tokens_per_turn": s.max_tokens_per_turn,
        "max_total_tokens": s.max_total_tokens, "max_code_calls": cfg.protocol.max_code_calls,
        "code_timeout_s": cfg.sandbox.timeout_s, "max_model_len": cfg.generator.max_model_len,
    }


@dataclass
class AnswerRecord:
    """One scored answer of one model to one instance: the row of answers.jsonl."""

    model: str
    task: str
    family: str  # symbench, bbh, reasoning_gym (or toy)
    kind: str  # execution, planning or reasoning
    split: str  # the task's split: train (a held-out instance of a training task) or test
    instance_id: str
    mode: str  # SAMPLED or GREEDY
    sample: int  # index among the sampled answers; 0 for the greedy one
    correct: bool  # rewards.score(...).correct
    answered: bool  # a final <<<answer>>> was given
    code_calls: int
    self_checks: int  # code calls that check an answer already found (see `self_checks`)
    response_tokens: int  # model and interpreter tokens after the prompt
    timeouts: int  # code calls stopped at sandbox.timeout_s
    executor_failure: bool  # the episode ended because the executor failed, not the code
    stop_reason: str
    answer: str | None
    response: str = ""  # the response text, model and interpreter turns (with eval.save_responses)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.model, self.instance_id, self.mode, self.sample


def _value_pattern(answer: str) -> re.Pattern | None:
    """The answer as a case-sensitive, whitespace-tolerant pattern that does not match inside a
    longer word or number ("10063" not in "100630"); None for answers under 2 characters."""
    value = " ".join(answer.split())
    if len(value) < 2:
        return None
    body = r"\s+".join(re.escape(part) for part in value.split(" "))
    head = r"(?<![\w.])" if value[0].isalnum() else ""
    tail = r"(?!\w|\.\d)" if value[-1].isalnum() else ""
    return re.compile(head + body + tail)


def self_checks(traj: Trajectory, cfg: ProtocolConfig) -> int:
    """Code calls that check an answer the response has already reached: the self-checking of
    R1-Code-Interpreter.

    Walk the response in order: each turn's prose before its code block, the code call, its
    output. The final answer's value (the payload of the last <<<...>>>) *appears* once it
    occurs in model prose outside code or in an interpreter output, as a whole word or
    number, case-sensitive, whitespace runs alike. A *check* is a code call that ran (it
    has an output) and whose code block opens after that first appearance: the model found
    the value (by reasoning or by an earlier run) and runs code again with it in view.
    The call that first prints the value is not a check, nor code that merely contains it
    as a literal. Answers under 2 characters (a digit, a letter) are never located: a
    coincidental mention would count. Without a final answer there are no checks.
    """
    pattern = _value_pattern(traj.answer) if traj.answer else None
    if pattern is None:
        return 0
    seen, checks = False, 0
    for turn in traj.turns:
        block = protocol.find_code_block(turn.text, cfg) if turn.code is not None else None
        seen = seen or bool(pattern.search(turn.text[: block.start] if block else turn.text))
        if block is not None and turn.observation is not None:
            checks += seen
            seen = seen or bool(pattern.search(turn.observation))
    return checks


def answer_record(traj: Trajectory, instance: Instance, cfg: Config, model: str, mode: str, sample: int) -> AnswerRecord:
    """Score `traj` with `rewards.score` (the one scoring function of every job) and summarize it."""
    task = get_task(instance.task)
    parts = rewards.score(traj, task, instance, cfg.reward, cfg.protocol)
    return AnswerRecord(
        model=model, task=instance.task, family=task.family, kind=task.kind, split=split_of(instance.task),
        instance_id=instance.id, mode=mode, sample=sample, correct=bool(parts.correct),
        answered=traj.answer is not None, code_calls=traj.code_calls, self_checks=self_checks(traj, cfg.protocol),
        response_tokens=len(traj.response_ids), timeouts=sum(t.killed_reason == TIMEOUT for t in traj.turns),
        executor_failure=any(t.killed_reason in EXECUTOR_FAILURES for t in traj.turns),
        stop_reason=traj.stop_reason, answer=traj.answer, response=traj.text if cfg.eval.save_responses else "",
    )


def score_answers(requests: Sequence[RolloutRequest], trajs: Sequence[Trajectory], cfg: Config, model: str) -> list[AnswerRecord]:
    """Records of the trajectories of `answer_requests(instances, cfg)`, in request order."""
    slots = answer_slots(cfg)
    if len(requests) != len(trajs) or len(requests) % len(slots):
        raise ValueError(f"{len(requests)} requests and {len(trajs)} trajectories: not {len(slots)} answers per instance")
    return [answer_record(traj, req.instance, cfg, model, *slots[k % len(slots)])
            for k, (req, traj) in enumerate(zip(requests, trajs))]


# ------------------------------------------------------------------ statistics


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n answers of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k), the chance that k of the n answers drawn without replacement
    contain a correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator per (seed, group, metric): an interval does not depend on what else was computed."""
    return np.random.default_rng(zlib.crc32("/".join([str(seed), *names]).encode()))


def bootstrap_interval(values_by_task: Sequence[np.ndarray], resamples: int, rng: np.random.Generator,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high) of the mean over tasks of each task's mean over instances.

    `values_by_task` holds one value per instance (a 0/1 greedy verdict, a fraction of
    correct samples, a paired difference) for each task. Each resample draws every task's
    instances with replacement (stratified by task, so a task's weight stays 1/tasks);
    the interval is the percentile interval of the resampled estimates at `confidence`.
    """
    tasks = [np.asarray(v, dtype=float) for v in values_by_task if len(v)]
    if not tasks:
        return math.nan, math.nan, math.nan
    estimate = float(np.mean([v.mean() for v in tasks]))
    boot = np.zeros(resamples)
    for v in tasks:
        boot += v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    boot /= len(tasks)
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(boot, [tail, 1.0 - tail])
    return estimate, float(lo), float(hi)


@dataclass(frozen=True)
class Estimate:
    """A mean over instances with its bootstrap interval (fractions, 0..1)."""

    value: float
    lo: float
    hi: float
    instances: int

    @property
    def significant(self) -> bool:
        """For a difference: the interval excludes 0."""
        return self.lo > 0 or self.hi < 0


# Student's t quantile at 0.975 for 1..10 degrees of freedom (the 95% two-sided interval).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def mean_over_seeds(values: Sequence[float]) -> Estimate:
    """Mean of one figure over independent runs (seeds) with its 95% Student-t interval; with
    one run the interval is unknown (nan), which is the honest answer."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return Estimate(float(v.mean()) if len(v) else math.nan, math.nan, math.nan, len(v))
    t = T_975[len(v) - 2] if len(v) <= len(T_975) + 1 else 1.96
    half = t * float(v.std(ddof=1)) / math.sqrt(len(v))
    return Estimate(float(v.mean()), float(v.mean()) - half, float(v.mean()) + half, len(v))


@dataclass
class GroupResult:
    """One row of the tables: a set of tasks (all, a split, a family, a kind or one task) for one model."""

    accuracy: dict[str, Estimate]  # "accuracy" (sampled), "greedy", "pass@k"
    answers: int
    code_use: float  # share of answers with at least one code call
    code_calls: float  # code calls per answer
    self_check: float  # share of answers with at least one self-check
    response_tokens: float  # per answer
    answered: float  # share of answers with a final <<<answer>>>
    timeouts: int  # code calls that hit the time limit
    executor_failures: int  # answers that ended in an executor failure


@dataclass(frozen=True)
class Comparison:
    """Paired difference b - a (same instances) of one accuracy metric in one group."""

    a: str
    b: str
    group: str
    metric: str
    diff: Estimate

    @property
    def verdict(self) -> str:
        if self.diff.significant:
            return f"{'higher' if self.diff.value > 0 else 'lower'} (interval excludes 0)"
        return "not significant (interval contains 0)"


@dataclass
class Summary:
    models: list[str]
    groups: list[str]  # row names in report order: all, split/..., family/..., kind/..., task/...
    results: dict[str, dict[str, GroupResult]]  # group -> model -> result
    comparisons: list[Comparison]
    settings: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, dict[str, str]] = field(default_factory=dict)  # task -> family, kind, split

    def to_json(self) -> dict:
        return {
            "settings": self.settings, "models": self.models, "tasks": self.tasks,
            "groups": {g: {m: dataclasses.asdict(r) for m, r in by_model.items()} for g, by_model in self.results.items()},
            "comparisons": [{**dataclasses.asdict(c), "significant": c.diff.significant, "verdict": c.verdict}
                            for c in self.comparisons],
        }


def _metric_names(samples: int, greedy: bool) -> list[str]:
    return (["accuracy", f"pass@{samples}"] if samples else []) + (["greedy"] if greedy else [])


def _per_instance(records: list[AnswerRecord], samples: int, greedy: bool) -> dict[str, dict[str, float]]:
    """metric -> instance id -> value, for one model's complete instances."""
    by_inst: dict[str, list[AnswerRecord]] = defaultdict(list)
    for r in records:
        by_inst[r.instance_id].append(r)
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for iid, rs in by_inst.items():
        sampled = [r.correct for r in rs if r.mode == SAMPLED]
        greedy_rs = [r.correct for r in rs if r.mode == GREEDY]
        if len(sampled) != samples or len(greedy_rs) != int(greedy):
            continue  # an incomplete instance (an interrupted run) is left out, not half counted
        if samples:
            out["accuracy"][iid] = sum(sampled) / samples
            out[f"pass@{samples}"][iid] = pass_at_k(samples, sum(sampled), samples)
        if greedy:
            out["greedy"][iid] = float(greedy_rs[0])
    return out


def _group_names(tasks: dict[str, dict[str, str]]) -> list[tuple[str, list[str]]]:
    """(group name, its tasks) in report order."""
    def ordered(values: Iterable[str], known: Sequence[str]) -> list[str]:
        values = set(values)
        return [v for v in known if v in values] + sorted(values - set(known))

    info = list(tasks.items())
    groups = [("all", [t for t, _ in info])]
    for level, known in (("split", ("train", "test")), ("family", FAMILIES), ("kind", KINDS)):
        for value in ordered((i[level] for _, i in info), known):
            groups.append((f"{level}/{value}", [t for t, i in info if i[level] == value]))
    family_rank = {f: k for k, f in enumerate(ordered((i["family"] for _, i in info), FAMILIES))}
    for t, _ in sorted(info, key=lambda x: (family_rank[x[1]["family"]], x[0])):
        groups.append((f"task/{t}", [t]))
    return groups


def summarize(records: Iterable[AnswerRecord], cfg: Config, models: Sequence[str] | None = None,
              instance_ids: Iterable[str] | None = None) -> Summary:
    """Every table of an evaluation from its answer records.

    Accuracies are macro means over the group's tasks of per-task means over instances
    (instance value: the fraction of its `eval.samples` sampled answers that are correct;
    greedy: its greedy answer's verdict; pass@k: the unbiased estimator over its samples),
    each with a stratified bootstrap interval over instances (`eval.bootstrap` resamples,
    seeded by `eval.seed`, coverage `eval.confidence`). Behaviour figures (code use, code
    calls, self-checks, tokens, timeouts, executor failures) are over all answers of the
    group. Comparisons: for every pair of models (later minus earlier in `models`), the
    paired difference on the instances both completed. `instance_ids` restricts the records
    to one instance set; incomplete instances are left out.
    """
    ev = cfg.eval
    keep = set(instance_ids) if instance_ids is not None else None
    latest: dict[tuple, AnswerRecord] = {}
    for r in records:
        if keep is None or r.instance_id in keep:
            latest[r.key] = r  # a redone answer replaces the earlier one
    rows = list(latest.values())
    models = list(models) if models is not None else list(dict.fromkeys(r.model for r in rows))
    tasks = {r.task: {"family": r.family, "kind": r.kind, "split": r.split} for r in rows}
    metric_names = _metric_names(ev.samples, ev.greedy)
    per_model = {m: [r for r in rows if r.model == m] for m in models}
    values = {m: _per_instance(rs, ev.samples, ev.greedy) for m, rs in per_model.items()}
    task_of = {r.instance_id: r.task for r in rows}

    def by_task(per_inst: dict[str, float], group_tasks: list[str], only: set[str] | None = None) -> list[np.ndarray]:
        split: dict[str, list[float]] = defaultdict(list)
        for iid, v in per_inst.items():
            if only is None or iid in only:
                split[task_of[iid]].append(v)
        return [np.asarray(split[t]) for t in group_tasks if split.get(t)]

    groups = _group_names(tasks)
    results: dict[str, dict[str, GroupResult]] = {}
    comparisons: list[Comparison] = []
    for name, group_tasks in groups:
        members = set(group_tasks)
        results[name] = {}
        for m in models:
            answers = [r for r in per_model[m] if r.task in members]
            if not answers:
                continue
            acc = {}
            for metric in metric_names:
                parts = by_task(values[m].get(metric, {}), group_tasks)
                est = bootstrap_interval(parts, ev.bootstrap, _rng(ev.seed, name, metric), ev.confidence)
                acc[metric] = Estimate(*est, instances=sum(len(p) for p in parts))
            n = len(answers)
            results[name][m] = GroupResult(
                accuracy=acc, answers=n,
                code_use=sum(r.code_calls > 0 for r in answers) / n,
                code_calls=sum(r.code_calls for r in answers) / n,
                self_check=sum(r.self_checks > 0 for r in answers) / n,
                response_tokens=sum(r.response_tokens for r in answers) / n,
                answered=sum(r.answered for r in answers) / n,
                timeouts=sum(r.timeouts for r in answers),
                executor_failures=sum(r.executor_failure for r in answers),
            )
        for i, a in enumerate(models):
            for b in models[i + 1 :]:
                for metric in metric_names:
                    va, vb = values[a].get(metric, {}), values[b].get(metric, {})
                    both = {iid for iid in va.keys() & vb.keys() if task_of[iid] in members}
                    if not both:
                        continue
                    diff = {iid: vb[iid] - va[iid] for iid in both}
                    parts = by_task(diff, group_tasks)
                    est = bootstrap_interval(parts, ev.bootstrap, _rng(ev.seed, name, metric, a, b), ev.confidence)
                    comparisons.append(Comparison(a, b, name, metric, Estimate(*est, instances=len(both))))
    settings = {**answer_settings(cfg), "instances_per_task": ev.instances_per_task, "bootstrap": ev.bootstrap,
                "confidence": ev.confidence}
    return Summary(models, [g for g, _ in groups], results, comparisons, settings, tasks)


def scalar_metrics(summary: Summary, model: str, prefix: str = "eval/") -> dict[str, float]:
    """Flat scalars of one model for TensorBoard and metrics.jsonl: every accuracy (with _lo/_hi)
    and the behaviour figures overall, accuracy per split and family."""
    out: dict[str, float] = {}
    for group in summary.groups:
        if group.startswith(("task/", "kind/")) or model not in summary.results[group]:
            continue
        res = summary.results[group][model]
        tag = "" if group == "all" else "/" + group
        for metric, est in res.accuracy.items():
            out[f"{prefix}{metric}{tag}"] = est.value
            if group == "all":
                out[f"{prefix}{metric}_lo"], out[f"{prefix}{metric}_hi"] = est.lo, est.hi
        if group == "all":
            out.update({f"{prefix}{k}": float(getattr(res, k)) for k in
                        ("code_use", "code_calls", "self_check", "response_tokens", "answered", "timeouts", "executor_failures")})
    return out


# ------------------------------------------------------------------ the answer file (resume)


class EvalStateError(ConfigError):
    """An output folder holds answers that a resumed evaluation must not mix with its own."""


class AnswerStore:
    """`answers.jsonl` (one AnswerRecord per line) plus `eval.json` (the settings and model
    fingerprints those answers were made with), under one output folder.

    Answers are appended an instance's worth at a time and flushed, so an interrupted
    evaluation loses at most the chunk in flight; a rerun with the same settings skips every
    instance whose answers are all there. Different answer settings, or a model whose
    weights changed under the same name, raise EvalStateError instead of mixing results.
    """

    def __init__(self, out_dir: str | Path, settings: dict[str, Any]):
        self.dir = Path(out_dir)
        self.path = self.dir / "answers.jsonl"
        self.meta_path = self.dir / "eval.json"
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {"settings": settings, "models": {}}
        if meta["settings"] != settings:
            old = meta["settings"]
            changed = sorted(k for k in settings.keys() | old.keys() if settings.get(k) != old.get(k))
            diff = ", ".join(f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
            raise EvalStateError(f"{self.dir} holds answers made with other settings ({diff}); "
                                 "use another eval.output_dir, or restore those settings to resume")
        self.meta = meta
        self._write_meta()
        self.records = self._read()

    def _read(self) -> list[AnswerRecord]:
        if not self.path.exists():
            return []
        out = []
        fields = dataclasses.fields(AnswerRecord)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line being written when the run was killed
                continue
            if isinstance(row, dict) and required <= row.keys():
                out.append(AnswerRecord(**{f.name: row[f.name] for f in fields if f.name in row}))
        return out

    def _write_meta(self) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.meta, indent=1))
        tmp.rename(self.meta_path)

    def check_model(self, name: str, fingerprint: str, path: str) -> None:
        """Record `name`'s weights; EvalStateError if answers of other weights are stored under it."""
        known = self.meta["models"].get(name)
        if known and known["fingerprint"] != fingerprint and any(r.model == name for r in self.records):
            raise EvalStateError(
                f"model '{name}' ({path}) is not the model whose answers {self.path} holds under that name "
                f"({known['path']}, other weights); give it another name (eval.models: other={path}) or use another eval.output_dir")
        self.meta["models"][name] = {"fingerprint": fingerprint, "path": path}
        self._write_meta()

    def done(self, model: str, per_instance: int) -> set[str]:
        """Instance ids with all `per_instance` answers of `model` stored."""
        keys: dict[str, set] = defaultdict(set)
        for r in self.records:
            if r.model == model:
                keys[r.instance_id].add((r.mode, r.sample))
        return {iid for iid, k in keys.items() if len(k) >= per_instance}

    def append(self, records: Sequence[AnswerRecord]) -> None:
        with open(self.path, "a+b") as f:
            f.seek(0, 2)
            if f.tell():
                f.seek(-1, 2)
                if f.read(1) != b"\n":  # a line cut short by a kill: end it, so it stays alone
                    f.write(b"\n")
            f.write("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records).encode())
            f.flush()
        self.records += records


# ------------------------------------------------------------------ tables


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def _interval(e: Estimate) -> str:
    return f"{_pct(e.value)} [{_pct(e.lo)}, {_pct(e.hi)}]"


METRIC_TITLES = {"accuracy": "Accuracy (mean over sampled answers)", "greedy": "Greedy accuracy"}
BEHAVIOUR = [("answers", "answers", "{:d}"), ("answered", "answered %", "pct"), ("code_use", "used code %", "pct"),
             ("code_calls", "code calls / answer", "{:.2f}"), ("self_check", "self-checked %", "pct"),
             ("response_tokens", "response tokens", "{:.0f}"), ("timeouts", "timeouts", "{:d}"),
             ("executor_failures", "executor failures", "{:d}")]


def markdown_report(summary: Summary) -> str:
    """The tables of `summary` in Markdown: one table per accuracy metric with the models side by
    side, the behaviour figures, and the paired comparisons with their verdicts."""
    s = summary.settings
    conf = round(100 * s.get("confidence", 0.95))
    lines = [
        "# Evaluation",
        "",
        f"{s.get('samples')} sampled answers per instance at temperature {s.get('temperature')} "
        f"(top-p {s.get('top_p')}){' and one greedy answer' if s.get('greedy') else ''}; "
        f"instance seed {s.get('seed')}, prompt style {s.get('prompt_style')}. Accuracies in %, "
        f"with {conf}% bootstrap intervals over instances ({s.get('bootstrap')} resamples); "
        "groups average their tasks. n = instances.",
    ]
    metrics = list(dict.fromkeys(m for g in summary.results.values() for r in g.values() for m in r.accuracy))
    for metric in metrics:
        lines += ["", f"## {METRIC_TITLES.get(metric, metric)}", "",
                  "| group | n | " + " | ".join(summary.models) + " |",
                  "|---|---|" + "---|" * len(summary.models)]
        for g in summary.groups:
            by_model = summary.results[g]
            n = max((r.accuracy[metric].instances for r in by_model.values() if metric in r.accuracy), default=0)
            cells = [_interval(by_model[m].accuracy[metric]) if m in by_model and metric in by_model[m].accuracy else ""
                     for m in summary.models]
            lines.append(f"| {g} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Behaviour (over all answers)", ""]
    for m in summary.models:
        lines += [f"**{m}**", "", "| group | " + " | ".join(t for _, t, _ in BEHAVIOUR) + " |",
                  "|---|" + "---|" * len(BEHAVIOUR)]
        for g in summary.groups:
            r = summary.results[g].get(m)
            if r is not None:
                cells = [_pct(getattr(r, k)) if f == "pct" else f.format(getattr(r, k)) for k, _, f in BEHAVIOUR]
                lines.append(f"| {g} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary.comparisons:
        lines += [f"## Paired differences (later minus earlier model, same instances, {conf}% interval)", "",
                  "| comparison | group | metric | n | difference (points) | verdict |", "|---|---|---|---|---|---|"]
        for c in summary.comparisons:
            lines.append(f"| {c.b} - {c.a} | {c.group} | {c.metric} | {c.diff.instances} | {_interval(c.diff)} | {c.verdict} |")
    return "\n".join(lines) + "\n"


def write_csv(summary: Summary, path: str | Path) -> Path:
    """One row per (group, metric), the models side by side (value, lo, hi as fractions);
    behaviour metrics have no interval."""
    import csv

    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "metric", *[f"{m}{suffix}" for m in summary.models for suffix in ("", "_lo", "_hi")]])
        metrics = list(dict.fromkeys(m for g in summary.results.values() for r in g.values() for m in r.accuracy))
        for g in summary.groups:
            for metric in metrics + [k for k, _, _ in BEHAVIOUR]:
                row = [g, metric]
                for m in summary.models:
                    r = summary.results[g].get(m)
                    if r is not None and metric in r.accuracy:
                        row += [r.accuracy[metric].value, r.accuracy[metric].lo, r.accuracy[metric].hi]
                    elif r is not None and metric not in metrics:
                        row += [getattr(r, metric), "", ""]
                    else:
                        row += ["", "", ""]
                w.writerow(row)
    return path


def write_comparisons_csv(summary: Summary, path: str | Path) -> Path:
    import csv

    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "group", "metric", "instances", "diff", "lo", "hi", "significant"])
        for c in summary.comparisons:
            w.writerow([c.a, c.b, c.group, c.metric, c.diff.instances, c.diff.value, c.diff.lo, c.diff.hi, c.diff.significant])
    return path


# ------------------------------------------------------------------ plots


def _save(fig, path: str | Path) -> None:
    """Write a PNG whose Description text chunk lists the axes and their series, so a reader
    (or a test) can check what a file shows without image recognition."""
    desc = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
             "series": [h for h in ax.get_legend_handles_labels()[1]]} for ax in fig.axes if ax.get_visible()]
    fig.savefig(path, dpi=100, metadata={"Description": json.dumps(desc)})


def figure_description(path: str | Path) -> list[dict]:
    """The axes (title, labels, series) written into a PNG by this module's plots."""
    from PIL import Image

    with Image.open(path) as img:
        return json.loads(img.text["Description"])


def _figure(width: float, height: float, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def plot_family_accuracy(summary: Summary, path: str | Path, metric: str | None = None):
    """Grouped bars: accuracy per family (and overall) per model, with the bootstrap intervals
    as error bars. Returns the matplotlib Figure (also written to `path`)."""
    metric = metric or ("accuracy" if summary.settings.get("samples") else "greedy")
    groups = ["all"] + [g for g in summary.groups if g.startswith("family/")]
    fig, axes = _figure(max(6.0, 1.0 + 0.8 * len(groups) * max(len(summary.models), 1)), 4)
    ax = axes[0][0]
    width = 0.8 / max(len(summary.models), 1)
    for k, m in enumerate(summary.models):
        xs, ys, err = [], [], [[], []]
        for i, g in enumerate(groups):
            r = summary.results[g].get(m)
            if r is None or metric not in r.accuracy:
                continue
            e = r.accuracy[metric]
            xs.append(i + (k - (len(summary.models) - 1) / 2) * width)
            ys.append(100 * e.value)
            err[0].append(100 * (e.value - e.lo))
            err[1].append(100 * (e.hi - e.value))
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=m)
    ax.set_xticks(range(len(groups)), [g.split("/")[-1] for g in groups])
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("task family")
    conf = round(100 * summary.settings.get("confidence", 0.95))
    ax.set_title(f"{METRIC_TITLES.get(metric, metric)} per family, {conf}% intervals")
    ax.legend()
    _save(fig, path)
    return fig


def plot_code_calls(records: Iterable[AnswerRecord], path: str | Path, models: Sequence[str] | None = None):
    """Histogram of code calls per answer, one series per model (share of that model's answers)."""
    rows = list(records)
    models = list(models) if models is not None else list(dict.fromkeys(r.model for r in rows))
    top = max([r.code_calls for r in rows] + [1])
    fig, axes = _figure(6, 4)
    ax = axes[0][0]
    width = 0.8 / max(len(models), 1)
    for k, m in enumerate(models):
        calls = [r.code_calls for r in rows if r.model == m]
        if not calls:
            continue
        counts = np.bincount(calls, minlength=top + 1)
        xs = np.arange(top + 1) + (k - (len(models) - 1) / 2) * width
        ax.bar(xs, 100 * counts / len(calls), width, label=m)
    ax.set_xticks(range(top + 1))
    ax.set_xlabel("code calls per answer")
    ax.set_ylabel("answers (%)")
    ax.set_title("Code calls per answer")
    ax.legend()
    _save(fig, path)
    return fig


LEARNING_CURVES = [  # (title, y label, [(metrics.jsonl key, series label)])
    ("Reward", "mean reward", [("reward/mean", "training rollouts")]),
    ("Accuracy", "accuracy", [("accuracy/mean", "training rollouts"), ("eval/accuracy", "held-out (sampled)"),
                              ("eval/greedy", "held-out (greedy)")]),
    ("Code calls", "code calls per answer", [("rollout/code_calls", "training rollouts"), ("eval/code_calls", "held-out")]),
    ("KL to reference", "KL (nats/token)", [("learner/kl", "kl")]),
    ("Entropy", "entropy (nats/token)", [("learner/entropy", "entropy")]),
]


def plot_learning_curves(rows: Sequence[dict], path: str | Path):
    """An RL run's curves from its metrics.jsonl rows (`r1ci.metrics.read_metrics`): reward,
    accuracy (training rollouts, and held-out accuracy with its interval where the run
    evaluated), code calls, KL and entropy per step. Panels whose keys never occur are
    left out."""
    panels = [(t, y, [(k, lab) for k, lab in series if any(k in r for r in rows)]) for t, y, series in LEARNING_CURVES]
    panels = [p for p in panels if p[2]]
    if not panels:
        raise ValueError("no RL metrics (reward/mean, eval/..., learner/...) in these rows: is this an RL run's metrics.jsonl?")
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = _figure(4.2 * cols, 3.2 * nrows, nrows, cols)
    flat = [ax for row in axes for ax in row]
    for ax, (title, ylabel, series) in zip(flat, panels):
        for key, label in series:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            (line,) = ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, markersize=3, label=label)
            lo, hi = f"{key}_lo", f"{key}_hi"
            band = [(r["step"], r[lo], r[hi]) for r in rows if lo in r and hi in r]
            if band:  # the held-out accuracy's bootstrap interval
                ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=line.get_color(), alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    _save(fig, path)
    return fig
