"""LoRA layers: a pinned number, zero start, merge equivalence, peft-compatible adapter files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train.conftest import tiny_model
from unfork.errors import UserError
from unfork.train.lora import LoRALinear, apply_lora, load_lora_state, lora_state, merge_lora, save_adapter


def _perturb(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_B.data = torch.randn(m.lora_B.shape, generator=g) * 0.1


def test_fixed_init_lora_layer_output_is_pinned():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), rank=4, alpha=8)
    layer.lora_B.data.fill_(0.5)
    x = torch.arange(32, dtype=torch.float32).reshape(2, 16) / 32
    assert float(layer(x).sum().detach()) == pytest.approx(-15.62330150604248, abs=1e-5)


def test_starts_equal_to_the_base_model(tokenizer):
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    model = tiny_model(len(tokenizer))
    before = model(ids).logits
    wrapped = apply_lora(model, rank=4, alpha=8)
    assert len(wrapped) == 2 * 7
    torch.testing.assert_close(model(ids).logits, before)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_merged_model_gives_the_adapter_models_logits(tokenizer):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    model = tiny_model(len(tokenizer))
    apply_lora(model, rank=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"))
    _perturb(model)
    with torch.no_grad():
        adapted = model(ids).logits
        merge_lora(model)
        merged = model(ids).logits
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-4)
    assert (merged - tiny_model(len(tokenizer))(ids).logits).abs().max() > 1e-3  # the update is really there


def test_adapter_round_trip_and_peft_layout(tokenizer, tmp_path):
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    model = tiny_model(len(tokenizer))
    apply_lora(model, rank=2, alpha=4, targets=("q_proj", "v_proj"))
    _perturb(model)
    folder = save_adapter(model, tmp_path / "adapter", base_model="tiny", rank=2, alpha=4, targets=["q_proj", "v_proj"])
    other = tiny_model(len(tokenizer))
    apply_lora(other, rank=2, alpha=4, targets=("q_proj", "v_proj"))
    load_lora_state(other, lora_state(model))
    torch.testing.assert_close(other(ids).logits, model(ids).logits)

    peft = pytest.importorskip("peft")
    base = tiny_model(len(tokenizer))
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(base, folder)(ids).logits
        ours = model(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


LLAMA_LINEARS = "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"


def test_no_matching_layer_is_an_error(tokenizer):
    with pytest.raises(UserError, match="no linear layer") as caught:
        apply_lora(tiny_model(len(tokenizer)), 2, 4, targets=("nope",))
    assert f"its linear layers are named: {LLAMA_LINEARS}" in str(caught.value)


@pytest.mark.parametrize("targets", [("q_proj", "qkv_proj"), ("embed_tokens",), ()])
def test_an_unknown_target_is_an_error_listing_the_models_linear_layers(tokenizer, targets):
    model = tiny_model(len(tokenizer))
    with pytest.raises(UserError) as caught:
        apply_lora(model, 2, 4, targets=targets)
    message = str(caught.value)
    assert "--lora-target-modules" in message and LLAMA_LINEARS in message
    assert all(t in message for t in targets if t != "q_proj")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())  # refused before changing anything
    assert all(p.requires_grad for p in model.parameters())


def test_the_default_targets_train_what_a_model_has_of_them():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.qkv_proj, self.down_proj = nn.Linear(4, 4), nn.Linear(4, 12), nn.Linear(4, 4)

    assert apply_lora(Block(), 2, 4) == ["q_proj", "down_proj"]


def test_an_unknown_target_module_on_the_command_line_is_a_clear_error(tiny_model_dir, small_dataset, tmp_path):
    from click.testing import CliRunner

    from unfork.cli.main import cli

    result = CliRunner().invoke(cli, ["model", "train", "--model", str(tiny_model_dir), "--data-path",
                                      str(small_dataset), "--device", "cpu", "--output-dir", str(tmp_path / "run"),
                                      "--lora-target-modules", "q_proj", "--lora-target-modules", "qkv_proj"])
    assert isinstance(result.exception, UserError), result.output  # printed without a traceback
    assert "no linear layer named qkv_proj" in str(result.exception) and LLAMA_LINEARS in str(result.exception)
