"""Anthropic Messages bytes and dicts → neutral ``UpstreamEvent``s. No HTTP, no sockets.

Job: read an Anthropic-native upstream's answer, streamed (``message_start``, ``content_block_*``,
``message_delta``, ``message_stop``; ``sse_message_events``) or whole (a ``Message`` JSON;
``message_events``), as the events the engine's turn assembler takes: text, thinking (its text and
signature as they come), redacted thinking, citations, tool-call pieces by block index, the end of
each block, the usage and the stop reason. An ``error`` event in the stream becomes an
``UpstreamError`` after what came before it has been yielded.

Must not: know about HTTP, retries or the engine. It is on the hot path: a hand-rolled SSE splitter
and one ``orjson.loads`` per event.

Invariants: events in the order they came; ``TokenUsage`` then exactly one ``Finished``, last; a stream
that ends before ``message_stop`` (or a ``message_delta`` with a stop reason) is an ``UpstreamError``.
Usage is Anthropic's: ``input_tokens`` excludes the tokens read from or written to the cache, which are
counted apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, Final

import orjson

from execbridge.errors import UpstreamError, UpstreamTimeout
from execbridge.upstream.base import (
    BlockEnd,
    CitationDelta,
    Finished,
    FinishReason,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    UpstreamEvent,
)
from execbridge.upstream.error_envelopes import error_from_body
from execbridge.upstream.stream import load_json

__all__ = ["message_events", "sse_message_events"]

_FINISH: Final[dict[str, FinishReason]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # only upstream server tools pause, and the gateway offers none upstream
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_USAGE_KEYS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class _MessageState:
    """One message's fold: the usage counts seen so far and how it stopped."""

    __slots__ = ("stop_reason", "stop_sequence", "stopped", "usage")

    def __init__(self) -> None:
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.stopped = False

    def add_usage(self, usage: Any) -> None:
        # Counts are cumulative: a later report of a key replaces the earlier one.
        if isinstance(usage, Mapping):
            for key in _USAGE_KEYS:
                value = usage.get(key)
                if type(value) is int and value >= 0:
                    self.usage[key] = value

    def feed(self, event: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            _delta(event, out)
        elif kind == "content_block_start":
            _block(event.get("content_block"), _index(event), out, streamed=True)
        elif kind == "content_block_stop":
            out.append(BlockEnd())
        elif kind == "message_start":
            message = event.get("message")
            if isinstance(message, Mapping):
                self.add_usage(message.get("usage"))
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping) and delta.get("stop_reason"):
                self.stop_reason = str(delta["stop_reason"])
                sequence = delta.get("stop_sequence")
                self.stop_sequence = sequence if isinstance(sequence, str) else None
            self.add_usage(event.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            raise error_from_body(None, event, None)
        # ping and event types added later carry nothing the turn needs

    def finish(self, out: list[UpstreamEvent]) -> None:
        usage = self.usage
        if usage:
            out.append(
                TokenUsage(
                    usage.get("input_tokens", 0),
                    usage.get("output_tokens", 0),
                    usage.get("cache_read_input_tokens", 0),
                    usage.get("cache_creation_input_tokens", 0),
                )
            )
        reason = _FINISH.get(self.stop_reason or "", "stop")
        sequence = self.stop_sequence if self.stop_reason == "stop_sequence" else None
        out.append(Finished(reason, sequence))


def _index(event: Mapping[str, Any]) -> int:
    index = event.get("index")
    if type(index) is not int:
        raise UpstreamError(f"the upstream sent a content block event without an index: {event!r:.200}")
    return index


def _block(block: Any, index: int, out: list[UpstreamEvent], *, streamed: bool) -> None:
    """A content block: its start when ``streamed``, else the whole block (with its end)."""
    if not isinstance(block, Mapping):
        raise UpstreamError("the upstream sent a content block that is not an object", code="invalid_chunk")
    kind = block.get("type")
    if kind == "text":
        for citation in block.get("citations") or ():
            out.append(CitationDelta(citation))
        text = block.get("text")
        if text or not streamed:
            out.append(TextDelta(str(text or "")))
    elif kind == "thinking":
        out.append(ReasoningDelta(str(block.get("thinking") or ""), block.get("signature") or None))
    elif kind == "redacted_thinking":
        out.append(RedactedReasoning(str(block.get("data") or "")))
    elif kind == "tool_use":
        raw = block.get("input")
        arguments = "" if streamed and not raw else orjson.dumps(raw or {}).decode()
        out.append(ToolCallDelta(index, str(block.get("id") or ""), str(block.get("name") or ""), arguments))
    else:
        # Upstream server tools (web search, …) are never offered by the gateway; nothing to carry.
        return
    if not streamed:
        out.append(BlockEnd())


def _delta(event: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
    delta = event.get("delta")
    if not isinstance(delta, Mapping):
        raise UpstreamError("the upstream sent a content block delta that is not an object", code="invalid_chunk")
    kind = delta.get("type")
    if kind == "text_delta":
        out.append(TextDelta(str(delta.get("text") or "")))
    elif kind == "thinking_delta":
        out.append(ReasoningDelta(str(delta.get("thinking") or "")))
    elif kind == "signature_delta":
        out.append(ReasoningDelta("", str(delta.get("signature") or "") or None))
    elif kind == "input_json_delta":
        out.append(ToolCallDelta(_index(event), arguments=str(delta.get("partial_json") or "")))
    elif kind == "citations_delta":
        citation = delta.get("citation")
        if isinstance(citation, Mapping):
            out.append(CitationDelta(citation))


def message_events(message: Mapping[str, Any]) -> list[UpstreamEvent]:
    """A whole (non-streamed) ``Message`` as the same events a stream gives."""
    if message.get("type") == "error":
        raise error_from_body(None, message, None)
    out: list[UpstreamEvent] = []
    content = message.get("content")
    if not isinstance(content, list):
        raise UpstreamError("the upstream's message has no content array", code="invalid_chunk")
    for index, block in enumerate(content):
        _block(block, index, out, streamed=False)
    state = _MessageState()
    state.add_usage(message.get("usage"))
    if message.get("stop_reason"):
        state.stop_reason = str(message["stop_reason"])
        sequence = message.get("stop_sequence")
        state.stop_sequence = sequence if isinstance(sequence, str) else None
    state.finish(out)
    return out


async def sse_message_events(
    chunks: AsyncIterator[bytes], deadline: float = math.inf, clock: Callable[[], float] = time.monotonic
) -> AsyncGenerator[UpstreamEvent, None]:
    """Split the SSE byte stream into events (``data:`` lines; the ``event:`` name repeats the JSON's
    ``type``, so it is not read) and fold each into upstream events. Past ``deadline`` the turn fails."""
    state = _MessageState()
    out: list[UpstreamEvent] = []
    pending = b""
    data: list[bytes] = []
    async for chunk in chunks:
        if clock() > deadline:
            raise UpstreamTimeout("the upstream did not finish the turn within the total timeout", status=None)
        lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line and line[-1] == 13:  # CR of a CRLF line ending
                line = line[:-1]
            if line:
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                continue
            if not data:
                continue
            payload = data[0] if len(data) == 1 else b"\n".join(data)
            data.clear()
            try:
                event = load_json(payload)
                if not isinstance(event, Mapping):
                    raise UpstreamError(f"the upstream sent a stream event that is not an object: {payload[:200]!r}")
                state.feed(event, out)
            except UpstreamError:
                for item in out:  # what came before the error still reaches the consumer
                    yield item
                raise
        if out:
            for item in out:
                yield item
            out.clear()
        if state.stopped:
            break
    if pending.strip() and not state.stopped:
        tail = pending.rstrip(b"\r")
        if tail.startswith(b"data:"):
            event = load_json(tail[5:].lstrip(b" "))
            if isinstance(event, Mapping):
                state.feed(event, out)
    if not state.stopped and state.stop_reason is None:
        for item in out:
            yield item
        raise UpstreamError("the upstream stream ended before the message stopped", code="stream_truncated")
    if state.stopped:
        async for _ in chunks:  # read to the end of the body so the connection can be reused
            pass
    state.finish(out)
    for item in out:
        yield item
