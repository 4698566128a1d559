"""One exchange with the model: trim the context, stream the answer, recover from an overflow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from unfork.chat.session import Conversation, estimate_messages
from unfork.client import ContextOverflowError, MultiClient, OpenAIClient

DEFAULT_WINDOW = 4096
SAFETY_MARGIN = 16


@dataclass
class Answer:
    text: str
    finish_reason: str | None
    dropped: int
    """Old messages trimmed from the context for this answer."""
    interrupted: bool = False


class ChatEngine:
    """Sends a conversation to a model and records the answers in it."""

    def __init__(self, client: OpenAIClient | MultiClient, conversation: Conversation, *,
                 model: str | None = None, temperature: float | None = None, max_tokens: int | None = None,
                 window: int | None = None):
        self.client = client
        self.conversation = conversation
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.window = window

    async def learn_window(self, default: int = DEFAULT_WINDOW) -> int:
        """Ask the server for the model's window; fall back to ``default``."""
        if self.window is None:
            self.window = await self.client.context_window(self.model) or default
        return self.window

    def prompt_budget(self) -> int | None:
        if self.window is None:
            return None
        answer = self.max_tokens or 0
        return max(self.window - answer - SAFETY_MARGIN, self.window // 4)

    async def reply(self, text: str, on_piece: Callable[[str], object] = lambda s: None) -> Answer:
        """Add ``text`` as the user's turn and stream the model's answer into ``on_piece``.

        Cancelling keeps the part already received as the answer (and re-raises).
        A failed request removes the question again, so the conversation stays valid.
        """
        conv = self.conversation
        conv.add("user", text)
        dropped = 0
        for _ in range(5):
            budget = self.prompt_budget()
            if budget is not None:
                dropped += conv.fit(budget)
            stream = self.client.stream_chat(conv.context(), model=self.model, temperature=self.temperature,
                                             max_tokens=self.max_tokens)
            try:
                async with stream:
                    async for piece in stream:
                        on_piece(piece)
            except ContextOverflowError as exc:
                if stream.text or not self._shrink(exc):
                    conv.pop_last_user()
                    raise
                continue
            except asyncio.CancelledError:
                if stream.text:
                    conv.add("assistant", stream.text)
                else:
                    conv.pop_last_user()
                raise
            except BaseException:
                if stream.text:
                    conv.add("assistant", stream.text)
                else:
                    conv.pop_last_user()
                raise
            conv.add("assistant", stream.text)
            return Answer(stream.text, stream.finish_reason, dropped)
        conv.pop_last_user()
        raise ContextOverflowError("the server kept refusing the conversation as too long, even trimmed",
                                   status_code=400, hint="clear the context with /c, or lower --max-tokens")

    def _shrink(self, exc: ContextOverflowError) -> bool:
        """Lower the window after the server refused the prompt; False when trimming cannot help."""
        conv = self.conversation
        if conv.start >= len(conv.turns) - 1:
            return False  # only the question is left
        # What was just refused; shrinking from there always trims something.
        current = estimate_messages(conv.context()) + (self.max_tokens or 0) + SAFETY_MARGIN
        if self.window:
            current = min(current, self.window)
        if exc.n_ctx and exc.n_ctx < current:
            self.window = exc.n_ctx
        else:
            self.window = max(64, int(current * 0.75))
        return True
