"""A conversation: its messages, a conservative token estimate, trimming, save and load.

Saved sessions are a JSON list of ``{"role", "content"}`` messages, the
format InstructLab's ``ilab model chat`` writes with ``/s`` and reads with
``/l`` and ``--session``, so files move between the two tools.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unfork.errors import UserError
from unfork.tokens import estimate_tokens

Message = dict[str, Any]

MESSAGE_OVERHEAD = 8
"""Tokens a chat template adds around each message (role markers, separators)."""


def estimate_messages(messages: list[Message]) -> int:
    """An upper-bound guess at a conversation's tokens; a server's ``ContextOverflowError`` is the backstop."""
    return sum(estimate_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD for m in messages) + 3


@dataclass
class Conversation:
    """The system prompt plus the turns; ``start`` marks the oldest turn still sent to the model."""

    system: str | None = None
    turns: list[Message] = field(default_factory=list)
    start: int = 0

    def messages(self) -> list[Message]:
        """Everything, for saving."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.turns]

    def context(self) -> list[Message]:
        """What the model sees: the system prompt and the turns not trimmed away."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.turns[self.start:]]

    def add(self, role: str, content: str) -> None:
        self.turns.append({"role": role, "content": content})

    def pop_last_user(self) -> None:
        """Undo a question that got no answer."""
        if self.turns and self.turns[-1]["role"] == "user":
            self.turns.pop()
            self.start = min(self.start, len(self.turns))

    def clear(self) -> None:
        self.turns.clear()
        self.start = 0

    def answers(self) -> list[str]:
        return [m["content"] for m in self.turns if m["role"] == "assistant"]

    def fit(self, budget: int) -> int:
        """Drop the oldest turns from the context until it fits ``budget`` tokens.

        Turns go a user/assistant exchange at a time; the system prompt and
        the last message always stay. Returns how many messages were dropped.
        """
        dropped = 0
        while estimate_messages(self.context()) > budget and self.start < len(self.turns) - 1:
            self.start += 1
            dropped += 1
            # Never leave an answer without its question at the head of the context.
            while self.start < len(self.turns) - 1 and self.turns[self.start]["role"] != "user":
                self.start += 1
                dropped += 1
        return dropped

    # -- files

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        from unfork.fsio import atomic_write_json

        atomic_write_json(path, self.messages(), ensure_ascii=False)
        return path

    @classmethod
    def load(cls, path: Path, default_system: str | None = None) -> Conversation:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"no saved session at {path}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not a JSON chat session ({exc})") from None
        if isinstance(data, dict):
            data = data.get("messages")
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a list of messages")
        conv = cls(system=default_system)
        for i, m in enumerate(data):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise UserError(f"{path}: message {i + 1} needs a 'role' and a text 'content'")
            if m["role"] == "system" and not conv.turns:
                conv.system = m["content"]
            elif m["role"] in ("user", "assistant"):
                conv.add(m["role"], m["content"])
            else:
                raise UserError(f"{path}: message {i + 1} has role {m['role']!r}; expected user or assistant")
        return conv


def session_path(name: str | None, logs_dir: Path) -> Path:
    """Where ``/s NAME`` saves: a bare name goes to the chat-logs folder (``.json`` added);
    no name: a new timestamped file there."""
    if not name:  # a new file each time, even within one second
        stem = time.strftime("chat_%Y%m%d-%H%M%S")
        path, n = logs_dir / f"{stem}.json", 1
        while path.exists():
            n += 1
            path = logs_dir / f"{stem}_{n}.json"
        return path
    p = Path(name).expanduser()
    if p.is_absolute() or len(p.parts) > 1 or name.startswith("."):
        return p
    return logs_dir / (name if p.suffix else name + ".json")


def find_session(name: str | None, logs_dir: Path) -> Path:
    """What ``/l NAME`` loads: like :func:`session_path`; no name: the newest saved session."""
    if name:
        p = session_path(name, logs_dir)
        if not p.exists() and Path(name).expanduser().exists():
            p = Path(name).expanduser()
        return p
    saved = sorted(logs_dir.glob("*.json"), key=lambda q: q.stat().st_mtime)
    if not saved:
        raise UserError(f"no saved sessions in {logs_dir}")
    return saved[-1]
