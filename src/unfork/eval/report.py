"""The run report: what was taught, the data, the training curve, the scores, example answers.

``write_report`` writes ``report.md`` (for GitHub and terminals), ``report.html``
(one self-contained file: inline CSS and SVG), ``loss.svg`` and ``scores.svg``.
Both documents are rendered from the same list of sections, so they never
disagree. Every input may be missing (a run that stopped early, a benchmark
that was skipped): the report then says what is missing instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from unfork.contracts import DatasetFolder, DatasetManifest, TrainingRun
from unfork.eval import svg

EXAMPLES_PER_BENCHMARK = 3
MAX_COMPARISONS = 6


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Chart:
    file: str
    alt: str
    svg: str


@dataclass
class Example:
    source: str
    leaf: str
    question: str
    reference: str | None
    base: str | None
    trained: str | None
    verdict: str = ""


@dataclass
class Section:
    title: str
    parts: list[Any] = field(default_factory=list)  # str (a paragraph), Table, Chart, Example, or Code


@dataclass
class Code:
    text: str


# --------------------------------------------------------------------------- reading the run's files


def loss_series(metrics: Path) -> dict[str, list[tuple[float, float]]]:
    """Training and held-out loss per phase from ``metrics.jsonl``, phases laid end to end on one step axis.

    Each phase counts its steps from zero, so a later phase is shifted by the
    steps before it. A resumed run logs some steps twice: the last row wins.
    """
    train: dict[str, dict[int, float]] = {}
    held_out: dict[str, dict[int, float]] = {}
    for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if not isinstance(row, dict) or not isinstance(row.get("global_step"), int):
            continue
        phase = str(row.get("phase", "train"))
        train.setdefault(phase, {})
        if isinstance(row.get("loss"), (int, float)):
            train[phase][row["global_step"]] = float(row["loss"])
        if isinstance(row.get("eval_loss"), (int, float)):
            held_out.setdefault(phase, {})[row["global_step"]] = float(row["eval_loss"])
    out: dict[str, list[tuple[float, float]]] = {}
    offset = 0
    for phase, steps in train.items():
        last = max([*steps, *held_out.get(phase, {})], default=0)
        if steps:
            out[f"loss ({phase})"] = [(offset + s, v) for s, v in sorted(steps.items())]
        if held_out.get(phase):
            out[f"held-out loss ({phase})"] = [(offset + s, v) for s, v in sorted(held_out[phase].items())]
        offset += last
    return out


# --------------------------------------------------------------------------- the sections


def run_section(run: dict[str, Any], run_dir: Path) -> Section:
    sec = Section("Run", [f"Run folder: {run_dir}"])
    rows = [[key, value] for key, value in run.items()
            if isinstance(value, (str, int, float, bool)) and key not in ("leaves", "stage_seconds", "title")]
    if rows:
        sec.parts.append(Table(["setting", "value"], rows))
    return sec


def _seed_count(leaf: dict[str, Any], manifest_leaves: dict[str, dict[str, Any]]) -> Any:
    for key in ("seed_examples", "examples"):
        value = leaf.get(key)
        if isinstance(value, list):
            return len(value)
        if isinstance(value, int):
            return value
    return manifest_leaves.get(str(leaf.get("path")), {}).get("test_samples", "?")


def taught_section(run: dict[str, Any], manifest: DatasetManifest | None) -> Section:
    sec = Section("What was taught")
    by_leaf = {str(e.get("leaf")): e for e in (manifest.leaves if manifest else [])}
    leaves = run.get("leaves") or [{"path": rel, "kind": e.get("flow", "?")} for rel, e in by_leaf.items()]
    if not leaves:
        sec.parts.append("No taxonomy leaves were recorded for this run.")
        return sec
    sec.parts.append(f"Taxonomy leaves taught: {len(leaves)}.")
    sec.parts.append(Table(["leaf", "kind", "seed examples"],
                           [[leaf.get("path", "?"), leaf.get("kind", "?"), _seed_count(leaf, by_leaf)]
                            for leaf in leaves]))
    return sec


def data_section(dataset_dir: Path | None, manifest: DatasetManifest | None) -> Section:
    sec = Section("Training data")
    if dataset_dir is None:
        sec.parts.append("No dataset folder was given: the data counts are missing.")
        return sec
    if manifest is None:
        sec.parts.append(f"{dataset_dir} has no readable {DatasetFolder.MANIFEST}: the data counts are missing.")
        return sec
    teacher = "?" if manifest.teacher is None else manifest.teacher
    sec.parts.append(f"Generated into {dataset_dir} by the teacher {teacher} "
                     f"with the pipeline {manifest.pipeline.get('name', '?')}.")
    rows = []
    for e in manifest.leaves:
        accepted, rejected = int(e.get("accepted", 0)), int(e.get("rejected", 0))
        reasons = ", ".join(f"{why} ({n})" for why, n in list(e.get("rejected_by_reason", {}).items())[:3])
        rows.append([e.get("leaf", "?"), e.get("flow", "?"), accepted + rejected, accepted, rejected,
                     e.get("train_samples", 0), e.get("test_samples", 0), reasons or "-"])
    if rows:
        sec.parts.append(Table(["leaf", "kind", "generated", "accepted", "rejected", "train samples",
                                "test samples", "main rejection reasons"], rows))
    if manifest.files:
        sec.parts.append(Table(["file", "samples"], [[name, n] for name, n in manifest.files.items()]))
    return sec


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def times_section(run: dict[str, Any]) -> Section:
    sec = Section("Stage times")
    stages = {k: v for k, v in (run.get("stage_seconds") or {}).items() if isinstance(v, (int, float))}
    if not stages:
        sec.parts.append("The stage times were not recorded.")
        return sec
    rows = [[stage, _duration(float(s))] for stage, s in stages.items()]
    rows.append(["total", _duration(float(sum(stages.values())))])
    sec.parts.append(Table(["stage", "time"], rows))
    return sec


def training_section(train_dir: Path | None) -> tuple[Section, Chart | None]:
    sec = Section("Training loss")
    if train_dir is None:
        sec.parts.append("No training run folder was given: there is no loss curve.")
        return sec, None
    metrics = TrainingRun(train_dir).metrics_path
    series = loss_series(metrics) if metrics.is_file() else {}
    if not series:
        sec.parts.append(f"{metrics} is missing or has no loss rows: there is no loss curve.")
        return sec, None
    chart = Chart("loss.svg", "Training loss against step",
                  svg.line_chart(series, title="Training loss", x_label="optimizer step (phases in order)",
                                 y_label="loss"))
    sec.parts.append(chart)
    rows = [[name, len(pts), svg.fmt(pts[0][1]), svg.fmt(pts[-1][1])] for name, pts in series.items()]
    sec.parts.append(Table(["series", "points", "first", "last"], rows))
    return sec, chart


def _metric_unit(result: dict[str, Any]) -> tuple[str, float | None]:
    return ("%", 100.0) if result.get("metric") == "accuracy" else ("", 10.0)


def scores_section(results: list[dict[str, Any]]) -> tuple[Section, Chart | None]:
    sec = Section("Scores: base against trained")
    if not results:
        sec.parts.append("No benchmark was run: there are no scores.")
        return sec, None
    rows = []
    for r in results:
        o, unit = r.get("overall", {}), _metric_unit(r)[0]
        rows.append([r.get("benchmark", "?"), r.get("metric", "?"), o.get("n", "?"),
                     f"{svg.fmt(o.get('base', float('nan')))}{unit}", f"{svg.fmt(o.get('trained', float('nan')))}{unit}",
                     f"{o.get('delta', 0):+g}" + (" points" if unit == "%" else "")])
    models = results[0].get("models", {})
    sec.parts.append(f"Base model: {models.get('base', '?')}; trained model: {models.get('trained', '?')}.")
    sec.parts.append(Table(["benchmark", "metric", "questions", "base", "trained", "change"], rows))
    charts = []
    for r in results:
        leaves = r.get("per_leaf") or []
        unit, maximum = _metric_unit(r)
        if leaves:
            charts.append(svg.bar_chart([str(row.get("leaf")) for row in leaves],
                                        {"base": [row.get("base") for row in leaves],
                                         "trained": [row.get("trained") for row in leaves]},
                                        title=f"{r.get('benchmark', '?')}: base vs trained per leaf",
                                        unit=unit, maximum=maximum))
    chart = Chart("scores.svg", "Base against trained per leaf", svg.stack(charts)) if charts else None
    if chart:
        sec.parts.append(chart)
    for r in results:
        if r.get("per_leaf"):
            sec.parts.append(f"{r.get('benchmark', '?')} per leaf:")
            sec.parts.append(Table(["leaf", "n", "base", "trained", "change", "verdict"],
                                   [[row.get("leaf"), row.get("n"), row.get("base"), row.get("trained"),
                                     f"{row.get('delta', 0):+g}", row.get("verdict", "")]
                                    for row in r["per_leaf"]]))
        judge = r.get("judge")
        if isinstance(judge, dict) and judge:
            sec.parts.append(f"{r.get('benchmark')} judge: " + ", ".join(f"{k} {v}" for k, v in judge.items()
                                                                       if isinstance(v, (str, int, float))))
    return sec, chart


def _interesting(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    # The items whose score changed say most about the training: gains first, then losses, then the rest.
    def rank(item: dict[str, Any]) -> int:
        b, t = item.get("base_score") or 0, item.get("trained_score") or 0
        return 0 if t > b else 1 if t < b else 2

    return sorted(items, key=rank)[:n]


def examples_section(results: list[dict[str, Any]], comparisons: list[dict[str, Any]] | None) -> Section:
    sec = Section("Example answers")
    for c in (comparisons or [])[:MAX_COMPARISONS]:
        sec.parts.append(Example("test split", str(c.get("leaf", "")), str(c.get("question", "")),
                                 c.get("reference"), c.get("base_answer"), c.get("trained_answer")))
    for r in results:
        for item in _interesting(list(r.get("items") or []), EXAMPLES_PER_BENCHMARK):
            b, t = item.get("base_score"), item.get("trained_score")
            verdict = "" if b is None or t is None else f"score {svg.fmt(b)} → {svg.fmt(t)}"
            sec.parts.append(Example(str(r.get("benchmark", "")), str(item.get("leaf", "")),
                                     str(item.get("question", "")), item.get("reference"),
                                     item.get("base_answer"), item.get("trained_answer"), verdict))
    if not sec.parts:
        sec.parts.append("No answers were recorded: there are no examples to show.")
    return sec


def chat_section(train_dir: Path | None) -> Section:
    sec = Section("Chat with the new model")
    if train_dir is None:
        sec.parts.append("There is no trained model in this run to chat with.")
    else:
        sec.parts += ["Try it yourself:", Code(f"unfork model chat --model {TrainingRun(train_dir).final}")]
    return sec


# --------------------------------------------------------------------------- rendering


def md_text(value: Any) -> str:
    """User text made inert in Markdown: GitHub would otherwise render (sanitized) raw HTML from answers."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_cell(value: Any) -> str:
    return md_text("" if value is None else value).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _md_quote(value: Any) -> str:
    text = "(no answer)" if value is None or value == "" else md_text(value)
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {md_text(title)}", ""]
    for sec in sections:
        out += [f"## {md_text(sec.title)}", ""]
        for part in sec.parts:
            if isinstance(part, str):
                out += [md_text(part), ""]
            elif isinstance(part, Table):
                out.append("| " + " | ".join(md_cell(h) for h in part.headers) + " |")
                out.append("|" + "---|" * len(part.headers))
                out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in part.rows]
                out.append("")
            elif isinstance(part, Chart):
                out += [f"![{md_text(part.alt)}]({part.file})", ""]
            elif isinstance(part, Code):
                out += ["```", part.text, "```", ""]
            elif isinstance(part, Example):
                head = f"**{md_text(part.source)}** · `{md_cell(part.leaf)}`" + (
                    f" · {md_text(part.verdict)}" if part.verdict else "")
                out += [head, "", f"**Question:** {md_cell(part.question)}", ""]
                if part.reference:
                    out += [f"**Reference:** {md_cell(part.reference)}", ""]
                out += ["**Base:**", "", _md_quote(part.base), "", "**Trained:**", "", _md_quote(part.trained), ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#111827;line-height:1.45}
h1{font-size:1.7em}h2{margin-top:1.8em;border-bottom:1px solid #e5e7eb;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #d1d5db;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f4f6}
pre{background:#f3f4f6;padding:.6em;border-radius:4px;white-space:pre-wrap;word-break:break-word;margin:0}
.example{border:1px solid #e5e7eb;border-radius:6px;padding:.6em;margin:1em 0}
.example table{width:100%;table-layout:fixed}.meta{color:#6b7280;font-size:.9em}
figure{margin:1em 0;overflow-x:auto}
"""


def _html_example(part: Example) -> str:
    def answer(value: Any) -> str:
        return escape("(no answer)" if value is None or value == "" else str(value))

    meta = " · ".join(escape(x) for x in (part.source, part.leaf, part.verdict) if x)
    ref = f"<p><b>Reference:</b> {escape(str(part.reference))}</p>" if part.reference else ""
    return (f'<div class="example"><div class="meta">{meta}</div><p><b>Question:</b> {escape(part.question)}</p>'
            f"{ref}<table><tr><th>Base</th><th>Trained</th></tr><tr><td><pre>{answer(part.base)}</pre></td>"
            f"<td><pre>{answer(part.trained)}</pre></td></tr></table></div>")


def render_html(title: str, sections: list[Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{escape(title)}</title><style>{CSS}</style></head><body>", f"<h1>{escape(title)}</h1>"]
    for sec in sections:
        out.append(f"<h2>{escape(sec.title)}</h2>")
        for part in sec.parts:
            if isinstance(part, str):
                out.append(f"<p>{escape(part)}</p>")
            elif isinstance(part, Table):
                head = "".join(f"<th>{escape(str(h))}</th>" for h in part.headers)
                body = "".join("<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row)
                               + "</tr>" for row in part.rows)
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            elif isinstance(part, Chart):
                out.append(f"<figure>{part.svg}</figure>")
            elif isinstance(part, Code):
                out.append(f"<pre><code>{escape(part.text)}</code></pre>")
            elif isinstance(part, Example):
                out.append(_html_example(part))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the report


def write_report(run_dir: Path, *, run: dict[str, Any], dataset_dir: Path | None, train_dir: Path | None,
                 results: list[dict[str, Any]], comparisons: list[dict[str, Any]] | None) -> tuple[Path, Path]:
    """Write report.md, report.html, loss.svg and scores.svg into ``run_dir``; return the two reports."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from unfork.fsio import atomic_write_text

    dataset_dir = Path(dataset_dir) if dataset_dir else None
    train_dir = Path(train_dir) if train_dir else None
    manifest = DatasetFolder(dataset_dir).read_manifest() if dataset_dir else None
    results = [r for r in results or [] if isinstance(r, dict)]
    training, loss_chart = training_section(train_dir)
    scores, scores_chart = scores_section(results)
    sections = [run_section(run, run_dir), taught_section(run, manifest), data_section(dataset_dir, manifest),
                times_section(run), training, scores, examples_section(results, comparisons), chat_section(train_dir)]
    for chart in (loss_chart, scores_chart):
        if chart is not None:
            atomic_write_text(run_dir / chart.file, chart.svg + "\n")
    title = str(run.get("title") or "unfork run report")
    md, html = run_dir / "report.md", run_dir / "report.html"
    atomic_write_text(md, render_markdown(title, sections))
    atomic_write_text(html, render_html(title, sections))
    return md, html
