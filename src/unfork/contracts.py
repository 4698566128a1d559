"""What one stage hands the next: the dataset folder, the training run folder, the evaluation results.

Each folder's file names live here, and each manifest is a typed dataclass
read and written here, so a stage never spells another stage's file names.

Every manifest carries ``schema_version`` and ``complete``, and a folder is
done only when its manifest says so: the dataset manifest is written last
(atomically), and ``training.json`` gets ``"complete": true`` only after the
final model is in place. Folders written before schema 1 have neither key;
they are done when their existing content says so (the dataset manifest
exists; the training run has its ``final/`` model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

SCHEMA_VERSION = 1
PHASES = ("knowledge", "skills")
"""The dataset's training phases, in training order (``all`` is their union)."""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any], *, ensure_ascii: bool = True) -> None:
    """Write ``data`` as indented JSON through a temporary file, so a reader never sees half of it."""
    from unfork.fsio import atomic_write_text

    atomic_write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=ensure_ascii) + "\n")


def _split(d: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


# --------------------------------------------------------------------------- the dataset folder


@dataclass
class DatasetManifest:
    """``manifest.json`` of a dataset folder: settings, hashes, teacher, pipeline, counts."""

    FORMAT: ClassVar[str] = "unfork-sdg-1"
    KEYS: ClassVar[tuple[str, ...]] = ("format", "pipeline", "teacher", "seed", "settings", "leaves", "files",
                                       "phases", "stats", "schema_version", "complete")

    pipeline: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    seed: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    leaves: list[dict[str, Any]] = field(default_factory=list)
    """One entry per leaf: its flow, phase, hashes and counts."""
    files: dict[str, int] = field(default_factory=dict)
    """Lines in each train/test file, by file name."""
    phases: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    schema_version: int | None = SCHEMA_VERSION
    complete: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept so that reading and writing loses nothing."""

    def count(self, name: str) -> int:
        """Lines in the dataset file ``name`` (0 when it was not written)."""
        return self.files.get(name, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "pipeline": self.pipeline, "teacher": self.teacher, "seed": self.seed,
                "settings": self.settings, "leaves": self.leaves, "files": self.files, "phases": self.phases,
                "stats": self.stats, **self.extra, "schema_version": self.schema_version, "complete": self.complete}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetManifest:
        def of(key: str, kind: type, default: Any) -> Any:
            value = d.get(key, default)
            return value if isinstance(value, kind) else default

        # Before schema 1 the manifest was written last, so one that exists means a finished folder.
        legacy = "schema_version" not in d
        return cls(pipeline=of("pipeline", dict, {}), teacher=d.get("teacher"), seed=d.get("seed"),
                   settings=of("settings", dict, {}), leaves=of("leaves", list, []),
                   files=of("files", dict, {}), phases=of("phases", dict, {}), stats=of("stats", dict, {}),
                   format=str(d.get("format", "")), schema_version=d.get("schema_version"),
                   complete=True if legacy else d.get("complete") is True, extra=_split(d, cls.KEYS))


@dataclass(frozen=True)
class DatasetFolder:
    """``<datasets dir>/<timestamp>/``: what ``unfork data generate`` writes and training reads."""

    root: Path

    MANIFEST: ClassVar[str] = "manifest.json"
    MIX_RECIPE: ClassVar[str] = "mix_recipe.yaml"
    LEAVES: ClassVar[str] = "leaves"
    TRAIN_ALL: ClassVar[str] = "train_all.jsonl"
    TRAIN_KNOWLEDGE: ClassVar[str] = "train_knowledge.jsonl"
    TRAIN_SKILLS: ClassVar[str] = "train_skills.jsonl"
    TEST_ALL: ClassVar[str] = "test_all.jsonl"
    TEST_KNOWLEDGE: ClassVar[str] = "test_knowledge.jsonl"
    TEST_SKILLS: ClassVar[str] = "test_skills.jsonl"

    @staticmethod
    def train_name(kind: str) -> str:
        """``train_<kind>.jsonl`` for ``all``, ``knowledge`` or ``skills``."""
        return f"train_{kind}.jsonl"

    @staticmethod
    def test_name(kind: str) -> str:
        return f"test_{kind}.jsonl"

    def train_file(self, kind: str) -> Path:
        return self.root / self.train_name(kind)

    def test_file(self, kind: str) -> Path:
        return self.root / self.test_name(kind)

    @property
    def manifest_path(self) -> Path:
        return self.root / self.MANIFEST

    @property
    def mix_recipe_path(self) -> Path:
        return self.root / self.MIX_RECIPE

    def leaf_dir(self, slug: str) -> Path:
        return self.root / self.LEAVES / slug

    def has_train_files(self) -> bool:
        return any(self.root.glob("train_*.jsonl"))

    def has_test_files(self) -> bool:
        return any(self.root.glob("test_*.jsonl"))

    def read_manifest(self) -> DatasetManifest | None:
        data = read_json(self.manifest_path)
        return None if data is None else DatasetManifest.from_dict(data)

    def write_manifest(self, manifest: DatasetManifest) -> None:
        """Written after every other file of the folder: its presence marks the folder as finished."""
        write_json(self.manifest_path, manifest.to_dict(), ensure_ascii=False)

    def is_complete(self) -> bool:
        manifest = self.read_manifest()
        return manifest is not None and manifest.complete


# --------------------------------------------------------------------------- the training run folder


@dataclass
class TrainingInfo:
    """``training.json`` of a run: resolved settings, data summary, phase results."""

    KEYS: ClassVar[tuple[str, ...]] = ("key", "started", "resumed", "settings", "dtype", "device", "world_size",
                                       "distributed", "data", "phases", "finished", "schema_version", "complete")

    key: str | None = None
    """What makes two runs the same run (a rerun resumes it)."""
    started: str | None = None
    resumed: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    """The training settings, with ``model`` the base model's path."""
    dtype: str | None = None
    device: str | None = None
    world_size: int | None = None
    distributed: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, Any] = field(default_factory=dict)
    """Phase name -> best epoch, best held-out loss, steps."""
    finished: str | None = None
    schema_version: int | None = SCHEMA_VERSION
    complete: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_model(self) -> str | None:
        return self.settings.get("model")

    def to_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "started": self.started, "resumed": self.resumed, "settings": self.settings,
               "dtype": self.dtype, "device": self.device, "world_size": self.world_size,
               "distributed": self.distributed, "data": self.data, "phases": self.phases, **self.extra}
        if self.finished is not None:
            out["finished"] = self.finished
        return {**out, "schema_version": self.schema_version, "complete": self.complete}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingInfo:
        settings, phases, data = (d.get(k) if isinstance(d.get(k), dict) else {} for k in ("settings", "phases", "data"))
        return cls(key=d.get("key"), started=d.get("started"), resumed=list(d.get("resumed") or []),
                   settings=settings, dtype=d.get("dtype"), device=d.get("device"), world_size=d.get("world_size"),
                   distributed=d.get("distributed"), data=data, phases=phases, finished=d.get("finished"),
                   schema_version=d.get("schema_version"), complete=d.get("complete") is True,
                   extra=_split(d, cls.KEYS))


@dataclass(frozen=True)
class TrainingRun:
    """``<checkpoints dir>/<run>/``: what ``unfork model train`` writes and evaluation reads."""

    root: Path

    INFO: ClassVar[str] = "training.json"
    DATA_MANIFEST: ClassVar[str] = "data_manifest.json"
    METRICS: ClassVar[str] = "metrics.jsonl"
    FINAL: ClassVar[str] = "final"
    ADAPTER: ClassVar[str] = "adapter"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    EVAL: ClassVar[str] = "eval"

    @property
    def info_path(self) -> Path:
        return self.root / self.INFO

    @property
    def data_manifest_path(self) -> Path:
        return self.root / self.DATA_MANIFEST

    @property
    def metrics_path(self) -> Path:
        return self.root / self.METRICS

    @property
    def final(self) -> Path:
        """The merged Hugging Face model, moved in whole once written."""
        return self.root / self.FINAL

    @property
    def partial_final(self) -> Path:
        return self.root / ".final.partial"

    @property
    def adapter(self) -> Path:
        return self.root / self.ADAPTER

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def eval_dir(self) -> Path:
        return self.root / self.EVAL

    def best_path(self, phase: str) -> Path:
        return self.root / "phases" / phase / "best.safetensors"

    def read_info(self) -> TrainingInfo | None:
        data = read_json(self.info_path)
        return None if data is None else TrainingInfo.from_dict(data)

    def write_info(self, info: TrainingInfo) -> None:
        write_json(self.info_path, info.to_dict())

    def write_data_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.data_manifest_path, manifest)

    def dataset_root(self) -> Path | None:
        """The dataset folder the run recorded in ``data_manifest.json`` (None when there is none)."""
        data = read_json(self.data_manifest_path)
        return None if data is None else Path(data.get("root", ""))

    def is_complete(self) -> bool:
        """Trained: ``final/`` is there and, from schema 1 on, ``training.json`` says the run finished."""
        if not self.final.is_dir():
            return False
        info = self.read_info()
        return info is None or info.schema_version is None or info.complete


# --------------------------------------------------------------------------- evaluation results


@dataclass(frozen=True)
class EvalFolder:
    """``<run>/eval/``: one ``<benchmark>.json`` per benchmark, each written whole (see unfork.eval.results)."""

    root: Path

    BENCHMARKS: ClassVar[tuple[str, ...]] = ("knowledge", "skills", "general", "dk")

    def result_path(self, benchmark: str) -> Path:
        return self.root / f"{benchmark}.json"

    def write_result(self, result: dict[str, Any]) -> Path:
        """Write ``result`` as ``<benchmark>.json``, whole or not at all."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.result_path(result["benchmark"])
        write_json(path, result, ensure_ascii=False)
        return path

    def read_result(self, benchmark: str) -> dict[str, Any] | None:
        """The benchmark's result; None when it was not run (or its file is unreadable)."""
        return read_json(self.result_path(benchmark))

    def results(self) -> list[dict[str, Any]]:
        """Every benchmark's result that is there, in the order of :attr:`BENCHMARKS`."""
        found = (self.read_result(b) for b in self.BENCHMARKS)
        return [r for r in found if r is not None]
