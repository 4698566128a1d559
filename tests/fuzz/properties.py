"""The properties every fuzzed input must keep, run in-process.

A property takes one drawn input, sets up a fresh temporary folder, runs the
command or library call there under a time limit, and fails with an
AssertionError (or the crash itself) when the input is handled badly: an exit
status outside 0-2, a traceback, a message that does not name the file, or a
file written or changed anywhere in the watched folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from unfork.errors import UserError

TIME_LIMIT_S = 20.0  # a hang guard for a shared machine, not a speed check
_BASE: Path | None = None


class Hang(BaseException):
    """Raised by the time limit; a BaseException so that no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S) -> Iterator[None]:
    def fire(signum, frame):
        raise Hang(f"no answer within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def base() -> Path:
    """One folder for the whole session; every input gets its own folder inside it."""
    global _BASE
    if _BASE is None or not _BASE.is_dir():
        _BASE = Path(tempfile.mkdtemp(prefix="unfork-fuzz-"))
    return _BASE


def snapshot(*folders: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under the folders with its mode, size and modification time."""
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                out[os.path.join(dirpath, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def assert_unchanged(before: dict, *folders: Path) -> None:
    after = snapshot(*folders)
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    changed = sorted(k for k in set(after) & set(before) if after[k] != before[k])
    assert not (added or removed or changed), f"files written: added {added}, removed {removed}, changed {changed}"


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """A fresh folder that is also the working folder, so relative writes land where they are seen."""
    tmp = Path(tempfile.mkdtemp(dir=base()))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        yield tmp
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


def _stream(errors: str) -> io.TextIOWrapper:
    # UTF-8 with Python's own error handlers (strict for stdout, backslashreplace for stderr), as on a terminal.
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors=errors, newline="\n")


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode("utf-8")


def run_cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """``unfork ARGS`` through ``main()``, as the console script runs it: (exit status, stdout, stderr).

    Any exception other than SystemExit escapes, and main() reports one it did not expect as
    "Error: unexpected ...": both are bugs.
    """
    from unfork.cli.main import main

    saved_env, saved_argv = dict(os.environ), sys.argv
    out, err = _stream("strict"), _stream("backslashreplace")
    os.environ.clear()
    os.environ.update({k: v for k, v in saved_env.items() if not k.startswith("UNFORK_")})
    os.environ.update(env)
    sys.argv = ["unfork", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit():
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return code, _text(out), _text(err)


# ---------------------------------------------------------------- 1. qna.yaml


def _check_text_output(out: str, name: str) -> None:
    lines = out.rstrip("\n").split("\n")  # a terminal breaks lines at \n only, not at \x1e or \u2028
    assert lines and re.fullmatch(r"1 file checked: .*", lines[-1]), out
    message = re.compile(rf"{re.escape(name)}:\d+:\d+: (error|warning) .*")
    ok = re.compile(rf"{re.escape(name)}: ok \(\w+, version -?\d+\)")
    for line in lines[:-1]:
        assert message.fullmatch(line) or ok.fullmatch(line) or line.startswith("    hint: "), line


def _check_json_output(out: str, name: str) -> None:
    (line,) = out.rstrip("\n").split("\n")
    obj = json.loads(line)
    assert obj["path"] == name, obj
    for m in obj["errors"] + obj["warnings"]:
        assert m["line"] >= 1 and m["column"] >= 1, m


def _check_github_output(out: str, name: str) -> None:
    for line in out.rstrip("\n").split("\n"):
        assert re.match(rf"::(error|warning) file={re.escape(name)},line=\d+,col=\d+,", line), line


def check_validate(where: str, data: bytes, fmt: str = "text") -> int:
    """``unfork taxonomy validate FILE`` and ``validate_file`` on one leaf; returns the exit status."""
    from unfork.taxonomy.validate import validate_file

    with workspace() as tmp:
        root = tmp / "taxonomy"
        path = root / where
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        before = snapshot(base())
        code, out, err = run_cli(["taxonomy", "validate", "--taxonomy-path", str(root), "--format", fmt, str(path)],
                                 {"UNFORK_HOME": str(tmp / "home")})
        # 2 is for usage errors; a file that exists is never one, whatever it holds.
        assert code in (0, 1), (code, out, err)
        assert err == "", err
        {"text": _check_text_output, "json": _check_json_output, "github": _check_github_output}[fmt](out, where)
        with time_limit():
            report = validate_file(path, root)
        assert report.path == where and (code == 1) == bool(report.errors), (code, report)
        for m in report.errors + report.warnings:
            assert m.line >= 1 and m.column >= 1, m
        assert_unchanged(before, base())
    return code


# ---------------------------------------------------------------- 2. config file and environment


def check_config(text: bytes | None, env: dict[str, str]) -> int:
    """``unfork config show`` with this config file (None: none) and these UNFORK_* variables."""
    import yaml

    with workspace() as tmp:
        home = tmp / "home"
        config_file = home / "config" / "config.yaml"
        if text is not None:
            config_file.parent.mkdir(parents=True)
            config_file.write_bytes(text)
        before = snapshot(base())
        code, out, err = run_cli(["config", "show"], {**env, "UNFORK_HOME": str(home)})
        assert code in (0, 1, 2), (code, out, err)
        if code == 0:
            assert err == "", err
            shown = yaml.safe_load(out)
            assert isinstance(shown, dict) and "train" in shown, out
        else:
            assert err.startswith("Error: ") and not err.startswith("Error: unexpected"), err
            named = [str(config_file), *env]
            assert any(n in err for n in named), (err, named)
            if str(config_file) in err and "not valid YAML" in err and "tagged value" not in err:
                assert re.search(rf"{re.escape(str(config_file))}:\d+:\d+", err), err
        assert_unchanged(before, base())
    return code


# ---------------------------------------------------------------- 3. training JSONL


def _usable_lines(data: bytes) -> int:
    """Lines that are not blank, the way the reader splits and decodes them."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()

    def blank(line: bytes) -> bool:
        try:
            return not line.decode("utf-8").strip()
        except UnicodeDecodeError:
            return False

    return sum(not blank(line) for line in lines)


def check_jsonl(data: bytes) -> int:
    """``load_jsonl`` and ``DataFiles.read``: rows, or a UserError naming the file and its lines; returns rows."""
    from unfork.train.data import DataFiles, load_jsonl

    with workspace() as tmp:
        path = tmp / "train_all.jsonl"
        path.write_bytes(data)
        before = snapshot(base())
        try:
            with time_limit():
                loaded = load_jsonl(path)
        except UserError as exc:
            assert str(path) in exc.message and re.search(r"line \d+", exc.message), exc.message
            assert_unchanged(before, base())
            return 0
        for row in loaded.rows:
            messages = row["messages"]
            assert messages and all(isinstance(m["role"], str) and isinstance(m["content"], str)
                                    for m in messages), row
        assert len(loaded.rows) + len(loaded.skipped) == _usable_lines(data), loaded
        if loaded.skipped:
            assert str(path) in loaded.note() and "line " in loaded.note()
        files = DataFiles(tmp, train_all=path)
        assert files.read(path) == loaded.rows
        assert_unchanged(before, base())
        return len(loaded.rows)


# ---------------------------------------------------------------- 4. pipeline files


def check_pipeline(builtin: str, pipeline_yaml: bytes, templates: dict[str, bytes]) -> bool:
    """``load_pipeline`` on a copy of a built-in pipeline with these files replaced; True when it loaded."""
    from unfork.sdg.pipeline import BUILTIN_DIR, Pipeline, load_pipeline

    with workspace() as tmp:
        folder = tmp / "pipeline"
        shutil.copytree(BUILTIN_DIR / builtin, folder)
        (folder / "pipeline.yaml").write_bytes(pipeline_yaml)
        for name, data in templates.items():
            (folder / name).write_bytes(data)
        before = snapshot(base(), BUILTIN_DIR)
        try:
            with time_limit():
                pipe = load_pipeline(str(folder))
                for flow in pipe.flows:
                    pipe.build_steps(flow)
        except UserError as exc:
            assert str(folder) in exc.message, exc.message
            loaded = False
        else:
            assert isinstance(pipe, Pipeline)
            loaded = True
        assert_unchanged(before, base(), BUILTIN_DIR)
    return loaded
