"""The chunk → event fold (upstream/stream.py) without HTTP: Databricks' "{}" placeholder in every
chunking, and the SSE splitter fed bytes directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from execbridge.errors import UpstreamTimeout
from execbridge.upstream.base import Finished, TextDelta, TokenUsage, ToolCallDelta
from execbridge.upstream.stream import events_from_chunks, events_from_completion, sse_events

FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}


def piece(arguments: str, index: int = 0, id: str | None = None, name: str | None = None) -> dict[str, Any]:
    """One tool-call piece; the first piece of a call carries its id and name."""
    fn: dict[str, Any] = {"arguments": arguments}
    if name is not None:
        fn["name"] = name
    return {"index": index, "function": fn} | ({"id": id, "type": "function"} if id else {})


def chunk(*pieces: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"tool_calls": list(pieces)} if pieces else {}
    if content is not None:
        delta["content"] = content
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def first(arguments: str = "", index: int = 0) -> dict[str, Any]:
    return piece(arguments, index, id=f"t{index}", name=f"f{index}")


def started(arguments: str = "", index: int = 0) -> ToolCallDelta:
    """The event of a call's first piece."""
    return ToolCallDelta(index, f"t{index}", f"f{index}", arguments)


def more(arguments: str, index: int = 0) -> ToolCallDelta:
    """The event of a later piece."""
    return ToolCallDelta(index, None, None, arguments)


# ---------------------------------------------------------------- Databricks' "{}" placeholder


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param(
            [chunk(first("{}")), chunk(piece('{"a":')), chunk(piece("1}"))],
            [started(), more('{"a":'), more("1}")],
            id="alone-in-the-first-piece-then-real-pieces",
        ),
        pytest.param(
            [chunk(first()), chunk(piece("{}")), chunk(piece('{"a":1}'))],
            [started(), more('{"a":1}')],
            id="alone-in-a-later-piece-then-real-pieces",
        ),
        pytest.param(
            [chunk(first("{}"), piece('{"a":1}'))],
            [started(), more('{"a":1}')],
            id="placeholder-and-arguments-as-two-pieces-of-one-chunk",
        ),
        pytest.param(
            [chunk(first('{}{"a":')), chunk(piece("1}"))],
            [started('{"a":'), more("1}")],
            id="glued-in-front-of-the-arguments-in-one-piece",
        ),
        pytest.param(
            [chunk(first()), chunk(piece('{} {"a":1}'))],
            [started(), more('{"a":1}')],
            id="glued-with-a-space-in-a-later-piece",
        ),
        pytest.param(
            [chunk(first("{}"))],
            [started(), more("{}")],
            id="the-whole-arguments-in-the-first-piece",
        ),
        pytest.param(
            [chunk(first()), chunk(piece("{}")), chunk(piece(""))],
            [started(), more("{}")],
            id="the-whole-arguments-in-a-later-piece",
        ),
        pytest.param(
            [chunk(first("{}")), chunk(piece("{}"))],
            [started(), more("{}")],
            id="placeholder-then-empty-arguments",
        ),
        pytest.param(
            [chunk(first("{")), chunk(piece("}"))],
            [started("{"), more("}")],
            id="empty-object-in-two-pieces-is-not-a-placeholder",
        ),
        pytest.param(
            [chunk(first('{"a":{}')), chunk(piece("}"))],
            [started('{"a":{}'), more("}")],
            id="real-arguments-are-untouched",
        ),
    ],
)
def test_placeholder_in_every_chunking(chunks, expected):
    assert events_from_chunks([*chunks, FINISH]) == [*expected, Finished("tool_calls")]


def test_held_placeholder_is_sent_before_the_next_call():
    events = events_from_chunks([chunk(first("{}", 0)), chunk(first('{"b":2}', 1)), FINISH])
    assert events == [
        started(),
        more("{}"),
        started('{"b":2}', 1),
        Finished("tool_calls"),
    ]


def test_held_placeholder_is_sent_before_text_and_before_usage():
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    events = events_from_chunks([chunk(first("{}")), chunk(content="after"), chunk(first("{}", 1)), usage, FINISH])
    assert events == [
        started(),
        more("{}"),
        TextDelta("after"),
        started(index=1),
        more("{}", 1),
        TokenUsage(3, 2, 0),
        Finished("tool_calls"),
    ]


@pytest.mark.parametrize(("arguments", "sent"), [("{}", "{}"), ('{}{"a": 1}', '{"a": 1}'), ('{"a": 1}', '{"a": 1}')])
def test_placeholder_in_a_whole_completion(arguments, sent):
    call = {"id": "t0", "type": "function", "function": {"name": "f0", "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    events = events_from_completion({"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
    assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == sent
    assert events[0] == started("" if sent == "{}" else sent)


# ---------------------------------------------------------------- the SSE splitter, fed bytes


async def reads(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("size", [1, 5, 4096])
async def test_sse_events_from_bytes_any_read_size(size):
    body = sse(chunk(first("{}")), chunk(piece('{"a":1}')), FINISH)
    events = [e async for e in sse_events(reads(body, size))]
    assert events == [started(), more('{"a":1}'), Finished("tool_calls")]


async def test_sse_events_past_the_deadline():
    ticks = iter(range(100))
    with pytest.raises(UpstreamTimeout, match="total timeout"):
        async for _ in sse_events(reads(sse(chunk(content="x" * 50), FINISH), 10), 2.5, lambda: next(ticks)):
            pass
