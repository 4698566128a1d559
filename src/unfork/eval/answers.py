"""Getting answers out of a model under evaluation: the base student, the trained one, or a served model.

Small Hugging Face models (the students) run in this process: they load
quickly and batched greedy decoding needs no server. A
GGUF file, or any model behind an OpenAI-compatible endpoint, is asked through
the client layer (a temporary llama.cpp server for a local GGUF).

Only in-process models can score answer options by log-likelihood (what the
multiple-choice benchmarks use); a served model picks an option by letter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

Message = dict[str, str]
DEFAULT_SYSTEM = "You are a helpful, accurate assistant."


class Responder(Protocol):
    name: str

    def answer(self, conversations: Sequence[list[Message]], *, max_tokens: int = 256) -> list[str]: ...

    def option_scores(self, conversation: list[Message], options: Sequence[str]) -> list[float] | None: ...


def ask(question: str, system: str | None = DEFAULT_SYSTEM) -> list[Message]:
    """The conversation that asks ``question``, with the system prompt the training data used."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


@dataclass
class LocalResponder:
    """A Hugging Face folder loaded with transformers: batched greedy answers and option log-likelihoods."""

    name: str
    path: Path
    batch_size: int = 8
    _model: Any = field(default=None, repr=False)
    _tok: Any = field(default=None, repr=False)

    def load(self) -> LocalResponder:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()
        self._tok = AutoTokenizer.from_pretrained(self.path)
        if not self._tok.chat_template:
            from unfork.errors import UserError

            raise UserError(f"{self.path} has no chat template", hint="evaluate a chat (instruct) model")
        self._tok.padding_side = "left"
        if self._tok.pad_token_id is None:
            self._tok.pad_token = self._tok.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()
        return self

    def _prompt(self, conversation: list[Message]) -> str:
        return self._tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def answer(self, conversations: Sequence[list[Message]], *, max_tokens: int = 256) -> list[str]:
        import torch

        out: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            texts = [self._prompt(c) for c in conversations[start:start + self.batch_size]]
            enc = self._tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                ids = self._model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                           temperature=None, top_p=None, top_k=None,
                                           pad_token_id=self._tok.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in self._tok.batch_decode(new, skip_special_tokens=True)]
        return out

    def option_scores(self, conversation: list[Message], options: Sequence[str]) -> list[float]:
        """Log-likelihood of each option as the assistant's reply, per byte of the option (lm-eval's acc_norm)."""
        import torch

        prompt = self._tok(self._prompt(conversation), add_special_tokens=False)["input_ids"]
        rows = [prompt + self._tok(o, add_special_tokens=False)["input_ids"] for o in options]
        width = max(len(r) for r in rows)
        pad = self._tok.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        with torch.inference_mode():
            logits = self._model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        scores = []
        for i, (row, option) in enumerate(zip(rows, options, strict=True)):
            total = float(logp[i, len(prompt) - 1:len(row) - 1].sum())
            scores.append(total / max(1, len(option.encode("utf-8"))))
        return scores


@dataclass
class EndpointResponder:
    """A model behind an OpenAI-compatible endpoint, answered at temperature 0."""

    name: str
    client: Any  # unfork.client.SyncClient
    model: str | None = None

    def answer(self, conversations: Sequence[list[Message]], *, max_tokens: int = 256) -> list[str]:
        import asyncio

        async def one(c: list[Message]) -> str:
            result = await self.client.client.chat(c, model=self.model, temperature=0.0, max_tokens=max_tokens)
            return result.text.strip()

        async def everything() -> list[str]:
            return list(await asyncio.gather(*(one(c) for c in conversations)))

        return self.client._run(everything())

    def option_scores(self, conversation: list[Message], options: Sequence[str]) -> list[float] | None:
        return None


@contextlib.contextmanager
def open_responder(model: str, *, endpoint_url: str | None = None, api_key: str | None = None,
                   label: str | None = None) -> Iterator[Responder]:
    """A responder for ``model`` (catalog name, HF folder, trained run folder, GGUF file), or for an endpoint.

    Student-sized models in Hugging Face format load in this process; a GGUF
    gets a temporary llama.cpp server that stops when the block ends.
    """
    from unfork.client import ClientSettings, SyncClient

    if endpoint_url:
        client = SyncClient(ClientSettings(endpoint_url, api_key=api_key, max_concurrency=8))
        try:
            yield EndpointResponder(label or model or endpoint_url, client, model or None)
        finally:
            client.close()
        return
    from unfork.models import resolve_model

    resolved = resolve_model(model)
    if resolved.format == "hf":
        yield LocalResponder(label or resolved.name, Path(resolved.path)).load()
        return
    from unfork.serve.launch import running_server

    with running_server(str(resolved.path), parallel=4, slot_ctx=2048) as ep:
        client = SyncClient(ClientSettings(ep.base_url, api_key=ep.api_key, max_concurrency=4))
        try:
            yield EndpointResponder(label or resolved.name, client, ep.model)
        finally:
            client.close()
