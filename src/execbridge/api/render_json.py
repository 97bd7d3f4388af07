"""Fold the engine's event stream into one Anthropic ``Message`` JSON object (docs/protocol.md §1.4).

Job: the non-streaming renderer. It is the same events the SSE renderer streams, collected.

Must not: run the loop, catch errors (an ``ExecbridgeError`` raised by the event source propagates to
the caller, which answers with a JSON error response), or re-assemble deltas: ``BlockFinished``
already carries each block's final value, so deltas are skipped here.

Invariants: ``content`` is in event order; ``stop_reason`` is never null in the result; a stream that
ends without ``MessageFinished`` is an engine bug and raises ``RuntimeError`` (→ 500), never a
half-message.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any, assert_never

from execbridge.api.blocks import (
    render_block,
    render_container,
    render_message_shell,
    render_result_block,
    render_usage,
)
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

__all__ = ["MessageFolder", "fold_events", "render_message"]


class MessageFolder:
    """Accumulates events; ``message()`` returns the Message dict once ``MessageFinished`` was seen."""

    __slots__ = ("_content", "_message")

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._content: list[dict[str, Any]] = []

    def add(self, event: EngineEvent) -> None:
        match event:
            case MessageStarted(message_id=message_id, model=model, usage=usage, container=container):
                self._message = render_message_shell(message_id, model, usage, container, self._content)
            case BlockFinished(block=block):
                self._content.append(render_block(block))
            case ServerToolResultReady(result=result):
                self._content.append(render_result_block(result))
            case MessageFinished(stop_reason=stop_reason, stop_sequence=stop_sequence, usage=usage):
                message = self._started()
                message["stop_reason"] = stop_reason
                message["stop_sequence"] = stop_sequence
                message["usage"] = render_usage(usage)
                if event.container is not None:
                    message["container"] = render_container(event.container)
            case BlockStarted() | TextDelta() | ThinkingDelta() | CitationsDelta() | InputJsonDelta() | Heartbeat():
                pass  # the finished block carries the final value; heartbeats are for streams
            case _:
                assert_never(event)

    def _started(self) -> dict[str, Any]:
        if self._message is None:
            raise RuntimeError("engine event stream did not begin with MessageStarted")
        return self._message

    def message(self) -> dict[str, Any]:
        message = self._started()
        if message["stop_reason"] is None:
            raise RuntimeError("engine event stream ended without MessageFinished")
        return message


def fold_events(events: Iterable[EngineEvent]) -> dict[str, Any]:
    """Synchronous fold, for tests and for callers that already hold the events."""
    folder = MessageFolder()
    for event in events:
        folder.add(event)
    return folder.message()


async def render_message(events: AsyncIterable[EngineEvent]) -> dict[str, Any]:
    """Drain the engine's events and return the full Message JSON dict."""
    folder = MessageFolder()
    async for event in events:
        folder.add(event)
    return folder.message()
