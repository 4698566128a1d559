"""``unfork model train``: fine-tune the student on generated data (LoRA or full, LAB phases)."""

from __future__ import annotations

from pathlib import Path

import click

from unfork.cli.options import collect, config_options, ilab_alias


@click.command()
@click.option("--data-path", type=click.Path(path_type=Path), default=None,
              help="A dataset folder (train_*.jsonl, test_*.jsonl) or one JSONL file. Default: the newest "
                   "generated dataset.")
@click.option("--model", "model_name", default=None,
              help="Student to start from: catalog name, GGUF file or Hugging Face folder. [config: models.student]")
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
              help="Run folder. Default: <data dir>/checkpoints/<model>-<method>-<settings hash>, so rerunning "
                   "the same command resumes the run.")
@click.option("--fresh", is_flag=True, help="Delete what the run folder holds and start over.")
@config_options("train")
@ilab_alias("--model-path", "model_name", "--model")
@ilab_alias("--num-epochs", "epochs", "--epochs", type=int)
def train(data_path: Path | None, model_name: str | None, output_dir: Path | None, fresh: bool, **flags) -> None:
    """Fine-tune the student on generated data.

    \b
    The loss covers only the assistant's tokens, as the model's chat template
    renders them. Samples longer than --max-seq-len are dropped and counted.
    With --strategy lab-multiphase, phase 1 trains on knowledge data and
    phase 2 on skills data plus a replay of knowledge; each phase keeps its
    epoch with the lowest held-out loss. Killed runs continue from their last
    checkpoint when the same command is run again.

    \b
    Data-parallel on several processes or GPUs:
      torchrun --nproc-per-node 2 -m unfork model train ...
    Sharded (FSDP) for a full fine-tune too big for one GPU:
      torchrun --nproc-per-node 4 -m unfork model train --method full --distributed fsdp ...
    """
    from unfork.config import load_config
    from unfork.train.recipe import train as run_training

    cfg = load_config(overrides={**collect("train", flags), "models.student": model_name})
    run = run_training(cfg.train, model=cfg.models.student, data_path=data_path, output_dir=output_dir,
                       fresh=fresh)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        click.echo(f"Run folder: {run}")
        click.echo(f"  chat with it:   unfork model chat --model {run}")
        click.echo(f"  export to GGUF: unfork model convert {run} --to gguf")
