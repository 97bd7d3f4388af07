"""Render the engine's event stream as Anthropic server-sent events (docs/protocol.md §3).

Job: the streaming renderer. Each engine event becomes zero or more complete SSE events
(``event: <name>\\ndata: <json>\\n\\n``); ``render_events`` streams them; ``render_stream`` adds the
boundary that ends a started stream with an ``event: error`` if the engine fails (§3.5).

Must not: buffer (every event is written as soon as it is rendered), swallow cancellation (a client
that goes away cancels the engine through the async iterator), or show a client anything but a
deliberate error message (``api.errors.classify``).

Invariants:
- Every event has an ``event:`` line equal to its JSON ``type`` (the SDK skips events without one).
- Block ``index`` counts ``BlockStarted`` and ``ServerToolResultReady`` events: it is the block's
  position in the final ``content`` array.
- Result blocks arrive whole: one ``content_block_start`` holding the full block, then
  ``content_block_stop``.
- Whatever ``BlockFinished`` holds is what the client reassembles: text or thinking the deltas did not
  deliver is sent as one last delta, a call whose input never streamed gets it as one
  ``input_json_delta``, and a thinking signature is sent as ``signature_delta`` before the stop.
- ``message_delta.usage`` is cumulative (the SDK overwrites its snapshot with it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, Final, assert_never

import orjson

from execbridge.api.blocks import (
    render_container,
    render_message_shell,
    render_result_block,
    render_start_block,
    render_usage,
)
from execbridge.api.errors import classify, error_body
from execbridge.engine.events import (
    BlockFinished,
    BlockStarted,
    CitationsDelta,
    EngineEvent,
    Heartbeat,
    InputJsonDelta,
    MessageFinished,
    MessageStarted,
    ServerToolResultReady,
    TextDelta,
    ThinkingDelta,
)
from execbridge.errors import ExecbridgeError
from execbridge.types import ContainerRef, Text, Thinking, ToolCall

__all__ = ["SseRenderer", "render_error_event", "render_events", "render_stream", "sse_event"]

_log = logging.getLogger(__name__)

PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One SSE event. orjson escapes newlines inside strings, so ``data`` is always a single line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _stop(index: int) -> bytes:
    return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})


class SseRenderer:
    """Stateful: counts block indexes and what each open block has streamed so far."""

    __slots__ = ("_container", "_index", "_sent_chars", "_sent_citations", "_sent_json")

    def __init__(self) -> None:
        self._index = -1  # index of the current (or last) block
        self._sent_chars = 0  # text/thinking characters streamed into the open block
        self._sent_citations = 0  # citations streamed into the open text block
        self._sent_json = False  # whether the open call block got any non-empty input_json_delta
        self._container: ContainerRef | None = None

    def render(self, event: EngineEvent) -> bytes:
        match event:
            case MessageStarted(message_id=message_id, model=model, usage=usage, container=container):
                self._container = container
                message = render_message_shell(message_id, model, usage, container, [])
                return sse_event("message_start", {"type": "message_start", "message": message})
            case BlockStarted(block=block):
                self._index += 1
                self._sent_chars = 0
                self._sent_citations = 0
                self._sent_json = False
                start = {
                    "type": "content_block_start",
                    "index": self._index,
                    "content_block": render_start_block(block),
                }
                return sse_event("content_block_start", start)
            case TextDelta(text=text):
                self._sent_chars += len(text)
                return _delta(self._index, {"type": "text_delta", "text": text})
            case ThinkingDelta(text=text):
                self._sent_chars += len(text)
                return _delta(self._index, {"type": "thinking_delta", "thinking": text})
            case CitationsDelta(citation=citation):
                self._sent_citations += 1
                return _delta(self._index, {"type": "citations_delta", "citation": dict(citation)})
            case InputJsonDelta(partial_json=partial_json):
                self._sent_json = self._sent_json or bool(partial_json)  # a leading "" fragment carries nothing
                return _delta(self._index, {"type": "input_json_delta", "partial_json": partial_json})
            case BlockFinished(block=block):
                return self._finish(block)
            case ServerToolResultReady(result=result):
                self._index += 1
                start = {
                    "type": "content_block_start",
                    "index": self._index,
                    "content_block": render_result_block(result),
                }
                return sse_event("content_block_start", start) + _stop(self._index)
            case Heartbeat():
                return PING
            case MessageFinished(stop_reason=stop_reason, stop_sequence=stop_sequence, usage=usage):
                container = event.container if event.container is not None else self._container
                delta = {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": stop_reason,
                        "stop_sequence": stop_sequence,
                        "stop_details": None,
                        "container": render_container(container),
                    },
                    "usage": render_usage(usage, service_tier=False),
                }
                return sse_event("message_delta", delta) + MESSAGE_STOP
            case _:
                assert_never(event)

    def _finish(self, block: Text | Thinking | ToolCall) -> bytes:
        """Close the open block, first sending whatever of its final value the deltas did not carry."""
        out = b""
        index = self._index
        match block:
            case Text(text=text, citations=citations):
                for citation in citations[self._sent_citations :]:
                    out += _delta(index, {"type": "citations_delta", "citation": dict(citation)})
                if len(text) > self._sent_chars:
                    out += _delta(index, {"type": "text_delta", "text": text[self._sent_chars :]})
            case Thinking(data=data) if data is not None:
                pass  # redacted: whole in its content_block_start
            case Thinking(text=text, signature=signature):
                if len(text) > self._sent_chars:
                    out += _delta(index, {"type": "thinking_delta", "thinking": text[self._sent_chars :]})
                if signature:
                    out += _delta(index, {"type": "signature_delta", "signature": signature})
            case ToolCall(input=input_):
                if not self._sent_json and input_:
                    partial = orjson.dumps(dict(input_)).decode()
                    out += _delta(index, {"type": "input_json_delta", "partial_json": partial})
            case _:
                assert_never(block)
        return out + _stop(index)


def render_error_event(exc: BaseException, request_id: str | None = None) -> bytes:
    """``event: error`` for a failure after the stream started; non-deliberate errors say nothing more
    than ``api_error`` / "Internal server error"."""
    return sse_event("error", error_body(classify(exc), request_id))


async def render_events(events: AsyncIterable[EngineEvent]) -> AsyncGenerator[bytes, None]:
    """Render events as they come. Errors from ``events`` propagate: the caller owns the boundary."""
    renderer = SseRenderer()
    async for event in events:
        yield renderer.render(event)


async def render_stream(
    events: AsyncGenerator[EngineEvent, None], request_id: str | None = None, *, first: EngineEvent | None = None
) -> AsyncGenerator[bytes, None]:
    """``render_events`` plus the boundary: an exception from the engine is logged and turned into a
    final ``event: error``; cancellation (``BaseException``) passes through untouched.

    ``first`` is an event the caller already took from ``events`` (to learn the status before sending
    any byte). This is the one place that closes the engine generator, when the stream ends for any
    reason: a client that went away cancels the loop and the command it runs now, not at the garbage
    collector's leisure.
    """
    renderer = SseRenderer()
    try:
        if first is not None:
            yield renderer.render(first)
        async for event in events:
            yield renderer.render(event)
    except Exception as exc:
        if isinstance(exc, ExecbridgeError):
            _log.info("stream ended with %s: %s", type(exc).__name__, exc.message)
        else:
            _log.exception("stream failed with an unexpected error")
        yield render_error_event(exc, request_id)
    finally:
        await events.aclose()
