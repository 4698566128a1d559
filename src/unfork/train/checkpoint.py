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

With FSDP (``sharded=True``) each process holds a shard of every tensor: saving
gathers full tensors with ``torch.distributed.checkpoint.state_dict`` (every
process takes part, rank 0 gets them on the CPU and writes), and loading hands
each process its shard. The files are the same as without sharding, optimizer
state keyed by parameter index as ``optimizer.state_dict()`` writes it, so a
run can resume under another ``--distributed`` mode or process count.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unfork import fsio

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


def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Full (unsharded) tensors, moved to the CPU and kept on rank 0 only: the other ranks get {}.
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def is_writer(sharded: bool) -> bool:
    """Whether this process writes what a sharded gather returns (rank 0; always when not sharded)."""
    return not sharded or torch.distributed.get_rank() == 0


def trainable_state(model: torch.nn.Module, sharded: bool = False) -> dict[str, torch.Tensor]:
    """The trained tensors by parameter name; when ``sharded`` a collective, full only on rank 0."""
    if not sharded:
        return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    full = get_model_state_dict(model, options=_full_options())
    # The state dict also names tied weights twice (lm_head.weight) and buffers: keep the same keys as above.
    return {n: t.contiguous() for n, t in full.items() if n in trained}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor], sharded: bool = False) -> None:
    """Set the trained tensors from full ``state``; when ``sharded`` every process passes it and keeps its shard."""
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trained tensors (first: {missing[0]})")
    if sharded:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        # strict=False: frozen weights, buffers and the tied head's second name are not in the file.
        options = _full_options()
        options.strict = False
        set_model_state_dict(model, dict(state), options=options)
        return
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded ``model``, full, on rank 0's CPU ({} elsewhere); a collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    full = get_model_state_dict(model, options=_full_options())
    # Tied weights (an output head sharing the embedding) are gathered as two copies: make them one
    # tensor again, so save_pretrained sees the tie and writes a single weight as without sharding.
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first and name in full and first[id(p)] in full:
            full[name] = full[first[id(p)]]
        first.setdefault(id(p), name)
    return full


def _param_names(model: torch.nn.Module, optimizer: Any) -> list[str]:
    """The names of the optimizer's parameters in its order (the index ``optimizer.state_dict()`` uses)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(model: torch.nn.Module, optimizer: Any, sharded: bool = False) -> dict[str, Any]:
    """``optimizer.state_dict()``; when ``sharded`` gathered (a collective) into that layout on rank 0."""
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=_full_options())
    if not full:
        return {}
    index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
    return {"state": {index[n]: v for n, v in full["state"].items()}, "param_groups": groups}


def load_optimizer_state(model: torch.nn.Module, optimizer: Any, state: dict[str, Any], sharded: bool = False) -> None:
    """Restore what :func:`optimizer_state` returned; when ``sharded`` every process passes the full state."""
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    # The sharded loader wants parameter names where optimizer.state_dict() has indexes.
    names = _param_names(model, optimizer)
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    by_name = {"state": {names[i]: v for i, v in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, by_name, options=_full_options())


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
         settings: dict[str, Any], keep: int = 2, sharded: bool = False) -> Path:
    """Write a checkpoint for ``position`` and keep only the newest ``keep`` of them.

    When ``sharded``, every process calls this (gathering is collective) and rank 0 writes.
    """
    from safetensors.torch import save_file

    trainable = trainable_state(model, sharded)
    optim = optimizer_state(model, optimizer, sharded)
    if not is_writer(sharded):
        return folder
    root = folder.parent
    with fsio.atomic_folder(folder, markers=(STATE,), partial=root / f".{folder.name}.partial") as tmp:
        save_file(trainable, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optim, "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        state = {"position": position.__dict__, "settings": settings}
        fsio.atomic_write_text(tmp / STATE, json.dumps(state, indent=2) + "\n")
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        fsio.remove_tree(old, markers=(STATE,))
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


def load(folder: Path, *, model: torch.nn.Module, optimizer: Any, scheduler: Any, sharded: bool = False) -> Position:
    """Restore model, optimizer, scheduler and random state from ``folder``; return its position."""
    from safetensors.torch import load_file

    load_trainable_state(model, load_file(str(folder / "trainable.safetensors")), sharded)
    opt = load_plain(folder / "optimizer.pt")
    load_optimizer_state(model, optimizer, opt["optimizer"], sharded)
    scheduler.load_state_dict(opt["scheduler"])
    set_rng_state(load_plain(folder / "rng.pt"))
    return Position(**read_state(folder)["position"])


def load_plain(path: Path) -> Any:
    """A ``torch.save`` file of tensors and plain values only, so a planted file cannot run code on resume."""
    import pickle

    from unfork.errors import UserError

    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message mostly advises weights_only=False; keep only the line naming what was refused
        detail = next((line for line in str(exc).splitlines() if "GLOBAL" in line), "").strip()
        raise UserError(f"{path} holds more than tensors and plain values: refusing to load it"
                        + (f" ({detail})" if detail else ""),
                        hint="unfork did not write this file; delete the checkpoint folder to start over") from None
