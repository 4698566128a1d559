"""Append-only, fsync'd JSON-lines files: nothing completed is lost, nothing is repeated.

A leaf's work is split into *units* (one first request and everything that
follows from it). When a unit finishes, all its accepted and rejected samples
and a closing ``{"unit": n, "done": true}`` record go to the journal in one
write, then fsync. On start the journal is read back; a unit without its
closing record (the process died mid-write) is cut off and redone.

The request log keeps every teacher reply as it arrives, keyed by a hash of
the request; a resumed run replays identical requests from it instead of
asking the teacher again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The valid records of a JSON-lines file and the byte length they end at.

    A torn last line (no newline, or not JSON) ends the valid part.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good = 0
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        try:
            rec = json.loads(data[pos:end])
        except ValueError:
            break
        if isinstance(rec, dict):
            records.append(rec)
        pos = good = end + 1
    return records, good


class _AppendFile:
    def __init__(self, path: Path, valid_length: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self.fd, valid_length)  # drop a torn tail before appending
        os.lseek(self.fd, 0, os.SEEK_END)

    def write(self, records: list[dict[str, Any]]) -> None:
        data = "".join(_dumps(r) + "\n" for r in records).encode()
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Journal:
    """The per-leaf journal of finished units."""

    def __init__(self, path: Path):
        records, _ = read_lines(path)
        self.units: dict[int, list[dict[str, Any]]] = {}
        pending: dict[int, list[dict[str, Any]]] = {}
        valid = 0
        offset = 0
        raw = path.read_bytes() if path.exists() else b""
        for rec in records:
            offset = raw.index(b"\n", offset) + 1
            unit = rec.get("unit")
            if not isinstance(unit, int):
                continue
            if rec.get("done"):
                self.units[unit] = pending.pop(unit, [])
                valid = offset
            else:
                pending.setdefault(unit, []).append(rec)
        self._file = _AppendFile(path, valid)

    def samples(self, status: str | None = None) -> list[dict[str, Any]]:
        out = [r for unit in sorted(self.units) for r in self.units[unit]]
        return [r for r in out if status is None or r.get("status") == status]

    def append_unit(self, unit: int, records: list[dict[str, Any]]) -> None:
        lines = [{"unit": unit, **r} for r in records] + [{"unit": unit, "done": True}]
        self._file.write(lines)
        self.units[unit] = [{"unit": unit, **r} for r in records]

    def close(self) -> None:
        self._file.close()


class RequestLog:
    """Teacher replies by request hash, appended as they arrive."""

    def __init__(self, path: Path):
        records, valid = read_lines(path)
        self.replies: dict[str, dict[str, Any]] = {r["key"]: r for r in records if "key" in r}
        self._file = _AppendFile(path, valid)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.replies.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        rec = {"key": key, **record}
        self._file.write([rec])
        self.replies[key] = rec

    def close(self) -> None:
        self._file.close()
