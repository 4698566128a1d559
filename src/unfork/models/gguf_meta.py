"""Read the key/value header of a GGUF file without the ``gguf`` package.

Only the metadata at the start of the file is read (never the tensors), and
large arrays (the tokenizer's vocabulary) are skipped unless asked for, so this
is quick even for a gigabyte file. Used to find a model's architecture,
tokenizer type and chat template.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from unfork.errors import UserError

MAGIC = b"GGUF"

# GGUF value types -> struct format for the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFFormatError(UserError):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFFormatError(f"{getattr(f, 'name', 'file')}: truncated GGUF header")
    return data


def _unpack(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    n = _unpack(f, "<Q")
    return _read(f, n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int, keep_arrays: bool) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        item_type = _unpack(f, "<I")
        count = _unpack(f, "<Q")
        if not keep_arrays and item_type in _SCALARS:
            f.seek(count * struct.calcsize(_SCALARS[item_type]), 1)
            return None
        if not keep_arrays and item_type == _STRING:
            for _ in range(count):
                f.seek(_unpack(f, "<Q"), 1)
            return None
        return [_value(f, item_type, keep_arrays) for _ in range(count)]
    raise GGUFFormatError(f"{getattr(f, 'name', 'file')}: unknown GGUF value type {vtype}")


def read_metadata(path: str | Path, *, keep_arrays: bool = False) -> dict[str, Any]:
    """The file's metadata as a dict; arrays are ``None`` unless ``keep_arrays``."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise GGUFFormatError(f"{path}: not a GGUF file (wrong magic bytes)")
        version = _unpack(f, "<I")
        if version < 2:
            raise GGUFFormatError(f"{path}: GGUF version {version} is too old")
        tensor_count = _unpack(f, "<Q")
        kv_count = _unpack(f, "<Q")
        meta: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": tensor_count}
        for _ in range(kv_count):
            key = _string(f)
            vtype = _unpack(f, "<I")
            meta[key] = _value(f, vtype, keep_arrays)
    return meta


def is_gguf(path: str | Path) -> bool:
    try:
        with Path(path).open("rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False
