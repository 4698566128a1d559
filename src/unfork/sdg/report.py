"""What a person sees while generating: progress bars with ETA, and the final table."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from unfork.sdg.engine import LeafResult


class LiveProgress:
    """One rich progress bar per leaf and one overall; ``update`` is the engine's progress callback."""

    def __init__(self, leaves: list[Any], target: int, console: Any = None, enabled: bool = True,
                 knowledge_target: int | None = None, leaf_target: Any = None):
        self.enabled = enabled
        self.target = target
        goals = {leaf.rel: leaf_target(leaf) if leaf_target else
                 knowledge_target if leaf.is_knowledge and knowledge_target else target for leaf in leaves}
        self.tasks: dict[str, Any] = {}
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.overall = self.progress.add_task("all leaves", total=sum(goals.values()), note="")
        for leaf in leaves:
            self.tasks[leaf.rel] = self.progress.add_task(leaf.rel, total=goals[leaf.rel], note="")

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, result: LeafResult, target: int, finished: bool) -> None:
        if not self.enabled:
            return
        task = self.tasks[result.leaf.rel]
        note = f"rejected {len(result.rejected)}"
        if result.error:
            note = "failed"
        elif finished:
            note += " (cached)" if result.reused else " done"
        done = min(len(result.accepted), target)
        self.progress.update(task, completed=target if finished else done, note=note)
        total = sum(t.completed for tid, t in zip(self.progress.task_ids, self.progress.tasks, strict=True)
                    if tid != self.overall)
        self.progress.update(self.overall, completed=total)


def summary_table(results: list[LeafResult], console: Any) -> None:
    from rich.table import Table

    table = Table(title="Generated data per leaf")
    for col in ("leaf", "flow", "generated", "accepted", "rejected", "top rejection reasons", "note"):
        table.add_column(col, overflow="fold")
    for r in results:
        reasons = "; ".join(f"{n}× {_short(why)}" for why, n in r.reasons().most_common(3))
        note = r.error or ("reused from cache" if r.reused else "")
        table.add_row(r.leaf.rel, r.leaf.flow, str(len(r.accepted) + len(r.rejected)), str(len(r.accepted)),
                      str(len(r.rejected)), reasons, note)
    console.print(table)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def explain_empty(results: list[LeafResult]) -> str:
    """Why nothing was accepted: failed leaves, the commonest reasons and a raw reply."""
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.leaf.rel}: {r.error}" + (f"\n    hint: {r.hint}" if r.hint else ""))
    reasons: Counter = Counter()
    raw_example = None
    for r in results:
        reasons.update(r.reasons())
        raw_example = raw_example or next((x.get("raw") for x in r.rejected if x.get("raw")), None)
    for why, n in reasons.most_common(5):
        lines.append(f"{n}× {why}")
    if raw_example:
        lines.append("a raw teacher reply that was rejected:\n    " + _short(raw_example, 400))
    if not lines:
        lines.append("no unit ran (nothing to generate)")
    return "\n  ".join(lines)


def empty_hint(results: list[LeafResult]) -> str:
    """Where to look next when nothing was accepted: the rejections when there are some, else the leaves' errors."""
    if any(r.rejected for r in results) or not any(r.error for r in results):
        return "see leaves/*/rejected.jsonl for every rejection with the teacher's raw text"
    return "fix what each failed leaf's error says, then run again"


def utilization(busy: list[tuple[float, float, int, int, int]]) -> dict[str, Any]:
    """Tokens per second over the span in which the teacher was working."""
    if not busy:
        return {"requests": 0}
    start = min(b[0] for b in busy)
    end = max(b[1] for b in busy)
    tokens = sum(b[2] for b in busy)
    span = max(end - start, 1e-9)
    return {"requests": len(busy), "completion_tokens": tokens, "prompt_tokens": sum(b[3] for b in busy),
            "prompt_tokens_computed": sum(b[4] for b in busy), "seconds": round(span, 2),
            "completion_tokens_per_s": round(tokens / span, 2), "measured_at": time.time()}
