"""``unfork run``, the main job, end to end: a scripted teacher (a real HTTP server) and the real student.

The teacher is scripted so the test is fast and predictable; the student is
really trained (one short epoch) and really evaluated, and the run folder is
checked for everything the next person needs: run.json with stage times and
scores, the dataset, the trained model, the evaluation results and the report.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from tests.client.fake_openai import FakeOpenAI, Reply
from tests.conftest import REAL_MODELS_DIR, missing
from tests.eval.fake_judge import judge_reply
from tests.sdg.fake_teacher import script


def exam_reply(prompt: str) -> str:
    """Questions on the passage's sentences that hold a number, answered with the sentence itself."""
    passage = " ".join(prompt.split("[PASSAGE]", 1)[1].split("[END OF PASSAGE]", 1)[0].split())
    out = []
    for sentence in re.split(r"(?<=\.)\s+", passage):
        if not re.search(r"\b\d[\d,]*\b", sentence) or len(sentence.split()) < 6 or len(out) >= 3:
            continue
        subject = " ".join(re.findall(r"[a-z]+", sentence)[:3])
        out.append(f"Question: Which statement about {subject} is true?\nAnswer: {sentence}")
    return "\n\n".join(out)


def teacher(body):
    prompt = body["messages"][-1]["content"]
    if "[PASSAGE]" in prompt:
        return Reply(text=exam_reply(prompt))
    if "[ANSWER]" in prompt:
        return Reply(text=judge_reply(body))
    return Reply(text=script(body))


class Resolved(Exception):
    pass


def resolved_settings(monkeypatch, *args):
    """The settings ``unfork run`` resolves, caught before any stage starts."""
    from unfork import config as C
    from unfork.cli.main import cli

    real = C.load_config

    def capture(*a, **kw):
        raise Resolved(real(*a, **kw))

    monkeypatch.setattr(C, "load_config", capture)
    with pytest.raises(Resolved) as caught:
        CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)
    return caught.value.args[0]


def test_the_main_job_takes_its_settings_from_its_profile(monkeypatch, unfork_home):
    (unfork_home / "config").mkdir(parents=True, exist_ok=True)
    (unfork_home / "config" / "config.yaml").write_text("models:\n  teacher: my-teacher\n"
                                                        "train:\n  epochs: 5\n  learning_rate: 1.0e-5\n")
    cfg = resolved_settings(monkeypatch)
    g, t = cfg.generate, cfg.train
    assert cfg.models.teacher == "my-teacher"  # --teacher config: the config's teacher
    assert (g.pipeline, g.num_samples, g.knowledge_samples, g.mix) == ("simple", 10, 60, {"knowledge_raft": False})
    assert (t.epochs, t.knowledge_epochs, t.method, t.learning_rate) == (3, 8, "full", 3e-4)
    assert (t.keep_epoch, t.micro_batch_tokens) == ("last", 1024)
    cfg = resolved_settings(monkeypatch, "--method", "lora", "--epochs", "2", "--teacher", "other", "--pipeline",
                            "full", "--num-samples", "4", "--knowledge-samples", "7", "--knowledge-epochs", "1")
    assert (cfg.train.method, cfg.train.learning_rate) == ("lora", 1e-5)  # the profile's rate is for full only
    assert (cfg.train.epochs, cfg.train.knowledge_epochs, cfg.models.teacher) == (2, 1, "other")
    assert (cfg.generate.pipeline, cfg.generate.num_samples, cfg.generate.knowledge_samples) == ("full", 4, 7)


@pytest.mark.slow
def test_the_main_job_goes_from_taxonomy_to_report(tmp_path, monkeypatch):
    student = REAL_MODELS_DIR / "smollm2-135m-instruct-hf"
    if not (student / "config.json").is_file():
        missing("the SmolLM2 Hugging Face folder is missing: run 'unfork model convert smollm2-135m-instruct --to hf'")
    from unfork.cli.main import cli

    out = tmp_path / "run"
    with FakeOpenAI(on_chat=teacher, http11=True, model="scripted-teacher") as fake:
        monkeypatch.setenv("UNFORK_MODELS_STUDENT", str(student))
        monkeypatch.setenv("UNFORK_GENERATE_ENDPOINT_URLS", fake.url)
        monkeypatch.setenv("UNFORK_TRAIN_MAX_SEQ_LEN", "384")  # drops the longest passages: a faster test
        res = CliRunner().invoke(cli, ["run", "--output-dir", str(out), "--num-samples", "3",
                                       "--knowledge-samples", "3", "--epochs", "1",
                                       "--knowledge-epochs", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert set(run["stage_seconds"]) == {"validate", "generate", "train", "evaluate", "report"}
    assert {leaf["kind"] for leaf in run["leaves"]} == {"knowledge", "skill"}
    assert set(run["scores"]) == {"knowledge", "skills", "general"}
    assert set(run["eval_seconds"]) == {"knowledge", "skills", "general", "answers side by side"}
    formats = {json.loads(line)["metadata"]["format"]
               for line in (out / "dataset" / "train_knowledge.jsonl").read_text().splitlines()}
    assert formats == {"qa", "passage"}  # the main job's mix: no RAFT copies
    knowledge = json.loads((out / "eval" / "knowledge.json").read_text())
    assert knowledge["overall"]["n"] >= 3 and 0 <= knowledge["overall"]["trained"] <= 100
    assert all(len(item["options"]) == 4 for item in knowledge["items"])
    assert (out / "train" / "final" / "config.json").is_file()
    assert (out / "dataset" / "eval_knowledge.json").is_file()  # the exam, cached for the next model
    html = (out / "report.html").read_text()
    assert "<svg" in html and "marrowvey" in html.lower()
    assert "unfork model chat --model" in res.output

    # The same command again resumes: every stage finds its work done.
    with FakeOpenAI(on_chat=teacher, http11=True, model="scripted-teacher") as fake:
        monkeypatch.setenv("UNFORK_GENERATE_ENDPOINT_URLS", fake.url)
        again = CliRunner().invoke(cli, ["run", "--output-dir", str(out), "--num-samples", "3",
                                         "--knowledge-samples", "3", "--epochs", "1", "--knowledge-epochs", "1",
                                         "--skip-eval"])
        assert again.exit_code == 0, again.output
        assert "already trained" in again.output
        assert not any("[PASSAGE]" in str(body) for body in fake.requests)
