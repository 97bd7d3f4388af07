"""The Responses renderer on its own: engine events in, OpenAI stream events and the Response out."""

from __future__ import annotations

from execbridge.api.responses_render import KEEP_ALIVE, ResponseRenderer, client_view, usage_object
from execbridge.api.responses_request import parse_responses_request
from execbridge.engine.events import (
    BlockFinished,
    BlockStarted,
    Heartbeat,
    InputJsonDelta,
    MessageFinished,
    MessageStarted,
    ServerToolResultReady,
    TextDelta,
    ThinkingDelta,
)
from execbridge.types import (
    CommandOutcome,
    ServerToolResult,
    Text,
    Thinking,
    ToolCall,
    ToolFailure,
    Usage,
)

REQUEST = parse_responses_request(
    {"model": "m", "input": "hi", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}
)
CALL = ToolCall("srvtoolu_X", "code_execution", {"code": 'print("a")'}, server=True)


async def render(events, **options):
    async def source():
        for event in events:
            yield event

    renderer = ResponseRenderer(REQUEST, container_id="cntr_1", **options)
    out = [e async for batch in renderer.render(source()) for e in batch]
    return renderer, out


def started():
    return MessageStarted("msg_1", "m", Usage(), None)


USAGE = Usage(10, 5, 2, 1, 3)


def finished(stop_reason="end_turn"):
    return MessageFinished(stop_reason, None, USAGE, None)


async def test_code_deltas_are_decoded_from_the_growing_arguments():
    pieces = ['{"co', 'de": "pri', 'nt(\\"a', '\\")"}']
    events = [
        started(),
        BlockStarted(ToolCall(CALL.id, CALL.name, {}, server=True)),
        *(InputJsonDelta(p) for p in pieces),
        BlockFinished(CALL),
        Heartbeat(),
        ServerToolResultReady(ServerToolResult(CALL.id, CALL.name, CommandOutcome("a\n", "", 0))),
        finished(),
    ]
    renderer, out = await render(events)
    assert KEEP_ALIVE in out
    out = [e for e in out if e is not KEEP_ALIVE]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    deltas = [e["delta"] for e in out if e["type"] == "response.code_interpreter_call_code.delta"]
    assert "".join(deltas) == 'print("a")' and len(deltas) == 3
    done = next(e for e in out if e["type"] == "response.output_item.done")
    assert done["item"]["outputs"] == [{"type": "logs", "logs": "a\n"}] and done["item"]["status"] == "completed"
    assert renderer.response["status"] == "completed"
    assert renderer.response["usage"] == usage_object(USAGE)
    assert renderer.response["usage"]["input_tokens_details"] == {"cached_tokens": 2, "cache_write_tokens": 3}


async def test_a_deferred_call_gets_its_item_when_its_result_comes():
    result = ServerToolResult(CALL.id, CALL.name, ToolFailure("unavailable", "the sandbox restarted"))
    renderer, out = await render([started(), ServerToolResultReady(result), finished()], calls={CALL.id: CALL})
    kinds = [e["type"] for e in out]
    assert kinds[2:5] == [
        "response.output_item.added",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
    ]
    (item,) = renderer.response["output"]
    assert item["code"] == 'print("a")' and item["status"] == "failed"
    assert item["outputs"] == [{"type": "logs", "logs": "unavailable: the sandbox restarted"}]


async def test_thinking_is_a_reasoning_item_and_limits_make_it_incomplete():
    events = [
        started(),
        BlockStarted(Thinking("")),
        ThinkingDelta("hmm"),
        BlockFinished(Thinking("hmm")),
        BlockStarted(Text("")),
        TextDelta("Partial"),
        BlockFinished(Text("Partial")),
        finished("max_tokens"),
    ]
    renderer, out = await render(events)
    reasoning, message = renderer.response["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [{"type": "reasoning_text", "text": "hmm"}]
    assert message["content"][0]["text"] == "Partial"
    assert out[-1]["type"] == "response.incomplete"
    assert renderer.response["incomplete_details"] == {"reason": "max_output_tokens"}
    _, out = await render([started(), finished("pause_turn")])
    assert out[-1]["response"]["incomplete_details"] == {"reason": "max_messages"}


async def test_failed_and_client_view():
    renderer, _ = await render(
        [
            started(),
            BlockStarted(ToolCall(CALL.id, CALL.name, {}, server=True)),
            BlockFinished(CALL),
            ServerToolResultReady(ServerToolResult(CALL.id, CALL.name, CommandOutcome("a\n", "", 0))),
        ]
    )
    event = renderer.failed("upstream went away")
    assert event["type"] == "response.failed" and event["response"]["error"] == {
        "code": "server_error",
        "message": "upstream went away",
    }
    hidden = client_view(renderer.response, include_outputs=False)
    assert hidden["output"][0]["outputs"] is None and renderer.response["output"][0]["outputs"] is not None
