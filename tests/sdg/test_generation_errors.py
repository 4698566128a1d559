"""Generation that fails says why in a few lines: no asyncio noise, and each leaf's own error."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import shutil
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.sdg.fake_teacher import scripted_teacher
from unfork.cli.main import cli, main
from unfork.client.base import _Attempts
from unfork.errors import UserError
from unfork.taxonomy.examples import prepare_example_taxonomy


@pytest.fixture
def taxonomy(tmp_path):
    return prepare_example_taxonomy(tmp_path / "taxonomy")


def closed_port_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run_main(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["unfork", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    gc.collect()  # a task nobody retrieved is reported when it is collected
    return exited.value.code


def test_an_endpoint_that_is_down_ends_in_one_clean_error(taxonomy, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(_Attempts, "delay", lambda self, retry_after: 0.0)  # retries at once: a short test
    url = closed_port_url()
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        code = run_main(monkeypatch, "data", "generate", "--taxonomy-path", str(taxonomy), "--taxonomy-base",
                        "empty", "--endpoint-url", url, "--endpoint-model", "x", "-q",
                        "--output-dir", str(tmp_path / "ds"))
    err = capsys.readouterr().err
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert code == 1
    assert "Task exception was never retrieved" not in err + logged
    assert "Traceback" not in err
    assert err.count("Error: ") == 1 and url in err


def only_knowledge(taxonomy: Path, old: str, new: str) -> Path:
    """The example taxonomy with its knowledge leaf alone, ``old`` replaced by ``new`` in its qna.yaml."""
    shutil.rmtree(taxonomy / "compositional_skills")
    qna = taxonomy / "knowledge" / "geography" / "islands" / "marrowvey" / "qna.yaml"
    text = qna.read_text(encoding="utf-8")
    assert old in text
    qna.write_text(text.replace(old, new), encoding="utf-8")
    return taxonomy


@pytest.mark.parametrize(("old", "new", "why"), [
    ("repo: .unfork/docs/marrowvey", "repo: .unfork/docs/missing", "docs/missing does not exist"),
    ("7e7b8495d844a4a9130119bfe25661d9740487db", "a" * 40, f"commit {'a' * 40} is not in the document repository"),
    ("- marrowvey.md", "- nothing*.md", "'nothing*.md' matches no file"),
])
def test_a_leaf_whose_documents_cannot_be_fetched_says_so(taxonomy, tmp_path, old, new, why):
    only_knowledge(taxonomy, old, new)
    with scripted_teacher() as fake:
        res = CliRunner().invoke(cli, ["data", "generate", "--taxonomy-path", str(taxonomy), "--taxonomy-base",
                                       "empty", "--endpoint-url", fake.url, "-q", "--output-dir", str(tmp_path / "ds")])
        assert fake.requests == [] or all(path != "/v1/chat/completions" for _, path, _ in fake.requests)
    err = res.exception
    assert res.exit_code == 1 and isinstance(err, UserError), res.output
    rel = "knowledge/geography/islands/marrowvey"
    assert f"{rel}: its documents could not be fetched: " in err.message and why in err.message
    assert "hint: " in err.message  # the fetch's own advice, e.g. the files the commit holds
    assert "rejected.jsonl" not in (err.hint or "")  # nothing was rejected: there is nothing to read there
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert why in manifest["leaves"][0]["error"]


def test_a_failed_request_part_stops_its_siblings():
    from unfork.sdg.teacher import gather_or_cancel

    ended: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            ended.append("slow")

    async def fails() -> None:
        raise RuntimeError("refused")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="refused"):
            await gather_or_cancel(slow(), fails())
        assert ended == ["slow"]  # already ended, not left running after the failure
        assert await gather_or_cancel(asyncio.sleep(0, "a"), asyncio.sleep(0, "b")) == ["a", "b"]

    asyncio.run(asyncio.wait_for(main(), 5))
