"""Data parallelism: torchrun with 2 CPU processes on gloo matches one process with the same effective batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.conftest import FACTS, chat, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _final(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "model.safetensors"))


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]


@pytest.mark.parametrize("method", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_two_processes_match_one(tiny_model_dir, tmp_path, method):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    # 10 samples with a batch of 4: the last step has 2 samples, one per process.
    data = write_jsonl(tmp_path / "data.jsonl", [chat(q + "!" * i, a) for i in range(2) for q, a in FACTS][:10])
    args = ["-m", "unfork", "model", "train", "--model", str(tiny_model_dir), "--data-path", str(data),
            "--epochs", "2", "--effective-batch-size", "4", "--device", "cpu", "--dtype", "fp32",
            "--method", method, "--learning-rate", "1e-3", "--lora-rank", "4"]
    env = {**os.environ, "UNFORK_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--output-dir", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", *args, "--output-dir",
                          str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]

    info = json.loads((tmp_path / "two" / "training.json").read_text())
    assert info["world_size"] == 2
    assert len(_losses(tmp_path / "two")) == 6
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
    a, b = _final(tmp_path / "one"), _final(tmp_path / "two")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
