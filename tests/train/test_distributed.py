"""Data parallelism: torchrun with 2 CPU processes on gloo (DDP, or sharded with FSDP2) matches one process
with the same effective batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.train.conftest import FACTS, chat, tiny_model, write_jsonl
from unfork.errors import UserError
from unfork.train import distributed

REPO = Path(__file__).resolve().parents[2]


def _final(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "model.safetensors"))


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]


def _torchrun() -> str:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    return torchrun


def _setup(tiny_model_dir: Path, tmp_path: Path, method: str, batch: int = 4) -> tuple[list[str], dict[str, str]]:
    # 10 samples with a batch of 4: the last step has 2 samples, one per process.
    data = write_jsonl(tmp_path / "data.jsonl", [chat(q + "!" * i, a) for i in range(2) for q, a in FACTS][:10])
    args = ["-m", "unfork", "model", "train", "--model", str(tiny_model_dir), "--data-path", str(data),
            "--epochs", "2", "--effective-batch-size", str(batch), "--device", "cpu", "--dtype", "fp32",
            "--method", method, "--learning-rate", "1e-3", "--lora-rank", "4"]
    return args, {**os.environ, "UNFORK_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_two_processes_match_one(tiny_model_dir, tmp_path, method):
    torchrun = _torchrun()
    args, env = _setup(tiny_model_dir, tmp_path, method)
    _run([sys.executable, *args, "--output-dir", str(tmp_path / "one")], env)
    _run([torchrun, "--standalone", "--nproc-per-node", "2", *args, "--output-dir", str(tmp_path / "two")], env)

    info = json.loads((tmp_path / "two" / "training.json").read_text())
    assert info["world_size"] == 2 and info["distributed"] == "ddp"
    assert len(_losses(tmp_path / "two")) == 6
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
    _assert_same_weights(_final(tmp_path / "one"), _final(tmp_path / "two"))


def _evals(run: Path) -> list[float]:
    return [json.loads(line)["eval_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"eval_loss"' in line]


def test_fsdp_two_processes_match_one_and_resume_a_single_process_checkpoint(tiny_model_dir, tmp_path):
    """FSDP2 shards over 2 gloo processes: same losses, same full final model and checkpoint files as one
    process; and it resumes a checkpoint written by one process (the files do not depend on the mode)."""
    from safetensors.torch import load_file

    torchrun = _torchrun()
    # Batches of 3 samples, one micro-batch each (16 tokens is shorter than any sample), and 3 held-out
    # samples: the processes get 2 and 1 micro-batches, or 1 and 0, so the even-count padding runs.
    args, env = _setup(tiny_model_dir, tmp_path, "full", batch=3)
    folder = tmp_path / "dataset"
    folder.mkdir()
    (tmp_path / "data.jsonl").rename(folder / "train_all.jsonl")
    write_jsonl(folder / "test_all.jsonl", [chat(q + "?", a) for q, a in FACTS[:3]])
    args[args.index("--data-path") + 1] = str(folder)
    args += ["--micro-batch-tokens", "16"]
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    _run([sys.executable, *args, "--output-dir", str(one)], env)
    sharded = [torchrun, "--standalone", "--nproc-per-node", "2", *args, "--distributed", "fsdp"]
    _run([*sharded, "--output-dir", str(two)], env)

    info = json.loads((two / "training.json").read_text())
    assert info["world_size"] == 2 and info["distributed"] == "fsdp"
    assert len(_losses(two)) == 8
    assert _losses(two) == pytest.approx(_losses(one), abs=1e-5)
    assert _evals(two) == pytest.approx(_evals(one), abs=1e-5)
    _assert_same_weights(_final(one), _final(two))
    assert json.loads((two / "final" / "config.json").read_text())["tie_word_embeddings"] is True
    last_one, last_two = (sorted((r / "checkpoints").iterdir())[-1] for r in (one, two))
    _assert_same_weights(load_file(str(last_one / "trainable.safetensors")),
                         load_file(str(last_two / "trainable.safetensors")))
    opt_one, opt_two = (torch.load(d / "optimizer.pt", weights_only=False)["optimizer"] for d in (last_one, last_two))
    assert opt_one["param_groups"] == opt_two["param_groups"] and set(opt_one["state"]) == set(opt_two["state"])
    for i, state in opt_one["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(value, opt_two["state"][i][key], atol=1e-5, rtol=1e-4)

    # The single-process run stopped after epoch 1: resume it sharded and finish epoch 2.
    shutil.copytree(one, resumed)
    shutil.rmtree(resumed / "final")
    for late in sorted((resumed / "checkpoints").iterdir())[1:]:
        shutil.rmtree(late)
    _run([*sharded, "--output-dir", str(resumed)], env)
    assert _losses(resumed)[8:] == pytest.approx(_losses(one)[4:], abs=1e-5)
    _assert_same_weights(_final(one), _final(resumed))


def test_fsdp_plan_and_refusals():
    """What the FSDP wiring decides without a process group: the layers it shards, the mode, LoRA refused."""
    model = tiny_model(300)
    assert distributed.decoder_layers(model) == list(model.model.layers)
    with pytest.raises(UserError, match="decoder layers"):
        distributed.decoder_layers(torch.nn.Linear(2, 2))
    one, two = distributed.Dist(), distributed.Dist(rank=1, world=2)
    assert [distributed.pick_mode(c, one, "full") for c in ("auto", "ddp", "fsdp")] == ["single"] * 3
    assert [distributed.pick_mode(c, two, "full") for c in ("auto", "ddp", "fsdp")] == ["ddp", "ddp", "fsdp"]
    for dist in (one, two):
        with pytest.raises(UserError, match="use --distributed ddp"):
            distributed.pick_mode("fsdp", dist, "lora")
    assert distributed.wrap(model, one, torch.device("cpu"), "fsdp", model) is model


def test_distributed_is_a_setting_and_a_flag():
    from unfork.cli.main import cli
    from unfork.config import load_config
    from unfork.train.recipe import run_key

    out = CliRunner().invoke(cli, ["model", "train", "--help"]).output
    assert "--distributed [auto|ddp|fsdp]" in out and "train.distributed" in out
    assert load_config(environ={}).train.distributed == "auto"
    assert load_config(environ={"UNFORK_TRAIN_DISTRIBUTED": "fsdp"}).train.distributed == "fsdp"
    # Where a run runs is not part of what it is: switching mode resumes the same run.
    assert run_key({"lr": 1, "distributed": "ddp"}) == run_key({"lr": 1, "distributed": "fsdp"})
