"""Data parallelism through ``torch.distributed``: one process per device, started by torchrun.

``unfork model train`` run under ``torchrun --nproc-per-node N -m unfork model train ...``
finds ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, joins the
process group (NCCL on CUDA, gloo on CPU) and wraps the loss module in DDP.
Without those variables it is a single process and nothing here does anything.
(Sharding a model that does not fit one device, FSDP, is not wired in yet.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


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


def wrap(module: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """``module`` wrapped in DDP when there are several processes (each holds a whole replica)."""
    if not dist.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids)
