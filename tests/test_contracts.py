"""The stage contracts: file names, manifests read and written with their key order, completion markers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unfork.contracts import (
    SCHEMA_VERSION,
    DatasetFolder,
    DatasetManifest,
    EvalFolder,
    TrainingInfo,
    TrainingRun,
)

LEGACY_DATASET_KEYS = ["format", "pipeline", "teacher", "seed", "settings", "leaves", "files", "phases", "stats"]
LEGACY_TRAINING_KEYS = ["key", "started", "resumed", "settings", "dtype", "device", "world_size", "distributed",
                        "data", "phases"]


def test_importing_the_contracts_is_light():
    code = "import sys, unfork.contracts\nprint([m for m in ('torch', 'click', 'yaml') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dataset_file_names():
    folder = DatasetFolder(__import__("pathlib").Path("/d"))
    assert [folder.train_name(k) for k in ("all", "knowledge", "skills")] == [
        DatasetFolder.TRAIN_ALL, DatasetFolder.TRAIN_KNOWLEDGE, DatasetFolder.TRAIN_SKILLS] == [
        "train_all.jsonl", "train_knowledge.jsonl", "train_skills.jsonl"]
    assert [folder.test_name(k) for k in ("all", "knowledge", "skills")] == [
        "test_all.jsonl", "test_knowledge.jsonl", "test_skills.jsonl"]
    assert str(folder.manifest_path) == "/d/manifest.json" and str(folder.mix_recipe_path) == "/d/mix_recipe.yaml"
    assert str(folder.leaf_dir("a_b")) == "/d/leaves/a_b"


def test_dataset_manifest_keeps_the_key_order_and_adds_the_marker_last(tmp_path):
    manifest = DatasetManifest(pipeline={"name": "simple"}, teacher="t", seed=7, settings={"x": 1},
                               leaves=[{"leaf": "a"}], files={"train_all.jsonl": 3}, phases={"1": "k"},
                               stats={"seconds": 1.5})
    folder = DatasetFolder(tmp_path)
    assert not folder.is_complete()  # no manifest: still being written, or not a dataset
    folder.write_manifest(manifest)
    text = folder.manifest_path.read_text(encoding="utf-8")
    assert list(json.loads(text)) == [*LEGACY_DATASET_KEYS, "schema_version", "complete"]
    assert json.loads(text)["format"] == "unfork-sdg-1" and json.loads(text)["complete"] is True
    assert text.endswith("}\n") and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left
    back = folder.read_manifest()
    assert back == manifest and back.count("train_all.jsonl") == 3 and back.count("test_all.jsonl") == 0
    assert folder.is_complete()


def test_dataset_manifest_written_before_schema_1_counts_as_complete(tmp_path):
    legacy = {"format": "unfork-sdg-1", "teacher": "t", "files": {"train_all.jsonl": 2}, "custom": [1]}
    (tmp_path / "manifest.json").write_text(json.dumps(legacy))
    folder = DatasetFolder(tmp_path)
    m = folder.read_manifest()
    assert m.schema_version is None and m.complete and folder.is_complete()
    assert m.extra == {"custom": [1]} and m.to_dict()["custom"] == [1]  # unknown keys survive a round trip
    (tmp_path / "manifest.json").write_text("{}")
    assert folder.is_complete()  # an empty legacy manifest still says the folder was finished


def test_a_dataset_manifest_that_says_it_is_unfinished_is_not_complete(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "complete": False}))
    assert not DatasetFolder(tmp_path).is_complete()
    (tmp_path / "manifest.json").write_text("{not json")
    assert not DatasetFolder(tmp_path).is_complete() and DatasetFolder(tmp_path).read_manifest() is None


def test_training_info_key_order_while_training_and_when_finished():
    info = TrainingInfo(key="k", started="s", settings={"model": "/m"}, dtype="float32", device="cpu",
                        world_size=1, distributed="none", data={}, phases={})
    assert list(info.to_dict()) == [*LEGACY_TRAINING_KEYS, "schema_version", "complete"]
    assert info.to_dict()["complete"] is False and info.base_model == "/m"
    info.finished, info.complete = "f", True
    assert list(info.to_dict()) == [*LEGACY_TRAINING_KEYS, "finished", "schema_version", "complete"]
    assert TrainingInfo.from_dict(info.to_dict()) == info


def test_training_run_is_complete_only_with_its_final_model_and_marker(tmp_path):
    run = TrainingRun(tmp_path / "run")
    assert not run.is_complete()
    run.root.mkdir()
    info = TrainingInfo(key="k", settings={"model": "/m"})
    run.write_info(info)
    assert run.read_info() == info and not run.is_complete()  # training, or stopped
    run.final.mkdir()
    assert not run.is_complete()  # final/ written, the marker not yet
    info.complete = True
    run.write_info(info)
    assert run.is_complete()
    run.final.rmdir()
    assert not run.is_complete()  # the model was removed: train it again


def test_training_run_written_before_schema_1(tmp_path):
    run = TrainingRun(tmp_path)
    run.info_path.write_text(json.dumps({"settings": {"model": "/m"}, "finished": "x"}))
    assert not run.is_complete()
    run.final.mkdir()
    assert run.is_complete() and run.read_info().base_model == "/m"
    assert run.dataset_root() is None
    run.data_manifest_path.write_text(json.dumps({"root": "/data/ds", "files": {}}))
    assert str(run.dataset_root()) == "/data/ds"
    assert run.best_path("skills") == tmp_path / "phases" / "skills" / "best.safetensors"


def test_eval_folder_reads_the_results_that_are_there(tmp_path):
    folder = EvalFolder(tmp_path)
    assert folder.results() == [] and folder.read_result("skills") is None
    for name in ("general", "knowledge"):
        folder.result_path(name).write_text(json.dumps({"benchmark": name}))
    folder.result_path("skills").write_text("{cut short")
    assert [r["benchmark"] for r in folder.results()] == ["knowledge", "general"]


def _dataset(root, name, manifest):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "train_all.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    (folder / "test_all.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("unfinished", [None, {"schema_version": 1, "complete": False}])
def test_readers_never_take_a_half_written_dataset(tmp_path, unfinished):
    import os

    from unfork.sdg.output import list_datasets
    from unfork.train.data import find_data

    done = _dataset(tmp_path, "20250101", {"files": {"train_all.jsonl": 1}})
    half = _dataset(tmp_path, "20990101", unfinished)
    os.utime(done, (1, 1))
    assert find_data(None, tmp_path).root == done
    assert [d["name"] for d in list_datasets(tmp_path)] == ["20250101"]
    assert find_data(half, tmp_path).root == half  # asked for by name, it is used as it is
