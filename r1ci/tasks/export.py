"""Export the suite as Parquet datasets: `train.parquet` (107 tasks) and `test.parquet` (37 tasks).

Rows are split by task, never by instance, so a test task cannot reach training data; the
split of every row is checked as it is written. `datasets.load_dataset("parquet",
data_files={"train": ..., "test": ...})` reads the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from r1ci.tasks import SPLIT_VERSION, TaskInfo, generate_instances, get_task, list_tasks
from r1ci.tasks.base import Instance


def instance_row(info: TaskInfo, inst: Instance) -> dict:
    """One flat row; validator data and metadata are JSON text (their shapes differ by task)."""
    return {
        "id": inst.id,
        "task": inst.task,
        "family": info.family,
        "kind": info.kind,
        "split": info.split,
        "seed": inst.seed,
        "index": inst.index,
        "question": inst.question,
        "answer": inst.answer,
        "reference_solution": get_task(inst.task).reference_solution(inst),
        "data": json.dumps(inst.data, sort_keys=True),
        "metadata": json.dumps(inst.metadata, sort_keys=True),
    }


def split_rows(
    split: str, seed: int, n: int, tasks: list[str] | None = None, on_task: Callable[[str], None] | None = None
) -> list[dict]:
    """Rows of every task of `split` (or of the given subset of it), `n` instances per task."""
    infos = list_tasks(split=split)
    if tasks is not None:
        wanted = set(tasks)
        infos = [i for i in infos if i.name in wanted]
    rows = []
    for info in infos:
        rows += [instance_row(info, inst) for inst in generate_instances(info.name, seed, n)]
        if on_task:
            on_task(info.name)
    wrong = {r["task"] for r in rows if r["split"] != split}
    if wrong:
        raise RuntimeError(f"tasks {sorted(wrong)} do not belong to the {split} split")
    return rows


def write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def build(
    out_dir: str | Path, seed: int, n: int, tasks: list[str] | None = None, on_task: Callable[[str], None] | None = None
) -> dict:
    """Write train.parquet, test.parquet and manifest.json under `out_dir`; returns the manifest.

    `tasks` limits the export to those names (each still goes to its own split's file).
    """
    out = Path(out_dir).expanduser()
    manifest: dict = {"split_version": SPLIT_VERSION, "seed": seed, "instances_per_task": n, "splits": {}}
    for split in ("train", "test"):
        rows = split_rows(split, seed, n, tasks, on_task)
        write_parquet(rows, out / f"{split}.parquet")
        per_task: dict[str, int] = {}
        for r in rows:
            per_task[r["task"]] = per_task.get(r["task"], 0) + 1
        manifest["splits"][split] = {"file": f"{split}.parquet", "rows": len(rows), "tasks": per_task}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
