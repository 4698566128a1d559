"""``unfork data generate`` / ``data list`` end to end on the example taxonomy, with a scripted teacher."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.client.fake_openai import FakeOpenAI, Reply
from tests.conftest import REPO
from tests.sdg.fake_teacher import scripted_teacher
from unfork.cli.main import cli
from unfork.sdg.engine import request_key
from unfork.taxonomy.examples import prepare_example_taxonomy


@pytest.fixture
def taxonomy(tmp_path):
    return prepare_example_taxonomy(tmp_path / "taxonomy")


def invoke(*args):
    result = CliRunner().invoke(cli, ["data", *args], catch_exceptions=False) if "list" in args else \
        CliRunner().invoke(cli, ["data", *args])
    return result


def chats(fake):
    return [body for _, path, body in fake.requests if path == "/v1/chat/completions"]


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def generate_args(taxonomy, urls, out, *extra):
    args = ["generate", "--taxonomy-path", str(taxonomy), "--output-dir", str(out), "-q"]
    for url in urls:
        args += ["--endpoint-url", url]
    return [*args, *extra]


def test_generate_writes_a_complete_dataset_and_a_rerun_reuses_it(taxonomy, tmp_path):
    out = tmp_path / "ds"
    with scripted_teacher() as fake:
        res = invoke(*generate_args(taxonomy, [fake.url], out, "--taxonomy-base", "main", "--num-samples", "4",
                                    "--max-concurrency", "3"))
        assert res.exit_code == 0, res.output
        first = len(chats(fake))
        assert fake.max_in_flight <= 3
        res2 = invoke(*generate_args(taxonomy, [fake.url], tmp_path / "ds2", "--taxonomy-base", "main",
                                     "--num-samples", "4", "--max-concurrency", "2"))
        assert res2.exit_code == 0, res2.output
        assert len(chats(fake)) == first  # every leaf came from the cache, whatever the concurrency
    manifest = json.loads((out / "manifest.json").read_text())
    leaves = {leaf["leaf"]: leaf for leaf in manifest["leaves"]}
    assert set(leaves) == {"compositional_skills/writing/freeform/haiku",
                           "compositional_skills/grounded/extraction/event_details",
                           "knowledge/geography/islands/marrowvey"}
    for rel, leaf in leaves.items():
        assert leaf["accepted"] >= 4, leaf
        assert leaf["content_hash"] == hashlib.sha256((taxonomy / rel / "qna.yaml").read_bytes()).hexdigest()
    assert manifest["pipeline"]["name"] == "full" and manifest["teacher"] == "fake-model"
    assert all(leaf["reused"] for leaf in json.loads((tmp_path / "ds2" / "manifest.json").read_text())["leaves"])
    # A dataset from the cache is the same dataset, byte for byte (training resumes only on identical data).
    for name in ("train_all.jsonl", "test_all.jsonl"):
        assert (tmp_path / "ds2" / name).read_bytes() == (out / name).read_bytes()

    train = read_jsonl(out / "train_all.jsonl")
    assert len(train) == manifest["files"]["train_all.jsonl"]
    for line in train:
        assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant"]
        assert set(line["metadata"]) >= {"leaf", "pipeline", "teacher", "scores"}
    knowledge = read_jsonl(out / "train_knowledge.jsonl")
    raft = [k for k in knowledge if k["metadata"]["format"] == "raft"]
    plain = [k for k in knowledge if k["metadata"]["format"] == "qa"]
    assert len(raft) == len(plain) == leaves["knowledge/geography/islands/marrowvey"]["accepted"]
    for sample in raft:  # the answer's source chunk is among the documents in the prompt
        assert sample["messages"][2]["content"].split("\n")[-1] in sample["messages"][1]["content"]
        assert sample["messages"][1]["content"].count("[Document ") == 1 + sample["metadata"]["distractors"]
    assert all(s["metadata"]["scores"]["checks"]["faithful"] for s in raft + plain)
    # The document's own paragraphs are samples too, each once, under its section.
    passages = [k for k in knowledge if k["metadata"]["format"] == "passage"]
    assert len(passages) >= 5 and len({p["messages"][2]["content"] for p in passages}) == len(passages)
    assert len({p["messages"][1]["content"] for p in passages}) == len(passages)  # one prompt per paragraph
    assert any("Glasslight Festival" in p["messages"][1]["content"] for p in passages)
    skills = read_jsonl(out / "train_skills.jsonl")
    assert len(skills) + len(knowledge) == len(train)
    assert len(read_jsonl(out / "test_all.jsonl")) == 6 + 6 + 15  # the seed examples
    recipe = (out / "mix_recipe.yaml").read_text()
    assert "train_knowledge.jsonl" in recipe and "format: raft" in recipe
    for leaf in leaves:
        folder = out / "leaves" / leaf.replace("/", ".")
        assert len(read_jsonl(folder / "accepted.jsonl")) == leaves[leaf]["accepted"]

    listed = invoke("list", "--json")
    rows = [json.loads(x) for x in listed.output.splitlines()]
    assert {r["name"] for r in rows} == set()  # --output-dir folders are outside the datasets folder
    assert invoke("list").output.startswith("No datasets")


def test_default_output_folder_and_data_list(taxonomy, unfork_home):
    with scripted_teacher() as fake:
        res = invoke("generate", "--taxonomy-path", str(taxonomy), "--taxonomy-base", "empty", "-q",
                     "--endpoint-url", fake.url, "--num-samples", "2", "--pipeline", "simple")
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in invoke("list", "--json").output.splitlines()]
    assert len(rows) == 1 and rows[0]["pipeline"] == "simple" and rows[0]["leaves"] == 3
    assert rows[0]["train"] > 0 and rows[0]["test"] == 27
    assert Path(rows[0]["path"]).parent == unfork_home / "data" / "datasets"
    assert rows[0]["name"] in invoke("list").output


def test_requests_are_spread_over_several_endpoints(taxonomy, tmp_path):
    with scripted_teacher() as a, scripted_teacher() as b:
        res = invoke(*generate_args(taxonomy, [a.url, b.url], tmp_path / "ds", "--taxonomy-base", "empty",
                                    "--num-samples", "3", "--pipeline", "simple"))
        assert res.exit_code == 0, res.output
        assert chats(a) and chats(b)


def test_invalid_leaves_are_refused_with_the_validation_messages(taxonomy, tmp_path):
    bad = taxonomy / "compositional_skills" / "writing" / "freeform" / "limerick" / "qna.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text("version: 3\ncreated_by: me\nseed_examples: []\n")
    with FakeOpenAI() as fake:
        res = invoke(*generate_args(taxonomy, [fake.url], tmp_path / "ds", "--taxonomy-base", "empty"))
        assert chats(fake) == []
    assert res.exit_code == 1
    assert "limerick/qna.yaml" in res.output and "task_description" in res.output
    assert "not valid" in str(res.exception)


def test_nothing_accepted_is_an_error_that_says_why(taxonomy, tmp_path):
    with FakeOpenAI(default=Reply(text="I'm sorry, I cannot help with that.")) as fake:
        res = invoke(*generate_args(taxonomy, [fake.url], tmp_path / "ds", "--taxonomy-base", "empty",
                                    "--num-samples", "2", "--pipeline", "simple"))
    msg = str(res.exception)
    assert res.exit_code == 1
    assert "no sample was accepted" in msg and "× refusal" in msg and "I'm sorry, I cannot help" in msg
    assert (tmp_path / "ds" / "manifest.json").exists()  # what was tried is still on disk


# ------------------------------------------------------------------------------- SIGKILL resume


def _journal_samples(cache: Path) -> dict[str, list[str]]:
    """Completed samples per leaf cache folder, as JSON strings."""
    out = {}
    for journal in cache.glob("*/journal.jsonl"):
        lines = journal.read_bytes().split(b"\n")
        done = {json.loads(x)["unit"] for x in lines if x.endswith(b'"done":true}')}
        out[journal.parent.name] = [x.decode() for x in lines if x and not x.endswith(b'"done":true}')
                                    and json.loads(x)["unit"] in done]
    return out


def test_sigkill_mid_run_then_rerun_loses_nothing_and_repeats_nothing(taxonomy, tmp_path, unfork_home):
    fake = scripted_teacher(default=Reply(delay=0.05))
    inner = fake.on_chat
    fake.on_chat = lambda body: Reply(text=inner(body).text, delay=0.03)
    env = {**os.environ, "UNFORK_HOME": str(unfork_home), "PYTHONPATH": str(REPO / "src")}
    out = tmp_path / "ds"
    with fake:
        argv = [sys.executable, "-m", "unfork", "data", *generate_args(
            taxonomy, [fake.url], out, "--taxonomy-base", "empty", "--num-samples", "12", "--max-concurrency", "4")]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        cache = unfork_home / "cache" / "sdg"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(map(len, _journal_samples(cache).values())) < 25:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        before = _journal_samples(cache)
        logged = {json.loads(x)["key"] for f in cache.glob("*/requests.jsonl")
                  for x in f.read_text().splitlines() if x.endswith("}")}
        n_first = len(chats(fake))
        assert sum(map(len, before.values())) >= 25 and not (out / "manifest.json").exists()

        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        second = chats(fake)[n_first:]
    after = _journal_samples(cache)
    for key, samples in before.items():  # nothing completed before the kill is lost or changed
        assert after[key][:len(samples)] == samples
    for samples in after.values():  # no unit twice, no sample twice
        records = [json.loads(s) for s in samples]
        assert len(samples) == len(set(samples))
        accepted = [json.dumps(r["row"], sort_keys=True) for r in records if r["status"] == "accepted"]
        assert len(accepted) == len(set(accepted))
    assert second  # the rerun had work left to do
    # no reply the first run had logged was asked for again
    assert not [b for b in second if request_key(b["messages"], {k: b[k] for k in ("temperature", "max_tokens", "seed")},
                                                 "fake-model") in logged]
    manifest = json.loads((out / "manifest.json").read_text())
    train = read_jsonl(out / "train_all.jsonl")
    assert len(train) == manifest["files"]["train_all.jsonl"] > 0
    users = [json.dumps(t["messages"]) for t in train]
    assert len(users) == len(set(users))
    total = sum(1 for samples in after.values() for s in samples if json.loads(s)["status"] == "accepted")
    assert total == sum(leaf["accepted"] for leaf in manifest["leaves"])


def test_foundational_skills_are_skipped(taxonomy, tmp_path):
    src = taxonomy / "compositional_skills" / "writing" / "freeform" / "haiku" / "qna.yaml"
    dest = taxonomy / "compositional_skills" / "foundational_skills" / "reasoning" / "qna.yaml"
    dest.parent.mkdir(parents=True)
    dest.write_text(src.read_text())
    with scripted_teacher() as fake:
        res = invoke(*generate_args(taxonomy, [fake.url], tmp_path / "ds", "--taxonomy-base", "empty",
                                    "--num-samples", "1", "--pipeline", "simple"))
    assert res.exit_code == 0, res.output
    assert "skipping foundational skill compositional_skills/foundational_skills/reasoning/qna.yaml" in res.output
    leaves = [leaf["leaf"] for leaf in json.loads((tmp_path / "ds" / "manifest.json").read_text())["leaves"]]
    assert len(leaves) == 3 and not any("foundational" in leaf for leaf in leaves)


# ------------------------------------------------------------------------------- one meaning per flag


def sent_models(fake):
    return {body["model"] for body in chats(fake)}


@pytest.mark.parametrize("flag", ["--endpoint-model", "--model"])
def test_the_model_name_sent_to_an_endpoint(taxonomy, tmp_path, flag):
    with scripted_teacher() as fake:
        res = invoke(*generate_args(taxonomy, [fake.url], tmp_path / "ds", "--taxonomy-base", "empty",
                                    "--num-samples", "1", "--pipeline", "simple", flag, "named-model"))
        assert res.exit_code == 0, res.output
        assert sent_models(fake) == {"named-model"}
    notice = "note: --model is deprecated; read as --endpoint-model named-model"
    assert (notice in res.output) == (flag == "--model")
    with scripted_teacher() as fake:  # without a name: the server's first model
        res = invoke(*generate_args(taxonomy, [fake.url], tmp_path / "ds2", "--taxonomy-base", "empty",
                                    "--num-samples", "1", "--pipeline", "simple"))
        assert res.exit_code == 0, res.output
        assert sent_models(fake) == {"fake-model"}


@pytest.mark.parametrize("flag", ["--teacher", "--model", None])
def test_the_teacher_served_locally(taxonomy, tmp_path, monkeypatch, flag):
    import contextlib

    from unfork.serve import launch

    served = []

    @contextlib.contextmanager
    def fake_server(model, *, parallel, slot_ctx):
        served.append((model, parallel, slot_ctx))
        with scripted_teacher() as fake:
            yield launch.Endpoint(fake.url, None, "local-model")

    monkeypatch.setattr(launch, "running_server", fake_server)
    monkeypatch.setenv("UNFORK_GENERATE_CTX_PER_SLOT", "1024")
    args = generate_args(taxonomy, [], tmp_path / "ds", "--taxonomy-base", "empty", "--num-samples", "1",
                         "--pipeline", "simple", "--max-concurrency", "2")
    res = invoke(*args, *([flag, "my-teacher"] if flag else []))
    assert res.exit_code == 0, res.output
    assert served == [("my-teacher" if flag else "qwen2.5-coder-1.5b-instruct", 2, 1024)]
    assert ("note: --model is deprecated; read as --teacher my-teacher" in res.output) == (flag == "--model")
    settings = json.loads((tmp_path / "ds" / "manifest.json").read_text())["settings"]
    assert settings["teacher_model"] == served[0][0]
    assert settings["endpoint_urls"] == ["(local llama.cpp server)"]


def test_mix_settings_from_the_config_change_the_training_lines_only(taxonomy, tmp_path, monkeypatch):
    monkeypatch.setenv("UNFORK_GENERATE_MIX", "{knowledge_raft: false}")
    with scripted_teacher() as fake:
        res = invoke(*generate_args(taxonomy, [fake.url], tmp_path / "ds", "--taxonomy-base", "empty",
                                    "--num-samples", "2", "--pipeline", "simple"))
        assert res.exit_code == 0, res.output
    formats = {line["metadata"]["format"] for line in read_jsonl(tmp_path / "ds" / "train_knowledge.jsonl")}
    assert formats == {"qa", "passage"}
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["pipeline"]["mix"]["knowledge_raft"] is False
