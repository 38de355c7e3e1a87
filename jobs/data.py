"""The task suite from the command line: list, preview, export, and fetch BIG-bench data.

    python jobs/data.py list [--json] [--family bbh] [--split test]
    python jobs/data.py show TASK [-n 3] [--seed 0]
    python jobs/data.py build [--out data/suite] [-n 200]       # train.parquet, test.parquet
    python jobs/data.py fetch-bbh [--from bigbench-1.0.0.tar.gz]  # once, for 24 BBH tasks

Every subcommand also takes `--config FILE` and dotted overrides (model.data_dir=...,
tasks.seed=..., tasks.instances_per_task=...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from r1ci.config import add_cli, from_cli
from r1ci.errors import UserError
from r1ci.tasks import FAMILIES, KINDS, generate_instances, get_task, list_tasks
from r1ci.tasks.bbh import FETCH_HINT, MIN_INSTANCES, BigBenchDataMissing, data_dir, set_data_dir

console = Console(stderr=True)


def pool_note(name: str) -> tuple[int | None, str]:
    """(distinct questions when source data fixes them, a note when that is fewer than the paper's 200)."""
    try:
        size = get_task(name).pool_size()
    except BigBenchDataMissing:
        return None, f"BIG-bench data not fetched: run `{FETCH_HINT}`"
    if size is not None and size < MIN_INSTANCES:
        return size, f"only {size} distinct questions in its source (the paper uses {MIN_INSTANCES}); none is repeated"
    return size, ""


def cmd_list(args, cfg) -> None:
    infos = list_tasks(family=args.family, split=args.split, kind=args.kind)
    pools = {i.name: pool_note(i.name) for i in infos}
    if args.json:
        rows = [{"name": i.name, "family": i.family, "split": i.split, "kind": i.kind, "pool_size": pools[i.name][0], "note": pools[i.name][1]} for i in infos]
        print(json.dumps(rows))
        return
    table = Table(title=f"{len(infos)} tasks")
    for col in ("name", "family", "split", "kind", "questions"):
        table.add_column(col, no_wrap=col == "name")
    for i in infos:
        size, note = pools[i.name]
        shown = "generated" if size is None and not note else "not fetched" if size is None else f"{size} < {MIN_INSTANCES}" if note else str(size)
        table.add_row(i.name, i.family, i.split, i.kind, shown)
    out = Console()
    Console(width=max(out.width, 100)).print(table)  # a pipe gets 80 columns, too few for the names
    short = [name for name, (size, _) in pools.items() if size is not None and size < MIN_INSTANCES]
    if short:
        console.print(f"{len(short)} tasks have fewer distinct questions than {MIN_INSTANCES}: {', '.join(short)}")


def cmd_show(args, cfg) -> None:
    task = get_task(args.task)
    seed = cfg.tasks.seed if args.seed is None else args.seed
    out = Console()
    for inst in generate_instances(task.name, seed, args.n):
        out.rule(f"{inst.id}  ({task.family}, {task.kind})")
        out.print(inst.question, markup=False, highlight=False)
        out.print(f"[bold]gold:[/bold] {inst.answer if inst.answer is not None else '(checked by a validator)'}")
        ref = task.reference_solution(inst)
        if ref:
            out.print("[bold]reference solution:[/bold]")
            out.print(ref, markup=False, highlight=False)
        if inst.metadata:
            out.print(f"[dim]metadata: {json.dumps(inst.metadata)[:300]}[/dim]")


def cmd_build(args, cfg) -> None:
    from r1ci.tasks.export import build

    n = args.n or cfg.tasks.instances_per_task
    tasks = [get_task(t).name for t in args.tasks] if args.tasks else None
    total = len(tasks) if tasks else len(list_tasks())
    start = time.time()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("building", total=total)
        manifest = build(args.out, cfg.tasks.seed, n, tasks, on_task=lambda name: progress.update(bar, advance=1, description=name))
    for split, info in manifest["splits"].items():
        short = sorted(t for t, c in info["tasks"].items() if c < n)
        note = f"; fewer than {n} in {', '.join(short)} (small sources)" if short else ""
        console.print(f"{split}: {info['rows']} rows from {len(info['tasks'])} tasks -> {Path(args.out) / info['file']}{note}")
    console.print(f"split {manifest['split_version']}, {time.time() - start:.1f} s")


def cmd_fetch_bbh(args, cfg) -> None:
    from r1ci.tasks.bigbench_fetch import fetch_bigbench, missing_files

    root = data_dir()
    if not args.force and not missing_files(root):
        console.print(f"BIG-bench task files already in {root / 'bigbench'}; nothing to do")
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("downloading bigbench-1.0.0.tar.gz" if not args.from_file else "extracting", total=None)
        written = fetch_bigbench(
            root,
            tarball=Path(args.from_file) if args.from_file else None,
            force=args.force,
            progress=lambda done, total: progress.update(bar, completed=done, total=total or None),
        )
    console.print(f"wrote {len(written)} task files under {root / 'bigbench'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the 144 tasks with family, split, kind and how many distinct questions each has")
    p.add_argument("--json", action="store_true", help="print a JSON array of {name, family, split, kind, pool_size, note}")
    p.add_argument("--family", choices=FAMILIES)
    p.add_argument("--split", choices=("train", "test"))
    p.add_argument("--kind", choices=KINDS)
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("show", help="preview instances of one task")
    p.add_argument("task")
    p.add_argument("-n", type=int, default=3, help="instances to show")
    p.add_argument("--seed", type=int, default=None, help="generation seed (default tasks.seed)")
    p.set_defaults(run=cmd_show)

    p = sub.add_parser("build", help="write train.parquet and test.parquet")
    p.add_argument("--out", default="data/suite", help="output directory")
    p.add_argument("-n", type=int, default=0, help="instances per task (default tasks.instances_per_task)")
    p.add_argument("--tasks", nargs="+", help="only these tasks (each still goes to its own split)")
    p.set_defaults(run=cmd_build)

    p = sub.add_parser("fetch-bbh", help="fetch the BIG-bench task files for 24 BBH tasks")
    p.add_argument("--from", dest="from_file", help="use this local bigbench-1.0.0.tar.gz instead of downloading")
    p.add_argument("--force", action="store_true", help="extract again even if the files are present")
    p.set_defaults(run=cmd_fetch_bbh)

    for p in sub.choices.values():
        add_cli(p)
    args = parser.parse_args(argv)
    try:
        cfg = from_cli(args)
        set_data_dir(cfg.model.data_dir)
        args.run(args, cfg)
    except UserError as exc:
        print(f"data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
