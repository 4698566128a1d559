"""Data parallelism through ``torch.distributed``: one process per device, started by torchrun.

``unfork model train`` run under ``torchrun --nproc-per-node N -m unfork model train ...``
finds ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, joins the
process group (NCCL on CUDA, gloo on CPU) and, following ``--distributed``:

* ``ddp`` (what ``auto`` picks): every process holds the whole model and DDP
  averages the gradients;
* ``fsdp``: PyTorch's FSDP2 (``fully_shard``) shards parameters, gradients and
  optimizer state over the processes, one group per decoder layer plus the rest
  (embeddings, final norm, output head) at the root, for a full fine-tune of a
  model that does not fit one device. Checkpoints and the final model are
  gathered into full tensors (see checkpoint.py), so a run's files look the
  same whichever mode wrote them. LoRA is refused: its frozen base weights
  (bf16 where that pays) and float32 adapters would share FSDP groups, which
  need one dtype, and saving the adapter and merging it want whole tensors; a
  LoRA run fits one device anyway (use ddp).

Without those variables it is a single process and nothing here does anything.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from unfork.errors import UserError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device_kind: str) -> Dist:
    """Join the process group when launched by torchrun; a single-process ``Dist`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as td

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not td.is_initialized():
        td.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    return Dist(rank, world, local_rank)


def teardown(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        if td.is_initialized():
            td.barrier()
            td.destroy_process_group()


def all_sum(dist: Dist, value: float, device: Any) -> float:
    """The sum of ``value`` over all processes."""
    if not dist.active:
        return float(value)
    import torch.distributed as td

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    td.all_reduce(t)
    return float(t.item())


def barrier(dist: Dist) -> None:
    if dist.active:
        import torch.distributed as td

        td.barrier()


def all_max(dist: Dist, value: int, device: Any) -> int:
    """The largest ``value`` over all processes."""
    if not dist.active:
        return int(value)
    import torch.distributed as td

    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return int(t.item())


def pick_mode(choice: str, dist: Dist, method: str) -> str:
    """``single``, ``ddp`` or ``fsdp`` for the ``--distributed`` choice (``auto``: ddp when several processes)."""
    if choice == "fsdp" and method == "lora":
        # Refused even on one process, so a command tried locally does not fail only under torchrun.
        raise UserError("--distributed fsdp shards full fine-tuning only; LoRA is not supported with it",
                        hint="use --distributed ddp (or auto) for LoRA: its frozen model fits one device "
                             "anyway, or --method full to shard")
    if not dist.active:
        return "single"
    return "fsdp" if choice == "fsdp" else "ddp"


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (``model.model.layers`` for Llama, Qwen, ...)."""
    base = getattr(model, "base_model", model)
    for name in ("layers", "h", "blocks"):
        found = getattr(base, name, None)
        if isinstance(found, torch.nn.ModuleList) and len(found) > 0:
            return list(found)
    raise UserError(f"cannot find the decoder layers of {type(model).__name__} to shard with FSDP",
                    hint="use --distributed ddp")


def wrap(module: torch.nn.Module, dist: Dist, device: torch.device, mode: str = "ddp",
         model: torch.nn.Module | None = None) -> torch.nn.Module:
    """``module`` for training in ``mode``: as is, in DDP (each process a whole replica), or sharded.

    For ``fsdp``, ``model`` is the transformers model inside ``module`` (the loss): each of its
    decoder layers becomes one FSDP group, then ``module`` itself the root group. The root is the
    loss module rather than the model because the loss calls ``model.base_model`` and the output
    head directly, never ``model.forward``, and FSDP gathers a group's parameters in its forward.
    """
    if mode == "single" or not dist.active:
        return module
    if mode == "fsdp":
        return _shard(module, model if model is not None else module, dist, device)
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def _shard(module: torch.nn.Module, model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # An explicit mesh: FSDP's default picks the accelerator torch sees, not the --device we chose.
    mesh = init_device_mesh(device.type, (dist.world,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    # The root reshards after forward too (FSDP's default keeps it gathered), so after a held-out
    # evaluation, which has no backward, every parameter is a shard again before the next save.
    fully_shard(module, mesh=mesh, reshard_after_forward=True)
    return module


def accumulate(module: torch.nn.Module, mode: str, last: bool) -> contextlib.AbstractContextManager:
    """The context for one micro-batch's backward.

    DDP all-reduces only on the step's last micro-batch. FSDP reduce-scatters on every one: holding
    unsharded gradients until the last would cost a whole model's gradients on each device, which is
    what sharding is for; every process runs the same number of micro-batches (see recipe.py).
    """
    if mode == "ddp" and not last:
        return module.no_sync()
    return contextlib.nullcontext()
