"""The training recipe end to end on a tiny model: masking, accumulation, pinned losses, the run folder,
resuming after SIGKILL, LAB phases, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.train.conftest import FACTS, byte_tokenizer, chat, tiny_model, write_jsonl
from unfork.config import TrainConfig
from unfork.errors import UserError
from unfork.train.data import IGNORE, pack, render
from unfork.train.recipe import CausalLMLoss, chunked_head_loss, train

REPO = Path(__file__).resolve().parents[2]
FAST = TrainConfig(epochs=2, effective_batch_size=2, learning_rate=1e-2, device="cpu", dtype="fp32",
                   lora_rank=4, lora_alpha=8)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[float]:
    return [m["loss"] for m in metrics(run) if "loss" in m]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "model.safetensors"))


def test_masked_positions_get_no_gradient(tokenizer):
    model = tiny_model(len(tokenizer))
    (mb,) = pack([render(tokenizer, chat("What is up?", "Sky.", "Sys.")["messages"])], 10_000)
    captured = {}

    def keep(module, inputs, out):
        out.retain_grad()
        captured["h"] = out

    model.model.norm.register_forward_hook(keep)
    ids, pos, targets = mb.tensors()
    CausalLMLoss(model)(ids, pos, targets).backward()
    grad = captured["h"].grad[0].abs().sum(-1)
    targets = targets[0]
    assert len(targets) > len(mb.rows[0].targets)  # the width's padding segment is checked too
    assert (grad[targets == IGNORE] == 0).all()
    assert (grad[targets != IGNORE] > 0).all()
    assert int((targets != IGNORE).sum()) == len(tokenizer("Sky.<|im_end|>\n", add_special_tokens=False)["input_ids"])


def test_chunked_head_loss_gives_the_one_pass_loss_and_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(70, 16, requires_grad=True)
    targets = torch.randint(0, 50, (70,))
    whole = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    whole.backward()
    expected = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = head.weight.grad = None
    chunked = chunked_head_loss(head, hidden, targets, chunk=16)  # 5 chunks, the last one short
    chunked.backward()
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close((hidden.grad, head.weight.grad), expected)


def test_loss_is_mean_cross_entropy_over_assistant_tokens(tokenizer):
    model = tiny_model(len(tokenizer))
    (mb,) = pack([render(tokenizer, chat("Q", "Answer")["messages"])], 10_000)
    ids, pos, targets = mb.tensors()
    with torch.no_grad():
        ours = CausalLMLoss(model)(ids, pos, targets) / mb.n_targets
        reference = model(input_ids=ids, labels=torch.cat([ids[:, :1], targets[:, :-1]], 1)).loss
    torch.testing.assert_close(ours, reference)


def test_pinned_losses_and_run_folder(tiny_model_dir, small_dataset, tmp_path):
    run = train(FAST, model=str(tiny_model_dir), data_path=small_dataset, output_dir=tmp_path / "run")
    # Deterministic on CPU: the first optimizer steps of this 2-layer model are pinned.
    assert losses(run)[:3] == pytest.approx([5.544113, 5.560605, 5.489568], abs=2e-4)
    info = json.loads((run / "training.json").read_text())
    assert set(info["phases"]) == {"knowledge", "skills"}
    assert list(info)[-3:] == ["finished", "schema_version", "complete"] and info["complete"] is True
    assert info["settings"]["lora_rank"] == 4 and info["settings"]["method"] == "lora"
    assert info["data"]["skills"]["train"]["kept"] == 5  # 4 skills + 1 replayed knowledge sample (20 %)
    manifest = json.loads((run / "data_manifest.json").read_text())
    assert len(manifest["files"]["train_knowledge.jsonl"]["sha256"]) == 64
    for f in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "model.json"):
        assert (run / "final" / f).is_file(), f
    assert (run / "adapter" / "adapter_config.json").is_file()
    evals = [m for m in metrics(run) if "eval_loss" in m]
    assert [m["phase"] for m in evals] == ["knowledge", "knowledge", "skills", "skills"]

    from unfork.models import resolve_model

    resolved = resolve_model(str(run))
    assert resolved.format == "hf" and resolved.path == run / "final" and "im_start" in resolved.chat_template


def test_rerun_of_a_finished_run_does_nothing_and_other_settings_are_refused(tiny_model_dir, small_dataset, tmp_path):
    cfg = replace(FAST, epochs=1, strategy="skills-only")
    run = train(cfg, model=str(tiny_model_dir), data_path=small_dataset, output_dir=tmp_path / "run")
    stamp = (run / "final" / "model.safetensors").stat().st_mtime_ns
    train(cfg, model=str(tiny_model_dir), data_path=small_dataset, output_dir=run)
    assert (run / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other settings"):
        train(replace(cfg, learning_rate=1e-3), model=str(tiny_model_dir), data_path=small_dataset, output_dir=run)
    train(replace(cfg, learning_rate=1e-3), model=str(tiny_model_dir), data_path=small_dataset, output_dir=run,
          fresh=True)
    assert json.loads((run / "training.json").read_text())["settings"]["learning_rate"] == 1e-3


def test_a_run_stopped_before_its_completion_marker_is_finished_by_a_rerun(tiny_model_dir, small_dataset, tmp_path):
    cfg = replace(FAST, epochs=1, strategy="skills-only")
    run = train(cfg, model=str(tiny_model_dir), data_path=small_dataset, output_dir=tmp_path / "run")
    weights = final_weights(run)
    info = json.loads((run / "training.json").read_text())
    del info["finished"]
    (run / "training.json").write_text(json.dumps({**info, "complete": False}))  # as if killed after final/
    train(cfg, model=str(tiny_model_dir), data_path=small_dataset, output_dir=run)
    again = json.loads((run / "training.json").read_text())
    assert again["complete"] is True and "finished" in again and len(again["resumed"]) == 1
    assert all(torch.equal(weights[k], v) for k, v in final_weights(run).items())


def test_skills_only_trains_one_phase_without_replay(tiny_model_dir, small_dataset, tmp_path):
    run = train(replace(FAST, epochs=1, strategy="skills-only"), model=str(tiny_model_dir),
                data_path=small_dataset, output_dir=tmp_path / "run")
    info = json.loads((run / "training.json").read_text())
    assert list(info["phases"]) == ["skills"] and info["data"]["skills"]["train"]["kept"] == 4


def test_the_knowledge_phase_can_have_its_own_number_of_epochs(tiny_model_dir, small_dataset, tmp_path):
    run = train(replace(FAST, epochs=1, knowledge_epochs=3), model=str(tiny_model_dir),
                data_path=small_dataset, output_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["phase"], r["epoch"]) for r in rows if "eval_loss" in r]
    assert evals == [("knowledge", 1), ("knowledge", 2), ("knowledge", 3), ("skills", 1)]
    steps = json.loads((run / "training.json").read_text())["phases"]
    assert steps["knowledge"]["steps"] == 3 * 2  # 4 knowledge samples, 2 per step, 3 epochs


def test_micro_batching_does_not_change_the_result(tiny_model_dir, small_dataset, tmp_path):
    """One packed forward per step, or one per sample (accumulated): the same weights."""
    cfg = replace(FAST, effective_batch_size=4, epochs=1, method="full", learning_rate=1e-3)
    big = train(replace(cfg, micro_batch_tokens=100_000), model=str(tiny_model_dir),
                data_path=small_dataset / "train_all.jsonl", output_dir=tmp_path / "big")
    small = train(replace(cfg, micro_batch_tokens=1), model=str(tiny_model_dir),
                  data_path=small_dataset / "train_all.jsonl", output_dir=tmp_path / "small")
    assert len(losses(big)) == 2  # 8 samples, 4 per optimizer step
    assert losses(big) == pytest.approx(losses(small), abs=1e-5)
    a, b = final_weights(big), final_weights(small)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_best_epoch_is_chosen_by_the_evaluation_hook(tiny_model_dir, small_dataset, tmp_path):
    scores = {1: 3.0, 2: 1.0, 3: 2.0}
    seen = []

    def hook(model, tokenizer, phase, epoch):
        seen.append((phase, epoch))
        return scores[epoch]

    run = train(replace(FAST, epochs=3, strategy="skills-only"), model=str(tiny_model_dir),
                data_path=small_dataset, output_dir=tmp_path / "run", eval_hook=hook)
    assert seen == [("skills", 1), ("skills", 2), ("skills", 3)]
    info = json.loads((run / "training.json").read_text())
    assert info["phases"]["skills"]["best_epoch"] == 2
    # The final model is the best epoch's, not the last one's.
    from safetensors.torch import load_file

    best = load_file(str(run / "phases" / "skills" / "best.safetensors"))
    last = load_file(str(sorted((run / "checkpoints").iterdir())[-1] / "trainable.safetensors"))
    assert any(not torch.equal(best[k], last[k]) for k in best)


def test_full_fine_tuning_with_bf16_autocast(tiny_model_dir, small_dataset, tmp_path):
    run = train(replace(FAST, method="full", dtype="bf16", epochs=1, strategy="skills-only", learning_rate=1e-3),
                model=str(tiny_model_dir), data_path=small_dataset, output_dir=tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(losses(run))))
    assert final_weights(run)["model.embed_tokens.weight"].dtype == torch.float32


def test_tiny_model_memorises_a_string(tiny_model_dir, tmp_path):
    """It learns: the loss falls and greedy decoding afterwards gives the trained answer."""
    answer = "Zorbl moon is teal."
    data = write_jsonl(tmp_path / "fact.jsonl", [chat("Zorbl?", answer)] * 4)
    cfg = TrainConfig(method="full", epochs=30, effective_batch_size=1, learning_rate=1e-2, device="cpu",
                      dtype="fp32", warmup_steps=1, keep_checkpoints=1)
    run = train(cfg, model=str(tiny_model_dir), data_path=data, output_dir=tmp_path / "run")
    ls = losses(run)
    assert ls[-1] < 0.1 * ls[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "final")
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Zorbl?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=30, do_sample=False)
    assert tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).startswith(answer)


def _cli(args: list[str], home: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "UNFORK_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", "unfork", "model", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_same_loss(tmp_path):
    """A real process killed with SIGKILL after a checkpoint; rerunning the command finishes the run."""
    folder = tmp_path / "slow-model"
    tok = byte_tokenizer()
    tiny_model(len(tok), layers=4, hidden=64).save_pretrained(folder)
    tok.save_pretrained(folder)
    rows = [chat(q + "?" * i, a * (1 + i % 3)) for i in range(6) for q, a in FACTS]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    args = ["--model", str(folder), "--data-path", str(data), "--epochs", "2", "--effective-batch-size", "4",
            "--save-steps", "3", "--device", "cpu", "--dtype", "fp32", "--method", "full",
            "--learning-rate", "1e-3", "--keep-checkpoints", "3"]

    whole = _cli([*args, "--output-dir", str(tmp_path / "whole")], tmp_path / "home")
    assert whole.wait(timeout=300) == 0, whole.stdout.read()

    run = tmp_path / "killed"
    proc = _cli([*args, "--output-dir", str(run)], tmp_path / "home")
    deadline = time.monotonic() + 240
    while not (run / "checkpoints").is_dir() or not any((run / "checkpoints").glob("p0-s*")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists(), "killed too late to test resuming"
    killed_at = len(losses(run))
    assert 0 < killed_at < 24

    again = _cli([*args, "--output-dir", str(run)], tmp_path / "home")
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    assert "Resuming from p0-s" in out
    assert losses(run)[-1] == pytest.approx(losses(tmp_path / "whole")[-1], abs=1e-4)
    a, b = final_weights(run), final_weights(tmp_path / "whole")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
