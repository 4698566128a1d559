"""Training data: chat rows -> token ids with a loss mask -> packed micro-batches.

* :func:`load_jsonl` reads a file line by line: a line that cannot be a
  sample (too long, not UTF-8, not JSON, no usable messages) is skipped and
  counted, and a file with no usable line is an error that says why.
* :func:`render` applies the model's own chat template. The template owns the
  loss mask: a token is a target only if its characters fall inside an
  assistant turn as the template renders it (content and end-of-turn marker).
* :func:`prepare` drops (and counts) samples longer than ``max_seq_len`` and
  samples with nothing to learn; nothing is ever truncated.
* :func:`step_plan` fixes which samples make each optimizer step (a seeded
  shuffle per epoch, ``effective_batch_size`` samples a step), and which rank
  gets which of them.
* :func:`pack` puts a rank's samples for one step into padding-free
  micro-batches: samples are concatenated in a row of up to
  ``micro_batch_tokens`` tokens with ``position_ids`` restarting at 0 for
  each. transformers turns that into a block-diagonal causal mask; the
  recipe's variable-length attention (:mod:`unfork.train.attention`) goes
  further and attends within each sample only, so no compute goes to
  masked-out pairs. A micro-batch's width is rounded up to a multiple of
  :data:`WIDTH_MULTIPLE` with a padding segment: a few shapes instead of one
  per step, so the CPU's matmul library reuses its kernels and buffers.

Targets are shifted here (``targets[t]`` is the token to predict after
position ``t``, or -100), so a sample's last token never predicts the next
sample's first.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.contracts import PHASES, DatasetFolder
from unfork.errors import UserError

IGNORE = -100
WIDTH_MULTIPLE = 64


@dataclass
class Sample:
    ids: list[int]
    mask: list[bool]
    """``mask[i]`` is true when token ``i`` is part of an assistant turn (a target)."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        # The first token can never be predicted (nothing precedes it).
        return sum(self.mask[1:])


def render(tokenizer: Any, messages: Sequence[dict[str, str]]) -> Sample:
    """Token ids of a conversation rendered by the tokenizer's chat template, with the loss mask.

    The assistant spans are found by rendering the conversation up to each
    assistant turn with ``add_generation_prompt=True``: what the full rendering
    adds after that prefix, up to the end of the turn, is the assistant's text.
    """
    def text_of(msgs: Sequence[dict[str, str]], gen: bool) -> str:
        return tokenizer.apply_chat_template(list(msgs), tokenize=False, add_generation_prompt=gen)

    full = text_of(messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        prefix = text_of(messages[:i], True) if i else ""
        through = text_of(messages[: i + 1], False)
        if not full.startswith(through) or not through.startswith(prefix):
            raise UserError("the chat template does not render conversations incrementally",
                            hint="training needs a template whose turns append to each other")
        spans.append((len(prefix), len(through)))

    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    mask = []
    for start, end in enc["offset_mapping"]:
        mask.append(end > start and any(s <= start and end <= e for s, e in spans))
    return Sample(ids, mask)


MAX_LINE_BYTES = 1 << 20
"""A longer line is refused before it is parsed: real samples are far shorter, and rendering a huge one holds many copies."""
MAX_DEPTH = 64
"""Messages nested deeper than this are refused: the chat template would recurse past Python's stack."""
SHOWN_LINES = 5
"""How many bad lines a report names (the rest are only counted)."""


def _lines(f: Any) -> Iterator[bytes | None]:
    """The file's lines, one at a time; None (read through, never held) for a line over :data:`MAX_LINE_BYTES`."""
    while line := f.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_row(raw: bytes | None) -> dict[str, Any] | str | None:
    """One line as a training row, or why it is unusable (None for a blank line)."""
    if raw is None:
        return f"longer than {MAX_LINE_BYTES:,} bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start + 1})"
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except RecursionError:
        return "not JSON (nested too deeply)"
    except ValueError as exc:
        return f"not JSON ({exc})"
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list):
        return "expected an object with a 'messages' list"
    if not messages:
        return "'messages' is empty"
    for i, m in enumerate(messages, 1):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            return f"message {i} is not an object with a string 'role' and 'content'"
    if _too_deep(messages):
        return f"messages nested more than {MAX_DEPTH} levels deep"
    return row


@dataclass
class JsonlRows:
    """The usable rows of a JSONL file, and the lines that were skipped with why."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """``(line number, reason)`` of each unusable line."""

    def describe_skipped(self) -> str:
        shown = "; ".join(f"line {n}: {why}" for n, why in self.skipped[:SHOWN_LINES])
        more = f"; and {len(self.skipped) - SHOWN_LINES} more" if len(self.skipped) > SHOWN_LINES else ""
        return f"{len(self.skipped)} unusable line{'s' * (len(self.skipped) != 1)} ({shown}{more})"

    def note(self) -> str | None:
        """A one-line report of the skipped lines (None when every line was usable)."""
        return f"{self.path}: skipped {self.describe_skipped()}" if self.skipped else None


def load_jsonl(path: Path) -> JsonlRows:
    """Read a chat JSONL file line by line: bad lines are skipped and counted; a file of only bad lines is an error."""
    out = JsonlRows(Path(path))
    with out.path.open("rb") as f:
        for n, raw in enumerate(_lines(f), 1):
            row = parse_row(raw)
            if isinstance(row, str):
                out.skipped.append((n, row))
            elif row is not None:
                out.rows.append(row)
    if out.skipped and not out.rows:
        raise UserError(f"{out.path}: no usable line: {out.describe_skipped()}",
                        hint='each line must be a UTF-8 JSON object like {"messages": [{"role": ..., '
                             '"content": ...}, ...]}')
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The usable rows of a chat JSONL file (see :func:`load_jsonl`)."""
    return load_jsonl(path).rows


@dataclass
class Prepared:
    samples: list[Sample]
    total: int
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    longest_dropped: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.samples)

    @property
    def target_tokens(self) -> int:
        return sum(s.n_targets for s in self.samples)

    def summary(self) -> dict[str, int]:
        return {"rows": self.total, "kept": len(self.samples), "dropped_too_long": self.dropped_too_long,
                "dropped_no_assistant": self.dropped_no_target, "longest_dropped": self.longest_dropped,
                "tokens": self.tokens, "target_tokens": self.target_tokens}

    def why_empty(self, max_seq_len: int) -> str:
        """Why no sample is left, for the error that stops training."""
        if not self.total:
            return "no rows to train on"
        reasons = []
        if self.dropped_too_long:
            reasons.append(f"{self.dropped_too_long} longer than --max-seq-len {max_seq_len} "
                           f"(longest {self.longest_dropped} tokens)")
        if self.dropped_no_target:
            reasons.append(f"{self.dropped_no_target} without an assistant answer to learn from")
        return f"none of its {self.total} samples is usable: {', '.join(reasons)}"


def prepare(rows: Iterable[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> Prepared:
    """Render every row; drop (and count) the ones over ``max_seq_len`` or without an assistant turn."""
    out = Prepared([], 0)
    for row in rows:
        out.total += 1
        sample = render(tokenizer, row["messages"])
        if len(sample) > max_seq_len:
            out.dropped_too_long += 1
            out.longest_dropped = max(out.longest_dropped, len(sample))
        elif sample.n_targets == 0:
            out.dropped_no_target += 1
        else:
            out.samples.append(sample)
    return out


# --------------------------------------------------------------------------- batching


def steps_per_epoch(n_samples: int, effective_batch_size: int) -> int:
    return math.ceil(n_samples / effective_batch_size)


def epoch_order(n_samples: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a shuffle that depends only on (seed, epoch)."""
    order = list(range(n_samples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def step_plan(n_samples: int, effective_batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Sample indices of each optimizer step of an epoch (the last step may be smaller)."""
    order = epoch_order(n_samples, seed, epoch)
    return [order[i: i + effective_batch_size] for i in range(0, n_samples, effective_batch_size)]


def shard(indices: Sequence[int], samples: Sequence[Sample], rank: int, world: int) -> list[int]:
    """This rank's share of one step's samples, balanced by tokens (longest first, to the lightest rank)."""
    if world == 1:
        return list(indices)
    loads = [0] * world
    owner: dict[int, int] = {}
    for i in sorted(indices, key=lambda i: (-len(samples[i]), i)):
        r = min(range(world), key=lambda k: (loads[k], k))
        owner[i] = r
        loads[r] += len(samples[i])
    return [i for i in indices if owner[i] == rank]


@dataclass
class Row:
    """Samples concatenated in one sequence, ``position_ids`` restarting at 0 for each."""

    input_ids: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    n_samples: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        return sum(t != IGNORE for t in self.targets)

    def add(self, s: Sample) -> None:
        self.input_ids += s.ids
        self.position_ids += range(len(s))
        self.targets += [s.ids[t + 1] if s.mask[t + 1] else IGNORE for t in range(len(s) - 1)] + [IGNORE]
        self.n_samples += 1


@dataclass
class MicroBatch:
    """Rows of packed samples run in one forward pass: ``(rows, width)`` tensors, the width being the
    longest row rounded up to :data:`WIDTH_MULTIPLE`.

    A shorter row is filled up with a padding segment whose positions restart
    at 0: it is a sequence of its own, so no real token attends to it, and it
    has no targets.
    """

    rows: list[Row] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(r) for r in self.rows)

    @property
    def n_targets(self) -> int:
        return sum(r.n_targets for r in self.rows)

    @property
    def n_samples(self) -> int:
        return sum(r.n_samples for r in self.rows)

    def tensors(self, device: Any = "cpu", pad_id: int = 0) -> tuple[Any, Any, Any]:
        import torch

        width = -(-max(len(r) for r in self.rows) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
        ids, pos, tgt = [], [], []
        for r in self.rows:
            pad = width - len(r)
            ids.append(r.input_ids + [pad_id] * pad)
            pos.append(r.position_ids + list(range(pad)))
            tgt.append(r.targets + [IGNORE] * pad)

        def t(x: list[list[int]]) -> Any:
            return torch.tensor(x, dtype=torch.long, device=device)

        return t(ids), t(pos), t(tgt)


def pack(samples: Sequence[Sample], row_len: int, rows_per_batch: int = 1) -> list[MicroBatch]:
    """Padding-free micro-batches: rows of at most ``row_len`` tokens, ``rows_per_batch`` rows each.

    First-fit decreasing fills each row close to ``row_len`` (a longer sample
    gets a row alone); rows of similar length share a micro-batch, so the only
    padding is what the shortest row of a micro-batch lacks. The gradient does
    not depend on this grouping (the loss is a sum over target tokens divided
    by the step's total), only the speed and memory do.
    """
    rows: list[Row] = []
    for s in sorted(samples, key=len, reverse=True):
        for r in rows:
            if len(r) + len(s) <= row_len:
                r.add(s)
                break
        else:
            r = Row()
            r.add(s)
            rows.append(r)
    rows.sort(key=len, reverse=True)
    return [MicroBatch(rows[i: i + rows_per_batch]) for i in range(0, len(rows), rows_per_batch)]


def padding_waste(lengths: Sequence[int], micro_batch_size: int, *, sort: bool = False) -> float:
    """Share of a padded batch's positions that would be padding (for reports and the benchmark)."""
    seq = sorted(lengths) if sort else list(lengths)
    real = padded = 0
    for i in range(0, len(seq), micro_batch_size):
        chunk = seq[i: i + micro_batch_size]
        real += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 0.0 if not padded else 1 - real / padded


# --------------------------------------------------------------------------- finding data


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def count_rows(path: Path) -> int:
    """Lines with more than whitespace, read in chunks so that one huge line is never held whole."""
    rows, filled = 0, False
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            *ended, rest = chunk.split(b"\n")
            for line in ended:
                rows += filled or bool(line.strip())
                filled = False
            filled = filled or bool(rest.strip())
    return rows + filled


@dataclass
class DataFiles:
    """The files of one generated dataset (or a single file) that training reads."""

    root: Path
    train_all: Path | None = None
    train_knowledge: Path | None = None
    train_skills: Path | None = None
    test: dict[str, Path] = field(default_factory=dict)
    """``all``/``knowledge``/``skills`` -> held-out file."""
    skipped: dict[Path, str] = field(default_factory=dict)
    """File -> report of the unusable lines :meth:`read` skipped in it."""

    def read(self, path: Path) -> list[dict[str, Any]]:
        """The usable rows of one of the files, noting the lines skipped."""
        loaded = load_jsonl(path)
        note = loaded.note()
        if note:
            self.skipped[loaded.path] = note
        return loaded.rows

    def files(self) -> list[Path]:
        found = [self.train_all, self.train_knowledge, self.train_skills, *self.test.values()]
        return [p for p in found if p is not None]

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"root": str(self.root), "files": {}}
        for p in self.files():
            out["files"][p.name] = {"path": str(p), "sha256": sha256_file(p), "rows": count_rows(p)}
        upstream = DatasetFolder(self.root).manifest_path if self.root.is_dir() else None
        if upstream and upstream.is_file():
            out["generation_manifest_sha256"] = sha256_file(upstream)
        return out


def find_data(path: str | Path | None, datasets_dir: Path) -> DataFiles:
    """Resolve ``--data-path``: a JSONL file, a dataset folder, or (none) the newest generated dataset."""
    if path:
        p = Path(path).expanduser()
        if p.is_file():
            return DataFiles(p.parent, train_all=p)
        if not p.is_dir():
            raise UserError(f"no such file or folder: {p}")
        folder = p
    else:
        # Only finished folders of a run that worked: one still being written (no manifest yet) has
        # incomplete splits, and one whose leaves all had every sample refused failed.
        def usable(d: Path) -> bool:
            m = DatasetFolder(d).read_manifest()
            refused = bool(m and m.leaves) and not any(isinstance(e, dict) and e.get("accepted") for e in m.leaves)
            return m is not None and m.complete and not refused

        candidates = sorted((d for d in datasets_dir.glob("*") if d.is_dir() and DatasetFolder(d).has_train_files()
                             and usable(d)), key=lambda d: (d.stat().st_mtime, d.name))
        if not candidates:
            raise UserError(f"no generated dataset in {datasets_dir}",
                            hint="run 'unfork data generate', or pass --data-path FILE.jsonl")
        folder = candidates[-1]

    dataset = DatasetFolder(folder)

    def opt(f: Path) -> Path | None:
        return f if f.is_file() and f.stat().st_size > 0 else None

    files = DataFiles(folder, *(opt(dataset.train_file(kind)) for kind in ("all", *PHASES)))
    for kind in ("all", *PHASES):
        f = opt(dataset.test_file(kind))
        if f:
            files.test[kind] = f
    if not (files.train_all or files.train_knowledge or files.train_skills):
        raise UserError(f"{folder} holds no train_*.jsonl file with data",
                        hint="point --data-path at a dataset folder or a JSONL file")
    return files
