"""What a person sees when something goes on or goes wrong: log levels, log files, tracebacks,
how to resume a stopped ``unfork run``, and ``--json`` on stdout."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork import logs
from unfork.cli.main import main
from unfork.paths import get_paths


def unfork(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point (its error handling included): exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["unfork", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def _quiet_afterwards():
    yield
    logs.setup_logging()  # the next test starts from the default level, whatever this one set


def ask_through_a_flaky_server(monkeypatch, capsys, *global_options: str) -> tuple[int, str, str]:
    """``model chat -qq`` against a server whose first answer is a 503, which the client retries."""
    with FakeOpenAI([Reply(status=503), Reply(text="hello there")]) as fake:
        return unfork(monkeypatch, capsys, *global_options, "model", "chat", "-qq", "hi", "--endpoint-url", fake.url)


def test_verbose_shows_the_clients_retries_and_the_default_does_not(monkeypatch, capsys):
    code, out, err = ask_through_a_flaky_server(monkeypatch, capsys)
    assert (code, out.strip()) == (0, "hello there")
    assert "retrying" not in err
    code, out, err = ask_through_a_flaky_server(monkeypatch, capsys, "-v")
    assert (code, out.strip()) == (0, "hello there")  # messages never reach stdout
    assert "INFO" in err and "attempt 1 failed" in err and "retrying" in err


def test_flags_pick_the_level_and_win_over_the_config(unfork_home):
    assert [logs.flag_level(v, d) for v, d in [(0, False), (1, False), (2, False), (0, True)]] == \
        [None, "INFO", "DEBUG", "DEBUG"]
    assert logs.setup_logging(environ={}).level == "WARNING"  # no config file: problems only
    config = unfork_home / "config" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("general:\n  log_level: ERROR\n")
    assert logs.setup_logging(environ={}).level == "ERROR"
    assert logs.setup_logging(environ={"UNFORK_GENERAL_LOG_LEVEL": "debug"}).level == "DEBUG"
    assert logs.setup_logging(verbose=1, environ={"UNFORK_GENERAL_LOG_LEVEL": "ERROR"}).level == "INFO"
    config.write_text("general:\n  log_levle: INFO\n")  # a broken file is the command's to report
    assert logs.setup_logging(environ={}).level == "WARNING"


def test_the_config_level_applies_to_a_command(unfork_home, monkeypatch, capsys):
    config = unfork_home / "config" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("general:\n  log_level: INFO\n")
    _, _, err = ask_through_a_flaky_server(monkeypatch, capsys)
    assert "retrying" in err


def test_the_log_file_keeps_everything_with_times(tmp_path, monkeypatch, capsys):
    log_file = tmp_path / "logs" / "unfork.log"
    code, _, err = ask_through_a_flaky_server(monkeypatch, capsys, "--log-file", str(log_file))
    assert code == 0 and "retrying" not in err  # the screen stays at the default level
    line = next(x for x in log_file.read_text().splitlines() if "retrying" in x)
    assert " INFO unfork.client: attempt 1 failed" in line and line[:4].isdigit()


def test_log_messages_share_the_progress_bars_console(capsys):
    from unfork.logs import stderr_console

    logs.setup_logging(verbose=1)
    logging.getLogger("unfork.test").info("a message above the bars")
    assert "a message above the bars" in capsys.readouterr().err
    handler = next(h for h in logging.getLogger("unfork").handlers if isinstance(h, logs._LazyRichHandler))
    assert handler._rich.console is stderr_console()  # one console: Rich prints logs above a live bar


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(monkeypatch, capsys, tmp_path):
    from unfork import system_info

    def broken():
        raise RuntimeError("the probe broke")

    monkeypatch.setattr(system_info, "system_info", broken)
    code, _, err = unfork(monkeypatch, capsys, "--log-file", str(tmp_path / "u.log"), "system", "info")
    assert code == 1 and "Traceback" not in err
    assert "unexpected RuntimeError: the probe broke" in err and "--debug" in err
    assert "Traceback" in (tmp_path / "u.log").read_text()  # the file keeps it for a bug report
    monkeypatch.setattr(sys, "argv", ["unfork", "--debug", "system", "info"])
    with pytest.raises(RuntimeError, match="the probe broke"):
        main()


def test_model_serve_keeps_its_own_verbose(monkeypatch, capsys):
    code, out, _ = unfork(monkeypatch, capsys, "-v", "model", "serve", "--help")
    assert code == 0 and "-v, --verbose" in out and "Show the engine's own log." in out


# ------------------------------------------------------------------ unfork run: stop and resume


class FakeStages:
    """Stand-ins for the main job's stages: records what validate was asked, stops where told."""

    def __init__(self, monkeypatch, stop_in: str | None = None, error: BaseException | None = None):
        from unfork.cli import run as run_mod

        self.calls: list[tuple[str, object]] = []
        self.stop_in, self.error = stop_in, error or KeyboardInterrupt()
        monkeypatch.setattr(run_mod, "validate", self.validate)
        monkeypatch.setattr(run_mod, "generate", lambda job, *a: self.stage("generate", job.out / "dataset"))
        monkeypatch.setattr(run_mod, "train", lambda job, *a: self.stage("train", job.out / "train"))
        monkeypatch.setattr(run_mod, "evaluate", lambda *a: self.stage("evaluate", ([], None)))
        monkeypatch.setattr("unfork.eval.report.write_report", self.report)

    def stage(self, name: str, result):
        self.calls.append((name, None))
        if name == self.stop_in:
            raise self.error
        return result

    def validate(self, job, taxonomy_path, taxonomy_base, cfg):
        self.calls.append(("validate", (taxonomy_path, taxonomy_base, cfg.generate.num_samples)))
        return job.out, "main", []

    def report(self, out, **kw):
        self.stage("report", None)
        (out / "report.md").write_text("# report\n")
        return out / "report.md", out / "report.html"


def run_json(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def test_ctrl_c_says_how_to_resume_and_resume_goes_on_with_the_recorded_options(monkeypatch, capsys, tmp_path):
    taxonomy = tmp_path / "taxonomy"
    taxonomy.mkdir()
    FakeStages(monkeypatch, stop_in="train")
    code, _, err = unfork(monkeypatch, capsys, "run", "--taxonomy-path", str(taxonomy), "--num-samples", "3",
                          "--skip-eval")
    assert code == 130  # click reports Ctrl-C in a command as "Aborted."
    (stopped,) = [p for p in get_paths().runs_dir.iterdir() if p.is_dir()]
    assert f"unfork run --output-dir {stopped}" in err and "unfork run --resume" in err
    recorded = run_json(stopped)
    assert recorded["finished"] is False and set(recorded["stage_seconds"]) == {"validate", "generate"}
    assert recorded["options"]["num_samples"] == 3 and recorded["options"]["skip_eval"] is True

    stages = FakeStages(monkeypatch)
    code, out, err = unfork(monkeypatch, capsys, "run", "--resume")
    assert code == 0, err
    assert f"Resuming {stopped}" in err and "Done in" in out
    assert stages.calls[0] == ("validate", (str(taxonomy), None, 3))  # the recorded taxonomy and sample count
    assert "evaluate" not in dict(stages.calls)  # and the recorded --skip-eval
    assert run_json(stopped)["finished"] is True
    assert [p for p in get_paths().runs_dir.iterdir() if p.is_dir()] == [stopped]  # no new folder
    code, _, err = unfork(monkeypatch, capsys, "run", "--resume")
    assert code == 1 and "no unfinished run" in err


def test_a_failure_says_how_to_resume_and_options_given_win(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "my-run"
    FakeStages(monkeypatch, stop_in="generate", error=RuntimeError("teacher fell over"))
    code, _, err = unfork(monkeypatch, capsys, "run", "--output-dir", str(out_dir), "--num-samples", "4")
    assert code == 1 and "teacher fell over" in err
    assert f"unfork run --output-dir {out_dir}" in err
    assert "--resume" not in err  # --resume only looks under <data dir>/runs
    stages = FakeStages(monkeypatch)
    code, _, err = unfork(monkeypatch, capsys, "run", "--output-dir", str(out_dir), "--num-samples", "6")
    assert code == 0, err
    assert stages.calls[0][1][2] == 6 and run_json(out_dir)["settings"]["num_samples"] == 6
    code, _, err = unfork(monkeypatch, capsys, "run", "--resume", "--output-dir", str(out_dir))
    assert code == 2 and "not both" in err


def write_run(folder: Path, data: dict, mtime: float, report: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(data))
    if report:
        (folder / "report.md").write_text("# done\n")
    os.utime(folder / "run.json", (mtime, mtime))
    return folder


def test_resume_picks_the_newest_unfinished_run(tmp_path):
    from unfork.cli.run import newest_unfinished

    runs = tmp_path / "runs"
    assert newest_unfinished(runs) is None
    old_unfinished = write_run(runs / "a", {"stage_seconds": {"validate": 1}}, 1_000)  # before "finished"
    write_run(runs / "b", {"stage_seconds": {}}, 2_000, report=True)  # old and finished: it has a report
    write_run(runs / "c", {"finished": True}, 3_000)
    (runs / "eval").mkdir()  # not a run
    with contextlib.suppress(FileExistsError):
        (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text("{not json")
    assert newest_unfinished(runs) == old_unfinished
    newer = write_run(runs / "d", {"finished": False}, 4_000)
    assert newest_unfinished(runs) == newer


# ------------------------------------------------------------------ --json on stdout


@pytest.fixture
def trained_run(monkeypatch):
    """A trained run whose models are scripted (as in tests/eval/test_cli_evaluate.py)."""
    from tests.eval.fake_judge import good_and_bad_models, make_dataset, make_run
    from unfork.eval import compare

    dataset = make_dataset(get_paths().datasets_dir / "20250101-000000")
    make_run(get_paths().checkpoints_dir, "smol-lora-1234", dataset, base="/models/base-hf")
    base, trained = good_and_bad_models()

    @contextlib.contextmanager
    def scripted(model, label):
        yield trained if label == "trained" else base

    monkeypatch.setattr(compare, "responder_for", scripted)


def test_model_test_json_goes_to_stdout_and_the_file_only_with_output(trained_run, monkeypatch, capsys,
                                                                         tmp_path):
    code, out, err = unfork(monkeypatch, capsys, "model", "test", "--json", "--limit", "2")
    assert code == 0, err
    printed = json.loads(out)  # stdout is the JSON and nothing else
    assert len(printed["items"]) == 2 and printed["items"][0]["trained_answer"] == "Here it is: Rain on the roof."
    assert not list(tmp_path.iterdir())
    saved = tmp_path / "answers.json"
    code, out, err = unfork(monkeypatch, capsys, "model", "test", "--json", "--limit", "2", "--output", str(saved))
    assert code == 0 and json.loads(saved.read_text()) == json.loads(out) == printed


@pytest.mark.parametrize("args", [["system", "info", "--json"], ["model", "list", "--json"],
                                  ["model", "list", "--catalog", "--json"], ["data", "list", "--json"]])
def test_every_other_json_option_prints_json_to_stdout(monkeypatch, capsys, args):
    code, out, err = unfork(monkeypatch, capsys, *args)
    assert code == 0, err
    if args[:2] == ["data", "list"]:
        assert all(json.loads(line) for line in out.splitlines())
    else:
        assert isinstance(json.loads(out), (dict, list))
