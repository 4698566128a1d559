"""Validation messages: where, what, which rule and how to fix it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Message:
    line: int  # 1-based
    column: int  # 1-based
    rule: str  # e.g. "schema.required", "lint.trailing-spaces", "read.encoding"
    message: str
    severity: Severity = "error"
    yaml_path: str = ""  # e.g. "seed_examples[3].answer"
    hint: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FileReport:
    path: str  # as given / relative to the taxonomy
    kind: str = "unknown"  # "skill", "knowledge", "foundational_skill" or "unknown"
    version: int | None = None
    errors: list[Message] = field(default_factory=list)
    warnings: list[Message] = field(default_factory=list)
    skipped: bool = False  # e.g. a misnamed qna.yml: warned about, not validated
    foundational: bool = False  # under foundational_skills/: validated, skipped by later stages

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, msg: Message) -> None:
        (self.errors if msg.severity == "error" else self.warnings).append(msg)

    def sort(self) -> None:
        self.errors.sort()
        self.warnings.sort()

    def to_json(self) -> str:
        return json.dumps({
            "path": self.path, "kind": self.kind, "version": self.version,
            "skipped": self.skipped, "foundational": self.foundational,
            "errors": [m.to_json() for m in self.errors],
            "warnings": [m.to_json() for m in self.warnings],
        }, ensure_ascii=False)
