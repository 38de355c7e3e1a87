"""The task registry: the 144 suite tasks (SymBench 33, BIG-Bench-Hard 27, Reasoning-Gym 84) by name.

Everything else asks here: `get_task` for a task object, `list_tasks` for name/family/
split/kind and `generate_instances` for (cached) instances; a model's response is judged by
`r1ci.rewards.score`, the one scoring function. Toy tasks (`r1ci.tasks.toy`) are reachable by name but are not part
of the suite listings.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

from r1ci.errors import UserError
from r1ci.tasks.base import FAMILIES, KINDS, Instance, Task
from r1ci.tasks.split import SPLIT_VERSION, split_of

__all__ = [
    "FAMILIES",
    "KINDS",
    "SPLIT_VERSION",
    "Instance",
    "Task",
    "TaskInfo",
    "UnknownTaskError",
    "generate_instances",
    "get_task",
    "list_tasks",
    "resolve_task_names",
    "suite_names",
]

SPLITS = ("train", "test")


class UnknownTaskError(UserError, ValueError):
    """A task name that is not registered; the message lists close matches."""


@dataclass(frozen=True)
class TaskInfo:
    name: str
    family: str  # symbench, bbh or reasoning_gym
    split: str  # train or test
    kind: str  # execution, planning or reasoning


@functools.lru_cache(maxsize=1)
def _suite() -> dict[str, Task]:
    """Name -> task object for the 144 suite tasks, SymBench first, then BBH, then Reasoning-Gym."""
    from r1ci.tasks.bbh import bbh_tasks
    from r1ci.tasks.reasoning_gym import reasoning_gym_tasks
    from r1ci.tasks.symbench import SYMBENCH_TASKS

    tasks: dict[str, Task] = {}
    for task in [cls() for cls in SYMBENCH_TASKS] + bbh_tasks() + reasoning_gym_tasks():
        if task.name in tasks:
            raise RuntimeError(f"task name '{task.name}' is registered twice ({tasks[task.name].family}, {task.family})")
        if task.family not in FAMILIES or task.kind not in KINDS:
            raise RuntimeError(f"task '{task.name}': family {task.family!r} / kind {task.kind!r} not in {FAMILIES} / {KINDS}")
        tasks[task.name] = task
    return tasks


@functools.lru_cache(maxsize=1)
def _extra() -> dict[str, Task]:
    from r1ci.tasks.toy import TOY_TASKS

    return {cls.name: cls() for cls in TOY_TASKS}


def suite_names() -> list[str]:
    """The 144 suite task names (no toy tasks)."""
    return list(_suite())


def get_task(name: str) -> Task:
    """The task object for `name` (suite or toy); UnknownTaskError lists close matches."""
    task = _suite().get(name) or _extra().get(name)
    if task is None:
        known = suite_names() + list(_extra())
        close = difflib.get_close_matches(str(name), known, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `python jobs/data.py list` for all 144"
        raise UnknownTaskError(f"unknown task '{name}': {hint}")
    return task


def _check_choice(value: str | None, allowed: tuple[str, ...], what: str) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} '{value}'; choose one of {', '.join(allowed)}")


def list_tasks(family: str | None = None, split: str | None = None, kind: str | None = None) -> list[TaskInfo]:
    """Suite tasks, optionally filtered by family, split and kind."""
    _check_choice(family, FAMILIES, "family")
    _check_choice(split, SPLITS, "split")
    _check_choice(kind, KINDS, "kind")
    infos = [TaskInfo(t.name, t.family, split_of(t.name), t.kind) for t in _suite().values()]
    return [
        i
        for i in infos
        if (family is None or i.family == family) and (split is None or i.split == split) and (kind is None or i.kind == kind)
    ]


def resolve_task_names(items: list[str]) -> list[str]:
    """Expand 'train' / 'test' (a whole split) and 'all' (the suite); check every other name.

    Order is kept and repeats dropped, e.g. ['test', 'toy_run_code'] -> the 37 test tasks + the toy.
    """
    out: list[str] = []
    for item in items:
        if item in SPLITS:
            names = [i.name for i in list_tasks(split=item)]
        elif item == "all":
            names = suite_names()
        else:
            names = [get_task(item).name]
        out += [n for n in names if n not in out]
    return out


@functools.lru_cache(maxsize=512)
def _instances(name: str, seed: int, n: int, difficulty: int) -> tuple[Instance, ...]:
    return tuple(get_task(name).generate(seed, n, difficulty))


def generate_instances(name: str, seed: int, n: int, difficulty: int = 1) -> list[Instance]:
    """`n` instances of task `name` from `seed` (cached per process; the same every time)."""
    return list(_instances(name, seed, n, difficulty))
