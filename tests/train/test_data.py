"""Rendering with the chat template, the loss mask, length filtering, packing and the step plan."""

from __future__ import annotations

import pytest
import torch

from tests.train.conftest import chat, tiny_model
from unfork.train.data import (
    IGNORE,
    WIDTH_MULTIPLE,
    Row,
    find_data,
    pack,
    padding_waste,
    prepare,
    render,
    shard,
    step_plan,
)


def targets_text(tokenizer, sample) -> str:
    return tokenizer.decode([i for i, m in zip(sample.ids, sample.mask, strict=True) if m])


def test_mask_covers_exactly_the_assistant_turns(tokenizer):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"},
            {"role": "assistant", "content": "Bye."}]
    s = render(tokenizer, msgs)
    assert tokenizer.decode(s.ids) == tokenizer.apply_chat_template(msgs, tokenize=False)
    assert targets_text(tokenizer, s) == "Hello.<|im_end|>\nBye.<|im_end|>\n"
    # Nothing from the system or user turns, nor the assistant header, is a target.
    first = s.mask.index(True)
    assert tokenizer.decode(s.ids[:first]).endswith("<|im_start|>assistant\n")


def test_mask_with_the_real_smollm2_template():
    from tests.conftest import REAL_MODELS_DIR

    folder = REAL_MODELS_DIR / "smollm2-135m-instruct-hf"
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("SmolLM2 Hugging Face folder not converted")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    s = render(tok, chat("What is teal?", "A colour.")["messages"])
    assert targets_text(tok, s) == "A colour.<|im_end|>\n"
    # SmolLM2's template adds its default system prompt: rendered, never trained on.
    assert "SmolLM" in tok.decode(s.ids)


def test_long_samples_are_dropped_and_counted_not_truncated(tokenizer):
    rows = [chat("q", "short"), chat("q", "x" * 500), chat("q", "y" * 50)]
    lengths = [len(render(tokenizer, r["messages"])) for r in rows]
    prep = prepare(rows, tokenizer, max_seq_len=lengths[2])
    assert [len(s) for s in prep.samples] == [lengths[0], lengths[2]]
    assert prep.dropped_too_long == 1 and prep.longest_dropped == lengths[1]
    assert prep.summary()["kept"] == 2 and prep.summary()["rows"] == 3


def test_rows_without_an_answer_are_dropped(tokenizer):
    prep = prepare([{"messages": [{"role": "user", "content": "only a question"}]}], tokenizer, 100)
    assert prep.samples == [] and prep.dropped_no_target == 1


def test_packing_targets_never_cross_samples(tokenizer):
    a, b = render(tokenizer, chat("a", "A")["messages"]), render(tokenizer, chat("b", "B")["messages"])
    mb = Row()
    mb.add(a)
    mb.add(b)
    assert mb.position_ids == list(range(len(a))) + list(range(len(b)))
    assert mb.targets[len(a) - 1] == IGNORE  # a's last token does not predict b's first
    expected = [x for s in (a, b) for x in
                [s.ids[t + 1] if s.mask[t + 1] else IGNORE for t in range(len(s) - 1)] + [IGNORE]]
    assert mb.targets == expected
    assert mb.n_targets == a.n_targets + b.n_targets


def test_packed_row_gives_the_same_logits_as_separate_samples(tokenizer):
    """position_ids restarting at 0 (and no cache) make transformers use a block-diagonal causal mask."""
    model = tiny_model(len(tokenizer))
    samples = [render(tokenizer, chat(q, a)["messages"]) for q, a in [("one", "1"), ("two?", "2!"), ("3", "three")]]
    (mb,) = pack(samples, 10_000)
    assert len(mb.rows) == 1
    ids, pos, _ = mb.tensors()
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        offset = 0
        for s in sorted(samples, key=len, reverse=True):
            alone = model(input_ids=torch.tensor([s.ids])).logits[0]
            torch.testing.assert_close(packed[offset: offset + len(s)], alone, atol=1e-5, rtol=1e-4)
            offset += len(s)


def test_pack_fills_rows_and_keeps_every_sample(tokenizer):
    samples = [render(tokenizer, chat("q" * n, "a" * n)["messages"]) for n in (1, 5, 9, 30, 2, 60)]
    row_len = max(len(s) for s in samples)
    batches = pack(samples, row_len, rows_per_batch=2)
    rows = [r for b in batches for r in b.rows]
    assert all(len(r) <= row_len for r in rows) and all(len(b.rows) <= 2 for b in batches)
    assert sum(r.n_samples for r in rows) == len(samples)
    assert sum(len(r) for r in rows) == sum(len(s) for s in samples)
    assert len(rows) < len(samples)  # short samples share rows


def test_short_rows_are_padded_with_a_separate_segment(tokenizer):
    model = tiny_model(len(tokenizer))
    long_, short = (render(tokenizer, chat(q, a)["messages"]) for q, a in [("long question", "long answer"), ("q", "a")])
    (mb,) = pack([long_, short], len(long_), rows_per_batch=2)
    ids, pos, tgt = mb.tensors(pad_id=7)
    width = -(-len(long_) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE  # a few shapes, not one per step
    assert ids.shape == (2, width) and width > len(long_)
    for row, sample in enumerate((long_, short)):
        pad = width - len(sample)
        assert pos[row].tolist() == list(range(len(sample))) + list(range(pad))
        assert (tgt[row, len(sample):] == IGNORE).all()
        with torch.no_grad():
            batched = model(input_ids=ids, position_ids=pos, use_cache=False).logits[row, : len(sample)]
            alone = model(input_ids=torch.tensor([sample.ids])).logits[0]
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_step_plan_is_a_seeded_permutation():
    plan = step_plan(10, 4, seed=1, epoch=0)
    assert [len(s) for s in plan] == [4, 4, 2]
    assert sorted(i for s in plan for i in s) == list(range(10))
    assert plan == step_plan(10, 4, seed=1, epoch=0)
    assert plan != step_plan(10, 4, seed=1, epoch=1)


def test_shard_splits_a_step_between_ranks(tokenizer):
    samples = [render(tokenizer, chat("q", "a" * n)["messages"]) for n in (1, 20, 3, 40, 5)]
    parts = [shard([0, 1, 2, 3, 4], samples, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == [0, 1, 2, 3, 4] and not set(parts[0]) & set(parts[1])
    loads = [sum(len(samples[i]) for i in p) for p in parts]
    assert abs(loads[0] - loads[1]) <= max(len(s) for s in samples)


def test_padding_waste():
    assert padding_waste([4, 4, 4, 4], 2) == 0.0
    assert padding_waste([1, 3], 2) == pytest.approx(1 - 4 / 6)
    assert padding_waste([1, 9, 1, 9], 2, sort=True) == 0.0


def test_find_data_picks_the_newest_dataset(small_dataset, tmp_path):
    files = find_data(None, small_dataset.parent)
    assert files.root == small_dataset
    assert files.train_knowledge and files.train_skills and set(files.test) == {"knowledge", "skills"}
    manifest = files.manifest()
    assert manifest["files"]["train_skills.jsonl"]["rows"] == 4
    assert len(manifest["files"]["train_all.jsonl"]["sha256"]) == 64
    single = find_data(small_dataset / "train_all.jsonl", tmp_path)
    assert single.train_all and not single.train_knowledge
    from unfork.errors import UserError

    with pytest.raises(UserError, match="no generated dataset"):
        find_data(None, tmp_path / "nothing")


def test_variable_length_attention_matches_separate_samples(tokenizer):
    from unfork.train.attention import cu_seq_lens, register

    model = tiny_model(len(tokenizer))
    model.set_attn_implementation(register())
    samples = [render(tokenizer, chat(q, a)["messages"]) for q, a in [("one", "1"), ("two?", "2!"), ("3", "three")]]
    (mb,) = pack(samples, 10_000)
    ids, pos, _ = mb.tensors()
    cu = cu_seq_lens(pos)
    ends = [sum(len(s) for s in sorted(samples, key=len, reverse=True)[:k]) for k in (1, 2, 3)]
    assert cu.tolist() == [0, *ends, ids.shape[1]]  # the padding up to the width is a segment of its own
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False, cu_seq_lens_q=cu, cu_seq_lens_k=cu).logits[0]
        model.set_attn_implementation("sdpa")
        offset = 0
        for s in sorted(samples, key=len, reverse=True):
            alone = model(input_ids=torch.tensor([s.ids])).logits[0]
            torch.testing.assert_close(packed[offset: offset + len(s)], alone, atol=1e-5, rtol=1e-4)
            offset += len(s)
