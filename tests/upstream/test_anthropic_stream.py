"""Anthropic Messages answers (streamed and whole) → neutral upstream events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from execbridge.errors import UpstreamError, UpstreamOverloaded
from execbridge.testing import Turn
from execbridge.testing.anthropic_route import message_json, message_sse
from execbridge.upstream.anthropic_stream import message_events, sse_message_events
from execbridge.upstream.base import (
    BlockEnd,
    CitationDelta,
    Finished,
    ReasoningDelta,
    RedactedReasoning,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
)

CITATION = {"type": "char_location", "cited_text": "x", "document_index": 0, "start_char_index": 0, "end_char_index": 1}
REPLY = (
    Turn.reasoning("think it over", "The answer.", chunk_chars=5)
    .call("bash_code_execution", command="ls")
    .but(redacted_thinking=True, citations=(CITATION,), prompt_tokens=7, completion_tokens=9, cached_tokens=100)
    .but(cache_creation_tokens=3)
)


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def streamed(events: list[bytes], size: int = 7) -> list[Any]:
    return [e async for e in sse_message_events(chunks(b"".join(events), size))]


def fold(events: list[Any]) -> dict[str, Any]:
    return {
        "text": "".join(e.text for e in events if isinstance(e, TextDelta)),
        "thinking": "".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        "signatures": [e.signature for e in events if isinstance(e, ReasoningDelta) and e.signature],
        "redacted": sum(isinstance(e, RedactedReasoning) for e in events),
        "citations": [e.citation for e in events if isinstance(e, CitationDelta)],
        "arguments": "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)),
        "names": [e.name for e in events if isinstance(e, ToolCallDelta) and e.name],
        "ends": sum(isinstance(e, BlockEnd) for e in events),
        "usage": [e for e in events if isinstance(e, TokenUsage)],
        "finish": events[-1],
    }


@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_a_stream_and_the_whole_message_give_the_same_turn(size: int) -> None:
    sse = list(message_sse(REPLY, "m", "msg_1", ["toolu_1"], 40))
    from_stream = fold(await streamed(sse, size))
    from_json = fold(message_events(message_json(REPLY, "m", "msg_1", ["toolu_1"], 40)))
    assert from_stream == from_json
    assert from_stream["text"] == "The answer." and from_stream["thinking"] == "think it over"
    assert len(from_stream["signatures"]) == 1 and from_stream["redacted"] == 1
    assert from_stream["citations"] == [CITATION] and orjson.loads(from_stream["arguments"]) == {"command": "ls"}
    assert from_stream["ends"] == 4 and from_stream["names"] == ["bash_code_execution"]
    assert from_stream["usage"] == [TokenUsage(7, 9, 100, 3)]
    assert from_stream["finish"] == Finished("tool_calls")


async def test_a_signature_arrives_after_the_thinking_it_signs() -> None:
    events = await streamed(list(message_sse(Turn.reasoning("abc", chunk_chars=1), "m", "msg", [], 1)))
    reasoning = [e for e in events if isinstance(e, ReasoningDelta)]
    assert [e.text for e in reasoning[:-1]][-3:] == ["a", "b", "c"] and reasoning[-1].signature


@pytest.mark.parametrize(
    ("reason", "sequence", "expected"),
    [
        ("end_turn", None, Finished("stop")),
        ("stop_sequence", "###", Finished("stop", "###")),
        ("max_tokens", None, Finished("length")),
        ("refusal", None, Finished("content_filter")),
    ],
)
def test_stop_reasons(reason: str, sequence: str | None, expected: Finished) -> None:
    message = {"type": "message", "content": [], "stop_reason": reason, "stop_sequence": sequence}
    assert message_events(message)[-1] == expected


async def test_an_error_event_after_output_raises_after_what_came_before() -> None:
    sse = list(message_sse(Turn.text("partial"), "m", "msg", [], 1))[:4]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    sse.append(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
    seen: list[Any] = []
    with pytest.raises(UpstreamOverloaded, match="Overloaded"):
        async for event in sse_message_events(chunks(b"".join(sse), 4096)):
            seen.append(event)
    assert "".join(e.text for e in seen if isinstance(e, TextDelta)) == "partial"


async def test_a_stream_cut_before_the_message_stops_is_an_error() -> None:
    sse = list(message_sse(Turn.text("cut"), "m", "msg", [], 1))[:-2]
    with pytest.raises(UpstreamError, match="ended before the message stopped"):
        await streamed(sse)
