"""What to evaluate and on what: the trained run, its base model, its dataset's test split; answers side by side.

``unfork model test`` shows the base and the trained model's answers to the
seed examples (which never enter training), next to the contributor's own
answer. The helpers here also pick the defaults every benchmark shares: the
newest trained run, the base model it started from, the dataset it used.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.contracts import DatasetFolder, TrainingInfo, TrainingRun
from unfork.errors import UserError

NO_RUN_HINT = "run 'unfork model train' first, or pass --model and --base-model"


@dataclass
class SeedQuestion:
    """One seed example of the test split: the conversation up to the question, and the seed answer."""

    leaf: str
    kind: str            # "knowledge" or "skills"
    conversation: list[dict[str, str]]
    reference: str

    @property
    def question(self) -> str:
        return self.conversation[-1]["content"]


@dataclass
class Target:
    """The models under evaluation and where their run lives (None when --model is not a trained run)."""

    model: str
    base_model: str
    run: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- runs and datasets


def newest_run(checkpoints_dir: Path | None = None) -> Path:
    """The finished trained run whose ``training.json`` is newest."""
    if checkpoints_dir is None:
        from unfork.paths import get_paths

        checkpoints_dir = get_paths().checkpoints_dir
    runs = [TrainingRun(p.parent) for p in Path(checkpoints_dir).glob(f"*/{TrainingRun.INFO}")]
    runs = [r for r in runs if r.is_complete()]
    if not runs:
        raise UserError(f"no trained model yet in {checkpoints_dir}", hint=NO_RUN_HINT)
    return max(runs, key=lambda r: (r.info_path.stat().st_mtime, r.root.name)).root


def run_of(model: str | Path) -> Path | None:
    """The run folder of ``model`` when it is a run folder or its ``final/``, else None."""
    p = Path(model).expanduser()
    for cand in (p, p.parent) if p.name == TrainingRun.FINAL else (p,):
        if TrainingRun(cand).info_path.is_file():
            return cand
    return None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def resolve_target(model: str | None, base_model: str | None) -> Target:
    """``--model`` (default: the newest run's ``final/``) and ``--base-model`` (default: what that run started from)."""
    run = newest_run() if model is None else run_of(model)
    info = read_json(TrainingRun(run).info_path) if run else {}
    if model is None or (run is not None and Path(model).expanduser() == run):
        assert run is not None
        model = str(TrainingRun(run).final)
    if base_model is None:
        base_model = TrainingInfo.from_dict(info).base_model
        if not base_model:
            raise UserError(f"cannot tell which base model {model} was trained from",
                            hint="pass --base-model (a catalog name or a model folder)")
    return Target(str(model), str(base_model), run, info)


def dataset_for(run: Path | None, data_path: str | Path | None) -> Path:
    """``--data-path``, else the dataset the trained ``run`` recorded, else the newest generated dataset."""
    if data_path:
        p = Path(data_path).expanduser()
        if not p.is_dir():
            raise UserError(f"no such dataset folder: {p}", hint="pass a folder written by 'unfork data generate'")
        return p
    if run is not None and TrainingRun(run).data_manifest_path.is_file():
        root = Path(read_json(TrainingRun(run).data_manifest_path).get("root", ""))
        if root.is_dir() and DatasetFolder(root).has_test_files():
            return root
    from unfork.paths import get_paths

    root = get_paths().datasets_dir
    found = [d for d in root.glob("*") if d.is_dir() and DatasetFolder(d).has_test_files()
             and DatasetFolder(d).is_complete()] if root.is_dir() else []
    if not found:
        raise UserError(f"no generated dataset in {root}", hint="run 'unfork data generate', or pass --data-path")
    return max(found, key=lambda d: (d.stat().st_mtime, d.name))


def read_test_split(dataset: Path, kinds: tuple[str, ...] = ("skills", "knowledge")) -> list[SeedQuestion]:
    """The seed examples of ``test_<kind>.jsonl`` for each kind (missing files are simply empty)."""
    items = []
    for kind in kinds:
        path = DatasetFolder(Path(dataset)).test_file(kind)
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = row["messages"]
                reference = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
                conversation = [m for m in messages if m["role"] != "assistant"]
                leaf = (row.get("metadata") or {}).get("leaf") or kind
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise UserError(f"{path}, line {n}: not a chat sample ({exc})") from None
            items.append(SeedQuestion(leaf, kind, conversation, reference))
    return items


# --------------------------------------------------------------------------- answers


@contextlib.contextmanager
def responder_for(model: Any, label: str) -> Iterator[Any]:
    """A responder for a model name or path; an object that already answers is used as it is (tests).

    ``label`` ("base" or "trained") is the side it answers for; test doubles patched in here use it.
    """
    if hasattr(model, "answer"):
        yield model
        return
    from unfork.eval.answers import open_responder

    with open_responder(str(model)) as responder:
        yield responder


def answer_both(model: Any, base_model: Any, conversations: list[list[dict[str, str]]], *, max_tokens: int,
                echo: Callable[[str], None] = print) -> tuple[tuple[str, str], list[str], list[str]]:
    """Greedy answers of the base, then of the trained model (one model in memory at a time)."""
    labels, answers = [], []
    for which, label in ((base_model, "base"), (model, "trained")):
        with responder_for(which, label) as responder:
            labels.append(_label(which, responder))
            echo(f"{label}: {len(conversations)} answers from {labels[-1]}")
            answers.append(responder.answer(conversations, max_tokens=max_tokens))
    return (labels[0], labels[1]), answers[0], answers[1]


def _label(model: Any, responder: Any) -> str:
    if isinstance(model, (str, Path)):
        p = Path(model)
        run = run_of(p)
        return run.name if run else (p.name or str(model))
    return str(getattr(responder, "name", model))


def compare(model: Any, base_model: Any, items: list[SeedQuestion], *, max_tokens: int = 256,
            echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Both models' answers to the test split, next to the seed answers (no scores)."""
    labels, base, trained = answer_both(model, base_model, [it.conversation for it in items],
                                        max_tokens=max_tokens, echo=echo)
    rows = [{"leaf": it.leaf, "kind": it.kind, "question": it.question, "reference": it.reference,
             "base_answer": b, "trained_answer": t} for it, b, t in zip(items, base, trained, strict=True)]
    return {"models": {"base": labels[0], "trained": labels[1]}, "items": rows}


def side_by_side_table(result: dict[str, Any], width: int = 400) -> Any:
    from rich.markup import escape
    from rich.table import Table

    models = result["models"]
    table = Table(title=f"Test split: {models['base']} (base) vs {models['trained']} (trained)", show_lines=True)
    for name in ("question", "reference", "base", "trained"):
        table.add_column(name, overflow="fold", ratio=1)

    def cut(text: str) -> str:  # answers may hold [brackets]: show them, never read them as markup
        return escape(text if len(text) <= width else text[:width] + " ...")

    for row in result["items"]:
        table.add_row(f"[dim]{escape(row['leaf'])}[/dim]\n{cut(row['question'])}", cut(row["reference"]),
                      cut(row["base_answer"]), cut(row["trained_answer"]))
    return table
