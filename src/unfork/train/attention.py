"""Variable-length attention for packed rows: each sample attends only within itself, nothing wasted.

transformers already keeps packed samples apart when ``position_ids`` restart
at 0 (it builds a block-diagonal mask), but the attention kernel then still
computes every query against every key of the whole row and masks most of it
away: the cost grows with the square of the row, not of the samples. Here the
row is cut at the sample boundaries (``cu_seq_lens``, as flash-attention's
varlen kernels take them) and each piece goes through PyTorch's
``scaled_dot_product_attention`` with ``is_causal=True``: the exact same
result, at the cost of the samples' own lengths, on any device.

Registered with transformers' attention and mask interfaces under
:data:`NAME`; a model switched to it builds no mask at all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "unfork_varlen"


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """``query`` (1, heads, tokens, dim) -> (1, tokens, heads, dim), causal within each ``cu_seq_lens_q`` span."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        bounds = [0, query.shape[2]]
    else:
        if query.shape[0] != 1:
            raise ValueError("variable-length attention takes one packed row")
        bounds = [int(b) for b in cu]
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: share each key/value head with its query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    parts = [F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e],
                                            dropout_p=dropout if module.training else 0.0, is_causal=True,
                                            scale=scaling)
             for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def register() -> str:
    """Make :data:`NAME` usable as ``model.set_attn_implementation(NAME)``; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, _no_mask)
    return NAME


def cu_seq_lens(position_ids: torch.Tensor) -> torch.Tensor:
    """Sample boundaries of a packed row from its ``position_ids`` (a new sample wherever they restart at 0)."""
    pos = position_ids.reshape(-1)
    starts = torch.nonzero(pos == 0).reshape(-1)
    end = torch.tensor([pos.numel()], device=pos.device)
    return torch.cat([starts, end]).to(torch.int32)
