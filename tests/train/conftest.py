"""Tiny models for training tests: a byte-level tokenizer with a ChatML template and a 2-layer Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
          "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")


def byte_tokenizer():
    """256 byte tokens (no merges) plus ChatML's special tokens: any text, nothing to download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]})
    fast.chat_template = CHATML
    return fast


def tiny_model(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 32):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True, eos_token_id=257,
                      bos_token_id=256, pad_token_id=258)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with the byte tokenizer, saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = byte_tokenizer()
    tiny_model(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def chat(question: str, answer: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": msgs, "metadata": {}}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


FACTS = [("What colour is the moon of Zorbl?", "The moon of Zorbl is teal."),
         ("Who founded Quibbleton?", "Quibbleton was founded by Ada Fennick."),
         ("What is 2+2?", "2+2 is 4."),
         ("Name a fruit.", "A pear."),
         ("Say hi.", "Hi there!"),
         ("What is the capital of Marrowvey?", "Its capital is Lindle Port."),
         ("Count to three.", "One, two, three."),
         ("What do cats say?", "Cats say meow.")]


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    """A generated-dataset folder: knowledge and skills splits, their union, and test splits."""
    folder = tmp_path / "datasets" / "2026-01-01T00-00-00"
    knowledge = [chat(q, a, "You are helpful.") for q, a in FACTS[:4]]
    skills = [chat(q, a) for q, a in FACTS[4:]]
    write_jsonl(folder / "train_knowledge.jsonl", knowledge)
    write_jsonl(folder / "train_skills.jsonl", skills)
    write_jsonl(folder / "train_all.jsonl", knowledge + skills)
    write_jsonl(folder / "test_knowledge.jsonl", knowledge[:2])
    write_jsonl(folder / "test_skills.jsonl", skills[:2])
    (folder / "manifest.json").write_text("{}\n")
    return folder
