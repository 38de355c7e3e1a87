"""Evaluate models on the same held-out instances: accuracy, pass@k, code use, self-checking.

    python jobs/eval.py --config configs/demo.yaml \
        eval.models=[base=smollm2,sft=runs/sft/final,rl=runs/demo/rl/final]

Every model answers the same instances (`r1ci.evaluation.held_out_instances`: held-out
instances of tasks.train and the eval.test_tasks), eval.samples times at
sampling.eval_temperature and once greedily, on one generator fleet and executor pool,
through the rollout RL uses, scored by `r1ci.rewards.score`. A model with the same
architecture and tokenizer as the one served before it is loaded into the running engines
as a weight sync (RL's buckets), not by restarting them. Answers are appended to
eval.output_dir/answers.jsonl chunk by chunk; rerunning the same command resumes. Writes
results.md, results.csv, comparisons.csv, results.json and PNG plots beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from r1ci import evaluation
from r1ci.cli import job_main
from r1ci.config import Config, ConfigError
from r1ci.errors import MissingInput
from r1ci.metrics import read_metrics
from r1ci.models import resolve_model

log = logging.getLogger("r1ci.eval")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# config.json keys that do not change the network or its inputs: models differing only here share engines
NON_STRUCTURAL = {"_name_or_path", "_model_name_or_path", "dtype", "torch_dtype", "transformers_version", "use_cache"}
TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "chat_template.jinja", "chat_template.json", "added_tokens.json")
# tokenizer_config.json keys about where a tokenizer was loaded from, not how it tokenizes
NON_TOKENIZING = {"is_local", "local_files_only", "name_or_path", "_commit_hash", "model_max_length", "tokenizer_file"}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # column name in the tables
    path: str  # as the user wrote it
    model_dir: str  # resolved folder (or hub id)


def model_specs(cfg: Config) -> list[ModelSpec]:
    """`eval.models` ('name=path' or a path; empty: model.path), resolved; a missing folder is a
    MissingInput naming it, before anything starts."""
    items = cfg.eval.models or [cfg.model.path]
    specs = []
    for item in items:
        name, _, path = item.partition("=") if "=" in item else ("", "", item)
        name, path = name.strip() or _default_name(path.strip()), path.strip()
        if not name.replace("-", "").replace("_", "").replace(".", "").replace("/", "").isalnum():
            raise ConfigError(f"eval.models: model name '{name}' must be letters, digits, '-', '_', '.' or '/' (write name=path)")
        try:
            model_dir = resolve_model(path, cfg.model.data_dir)
        except MissingInput as exc:
            raise MissingInput(f"eval.models: {name}: {exc}") from None
        specs.append(ModelSpec(name, path, model_dir))
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"eval.models: the name {', '.join(twice)} is used twice; write name=path to tell them apart")
    return specs


def _default_name(path: str) -> str:
    """'smollm2' -> smollm2; runs/sft/final -> sft/final (the job's folder tells finals apart)."""
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 and parts[-1] == "final" else (parts[-1] if parts else path)


def _weight_files(model_dir: str) -> list[Path]:
    return sorted(f for f in Path(model_dir).iterdir() if f.name.endswith(WEIGHT_SUFFIXES))


def fingerprint(model_dir: str) -> str:
    """Identifies a model's weights cheaply: config.json and every weight file's size, head and tail (1 MiB each)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return f"hub:{model_dir}"
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in _weight_files(model_dir):
        size = f.stat().st_size
        with open(f, "rb") as fh:
            h.update(f"{f.name}:{size}".encode() + fh.read(2**20))
            fh.seek(max(size - 2**20, 0))
            h.update(fh.read())
    return h.hexdigest()


def architecture(model_dir: str) -> str:
    """Models with equal architecture keys share running engines: the network's config.json
    keys, the tokenizer files (prompts must tokenize alike) and the end-of-sequence ids."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return f"hub:{model_dir}"  # a hub model gets engines of its own
    config = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k not in NON_STRUCTURAL}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    tok_config = folder / "tokenizer_config.json"
    if tok_config.exists():
        kept = {k: v for k, v in json.loads(tok_config.read_text()).items() if k not in NON_TOKENIZING}
        h.update(json.dumps(kept, sort_keys=True).encode())
    gen = folder / "generation_config.json"
    if gen.exists():
        g = json.loads(gen.read_text())
        h.update(json.dumps([g.get(k) for k in ("eos_token_id", "pad_token_id", "bos_token_id")]).encode())
    for name in TOKENIZER_FILES:
        if (folder / name).exists():
            h.update(name.encode() + (folder / name).read_bytes())
    return h.hexdigest()


def folder_weights(model_dir: str) -> Iterator[tuple[str, np.ndarray]]:
    """(HF parameter name, float32 array) of every tensor in a folder's safetensors files, what
    `Engine.load_weights` takes (bf16 is upcast: numpy has none, as in the learner's export)."""
    import torch
    from safetensors import safe_open

    files = [f for f in _weight_files(model_dir) if f.suffix == ".safetensors"]
    if not files:
        raise MissingInput(f"{model_dir} has no .safetensors weights to load into running engines")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name).to(torch.float32).numpy()


class Engines:
    """The generator fleet and executor pool every model is answered on; serving another model
    of the same architecture is a weight sync into the running engines, else new engines."""

    def __init__(self, cfg: Config):
        from actors.executor import ExecutorPool

        self.cfg = cfg
        self.executor = ExecutorPool.create(cfg)
        self.fleet = None
        self.arch: str | None = None
        self.version = 0

    def serve(self, spec: ModelSpec) -> str:
        """Make the fleet serve `spec`'s weights; returns how ("started" or "weight sync")."""
        import ray

        from actors.fleet import GeneratorFleet
        from r1ci.weight_sync import pack_buckets

        arch = architecture(spec.model_dir)
        if self.fleet is not None and arch == self.arch:
            self.version += 1
            buckets = pack_buckets(folder_weights(spec.model_dir), self.cfg.learner.sync_bucket_mb, self.version)
            self.fleet.load_weights((ray.put(b) for b in buckets), self.version)
            return "weight sync"
        if self.fleet is not None:
            self.fleet.shutdown()
        self.fleet, self.arch, self.version = GeneratorFleet(self.cfg, spec.model_dir, self.executor), arch, 0
        return "started"

    def answer(self, requests: list) -> list:
        return self.fleet.rollout(requests, self.version)

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.shutdown()
        self.executor.close()


def write_outputs(summary: evaluation.Summary, records: list, specs: list[ModelSpec], out: Path) -> dict[str, str]:
    """Tables, JSON and plots of `summary` under `out`; returns their paths by kind."""
    paths = {"markdown": out / "results.md", "csv": out / "results.csv", "comparisons": out / "comparisons.csv",
             "json": out / "results.json", "family_plot": out / "accuracy_by_family.png", "code_calls_plot": out / "code_calls.png"}
    paths["markdown"].write_text(evaluation.markdown_report(summary))
    evaluation.write_csv(summary, paths["csv"])
    evaluation.write_comparisons_csv(summary, paths["comparisons"])
    paths["json"].write_text(json.dumps(summary.to_json(), indent=1))
    evaluation.plot_family_accuracy(summary, paths["family_plot"])
    evaluation.plot_code_calls(records, paths["code_calls_plot"], summary.models)
    for spec in specs:  # an RL run's final folder: its learning curves from the run's metrics.jsonl
        run_dir = Path(spec.model_dir).parent
        rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        if any("reward/mean" in r for r in rows):
            key = f"learning_curves_{spec.name.replace('/', '_')}"
            paths[key] = out / f"{key}.png"
            evaluation.plot_learning_curves(rows, paths[key])
    return {k: str(v) for k, v in paths.items()}


def run_eval(cfg: Config, show_progress: bool = True, verbose: bool = False) -> dict:
    """Answer, score and summarize every model of `eval.models` on the held-out instances.

    Returns a summary: models, instances, per model the overall accuracies and, for the
    models answered now, how they were loaded and the seconds spent loading and answering, the comparisons' verdicts and the output paths.
    Bad input (a missing model, an unknown task, a test task in tasks.train, an output folder
    of other settings) raises a UserError before anything starts; Ctrl-C raises
    KeyboardInterrupt with the answers finished so far on disk.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    specs = model_specs(cfg)
    instances = evaluation.held_out_instances(cfg)
    if not instances:
        raise ConfigError("no instances to evaluate: tasks.train and eval.test_tasks are both empty")
    out = Path(cfg.eval.output_dir)
    store = evaluation.AnswerStore(out, evaluation.answer_settings(cfg))
    for spec in specs:
        store.check_model(spec.name, fingerprint(spec.model_dir), spec.path)
    per = evaluation.answers_per_instance(cfg)
    todo = {s.name: [i for i in instances if i.id not in store.done(s.name, per)] for s in specs}
    seconds: dict[str, dict] = {}  # per model answered now: loaded_by ("started" or "weight sync"), load_s, answer_s
    log.info("evaluating %d models on %d instances (%d answers each); %d model-instances left",
             len(specs), len(instances), per, sum(map(len, todo.values())))
    if any(todo.values()):
        from actors.runtime import init_ray

        init_ray(cfg.run.ray_address, cfg.run.ray_num_cpus, log_dir=out / "logs", verbose=verbose)
        engines = None
        try:
            engines = Engines(cfg)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.fields[info]}"), disable=not show_progress) as progress:
                bars = {s.name: progress.add_task(f"eval {s.name}", total=len(instances),
                                                  completed=len(instances) - len(todo[s.name]), info="") for s in specs}
                for spec in specs:
                    if not todo[spec.name]:
                        continue
                    start = time.perf_counter()
                    progress.update(bars[spec.name], info="loading")
                    how = engines.serve(spec)
                    loaded = time.perf_counter()
                    for k in range(0, len(todo[spec.name]), cfg.eval.chunk_size):
                        chunk = todo[spec.name][k : k + cfg.eval.chunk_size]
                        requests = evaluation.answer_requests(chunk, cfg)
                        records = evaluation.score_answers(requests, engines.answer(requests), cfg, spec.name)
                        store.append(records)
                        correct = [r.correct for r in store.records if r.model == spec.name]
                        progress.update(bars[spec.name], advance=len(chunk), info=f"{how}, {sum(correct)}/{len(correct)} correct")
                    seconds[spec.name] = {"loaded_by": how, "load_s": loaded - start, "answer_s": time.perf_counter() - loaded}
                    log.info("%s: %s in %.1f s, answered in %.1f s", spec.name, how, loaded - start, time.perf_counter() - loaded)
        except KeyboardInterrupt:
            log.warning("the answers finished so far are kept in %s; the same command resumes after them", store.path)
            raise
        finally:
            if engines is not None:
                engines.close()
    summary = evaluation.summarize(store.records, cfg, [s.name for s in specs], [i.id for i in instances])
    paths = write_outputs(summary, store.records, specs, out)
    return {
        "models": [s.name for s in specs],
        "instances": len(instances),
        "answers_per_instance": per,
        "evaluated_now": {name: len(items) for name, items in todo.items()},
        "seconds": seconds,
        "accuracy": {m: {k: [e.value, e.lo, e.hi] for k, e in r.accuracy.items()} for m, r in summary.results["all"].items()},
        "comparisons": [f"{c.b} - {c.a} ({c.metric}, all): {100 * c.diff.value:+.1f} points "
                        f"[{100 * c.diff.lo:+.1f}, {100 * c.diff.hi:+.1f}], {c.verdict}"
                        for c in summary.comparisons if c.group == "all"],
        "outputs": paths,
    }


def report(cfg: Config, show_progress: bool = True, verbose: bool = False) -> None:
    """`run_eval`, then the accuracy tables and the comparisons on the console."""
    result = run_eval(cfg, show_progress, verbose)
    print(Path(result["outputs"]["markdown"]).read_text().split("\n## Behaviour")[0])
    for line in result["comparisons"]:
        print(line)
    print(f"outputs in {cfg.eval.output_dir}: {', '.join(Path(p).name for p in result['outputs'].values())}")


def main(argv: list[str] | None = None) -> int:
    return job_main(__doc__, "eval", report, lambda cfg: cfg.eval.output_dir, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
