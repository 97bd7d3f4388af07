"""Estimate a model turn's input tokens where the upstream cannot count them (``count_tokens``).

Claude's tokenizer is not public and OpenAI-compatible servers have no counting endpoint, so where the
upstream does not count (Chat Completions upstreams; Anthropic routes that answer 404, like
Databricks'), the gateway estimates from what the model will really be sent: the system prompt with
the gateway's note, the tool definitions (the code execution sub-tools the gateway offers and the
client's tools), and the conversation as the upstream gets it. The rules (docs/protocol.md,
"count_tokens"):

- text (and tool inputs and definitions as compact JSON): one token per 3.5 bytes of UTF-8, rounded up
  (English prose and code average 3.5 to 4 characters per token on Claude's tokenizer);
- 3 tokens per message and 1 per content block, for the framing;
- with tools: 346 more for the tool-use system prompt Anthropic adds (its published figure for
  ``auto``/``none`` on current models);
- an image: width * height / 750, at most 1,600 (Anthropic's rule; the size is read from PNG and GIF
  headers, other formats count as the maximum);
- a PDF: 2,250 per page (the middle of Anthropic's 1,500 to 3,000 per page), pages counted from the
  file's page objects;
- thinking counts only in the last assistant message (earlier turns' thinking is not part of the
  context Claude reads).

Must not: do I/O. It is an estimate: the response header ``execbridge-token-count: estimate`` says so.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from execbridge.types import Document, Image, Message, Text, Thinking, ToolCall, ToolResult
from execbridge.upstream.base import ChatTurn

__all__ = ["TokenCount", "estimate_tokens"]

BYTES_PER_TOKEN: Final = 3.5
MESSAGE_OVERHEAD: Final = 3
BLOCK_OVERHEAD: Final = 1
TOOL_PROMPT: Final = 346
IMAGE_MAX: Final = 1600
PDF_PAGE: Final = 2250
_PDF_PAGE_OBJECT: Final = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@dataclass(frozen=True, slots=True)
class TokenCount:
    input_tokens: int
    source: Literal["upstream", "estimate"]


def _text(text: str) -> int:
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN) if text else 0


def _json(value: object) -> int:
    return math.ceil(len(orjson.dumps(value, default=dict)) / BYTES_PER_TOKEN)


def estimate_tokens(turn: ChatTurn) -> int:
    """The estimated input tokens of ``turn`` (see the module docstring for the rules)."""
    total = 0
    system = [b.text for b in turn.system_blocks] if turn.system_blocks else [turn.system or ""]
    total += sum(_text(t) for t in system)
    if turn.functions:
        total += TOOL_PROMPT
        for fn in turn.functions:
            total += _json({"name": fn.name, "description": fn.description, "input_schema": fn.parameters})
    last_assistant = max((i for i, m in enumerate(turn.messages) if m.role == "assistant"), default=-1)
    for i, message in enumerate(turn.messages):
        total += MESSAGE_OVERHEAD + _parts(message, count_thinking=i == last_assistant)
    return total


def _parts(message: Message, *, count_thinking: bool) -> int:
    total = 0
    for part in message.parts:
        total += BLOCK_OVERHEAD
        match part:
            case Text(text=text):
                total += _text(text)
            case Thinking(text=text, data=data):
                if count_thinking:
                    total += _text(text) if data is None else _text(data)
            case ToolCall(name=name, input=input_):
                total += _text(name) + _json(input_)
            case ToolResult(content=content):
                total += _content(content)
            case Image():
                total += _image(part)
            case Document():
                total += _document(part)
            case _:
                pass  # container uploads were turned into text notes; server results into tool results
    return total


def _content(parts: Iterable[Text | Image]) -> int:
    return sum(_text(p.text) if isinstance(p, Text) else _image(p) for p in parts)


def _decoded(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return b""


def _image(image: Image) -> int:
    if not image.data:
        return IMAGE_MAX
    head = _decoded(image.data[:64])  # the first 48 bytes hold every header read here
    size: tuple[int, int] | None = None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        size = struct.unpack(">II", head[16:24])
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        size = struct.unpack("<HH", head[6:10])
    if size is None:
        return IMAGE_MAX
    width, height = size
    return max(1, min(IMAGE_MAX, math.ceil(width * height / 750)))


def _document(doc: Document) -> int:
    labels = _text(doc.title or "") + _text(doc.context or "")
    if doc.text is not None:
        return labels + _text(doc.text)
    if doc.data:
        pages = len(_PDF_PAGE_OBJECT.findall(_decoded(doc.data)))
        return labels + (pages * PDF_PAGE if pages else math.ceil(len(doc.data) * 3 / 4 / BYTES_PER_TOKEN))
    return labels + PDF_PAGE  # a URL: one page's worth, unseen
