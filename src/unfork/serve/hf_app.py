"""unfork's own server for Hugging Face model folders (the ``transformers`` backend).

Run as ``python -m unfork.serve.hf_app --model FOLDER --port N``; the API key
comes from ``UNFORK_SERVE_API_KEY`` so it never shows in ``ps``. Prompts are
rendered with the tokenizer's own chat template. One request generates at a
time (a lock): on a CPU, batching small models buys little, and the order of
requests stays fair.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from unfork.serve.openai_api import Generation, RequestError, SamplingParams, create_app


class TransformersEngine:
    def __init__(self, path: str, *, ctx_size: int = 4096, device: str = "auto", dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype={"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype])
        self.model.to(device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None) or ctx_size
        self.context_length = min(ctx_size, int(limit))
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.lock = threading.Lock()

    def encode_chat(self, messages: list[dict[str, Any]], tools: list | None = None) -> list[int]:
        if not self.tokenizer.chat_template:
            raise RequestError("this model has no chat template; use /v1/completions with a plain prompt")
        try:
            text = self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as exc:  # jinja errors, e.g. a template that rejects a role order
            raise RequestError(f"the model's chat template rejected the messages: {exc}") from None
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        # Chat templates write their own special tokens; a plain prompt gets none added either.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, ids: list[int], params: SamplingParams, cancel: threading.Event,
                 result: Generation) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens,
                                  "stopping_criteria": StoppingCriteriaList([Cancelled()])}
        if params.temperature is not None:
            kwargs["do_sample"] = params.temperature > 0
            if params.temperature > 0:
                kwargs["temperature"] = params.temperature
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.top_k is not None:
            kwargs["top_k"] = params.top_k
        if self.tokenizer.pad_token_id is None and self.eos_ids:
            kwargs["pad_token_id"] = min(self.eos_ids)
        if kwargs.get("do_sample") is False:
            kwargs.update(temperature=None, top_p=None, top_k=None)

        with self.lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            input_ids = torch.tensor([ids], device=self.device)
            outcome: dict[str, Any] = {}

            def run() -> None:
                try:
                    with torch.inference_mode():
                        outcome["out"] = self.model.generate(
                            input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                            streamer=streamer, **kwargs)
                except BaseException as exc:
                    outcome["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=run, name="generate", daemon=True)
            worker.start()
            finished = False
            try:
                for text in streamer:
                    if text:
                        yield text
                finished = True
            finally:
                if not finished:  # the client went away or a stop string matched
                    cancel.set()
                    for _ in streamer:  # generate() stops at its next step; take what it still writes
                        pass
                worker.join()
            if "error" in outcome:
                raise outcome["error"]
            new = outcome["out"][0][len(ids):].tolist()
            result.completion_tokens = len(new)
            if new and new[-1] in self.eos_ids:
                result.finish_reason = "stop"
            elif len(new) >= params.max_tokens:
                result.finish_reason = "length"
            else:
                result.finish_reason = "stop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unfork.serve.hf_app",
                                     description="Serve a Hugging Face model folder (OpenAI-compatible API).")
    parser.add_argument("--model", required=True, help="Hugging Face model folder")
    parser.add_argument("--model-id", default=None, help="name the server answers to (default: folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ctx-size", type=int, default=4096)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    args = parser.parse_args(argv)

    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    try:
        engine = TransformersEngine(args.model, ctx_size=args.ctx_size, device=args.device, dtype=args.dtype)
    except Exception as exc:
        print(f"error: could not load the model: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    import uvicorn

    model_id = args.model_id or os.path.basename(os.path.normpath(args.model))
    app = create_app(engine, model_id, api_key=os.environ.get("UNFORK_SERVE_API_KEY") or None)
    print(f"model loaded on {engine.device}; listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
