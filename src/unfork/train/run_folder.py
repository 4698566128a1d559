"""What ``--fresh`` may delete: the files a training run writes, and only in a folder that holds one."""

from __future__ import annotations

import shutil
from pathlib import Path

from unfork.contracts import TrainingRun
from unfork.errors import UserError
from unfork.fsio import LOCK_NAME

REPORTS = ("tensorboard", "wandb")
"""Folders the reporter (unfork.train.report) writes into the run when ``--report-to`` asks for them."""


def run_entries(run: TrainingRun) -> list[Path]:
    """Every file and folder a training run writes directly in its folder."""
    written = [run.info_path, run.data_manifest_path, run.metrics_path, run.final, run.partial_final,
               run.adapter, run.checkpoints, run.eval_dir, run.best_path("-").parent.parent]
    temporary = [p.with_name(f".{p.name}.tmp") for p in (run.info_path, run.data_manifest_path)]
    return written + temporary + [run.root / name for name in REPORTS]


def is_training_run(run: TrainingRun) -> bool:
    """``training.json`` is there and reads as the contract's run description (it names the run's key)."""
    info = run.read_info()
    return info is not None and isinstance(info.key, str)


def clear_for_fresh(run: TrainingRun) -> None:
    """Delete what an earlier run wrote in ``run.root``; refuse a folder that is neither empty nor a run.

    Anything else in the folder (a user's notes, a lock file) is left where it is.
    """
    root = run.root
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise UserError(f"--output-dir {root} is a file, not a folder", hint="choose another --output-dir")
    if any(p.name != LOCK_NAME for p in root.iterdir()) and not is_training_run(run):
        raise UserError(f"--fresh would delete {root}, which is not empty and holds no training run "
                        f"(no readable {TrainingRun.INFO})",
                        hint="choose another --output-dir, or empty that folder yourself")
    for path in run_entries(run):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
