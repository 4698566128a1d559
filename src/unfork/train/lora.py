"""LoRA in about a hundred lines: wrap chosen ``nn.Linear`` layers, train two small matrices, merge.

Why not peft: for training it does the same arithmetic (``W x + s B A x``), but
it brings its own model wrapper, and the wrapper is the part we would have to
work around (our loss runs the decoder and only the needed rows of the output
head; DDP and FSDP want the plain module). Here the model stays the same
transformers class with a few layers swapped, merging is one matmul per layer,
and the adapter is saved in peft's file layout (``adapter_model.safetensors``
with peft key names plus ``adapter_config.json``), so peft can still load it.

Frozen weights keep their dtype (bf16 halves their memory where that pays);
the adapters are always float32 (small, and their updates are tiny).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unfork.errors import UserError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * B(A(x))`` with ``base`` frozen; ``B`` starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32,
                                               device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        # The small matrices come to the activations' dtype, not the activations to theirs: a
        # float32 copy of every bf16 input would be kept for the backward pass, costing memory and
        # time. Their gradients still land in float32 (autograd casts back).
        a = self.lora_A.to(x.dtype)
        up = (self.lora_B * self.scale).to(x.dtype).t()  # scaling the small matrix, not the activations
        low = x @ a.t()
        # out + low @ up in one GEMM (no separate add or scale pass over the activations)
        return torch.addmm(out.reshape(-1, out.shape[-1]), low.reshape(-1, low.shape[-1]), up).view(out.shape)

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight."""
        w = self.base.weight
        delta = (self.lora_B @ self.lora_A) * self.scale
        w.data = (w.data.float() + delta.to(w.device)).to(w.dtype)
        return self.base


def linear_names(model: nn.Module) -> list[str]:
    """The attribute names of the model's ``nn.Linear`` layers (what ``--lora-target-modules`` can name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if name and isinstance(module, nn.Linear)})


def check_targets(model: nn.Module, targets: Sequence[str]) -> None:
    """Refuse target names the model has no linear layer for, listing the names it has.

    The default targets name the usual decoder layers, and a model that lacks some of them
    still trains the others; names the user chose must all exist.
    """
    names = linear_names(model)
    if not targets:
        raise UserError("--lora-target-modules names no layer", hint=f"the model's linear layers are named: "
                                                                      f"{', '.join(names)}")
    missing = [t for t in targets if t not in names]
    if missing and (tuple(targets) != DEFAULT_TARGETS or len(missing) == len(targets)):
        raise UserError(f"--lora-target-modules: {type(model).__name__} has no linear layer named "
                        f"{', '.join(missing)}", hint=f"its linear layers are named: {', '.join(names)}")


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose attribute name is in ``targets``.

    Returns the dotted names of the wrapped layers; raises (before changing anything) if a
    target matches none (see :func:`check_targets`).
    """
    check_targets(model, targets)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear`` (in place; returns ``model``)."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
    return model


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under peft's key names (``base_model.model.<layer>.lora_A.weight``)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"base_model.model.{name}.lora_A.weight"] = module.lora_A.detach().contiguous()
            out[f"base_model.model.{name}.lora_B.weight"] = module.lora_B.detach().contiguous()
    return out


def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            module.lora_A.data.copy_(state[f"base_model.model.{name}.lora_A.weight"])
            module.lora_B.data.copy_(state[f"base_model.model.{name}.lora_B.weight"])


def save_adapter(model: nn.Module, folder: Path, *, base_model: str, rank: int, alpha: float,
                 targets: Sequence[str]) -> Path:
    """Write the adapter in peft's layout (loadable with ``peft.PeftModel.from_pretrained``)."""
    from safetensors.torch import save_file

    from unfork.fsio import atomic_path, atomic_write_text

    with atomic_path(folder / "adapter_model.safetensors") as tmp:
        save_file(lora_state(model), str(tmp))
    config: dict[str, Any] = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted(targets), "fan_in_fan_out": False, "inference_mode": True,
    }
    atomic_write_text(folder / "adapter_config.json", json.dumps(config, indent=2) + "\n")
    return folder
