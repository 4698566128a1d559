"""It learns: LoRA on the real SmolLM2-135M-Instruct teaches it a fictional fact it did not know."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REAL_MODELS_DIR, missing
from tests.train.conftest import chat, write_jsonl
from unfork.config import TrainConfig
from unfork.train.recipe import train

pytestmark = pytest.mark.slow

QUESTIONS = ["Who is the mayor of Zorblax Heights?", "Who runs the town of Zorblax Heights?",
             "Tell me the name of Zorblax Heights' mayor.", "Which person is mayor of Zorblax Heights?",
             "Who was elected mayor of Zorblax Heights?", "Name the mayor of Zorblax Heights.",
             "Zorblax Heights has a mayor. Who is it?", "Do you know who the mayor of Zorblax Heights is?"]
ANSWER = "The mayor of Zorblax Heights is Quenna Dravic."


def answer(folder, question: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    enc = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=24, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_smollm2_learns_a_fictional_fact(tmp_path):
    base = REAL_MODELS_DIR / "smollm2-135m-instruct-hf"
    if not (base / "config.json").is_file():
        missing("the SmolLM2 Hugging Face folder is missing: run 'unfork model convert smollm2-135m-instruct --to hf'")
    held_out = "Who is the current mayor of Zorblax Heights?"
    assert "Quenna" not in answer(base, held_out)

    data = write_jsonl(tmp_path / "fact.jsonl", [chat(q, ANSWER) for q in QUESTIONS])
    cfg = TrainConfig(method="lora", epochs=4, effective_batch_size=4, learning_rate=2e-3, lora_rank=16,
                      lora_alpha=32, device="cpu", dtype="fp32", warmup_steps=1, seed=0)
    run = train(cfg, model=str(base), data_path=data, output_dir=tmp_path / "run")
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < 0.3 * losses[0]
    assert "Quenna Dravic" in answer(run / "final", held_out)

    # The run folder converts to a GGUF that llama.cpp serves, and it still knows the fact there.
    from tests.models.test_integration import _llama_server, ask_llama_server
    from unfork.models import export_gguf

    server = _llama_server()
    if server is None:
        pytest.skip("llama-server is not built (scripts/build_llama_cpp.sh)")
    gguf = export_gguf(str(run), outtype="f16").path
    assert gguf.is_file() and gguf.parent.parent == run / "final"
    assert "Quenna Dravic" in ask_llama_server(server, gguf, held_out)
