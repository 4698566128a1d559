"""The transformers backend on a tiny random Llama: same tokens as transformers itself, keys enforced."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

from unfork.config import Config  # noqa: E402
from unfork.serve import running_server  # noqa: E402
from unfork.serve.openai_api import create_app  # noqa: E402
from unfork.serve.process import ServerStartError  # noqa: E402

KEY = "k-123"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def engine(tiny_hf_model):
    from unfork.serve.hf_app import TransformersEngine

    return TransformersEngine(str(tiny_hf_model), ctx_size=256, device="cpu")


def reference_greedy(folder, messages, max_new_tokens: int) -> tuple[str, int]:
    """What transformers itself generates for the chat, greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0][ids.shape[1]:], skip_special_tokens=True), ids.shape[1]


def test_chat_matches_transformers_greedy(engine, tiny_hf_model):
    client = TestClient(create_app(engine, "tiny", api_key=KEY), headers={"Authorization": f"Bearer {KEY}"})
    body = client.post("/v1/chat/completions",
                       json={"messages": MESSAGES, "temperature": 0, "max_tokens": 12}).json()
    expected, prompt_len = reference_greedy(tiny_hf_model, MESSAGES, 12)
    assert body["choices"][0]["message"]["content"] == expected
    assert body["usage"]["prompt_tokens"] == prompt_len
    assert body["usage"]["completion_tokens"] == 12 and body["choices"][0]["finish_reason"] == "length"
    # The same text arrives piece by piece when streamed.
    with client.stream("POST", "/v1/chat/completions",
                       json={"messages": MESSAGES, "temperature": 0, "max_tokens": 12, "stream": True}) as r:
        lines = [line[6:] for line in r.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_api_key_enforced_on_the_transformers_app(engine):
    client = TestClient(create_app(engine, "tiny", api_key=KEY))
    payload = {"messages": MESSAGES, "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=payload).status_code == 401
    assert client.post("/v1/chat/completions", json=payload,
                       headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/v1/completions", json={"prompt": "x"}).status_code == 401
    assert client.get("/health").status_code == 200
    assert client.post("/v1/chat/completions", json=payload,
                       headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_seeded_sampling_is_repeatable_and_stop_cuts(engine):
    client = TestClient(create_app(engine, "tiny"))
    payload = {"messages": MESSAGES, "temperature": 1.0, "seed": 7, "max_tokens": 16}
    a = client.post("/v1/chat/completions", json=payload).json()["choices"][0]["message"]["content"]
    b = client.post("/v1/chat/completions", json=payload).json()["choices"][0]["message"]["content"]
    assert a == b and a
    stop = a[len(a) // 2:len(a) // 2 + 2]
    cut = client.post("/v1/chat/completions", json={**payload, "stop": [stop]}).json()["choices"][0]
    assert cut["message"]["content"] == a[:a.find(stop)] and cut["finish_reason"] == "stop"


def test_model_without_chat_template(tiny_hf_model, tmp_path):
    import shutil

    from unfork.serve.hf_app import TransformersEngine

    folder = tmp_path / "base"
    shutil.copytree(tiny_hf_model, folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    client = TestClient(create_app(TransformersEngine(str(folder), device="cpu"), "base"))
    r = client.post("/v1/chat/completions", json={"messages": MESSAGES})
    assert r.status_code == 400 and "no chat template" in r.json()["error"]["message"]
    assert client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 3}).status_code == 200


@pytest.mark.slow
def test_transformers_server_over_http(tiny_hf_model):
    import httpx

    with running_server(str(tiny_hf_model), backend="transformers", cfg=Config(), ctx_size=256) as ep:
        assert ep.backend == "transformers" and ep.model == tiny_hf_model.name
        headers = {"Authorization": f"Bearer {ep.api_key}"}
        with httpx.Client(base_url=ep.base_url, timeout=60) as http:
            assert http.get("/models").status_code == 401
            assert [m["id"] for m in http.get("/models", headers=headers).json()["data"]] == [ep.model]
            body = http.post("/chat/completions", headers=headers,
                             json={"model": ep.model, "messages": MESSAGES, "temperature": 0,
                                   "max_tokens": 8}).json()
            expected, _ = reference_greedy(tiny_hf_model, MESSAGES, 8)
            assert body["choices"][0]["message"]["content"] == expected
            with http.stream("POST", "/completions", headers=headers,
                             json={"prompt": "abc", "max_tokens": 5, "stream": True}) as r:
                data = [line for line in r.iter_lines() if line]
            assert data[-1] == "data: [DONE]" and len(data) >= 3
            # A client that hangs up mid-stream frees the model for the next request.
            with http.stream("POST", "/completions", headers=headers,
                             json={"prompt": "abc", "max_tokens": 400, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        break
            again = http.post("/completions", headers=headers, json={"prompt": "abc", "max_tokens": 3})
            assert again.json()["usage"]["completion_tokens"] == 3


@pytest.mark.slow
def test_unloadable_hf_folder_is_an_error_with_reason(tmp_path):
    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture-xyz"}))
    with pytest.raises(ServerStartError) as info, running_server(str(folder), backend="transformers",
                                                                 cfg=Config()):
        pytest.fail("must not start")
    assert "could not load the model" in info.value.message
    assert "no-such-architecture-xyz" in info.value.message
