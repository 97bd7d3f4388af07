"""The text of a base64 PDF, for upstreams that take no ``file`` parts (docs/protocol.md §4.9).

Job: ``pdf_text(data)`` extracts a PDF's text layer with pypdf (pure Python, no system libraries), page
by page, bounded by ``MAX_CHARS``; ``None`` when there is none (a scan, a broken or encrypted file).
Results are kept for the last few documents, since every model turn of a request (and the client's
next request) sends the same PDF again.

Must not: run on the event loop for a document not yet seen (``openai_chat`` calls it on a thread
through ``warm``), or let a hostile PDF crash anything: whatever pypdf raises is "no text".
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

import pypdf

__all__ = ["MAX_CHARS", "pdf_text", "warm"]

MAX_CHARS: Final = 200_000  # about 50,000 tokens: more would crowd the model's context out anyway
_CACHED: Final = 16

_cache: OrderedDict[str, str | None] = OrderedDict()
_lock = threading.Lock()
# pypdf reports a sloppy but readable file through logging; that is the author's problem, not ours.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def pdf_text(data: str) -> str | None:
    """The text of the base64 PDF ``data``, pages separated by blank lines, or ``None`` if it has none."""
    with _lock:
        if data in _cache:
            _cache.move_to_end(data)
            return _cache[data]
    text = _extract(data)
    with _lock:
        _cache[data] = text
        while len(_cache) > _CACHED:
            _cache.popitem(last=False)
    return text


def warm(documents: Iterable[str]) -> None:
    """Extract (and keep) the text of each base64 PDF in ``documents``: the slow part, for a thread."""
    for data in documents:
        pdf_text(data)


def _extract(data: str) -> str | None:
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None
    pages: list[str] = []
    size = 0
    try:
        reader = pypdf.PdfReader(io.BytesIO(raw))
        for number, page in enumerate(reader.pages, 1):
            text = page.extract_text().strip()
            if text:
                pages.append(f"[page {number}]\n{text}")
                size += len(pages[-1])
            if size > MAX_CHARS:
                break
    except Exception:  # a boundary: a PDF pypdf cannot read is one without text, never a failed request
        return None
    joined = "\n\n".join(pages)
    if not joined:
        return None
    if len(joined) > MAX_CHARS:
        return joined[:MAX_CHARS] + f"\n[… truncated: only the first {MAX_CHARS} characters are shown]"
    return joined
