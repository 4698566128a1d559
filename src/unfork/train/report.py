"""What a training run tells the user: a progress line or bar, ``metrics.jsonl``, TensorBoard or W&B.

Only the main process reports. TensorBoard and W&B are imported only when
asked for, with an error naming the package when it is missing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from unfork.errors import MissingExtraError


class Reporter:
    def __init__(self, run_dir: Path, *, enabled: bool, report_to: str = "none", settings: dict | None = None):
        self.enabled = enabled
        self.metrics_path = run_dir / "metrics.jsonl"
        self.tb = self.wandb = None
        self.bar = None
        self.task = None
        if not enabled:
            return
        if report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MissingExtraError("tensorboard", "train", "--report-to tensorboard") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        elif report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise MissingExtraError("wandb", "train", "--report-to wandb") from None
            self.wandb = wandb.init(project="unfork", dir=str(run_dir), config=settings or {})

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3), **row}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        step = row.get("global_step", 0)
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("time", "global_step")}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(f"{row.get('phase', 'train')}/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"{row.get('phase', 'train')}/{k}": v for k, v in numbers.items()}, step=step)

    # ----------------------------------------------------------------- console

    def start(self, description: str, total: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self.total, self.done, self.description = total, done, description
        self.t0, self.done0 = time.monotonic(), done
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from unfork.logs import stderr_console

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                console=stderr_console())
            self.bar.start()
            self.task = self.bar.add_task(description, total=total, completed=done, info="")

    def advance(self, loss: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        self.done += 1
        info = f"loss {loss:.4f}  {tokens_per_s:,.0f} tok/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, info=info)
            return
        every = max(1, self.total // 20)
        if self.done % every == 0 or self.done == self.total:
            elapsed = time.monotonic() - self.t0
            rate = (self.done - self.done0) / elapsed if elapsed > 0 else 0
            eta = (self.total - self.done) / rate if rate else 0
            print(f"{self.description} step {self.done}/{self.total}  {info}  ETA {eta:,.0f} s",
                  file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def message(self, text: str) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.console.print(text)
            else:
                print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.stop()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
