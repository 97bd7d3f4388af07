"""The engine's event stream: a handful of tagged, frozen dataclasses, a closed union.

One loop produces these; every surface renders them. A non-streaming response is the events folded
(``api/render_json.py``); SSE is the events rendered as they come (``api/render_sse.py``).

Order guarantees:
- ``MessageStarted`` first, ``MessageFinished`` last, nothing after it.
- Blocks never interleave: ``BlockStarted`` → zero or more deltas of that block → ``BlockFinished``.
  Block indexes are not carried; renderers count ``BlockStarted``/``ServerToolResultReady``.
- ``ServerToolResultReady`` is a whole block, emitted right after its ``ToolCall`` block finished, or
  (for a deferred call resumed from history) before anything else.
- ``Heartbeat`` may come at any time between blocks (while a command runs).
- A loop that cannot go on raises an ``ExecbridgeError``; surfaces turn it into their error format
  (a JSON error response, or an SSE ``error`` event once the stream has started).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from execbridge.types import ContainerRef, ServerToolResult, StopReason, Text, Thinking, ToolCall, Usage


@dataclass(frozen=True, slots=True)
class MessageStarted:
    message_id: str
    model: str
    usage: Usage
    container: ContainerRef | None


@dataclass(frozen=True, slots=True)
class BlockStarted:
    """A text, thinking or tool-call block opens. For calls, ``block.input`` is empty until finished; a
    redacted thinking block opens whole (``block.data`` set)."""

    block: Text | Thinking | ToolCall


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    text: str


@dataclass(frozen=True, slots=True)
class CitationsDelta:
    """A citation added to the open text block (the upstream's citation object, as it came)."""

    citation: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class InputJsonDelta:
    """A fragment of a tool call's JSON input; fragments concatenate to the final input."""

    partial_json: str


@dataclass(frozen=True, slots=True)
class BlockFinished:
    """The open block is complete; ``block`` is its final value (full text, parsed input)."""

    block: Text | Thinking | ToolCall


@dataclass(frozen=True, slots=True)
class ServerToolResultReady:
    result: ServerToolResult


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing new yet; keeps idle connections alive while a command runs."""


@dataclass(frozen=True, slots=True)
class MessageFinished:
    stop_reason: StopReason
    stop_sequence: str | None
    usage: Usage
    container: ContainerRef | None


EngineEvent = (
    MessageStarted
    | BlockStarted
    | TextDelta
    | ThinkingDelta
    | CitationsDelta
    | InputJsonDelta
    | BlockFinished
    | ServerToolResultReady
    | Heartbeat
    | MessageFinished
)
