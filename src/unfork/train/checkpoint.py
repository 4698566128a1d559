"""Resumable checkpoints: everything a killed run needs to continue as if it had not stopped.

A checkpoint is a folder ``<run>/checkpoints/p<phase>-s<global step>/`` with

* ``trainable.safetensors`` - the trained tensors (LoRA adapters, or every weight for full fine-tuning)
* ``optimizer.pt``          - optimizer and LR-scheduler state
* ``rng.pt``                - Python, torch (and CUDA) random states
* ``state.json``            - where the run is (phase, epoch, step in epoch, global step), the best
                              held-out loss so far, and the exact settings that made it

It is written to a hidden folder and renamed into place, ``state.json`` last,
so a folder that exists is complete: a SIGKILL mid-save leaves the previous
checkpoint as the latest one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE = "state.json"


@dataclass
class Position:
    """Where training stands: the next step to run is ``step_in_epoch`` of ``epoch`` in ``phase``."""

    phase: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_eval_loss: float | None = None
    best_epoch: int | None = None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trained tensors (first: {missing[0]})")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def rng_state() -> dict[str, Any]:
    out = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, *, model: torch.nn.Module, optimizer: Any, scheduler: Any, position: Position,
         settings: dict[str, Any], keep: int = 2) -> Path:
    """Write a checkpoint for ``position`` and keep only the newest ``keep`` of them."""
    from safetensors.torch import save_file

    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{folder.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    state = {"position": position.__dict__, "settings": settings}
    (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(".") and (d / STATE).is_file():
            pos = json.loads((d / STATE).read_text(encoding="utf-8"))["position"]
            found.append(((pos["phase"], pos["global_step"]), d))
    return [d for _, d in sorted(found)]


def latest(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE).read_text(encoding="utf-8"))


def load(folder: Path, *, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> Position:
    """Restore model, optimizer, scheduler and random state from ``folder``; return its position."""
    from safetensors.torch import load_file

    load_trainable_state(model, load_file(str(folder / "trainable.safetensors")))
    opt = torch.load(folder / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    set_rng_state(torch.load(folder / "rng.pt", weights_only=False))
    return Position(**read_state(folder)["position"])
