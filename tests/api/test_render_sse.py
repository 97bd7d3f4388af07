"""The streaming renderer: golden SSE transcripts, framing rules, and the SDK's own stream accumulator."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import Message

from execbridge.api.render_json import fold_events
from execbridge.api.render_sse import SseRenderer, render_error_event, render_stream
from execbridge.engine.events import (
    BlockFinished,
    BlockStarted,
    CitationsDelta,
    EngineEvent,
    Heartbeat,
    InputJsonDelta,
    MessageFinished,
    MessageStarted,
    TextDelta,
    ThinkingDelta,
)
from execbridge.errors import InvalidRequest, UpstreamOverloaded
from execbridge.types import Text, Thinking, ToolCall, Usage

from ._golden import check_golden
from ._scripts import CONTAINER, SCRIPTS, bash_session, plain_text
from ._sdk import REQUEST, sse_client
from .test_render_json import assert_typed_like


def render_all(events: list[EngineEvent]) -> bytes:
    renderer = SseRenderer()
    return b"".join(renderer.render(e) for e in events)


def _dump(block: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = block.model_dump()
    dumped.pop("parsed_output", None)  # the accumulator's text subclass adds this field
    return dumped


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Strict reading of the framing: every event is exactly ``event:`` + ``data:`` + blank line."""
    assert raw.endswith(b"\n\n")
    events = []
    for chunk in raw[:-2].split(b"\n\n"):
        lines = chunk.split(b"\n")
        assert len(lines) == 2, chunk
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), chunk
        name = lines[0][len(b"event: ") :].decode()
        data = orjson.loads(lines[1][len(b"data: ") :])
        assert data["type"] == name  # the JSON's type equals the event name (docs/protocol.md §3.1)
        events.append((name, data))
    return events


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_golden_stream(name: str) -> None:
    check_golden(f"{name}.sse", render_all(SCRIPTS[name]()))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_framing_and_order(name: str) -> None:
    events = parse_sse(render_all(SCRIPTS[name]()))
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    # indexes count blocks from 0 without gaps; deltas and stops refer to the open block
    open_index = None
    next_index = 0
    for n, data in events:
        if n == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif n in ("content_block_delta", "content_block_stop"):
            assert data["index"] == open_index
            if n == "content_block_stop":
                open_index = None
    assert open_index is None
    # the same blocks, in the same order, as the non-streaming rendering
    assert next_index == len(fold_events(SCRIPTS[name]())["content"])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_sdk_stream_accumulator_ga(name: str) -> None:
    expected = orjson.loads(orjson.dumps(fold_events(SCRIPTS[name]())))
    client = sse_client(render_all(SCRIPTS[name]()))
    with client.messages.stream(**REQUEST) as stream:
        final = stream.get_final_message()
    assert_typed_like(final, expected, "")
    # block for block, the accumulated stream is the non-streaming message
    assert [_dump(b) for b in final.content] == [_dump(b) for b in Message.model_validate(expected).content]
    assert final.container == Message.model_validate(expected).container
    assert final.usage == Message.model_validate(expected).usage.model_copy(update={"service_tier": "standard"})


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_sdk_stream_accumulator_beta(name: str) -> None:
    expected = orjson.loads(orjson.dumps(fold_events(SCRIPTS[name]())))
    client = sse_client(render_all(SCRIPTS[name]()))
    with client.beta.messages.stream(**REQUEST) as stream:
        final = stream.get_final_message()
    assert_typed_like(final, expected, "Beta")


def test_sdk_raw_stream_events_are_typed() -> None:
    client = sse_client(render_all(bash_session()))
    kinds = [type(e).__name__ for e in client.messages.create(**REQUEST, stream=True)]
    assert kinds[0] == "RawMessageStartEvent" and kinds[-1] == "RawMessageStopEvent"
    assert set(kinds) == {
        "RawMessageStartEvent",
        "RawContentBlockStartEvent",
        "RawContentBlockDeltaEvent",
        "RawContentBlockStopEvent",
        "RawMessageDeltaEvent",
        "RawMessageStopEvent",
    }  # ping is skipped by the SDK


def test_start_block_shapes() -> None:
    events = parse_sse(render_all(bash_session()))
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts[0] == {"type": "text", "text": ""}
    assert starts[1] == {
        "type": "server_tool_use",
        "id": "srvtoolu_01C4",
        "name": "text_editor_code_execution",
        "input": {},
        "caller": {"type": "direct"},
    }
    # results arrive whole, with ``content: []``-style complete objects
    assert starts[4]["content"]["content"] == [{"type": "bash_code_execution_output", "file_id": "file_011CTestOut"}]


def test_message_delta_carries_container_and_cumulative_usage() -> None:
    events = parse_sse(render_all(bash_session()))
    _, delta = events[-2]
    assert delta["delta"] == {
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
        "container": {"id": CONTAINER.id, "expires_at": CONTAINER.expires_at},
    }
    assert delta["usage"] == {
        "input_tokens": 1520,
        "output_tokens": 210,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0, "code_execution_requests": 2},
    }


def test_heartbeat_is_ping() -> None:
    assert SseRenderer().render(Heartbeat()) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_final_values_the_deltas_missed_are_sent_before_stop() -> None:
    """An engine that streams nothing (or only part) still yields the right final message in the SDK."""
    events: list[EngineEvent] = [
        MessageStarted("msg_1", "m", Usage(), None),
        BlockStarted(Thinking("")),
        ThinkingDelta("partial "),
        BlockFinished(Thinking("partial thought", "sig==")),
        BlockStarted(Text("")),
        BlockFinished(Text("whole text, no deltas")),
        BlockStarted(Text("")),
        TextDelta("half"),
        BlockFinished(Text("half and half")),
        BlockStarted(ToolCall("srvtoolu_1", "bash_code_execution", {}, server=True)),
        BlockFinished(ToolCall("srvtoolu_1", "bash_code_execution", {"command": "echo 'é\n'"}, server=True)),
        BlockStarted(ToolCall("toolu_2", "lookup", {})),
        InputJsonDelta(""),
        BlockFinished(ToolCall("toolu_2", "lookup", {"q": 1})),
        BlockStarted(ToolCall("toolu_1", "noop", {})),
        BlockFinished(ToolCall("toolu_1", "noop", {})),
        MessageFinished("tool_use", None, Usage(1, 2), None),
    ]
    client = sse_client(render_all(events))
    with client.messages.stream(**REQUEST) as stream:
        final = stream.get_final_message()
    assert final.to_dict()["content"] == [
        {"type": "thinking", "thinking": "partial thought", "signature": "sig=="},
        {"type": "text", "text": "whole text, no deltas"},
        {"type": "text", "text": "half and half"},
        {
            "type": "server_tool_use",
            "id": "srvtoolu_1",
            "name": "bash_code_execution",
            "input": {"command": "echo 'é\n'"},
            "caller": {"type": "direct"},
        },
        {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": 1}, "caller": {"type": "direct"}},
        {"type": "tool_use", "id": "toolu_1", "name": "noop", "input": {}, "caller": {"type": "direct"}},
    ]


async def _aiter(events: list[EngineEvent], fail: BaseException | None = None) -> AsyncGenerator[EngineEvent, None]:
    for event in events:
        yield event
    if fail is not None:
        raise fail


async def _collect(source: AsyncGenerator[EngineEvent, None], request_id: str | None = None) -> bytes:
    return b"".join([chunk async for chunk in render_stream(source, request_id)])


async def test_render_stream_equals_renderer() -> None:
    assert await _collect(_aiter(bash_session())) == render_all(bash_session())


async def test_deliberate_error_mid_stream_becomes_error_event() -> None:
    raw = await _collect(_aiter(plain_text()[:3], UpstreamOverloaded("Overloaded")), "req_1")
    name, data = parse_sse(raw)[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_1",
    }


async def test_unexpected_error_mid_stream_hides_internals() -> None:
    raw = await _collect(_aiter(plain_text()[:3], KeyError("/srv/secret/path")))
    assert b"secret" not in raw
    assert parse_sse(raw)[-1][1]["error"] == {"type": "api_error", "message": "Internal server error"}


def test_error_event_raises_in_the_sdk() -> None:
    raw = render_all(plain_text()[:3]) + render_error_event(InvalidRequest("bad input", code="some_code"))
    client = sse_client(raw)
    with pytest.raises(anthropic.APIStatusError) as caught, client.messages.stream(**REQUEST) as stream:
        stream.get_final_message()
    assert "bad input" in str(caught.value)


class Engine:
    """An engine event stream that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def run(self) -> AsyncGenerator[EngineEvent, None]:
        try:
            for event in bash_session():
                yield event
        finally:
            self.closed = True


async def test_consumer_leaving_closes_the_engine() -> None:
    engine = Engine()
    stream = render_stream(engine.run())
    await anext(stream)
    await stream.aclose()
    assert engine.closed


async def test_consumer_leaving_before_the_rest_closes_the_engine() -> None:
    """The route takes the first event itself; the stream must still close the engine it never iterated."""
    engine = Engine()
    events = engine.run()
    first = await anext(events)
    stream = render_stream(events, first=first)
    await anext(stream)  # only the first event rendered: the engine generator is suspended mid-way
    await stream.aclose()
    assert engine.closed


def test_redacted_thinking_citations_and_cache_usage_accumulate_in_the_sdk() -> None:
    """What an Anthropic-native upstream adds: a redacted block arrives whole, citations as deltas (and
    those a held-back block did not stream before its stop), cache writes in the usage."""
    citation = {
        "type": "char_location",
        "cited_text": "x",
        "document_index": 0,
        "document_title": None,
        "start_char_index": 0,
        "end_char_index": 1,
    }
    late = {**citation, "cited_text": "y"}
    redacted = Thinking("", data="opaque")
    cited = Text("see x and y", citations=(citation, late))
    events: list[EngineEvent] = [
        MessageStarted("msg_1", "m", Usage(), None),
        BlockStarted(Thinking("")),
        ThinkingDelta("hmm"),
        BlockFinished(Thinking("hmm", "sig")),
        BlockStarted(redacted),
        BlockFinished(redacted),
        BlockStarted(Text("")),
        CitationsDelta(citation),
        TextDelta("see x and y"),
        BlockFinished(cited),
        MessageFinished("end_turn", None, Usage(5, 6, 7, 0, 8), None),
    ]
    raw = render_all(events)
    assert [d["delta"]["type"] for n, d in parse_sse(raw) if n == "content_block_delta"] == [
        "thinking_delta",
        "signature_delta",
        "citations_delta",
        "text_delta",
        "citations_delta",
    ]
    with sse_client(raw).messages.stream(**REQUEST) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "redacted_thinking", "text"]
    assert final.content[1].data == "opaque" and final.content[0].signature == "sig"
    assert [c.cited_text for c in final.content[2].citations] == ["x", "y"]
    assert (final.usage.cache_creation_input_tokens, final.usage.cache_read_input_tokens) == (8, 7)
    assert fold_events(events)["content"][1] == {"type": "redacted_thinking", "data": "opaque"}
