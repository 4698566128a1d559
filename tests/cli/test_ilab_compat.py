"""InstructLab habits through the CLI: short commands, ilab's flag and benchmark names, chat joining a
running server, a taxonomy from ``config init``, and hub ids as ``--model``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import types

import click
import pytest
from click.testing import CliRunner

from tests.client.fake_openai import FakeOpenAI, Reply
from unfork.cli.main import ALIASES, cli
from unfork.errors import MissingExtraError, UserError
from unfork.paths import get_paths


class Called(Exception):
    """Raised by a stand-in library function once it has recorded what the command passed it."""


def invoke(*args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), prog_name="unfork", catch_exceptions=True)


def recorder(seen: dict, result=None, stop: bool = True):
    def record(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        if stop:
            raise Called
        return result
    return record


# ------------------------------------------------------------------ aliases


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_is_the_grouped_command(alias):
    group_name, name = ALIASES[alias]
    ctx = click.Context(cli)
    group = cli.get_command(ctx, group_name)
    assert cli.get_command(ctx, alias) is group.get_command(ctx, name)
    result = invoke(alias, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: unfork {alias} " in result.output


def test_help_lists_the_aliases_and_stays_light():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom unfork.cli.main import cli\n"
            "print(CliRunner().invoke(cli, ['--help']).output)\n"
            "print('HEAVY', [m for m in ('torch', 'transformers', 'httpx', 'rich') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ilab-style aliases" in out
    assert "chat, serve, train, download, convert, test, evaluate" in out
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_alias_runs_the_command(monkeypatch):
    import unfork.taxonomy.diff as diff_mod

    seen: dict = {}
    monkeypatch.setattr(diff_mod, "taxonomy_diff", recorder(seen))
    result = invoke("diff", "--taxonomy-path", "/nowhere/tax", "--taxonomy-base", "empty")
    assert isinstance(result.exception, Called)
    assert [str(a) for a in seen["args"]] == ["/nowhere/tax", "empty"]


# ------------------------------------------------------------------ flags


@pytest.fixture
def fake_recipe(monkeypatch):
    seen: dict = {}
    module = types.ModuleType("unfork.train.recipe")
    module.train = recorder(seen)
    monkeypatch.setitem(sys.modules, "unfork.train.recipe", module)
    return seen


@pytest.mark.parametrize("command", [("train",), ("model", "train")])
def test_train_model_path_and_num_epochs(fake_recipe, command):
    result = invoke(*command, "--model-path", "/models/student-hf", "--num-epochs", "5")
    assert isinstance(result.exception, Called), result.output
    train_cfg, kwargs = fake_recipe["args"][0], fake_recipe["kwargs"]
    assert train_cfg.epochs == 5 and kwargs["model"] == "/models/student-hf"
    assert "--num-epochs 5 (ilab) read as --epochs 5" in result.stderr
    assert "--model-path /models/student-hf (ilab) read as --model /models/student-hf" in result.stderr


def test_ilab_flag_and_ours_together_is_a_usage_error(fake_recipe):
    result = invoke("train", "--num-epochs", "5", "--epochs", "2")
    assert result.exit_code == 2 and "give only one of them" in result.output
    assert fake_recipe == {}


def test_serve_model_path(monkeypatch):
    from unfork.serve import backends

    seen: dict = {}
    monkeypatch.setattr(backends, "prepare", recorder(seen))
    result = invoke("serve", "--model-path", "/models/x.gguf")
    assert isinstance(result.exception, Called), result.output
    assert seen["args"][0] == "/models/x.gguf"


@pytest.mark.parametrize("command", ["test", "evaluate"])
def test_test_and_evaluate_model_path(monkeypatch, command):
    from unfork.eval import compare

    seen: dict = {}
    monkeypatch.setattr(compare, "resolve_target", recorder(seen))
    extra = ["--benchmark", "skills"] if command == "evaluate" else []
    result = invoke(command, *extra, "--model-path", "/runs/mine")
    assert isinstance(result.exception, Called), result.output
    assert seen["args"][0] == "/runs/mine"


@pytest.mark.parametrize("flag", ["--model-path", "--model-dir"])
def test_convert_model_path(monkeypatch, flag):
    from unfork.models import resolve

    seen: dict = {}
    monkeypatch.setattr(resolve, "ensure_hf", recorder(seen))
    result = invoke("convert", flag, "/models/x.gguf", "--to", "hf")
    assert isinstance(result.exception, Called), result.output
    assert seen["args"][0] == "/models/x.gguf"
    assert invoke("convert", "--to", "hf").exit_code == 2


@pytest.mark.parametrize(("ilab", "ours"), [("mmlu", "general"), ("mmlu_branch", "knowledge"),
                                            ("mt_bench_branch", "skills"), ("mt_bench", "skills"),
                                            ("dk_bench", "dk"), ("skills", "skills")])
def test_ilab_benchmark_names(monkeypatch, tmp_path, ilab, ours):
    from unfork.cli import evaluate as ev
    from unfork.eval import compare

    monkeypatch.setattr(compare, "resolve_target",
                        lambda model, base: types.SimpleNamespace(model="m", base_model="b", run=None))
    seen: dict = {}
    monkeypatch.setattr(ev, "_run_benchmark", recorder(seen))
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Q?", "reference_answer": "A."}\n')
    result = invoke("evaluate", "--benchmark", ilab, "--questions-file", str(questions))
    assert isinstance(result.exception, Called), result.output
    assert seen["args"][0] == ours
    assert (f"ilab's benchmark {ilab} runs unfork's {ours} benchmark" in result.stderr) == (ilab != ours)


def test_sdg_scale_factor_becomes_samples_per_seed(monkeypatch):
    from unfork.sdg import run

    seen: dict = {}
    monkeypatch.setattr(run, "generate_dataset", recorder(seen))
    result = invoke("generate", "--sdg-scale-factor", "7", "--endpoint-url", "http://127.0.0.1:9/v1")
    assert isinstance(result.exception, Called), result.output
    assert seen["args"][1].samples_per_seed == 7
    assert "read as --samples-per-seed 7 (samples per seed example of each leaf" in result.stderr


def example_leaves(tmp_path):
    from unfork.taxonomy.diff import all_leaves
    from unfork.taxonomy.examples import prepare_example_taxonomy
    from unfork.taxonomy.leaf import check_leaves

    root = prepare_example_taxonomy(tmp_path / "taxonomy")
    return [leaf for _, leaf in check_leaves(all_leaves(root)[0], root)]


def test_samples_per_seed_sets_each_leafs_target(tmp_path, monkeypatch):
    import asyncio

    from unfork.sdg import engine
    from unfork.sdg.run import per_seed_target, seed_examples

    leaves = example_leaves(tmp_path)
    counts = {leaf.rel: seed_examples(leaf) for leaf in leaves}
    assert len(set(counts.values())) > 1  # the example leaves differ, so a per-leaf goal shows
    goals: dict = {}

    def fake_open_run(leaf, pipeline, teacher, cache_root, settings, *, target, seed):
        goals[leaf.rel] = target
        if len(goals) == len(leaves):
            raise Called

    class Teacher:
        model, capacity = "t", 1

        async def setup(self):
            pass

    monkeypatch.setattr(engine, "open_run", fake_open_run)
    pipeline = types.SimpleNamespace(flows={}, name="p")
    with pytest.raises(Called):
        asyncio.run(engine.generate(leaves, pipeline, Teacher(), target=30, concurrency=1, seed=0,
                                    cache_root=tmp_path, leaf_target=per_seed_target(3)))
    assert goals == {rel: 3 * n for rel, n in counts.items()}
    assert per_seed_target(0) is None


# ------------------------------------------------------------------ chat joins a running serve


def test_chat_uses_a_running_serve_that_has_the_model(monkeypatch):
    from unfork.serve import launch

    monkeypatch.setattr(launch, "running_server", recorder({}))
    with FakeOpenAI(default=Reply(text="served answer"), model="granite-7b-lab") as server:
        monkeypatch.setenv("UNFORK_SERVE_PORT", str(server.port))
        result = invoke("chat", "--model-path", "/models/granite-7b-lab.gguf", "-qq", "hi")
        assert result.exit_code == 0, result.output
        assert result.stdout == "served answer\n"
        assert server.posts()[-1]["model"] == "granite-7b-lab"
        result = CliRunner().invoke(cli, ["chat", "-m", "granite-7b-lab"], input="hello\n", prog_name="unfork")
        assert result.exit_code == 0, result.output
        assert "served answer" in result.stdout and server.posts()[-1]["messages"][-1]["content"] == "hello"
        assert f"Using the running 'unfork model serve' at {server.url}" in result.stderr


def test_chat_starts_its_own_server_when_the_running_one_serves_another_model(monkeypatch):
    from unfork.serve import launch

    with FakeOpenAI(default=Reply(text="own answer"), model="someone-else") as server:
        started = []

        @contextlib.contextmanager
        def own_server(name, **kwargs):
            started.append(name)
            yield launch.Endpoint(server.url, None, "someone-else")

        monkeypatch.setattr(launch, "running_server", own_server)
        monkeypatch.setenv("UNFORK_SERVE_PORT", str(server.port))
        result = invoke("chat", "-m", "granite-7b-lab", "-qq", "hi")
    assert result.exit_code == 0, result.output
    assert started == ["granite-7b-lab"] and "Using the running" not in result.stderr


# ------------------------------------------------------------------ config init gives a taxonomy


def test_config_init_seeds_the_example_taxonomy_so_diff_works():
    result = invoke("init", "--non-interactive")
    assert result.exit_code == 0, result.output
    root = get_paths().taxonomy_dir
    assert f"Copied the example taxonomy to {root}" in result.output
    diff = invoke("diff")
    assert diff.exit_code == 0, diff.output
    assert "3 new or changed leaves against 'origin/main'" in diff.output


def test_config_init_clones_a_taxonomy_repo(tmp_path):
    from unfork.taxonomy.examples import prepare_example_taxonomy

    upstream = prepare_example_taxonomy(tmp_path / "upstream")
    dest = tmp_path / "mine"
    result = invoke("config", "init", "--non-interactive", "--taxonomy-path", str(dest),
                    "--taxonomy-repo", str(upstream))
    assert result.exit_code == 0, result.output
    assert (dest / ".git").is_dir() and (dest / "README.md").is_file()
    # the clone has origin/main, so diff works, against the upstream's base commit
    diff = invoke("diff", "--taxonomy-base", "origin/main")
    assert diff.exit_code == 0, diff.output


def test_config_init_refuses_a_command_running_transport(tmp_path):
    marker = tmp_path / "ran"
    result = invoke("config", "init", "--non-interactive", "--taxonomy-path", str(tmp_path / "t"),
                    "--taxonomy-repo", f"ext::sh -c touch% {marker}")
    assert result.exit_code != 0 and not marker.exists()


# ------------------------------------------------------------------ hub ids as --model


def fake_hub(calls):
    def download(repo_id, dest):
        calls.append(repo_id)
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")
    return download


def test_hub_id_resolves_through_the_downloader(monkeypatch):
    from unfork.models import resolve

    calls: list = []
    monkeypatch.setattr(resolve, "hub_downloader", fake_hub(calls))
    first = resolve.resolve_model("ibm-granite/granite-3.0-2b-instruct", echo=lambda m: None)
    again = resolve.resolve_model("ibm-granite/granite-3.0-2b-instruct", echo=lambda m: None)
    assert first.format == "hf" and first.path == again.path
    assert first.path == get_paths().models_dir / "hub" / "ibm-granite--granite-3.0-2b-instruct"
    assert calls == ["ibm-granite/granite-3.0-2b-instruct"]  # fetched once
    with pytest.raises(UserError, match="not downloaded yet"):
        resolve.resolve_model("org/other", download=False)


def test_hub_id_through_the_download_command(monkeypatch):
    from unfork.models import resolve

    calls: list = []
    monkeypatch.setattr(resolve, "hub_downloader", fake_hub(calls))
    result = invoke("download", "org/name")
    assert result.exit_code == 0, result.output
    assert calls == ["org/name"] and "org--name" in result.output


def test_hub_unreachable_or_missing_extra_is_one_clear_error(monkeypatch):
    from unfork.models import resolve

    def unreachable(repo_id, dest):
        raise UserError(f"could not fetch {repo_id} from the Hugging Face hub: it cannot be reached")

    monkeypatch.setattr(resolve, "hub_downloader", unreachable)
    with pytest.raises(UserError, match="cannot be reached"):
        resolve.resolve_model("org/name")
    monkeypatch.setattr(resolve, "hub_downloader", resolve.snapshot_from_hub)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtraError, match="unfork\\[hf\\]"):
        resolve.resolve_model("org/name")


@pytest.mark.parametrize("name", ["./org/name", "org/name.gguf", "a/b/c", "../x/y", "/abs/path"])
def test_paths_are_not_hub_ids(monkeypatch, name):
    from unfork.models import resolve

    monkeypatch.setattr(resolve, "hub_downloader", recorder({}))
    with pytest.raises(UserError, match="no such file or folder"):
        resolve.resolve_model(name)
