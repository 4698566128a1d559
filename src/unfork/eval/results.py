"""The one result shape every benchmark returns, and how to save and show it.

A result is a plain dict (it goes to JSON as is)::

    {"benchmark": "skills", "models": {"base": label, "trained": label},
     "metric": "accuracy" | "score_1_10",
     "overall": {"base": x, "trained": y, "delta": y - x, "n": n},
     "per_leaf": [{"leaf", "n", "base", "trained", "delta", "verdict"}],
     "items": [{"leaf", "question", "reference", "base_answer", "trained_answer",
                "base_score", "trained_score", ...}],
     "judge": {"model", "verdicts", "unparseable", "unparseable_share"} | None}

A score of ``None`` on an item means the judge gave no usable verdict: such
items count in ``n`` but not in the means.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRIC_UNITS = {"accuracy": "%", "score_1_10": "/10"}
# Per-leaf differences smaller than this are noise, not a verdict (one point of accuracy, 0.1 of a score).
SAME_WITHIN = {"accuracy": 0.5, "score_1_10": 0.05}


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None, rounded to 2 places; None when there are none."""
    got = [float(v) for v in values if v is not None]
    return round(sum(got) / len(got), 2) if got else None


def verdict(base: float | None, trained: float | None, metric: str = "score_1_10") -> str:
    if base is None or trained is None:
        return "same"
    delta = trained - base
    if abs(delta) < SAME_WITHIN.get(metric, 0.0) or delta == 0:
        return "same"
    return "improved" if delta > 0 else "regressed"


def _delta(base: float | None, trained: float | None) -> float | None:
    return None if base is None or trained is None else round(trained - base, 2)


def summarize(benchmark: str, labels: tuple[str, str], items: list[dict[str, Any]], *,
              metric: str = "score_1_10", judge: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the shared result from scored items (each with ``leaf``, ``base_score``, ``trained_score``)."""
    scale = 100.0 if metric == "accuracy" else 1.0  # accuracy items score 0/1; the result shows percent
    per_leaf = []
    for leaf in dict.fromkeys(it["leaf"] for it in items):
        rows = [it for it in items if it["leaf"] == leaf]
        b, t = (_scaled(mean([r[f"{side}_score"] for r in rows]), scale) for side in ("base", "trained"))
        per_leaf.append({"leaf": leaf, "n": len(rows), "base": b, "trained": t, "delta": _delta(b, t),
                         "verdict": verdict(b, t, metric)})
    b, t = (_scaled(mean([r[f"{side}_score"] for r in items]), scale) for side in ("base", "trained"))
    return {"benchmark": benchmark, "models": {"base": labels[0], "trained": labels[1]}, "metric": metric,
            "overall": {"base": b, "trained": t, "delta": _delta(b, t), "n": len(items)},
            "per_leaf": per_leaf, "items": items, "judge": judge}


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else round(value * scale, 2)


def write_result(result: dict[str, Any], output_dir: Path) -> Path:
    """Write ``<output_dir>/<benchmark>.json`` (atomically) and return its path."""
    from unfork.contracts import EvalFolder

    return EvalFolder(Path(output_dir)).write_result(result)


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}%" if metric == "accuracy" else f"{value:.2f}"


def _fmt_delta(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    text = f"{value:+.1f}" if metric == "accuracy" else f"{value:+.2f}"
    colour = "green" if value > 0 else "red" if value < 0 else "dim"
    return f"[{colour}]{text}[/{colour}]"


def result_table(result: dict[str, Any]) -> Any:
    """A rich table: one row per leaf (base, trained, delta, verdict) and the overall row."""
    from rich.markup import escape
    from rich.table import Table

    metric = result.get("metric", "score_1_10")
    models = result.get("models", {})
    unit = METRIC_UNITS.get(metric, "")
    table = Table(title=escape(f"{result['benchmark']}: {models.get('base')} -> {models.get('trained')} ({metric})"))
    table.add_column("leaf", overflow="fold")
    table.add_column("n", justify="right")
    table.add_column(f"base {unit}", justify="right")
    table.add_column(f"trained {unit}", justify="right")
    table.add_column("delta", justify="right")
    table.add_column("verdict")
    style = {"improved": "green", "regressed": "red", "same": "dim"}
    for row in result.get("per_leaf", []):
        v = row.get("verdict", "same")
        table.add_row(escape(str(row["leaf"])), str(row["n"]), _fmt(row["base"], metric), _fmt(row["trained"], metric),
                      _fmt_delta(row["delta"], metric), f"[{style.get(v, 'dim')}]{v}[/]")
    o = result.get("overall", {})
    table.add_section()
    table.add_row("[bold]overall[/bold]", str(o.get("n", "")), _fmt(o.get("base"), metric),
                  _fmt(o.get("trained"), metric), _fmt_delta(o.get("delta"), metric), "")
    return table


def judge_line(result: dict[str, Any]) -> str | None:
    """One sentence about the judge's verdicts, or None for benchmarks without a judge."""
    j = result.get("judge")
    if not j:
        return None
    share = 100.0 * (j.get("unparseable_share") or 0.0)
    return (f"Judge {j.get('model')}: {j.get('verdicts', 0)} verdicts, {j.get('unparseable', 0)} unparseable "
            f"({share:.1f}%)")


def print_result(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console

    console = console or Console()
    console.print(result_table(result))
    line = judge_line(result)
    if line:
        console.print(line, highlight=False)
