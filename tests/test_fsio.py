"""Safe folders and files: unique run folders, atomic writes, one writer per folder, clean failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import REPO
from unfork import fsio
from unfork.errors import UserError

HOLD = ("import sys\nfrom pathlib import Path\nfrom unfork.fsio import folder_lock\n"
        "with folder_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    sys.stdin.readline()\n")


class Holder:
    """Another process that holds the lock on ``folder`` until it is closed."""

    def __init__(self, folder: Path):
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline()
        assert line == "locked\n", line + self.proc.stdout.read()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


# ------------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "run.json"
    fsio.atomic_write_text(target, "first\n")
    fsio.atomic_write_text(target, "sécond\n")
    assert target.read_text(encoding="utf-8") == "sécond\n"
    fsio.atomic_write_bytes(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # the umask applies as usual


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsio.os, "replace", fail)
    with pytest.raises(OSError):
        fsio.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


# ------------------------------------------------------------------------------- unique folders


def test_new_folders_with_the_same_name_never_share(tmp_path):
    parent = tmp_path / "runs"
    assert fsio.new_folder(parent, "20250101-120000") == parent / "20250101-120000"
    (parent / "20250101-120000-2").write_text("a file, not ours")
    assert fsio.new_folder(parent, "20250101-120000") == parent / "20250101-120000-3"
    assert (parent / "20250101-120000-2").read_text() == "a file, not ours"

    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(fsio.new_folder(parent, "same"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() and not any(p.iterdir()) for p in made)


def test_a_new_folder_below_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder") as err:
        fsio.new_folder(tmp_path / "file" / "runs", "x")
    assert str(tmp_path / "file") in str(err.value)


# ------------------------------------------------------------------------------- one writer per folder


def test_a_second_process_is_refused_at_once_with_the_holders_pid(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    with Holder(folder) as holder:
        start = time.monotonic()
        with pytest.raises(fsio.FolderLocked) as err, fsio.folder_lock(folder):
            pass
        assert time.monotonic() - start < 5
        assert f"PID {holder.proc.pid}" in str(err.value) and str(folder) in str(err.value)
        assert "wait" in err.value.hint and str(holder.proc.pid) in err.value.hint
    with fsio.folder_lock(folder):  # the holder is gone: the folder is free again
        assert (folder / fsio.LOCK_NAME).read_text().strip() == str(os.getpid())
    assert list(folder.iterdir()) == []  # the lock file goes with the lock


def test_the_lock_is_released_when_the_holder_dies(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    holder = Holder(folder)
    holder.proc.kill()
    holder.proc.wait()
    with fsio.folder_lock(folder):
        pass


# ------------------------------------------------------------------------------- run folders


def test_a_default_run_folder_is_unique_and_removed_when_the_run_fails_before_writing(tmp_path):
    parent = tmp_path / "datasets"
    with fsio.run_folder(None, parent, "stamp") as a, fsio.run_folder(None, parent, "stamp") as b:
        assert (a, b) == (parent / "stamp", parent / "stamp-2")
        (a / "manifest.json").write_text("{}")
    assert sorted(p.name for p in parent.iterdir()) == ["stamp", "stamp-2"]
    assert [p.name for p in a.iterdir()] == ["manifest.json"]  # the lock file is gone, the work stays

    with pytest.raises(RuntimeError), fsio.run_folder(None, parent, "failed") as out:
        raise RuntimeError("the teacher went away")
    assert not out.exists()
    with pytest.raises(RuntimeError), fsio.run_folder(None, parent, "partial") as out:
        (out / "leaves").mkdir()
        raise RuntimeError("after writing something")
    assert (out / "leaves").is_dir()  # never delete what a run wrote


def test_a_given_folder_is_locked_and_only_removed_if_this_run_made_it_and_left_it_empty(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "old.txt").write_text("keep")
    with pytest.raises(KeyboardInterrupt), fsio.run_folder(mine, tmp_path, "unused"):
        raise KeyboardInterrupt
    assert (mine / "old.txt").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError), fsio.run_folder(empty, tmp_path, "unused"):
        raise RuntimeError
    assert empty.is_dir()  # it was there before: not ours to remove
    fresh = tmp_path / "a" / "fresh"
    with pytest.raises(RuntimeError), fsio.run_folder(fresh, tmp_path, "unused"):
        raise RuntimeError
    assert not fresh.exists()
    with Holder(mine), pytest.raises(fsio.FolderLocked), fsio.run_folder(mine, tmp_path, "unused"):
        pass
    assert (mine / "old.txt").read_text() == "keep"


# ------------------------------------------------------------------------------- regular files only


def test_reading_a_fifo_or_a_folder_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    errors: list[Exception] = []
    reader = threading.Thread(target=lambda: _catch(errors, fsio.read_regular_bytes, fifo), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO hangs"
    assert isinstance(errors[0], fsio.NotAFile) and "FIFO" in str(errors[0]) and str(fifo) in str(errors[0])
    with pytest.raises(fsio.NotAFile, match="folder"):
        fsio.read_regular_bytes(tmp_path)
    (tmp_path / "f").write_bytes(b"ok")
    assert fsio.read_regular_bytes(tmp_path / "f") == b"ok"


def _catch(errors: list[Exception], func, *args) -> None:
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        errors.append(exc)


# ------------------------------------------------------------------------------- the commands


@pytest.fixture
def taxonomy(tmp_path):
    from unfork.taxonomy.examples import prepare_example_taxonomy

    return prepare_example_taxonomy(tmp_path / "taxonomy")


def generate(taxonomy, url, *extra):
    from unfork.cli.main import cli

    return CliRunner().invoke(cli, ["data", "generate", "--taxonomy-path", str(taxonomy), "--taxonomy-base",
                                    "empty", "-q", "--endpoint-url", url, "--num-samples", "2", "--pipeline",
                                    "simple", *extra])


def test_two_generate_runs_in_the_same_second_keep_both_datasets(taxonomy, unfork_home, monkeypatch):
    from tests.sdg.fake_teacher import scripted_teacher
    from unfork.sdg import run

    monkeypatch.setattr(run.time, "strftime", lambda fmt, *a: "20250101-120000")
    with scripted_teacher() as fake:
        first, second = generate(taxonomy, fake.url), generate(taxonomy, fake.url)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    datasets = unfork_home / "data" / "datasets"
    assert sorted(p.name for p in datasets.iterdir()) == ["20250101-120000", "20250101-120000-2"]
    for folder in datasets.iterdir():
        assert json.loads((folder / "manifest.json").read_text())["complete"] is True
        assert not (folder / fsio.LOCK_NAME).exists()


def test_a_failed_generate_leaves_no_folder_and_training_finds_the_last_good_dataset(taxonomy, unfork_home,
                                                                                      monkeypatch):
    from tests.client.fake_openai import FakeOpenAI, Reply
    from tests.sdg.fake_teacher import scripted_teacher
    from unfork.sdg import run
    from unfork.train.data import find_data

    datasets = unfork_home / "data" / "datasets"
    with scripted_teacher() as fake:
        assert generate(taxonomy, fake.url).exit_code == 0
    (good,) = datasets.iterdir()

    async def no_teacher(client):
        raise UserError("the endpoint lists no model")

    with monkeypatch.context() as m:
        m.setattr(run, "first_model", no_teacher)
        m.setattr(run.time, "strftime", lambda fmt, *a: "29990101-000000")
        res = generate(taxonomy, "http://127.0.0.1:9/v1")
    assert res.exit_code == 1 and "lists no model" in str(res.exception)
    assert list(datasets.iterdir()) == [good]
    # A run whose every sample was refused keeps its rejections, but is no dataset to train on.
    shutil.rmtree(unfork_home / "cache" / "sdg")  # else the cache answers for the teacher
    with FakeOpenAI(default=Reply(text="I'm sorry, I cannot help with that.")) as fake:
        monkeypatch.setattr(run.time, "strftime", lambda fmt, *a: "29990101-000001")
        res = generate(taxonomy, fake.url)
    assert res.exit_code == 1 and "no sample was accepted" in str(res.exception)
    refused = datasets / "29990101-000001"
    assert any(refused.glob("leaves/*/rejected.jsonl"))
    assert find_data(None, datasets).root == good


def test_generate_into_a_folder_another_process_writes_is_refused(taxonomy, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    with Holder(out) as holder:
        res = generate(taxonomy, "http://127.0.0.1:9/v1", "--output-dir", str(out))
        assert res.exit_code == 1 and f"PID {holder.proc.pid}" in str(res.exception)
    assert list(out.iterdir()) == []


def test_unfork_run_picks_a_new_folder_each_time_and_locks_it(monkeypatch, unfork_home, tmp_path):
    import click

    from unfork.cli import run as run_cli
    from unfork.cli.main import cli

    seen: list[Path] = []

    def stop(job, *args):
        seen.append(job.out)
        assert (job.out / fsio.LOCK_NAME).is_file()
        job.save()
        raise click.ClickException("stopped after choosing the folder")

    monkeypatch.setattr(run_cli, "validate", stop)
    monkeypatch.setattr(run_cli.time, "strftime", lambda fmt, *a: "20250101-120000")
    for _ in range(2):
        res = CliRunner().invoke(cli, ["run"])
        assert res.exit_code == 1 and "stopped after choosing" in res.output
    runs = unfork_home / "data" / "runs"
    assert seen == [runs / "20250101-120000", runs / "20250101-120000-2"]
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*")) == [
        "20250101-120000", "20250101-120000-2", "20250101-120000-2/run.json", "20250101-120000/run.json"]
    locked = tmp_path / "resume-me"
    locked.mkdir()
    with Holder(locked) as holder:
        res = CliRunner().invoke(cli, ["run", "--output-dir", str(locked)])
    assert res.exit_code == 1 and f"PID {holder.proc.pid}" in str(res.exception)
    assert len(seen) == 2  # no stage started


# ------------------------------------------------------------------------------- folders written whole


def test_an_atomic_folder_replaces_only_ours_and_a_swap_cut_short_is_put_back(tmp_path):
    final = tmp_path / "final"
    with fsio.atomic_folder(final, markers=("model.json",)) as tmp:
        (tmp / "model.json").write_text("1")
    with pytest.raises(RuntimeError), fsio.atomic_folder(final, markers=("model.json",)) as tmp:
        (tmp / "model.json").write_text("2")
        raise RuntimeError("killed while writing")
    assert (final / "model.json").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    # A process killed between the two renames of a swap leaves the old folder under its hidden name.
    old = tmp_path / ".final.0123456789ab.old"
    final.rename(old)
    (tmp_path / ".run.json.abcdef012345.tmp").write_text("half")
    fsio.sweep_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"] and (final / "model.json").read_text() == "1"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(fsio.NotOurs), fsio.atomic_folder(notes, markers=("model.json",)):
        pass
    with pytest.raises(fsio.NotOurs):
        fsio.remove_tree(notes, markers=("model.json",))
    assert (notes / "todo.txt").read_text() == "mine"
    fsio.remove_tree(final, markers=("model.json",))
    assert not final.exists()
