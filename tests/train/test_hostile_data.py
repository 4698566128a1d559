"""Training input that is broken or hostile: bad lines, huge lines, folders --fresh must not delete."""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from tests.train.conftest import chat, write_jsonl
from unfork.config import TrainConfig
from unfork.errors import UserError
from unfork.train.data import count_rows, load_jsonl, prepare, read_jsonl
from unfork.train.recipe import train

FAST = TrainConfig(epochs=1, effective_batch_size=2, learning_rate=1e-2, device="cpu", dtype="fp32",
                   lora_rank=4, lora_alpha=8)
GOOD = json.dumps(chat("What is 2+2?", "4.")).encode()

HOSTILE = {  # line -> what the error must say about it
    "numbers": (b'{"messages": [1, 2]}', "message 1 is not an object"),
    "empty": (b'{"messages": []}', "'messages' is empty"),
    "latin-1": ('{"messages": [{"role": "user", "content": "caf\xe9?"}, {"role": "assistant", "content": "ok"}]}'
                .encode("latin-1"), "not UTF-8"),
    "deep JSON": (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    "deep message": (b'{"messages": [{"role": "user", "content": "q", "x": ' + b"[" * 900 + b"]" * 900
                     + b'}, {"role": "assistant", "content": "a"}]}', "nested more than"),
    "number role": (b'{"messages": [{"role": 1, "content": "q"}, {"role": "assistant", "content": 5}]}',
                    "message 1 is not an object with a string 'role'"),
    "no content": (b'{"messages": [{"role": "user"}, {"role": "assistant"}]}', "'content'"),
    "not JSON": (b'{"messages": [', "not JSON"),
    "not an object": (b"[1, 2]", "an object with a 'messages' list"),
}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_file_of_only_bad_lines_is_an_error_that_says_why(tokenizer, tmp_path, kind):
    line, why = HOSTILE[kind]
    path = write_lines(tmp_path / "data.jsonl", [line, b"", line])
    with pytest.raises(UserError) as caught:
        prepare(read_jsonl(path), tokenizer, 1000)
    message = str(caught.value)
    assert str(path) in message and "no usable line" in message
    assert "line 1:" in message and "line 3:" in message and why in message


@pytest.mark.parametrize("kind", HOSTILE)
def test_isolated_bad_lines_are_skipped_and_counted(tokenizer, tmp_path, kind):
    path = write_lines(tmp_path / "data.jsonl", [GOOD, HOSTILE[kind][0], b"  ", GOOD, GOOD])
    loaded = load_jsonl(path)
    assert [n for n, _ in loaded.skipped] == [2] and HOSTILE[kind][1] in loaded.skipped[0][1]
    assert len(prepare(loaded.rows, tokenizer, 1000).samples) == 3
    assert loaded.note().startswith(f"{path}: skipped 1 unusable line (line 2: ")


def test_only_the_first_few_bad_lines_are_named(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", [b"{bad"] * 8 + [GOOD])
    note = load_jsonl(path).note()
    assert "skipped 8 unusable lines" in note and "line 5:" in note and "line 6:" not in note
    assert note.endswith("and 3 more)")


def test_an_over_long_line_is_refused_before_it_is_parsed_or_held(tmp_path):
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (10 << 20) + b'"}]}'
    path = write_lines(tmp_path / "data.jsonl", [GOOD, huge, GOOD])
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        loaded = load_jsonl(path)
        rows = count_rows(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 5
    assert peak < 8 << 20  # the 10 MB line is never held whole
    assert len(loaded.rows) == 2 and loaded.skipped == [(2, "longer than 1,048,576 bytes")]
    assert rows == 3
    with pytest.raises(UserError, match="longer than"):
        load_jsonl(write_lines(tmp_path / "only.jsonl", [huge]))


@pytest.mark.parametrize("content", [b"", b"\n\n", b"a\n \n\tb", b"a\r\n\r\nb\n", b" \x0b\x0c\n",
                                     b"x" * ((1 << 20) - 1) + b"\n  \n" + b" " * (1 << 20) + b"y\n",
                                     b" " * ((1 << 20) + 5) + b"\nz"])
def test_row_count_is_the_number_of_non_blank_lines(tmp_path, content):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    with path.open("rb") as f:
        expected = sum(1 for line in f if line.strip())
    assert count_rows(path) == expected


def test_training_skips_bad_lines_and_says_which(tiny_model_dir, tmp_path, capsys):
    good = [json.dumps(chat(q, a)).encode() for q, a in [("a?", "A."), ("b?", "B."), ("c?", "C.")]]
    data = write_lines(tmp_path / "data.jsonl", [good[0], b'{"messages": [1, 2]}', good[1], b"oops", good[2]])
    run = train(FAST, model=str(tiny_model_dir), data_path=data, output_dir=tmp_path / "run")
    assert json.loads((run / "training.json").read_text())["data"]["train"]["train"]["kept"] == 3
    err = capsys.readouterr().err
    assert f"{data}: skipped 2 unusable lines (line 2: message 1 is not an object" in err and "line 4: not JSON" in err


def test_a_phase_without_usable_samples_says_why(tiny_model_dir, tmp_path):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "only a question"}]}] * 3)
    with pytest.raises(UserError) as caught:
        train(FAST, model=str(tiny_model_dir), data_path=questions, output_dir=tmp_path / "run")
    assert "3 without an assistant answer" in str(caught.value) and "fits" not in str(caught.value)
    long = write_jsonl(tmp_path / "long.jsonl", [chat("q", "x" * 300)] * 2)
    with pytest.raises(UserError, match=r"2 longer than --max-seq-len 64 \(longest \d+ tokens\)"):
        train(replace(FAST, max_seq_len=64), model=str(tiny_model_dir), data_path=long, output_dir=tmp_path / "r")
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- --fresh


def test_fresh_refuses_a_folder_that_holds_no_training_run(tiny_model_dir, small_dataset, tmp_path):
    mine = tmp_path / "thesis"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "checkpoints" / "draft.txt").write_text("keep")
    with pytest.raises(UserError, match=re.escape(str(mine))):
        train(FAST, model=str(tiny_model_dir), data_path=small_dataset, output_dir=mine, fresh=True)
    assert (mine / "thesis.tex").read_text() == "years of work" and (mine / "checkpoints" / "draft.txt").is_file()
    (mine / "training.json").write_text('["not a run"]')  # a marker must be the contract's, not just the name
    with pytest.raises(UserError, match="training run"):
        train(FAST, model=str(tiny_model_dir), data_path=small_dataset, output_dir=mine, fresh=True)
    assert (mine / "thesis.tex").is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match=re.escape(str(a_file))):
        train(FAST, model=str(tiny_model_dir), data_path=small_dataset, output_dir=a_file, fresh=True)
    assert a_file.read_text() == "x"


def test_fresh_deletes_only_what_the_run_wrote(tiny_model_dir, small_dataset, tmp_path):
    cfg = replace(FAST, strategy="skills-only")
    run = train(cfg, model=str(tiny_model_dir), data_path=small_dataset, output_dir=tmp_path / "run")
    one_run = (run / "metrics.jsonl").read_text().count("\n")
    (run / "notes.md").write_text("mine")
    (run / "eval").mkdir()
    (run / "eval" / "knowledge.json").write_text("{}")  # results of the model --fresh replaces
    train(replace(cfg, learning_rate=1e-3), model=str(tiny_model_dir), data_path=small_dataset, output_dir=run,
          fresh=True)
    assert (run / "notes.md").read_text() == "mine"
    assert not (run / "eval").exists()
    assert (run / "metrics.jsonl").read_text().count("\n") == one_run  # the old run's rows are gone
    info = json.loads((run / "training.json").read_text())
    assert info["settings"]["learning_rate"] == 1e-3 and info["resumed"] == []


def test_fresh_into_an_empty_folder_trains(tiny_model_dir, small_dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = train(replace(FAST, strategy="skills-only"), model=str(tiny_model_dir), data_path=small_dataset,
                output_dir=empty, fresh=True)
    assert (run / "final" / "model.safetensors").is_file()
