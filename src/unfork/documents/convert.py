"""Read a knowledge document's bytes as text: Markdown and plain text as UTF-8, PDF with ``pypdf``.

Only the text layer of a PDF is read (extra ``pdf``); nothing here runs OCR.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from unfork.errors import MissingExtraError, UserError

TEXT_SUFFIXES = (".md", ".markdown", ".txt")
PDF_SUFFIXES = (".pdf",)

_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


@dataclass
class Document:
    source: str  # path inside the repository, e.g. "docs/marrowvey.md"
    text: str  # plain text or Markdown


def document_from_bytes(source: str, data: bytes, *, target: str | None = None) -> Document:
    """The ``Document`` that ``data`` holds; its type is read from ``target`` (a link's file) or ``source``."""
    return Document(source, _to_text(source, target or source, data))


def _to_text(source: str, target: str, data: bytes) -> str:
    if len(data) < 1024 and data.startswith(_LFS_POINTER):
        raise UserError(f"{source} is a Git LFS pointer, not the document itself",
                        hint="unfork does not download LFS objects: commit the document without LFS")
    suffix = PurePosixPath(target).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        text = _decode(source, data)
    elif suffix in PDF_SUFFIXES:
        text = _pdf_text(source, data)
    else:
        raise UserError(f"{source} is not a supported document type ({suffix or 'no extension'})",
                        hint="knowledge documents must be Markdown (.md), plain text (.txt) or PDF")
    if not text.strip():
        raise UserError(f"the document {source} is empty",
                        hint="a knowledge document needs text to learn from")
    return text


def _decode(source: str, data: bytes) -> str:
    if b"\0" in data:
        raise UserError(f"{source} is a binary file, not text",
                        hint="a .md or .txt document must be UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{source} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})",
                        hint="save the document as UTF-8") from err
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _pdf_text(source: str, data: bytes) -> str:
    try:
        import pypdf
    except ImportError:
        raise MissingExtraError("pypdf", "pdf", "Reading PDF knowledge documents") from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            reader.decrypt("")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as err:  # pypdf raises many types on a damaged or hostile file
        raise UserError(f"cannot read the PDF {source}: {err}",
                        hint="check that the file opens in a PDF viewer, or convert it to Markdown") from err
    text = "\n\n".join(p for p in pages if p)
    if not text:
        raise UserError(f"the PDF {source} has no text layer (a scan?)",
                        hint="unfork does not run OCR: convert the document to Markdown")
    return text
