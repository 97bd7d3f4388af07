"""``pdf_text``: the text layer of a real PDF, bounded; anything unreadable is no text, never an error."""

from __future__ import annotations

import base64

from execbridge.testing.pdf import pdf_with_text
from execbridge.upstream import pdf_text as module
from execbridge.upstream.pdf_text import MAX_CHARS, pdf_text


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_every_page_is_extracted_in_order():
    text = pdf_text(b64(pdf_with_text("Revenue was 42 (million).", "Costs were 17.")))
    assert text == "[page 1]\nRevenue was 42 (million).\n\n[page 2]\nCosts were 17."


def test_unreadable_input_has_no_text():
    for data in (b64(b"%PDF-1.4\n%%EOF\n"), b64(b"not a pdf at all"), "!!not base64!!", b64(pdf_with_text(""))):
        assert pdf_text(data) is None


def test_long_text_is_cut_at_the_bound():
    line = "x" * 2000
    text = pdf_text(b64(pdf_with_text(*[line] * (MAX_CHARS // 2000 + 5))))
    assert text is not None and text.endswith("characters are shown]")
    assert len(text) < MAX_CHARS + 100


def test_a_document_is_read_once():
    data = b64(pdf_with_text("cached once"))
    assert pdf_text(data) == "[page 1]\ncached once"
    module._cache[data] = "from the cache"  # the next call must not parse the PDF again
    assert pdf_text(data) == "from the cache"
    del module._cache[data]
