"""RL checkpoints on disk: one folder per step, written under a temporary name and renamed.

A checkpoint holds the job state (step, weight version, RNG, config, coordinator state)
in `state.pkl` and the learner's own files under `learner/`; `latest` names the newest
complete one, so a run killed mid-write resumes from the previous checkpoint.
"""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save(run_dir: str | Path, step: int, state: dict[str, Any], write_learner: Callable[[str], None]) -> Path:
    """Write checkpoint `step`: `write_learner(folder)` saves the learner's files, `state` the rest."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_learner(str((tmp / "learner").resolve()))
    with open(tmp / "state.pkl", "wb") as f:
        pickle.dump({"step": step, **state}, f)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (root / "latest.tmp").write_text(final.name)
    (root / "latest.tmp").rename(root / "latest")
    return final


def latest(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "state.pkl").exists() else None


def load_state(ckpt: Path) -> dict[str, Any]:
    with open(ckpt / "state.pkl", "rb") as f:
        return pickle.load(f)
