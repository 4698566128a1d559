"""``unfork model train`` through the CLI: flags, the default data and run folder, model list."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from unfork.cli.main import cli
from unfork.paths import get_paths


def test_help_lists_the_flags_without_importing_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom unfork.cli.main import cli\n"
            "r = CliRunner().invoke(cli, ['model', 'train', '--help'])\nprint(r.output)\n"
            "print('HEAVY', [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for flag in ("--data-path", "--model", "--method", "--epochs", "--learning-rate", "--effective-batch-size",
                 "--max-seq-len", "--lora-rank", "--lora-alpha", "--lora-target-modules", "--device", "--dtype",
                 "--gradient-checkpointing", "--output-dir", "--seed", "--strategy", "--save-steps"):
        assert flag in out, flag
    assert "HEAVY []" in out


def test_train_newest_dataset_into_the_checkpoints_folder_then_list_it(tiny_model_dir, small_dataset):
    datasets = get_paths().datasets_dir
    datasets.mkdir(parents=True)
    small_dataset.rename(datasets / small_dataset.name)
    runner = CliRunner()
    args = ["model", "train", "--model", str(tiny_model_dir), "--epochs", "1", "--effective-batch-size", "4",
            "--device", "cpu", "--lora-rank", "2", "--lora-target-modules", "q_proj",
            "--lora-target-modules", "v_proj"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    (run,) = [p for p in get_paths().checkpoints_dir.iterdir() if p.is_dir()]
    assert run.name.startswith(f"{tiny_model_dir.name}-lora-")
    info = json.loads((run / "training.json").read_text())
    assert info["settings"]["lora_target_modules"] == ["q_proj", "v_proj"]
    assert info["settings"]["data"]["train_knowledge.jsonl"]
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 2 and adapter["target_modules"] == ["q_proj", "v_proj"]

    again = runner.invoke(cli, args)  # the same command finds the same run, already finished
    assert again.exit_code == 0 and "already trained" in again.output

    listed = runner.invoke(cli, ["model", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert run.name in listed.output


def test_missing_data_is_a_clear_error(tiny_model_dir):
    result = CliRunner().invoke(cli, ["model", "train", "--model", str(tiny_model_dir)])
    assert result.exit_code != 0
    assert "no generated dataset" in str(result.exception)
