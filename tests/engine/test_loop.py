"""The tool loop, driven by a neutral scripted upstream and the in-memory fake sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from execbridge.config import Settings
from execbridge.engine.events import (
    BlockFinished,
    BlockStarted,
    EngineEvent,
    InputJsonDelta,
    MessageFinished,
    MessageStarted,
    ServerToolResultReady,
    TextDelta,
)
from execbridge.engine.loop import Engine, _function_choice
from execbridge.errors import InvalidRequest, NotFound, QuotaExceeded, UpstreamError
from execbridge.sandbox.base import ExecutionResult
from execbridge.testing import FakeContainerService, ScriptedUpstream
from execbridge.tools.versions import version_of
from execbridge.types import (
    Caller,
    ClientTool,
    CodeExecutionTool,
    CommandOutcome,
    GenerationRequest,
    Message,
    ServerToolResult,
    Text,
    ToolCall,
    ToolChoice,
    ToolFailure,
    ToolResult,
)
from execbridge.upstream import base as up
from execbridge.upstream.base import FunctionChoice
from execbridge.upstream.stream import events_from_chunks


def call(index: int, name: str, *pieces: str) -> list[up.UpstreamEvent]:
    first, *rest = pieces or ("",)
    return [
        up.ToolCallDelta(index, f"call_{index}", name, first),
        *(up.ToolCallDelta(index, arguments=p) for p in rest),
    ]


def text(t: str) -> list[up.UpstreamEvent]:
    return [up.TextDelta(t)]


def done(reason: up.FinishReason = "stop") -> list[up.UpstreamEvent]:
    return [up.Finished(reason), up.TokenUsage(10, 5)]


BASH_TOOLS = (CodeExecutionTool("20250825"),)


def request(*messages: Message, tools=BASH_TOOLS, **kw) -> GenerationRequest:
    return GenerationRequest(model="m", max_tokens=100, messages=messages, tools=tuple(tools), **kw)


def user(t: str) -> Message:
    return Message("user", (Text(t),))


async def collect(engine: Engine, req: GenerationRequest, owner: str = "k") -> list[EngineEvent]:
    return [e async for e in engine.run(req, Caller(owner))]


def engine_with(upstream: ScriptedUpstream, sandbox: FakeContainerService | None = None, **settings) -> Engine:
    return Engine(upstream, sandbox or FakeContainerService(), Settings(**settings))


async def test_plain_text_turn_streams_and_finishes():
    upstream = ScriptedUpstream(text("Hel") + text("lo") + done())
    events = await collect(engine_with(upstream), request(user("hi"), tools=()))
    assert isinstance(events[0], MessageStarted) and events[0].container is None
    assert [type(e) for e in events[1:]] == [BlockStarted, TextDelta, TextDelta, BlockFinished, MessageFinished]
    finished = events[-1]
    assert finished.stop_reason == "end_turn" and finished.usage.input_tokens == 10
    assert upstream.seen[0].functions == ()


async def test_server_call_runs_and_loops_until_end_turn():
    upstream = ScriptedUpstream(
        text("Let me run it.") + call(0, "bash_code_execution", '{"comm', 'and": "echo hi"}') + done("tool_calls"),
        text("It printed hi.") + done(),
    )
    sandbox = FakeContainerService()
    events = await collect(engine_with(upstream, sandbox), request(user("go")))
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "MessageStarted",
        "BlockStarted", "TextDelta", "BlockFinished",
        "BlockStarted", "InputJsonDelta", "InputJsonDelta", "BlockFinished",
        "ServerToolResultReady",
        "BlockStarted", "TextDelta", "BlockFinished",
        "MessageFinished",
    ]  # fmt: skip
    call_block = events[7].block
    assert call_block.server and call_block.id.startswith("srvtoolu_") and call_block.input == {"command": "echo hi"}
    result = events[8].result
    assert result.tool_use_id == call_block.id
    assert result.outcome == CommandOutcome("bash: echo hi\n", "", 0)
    finished = events[-1]
    assert finished.stop_reason == "end_turn"
    assert finished.usage.code_execution_requests == 1 and finished.usage.input_tokens == 20
    assert finished.container is not None and finished.container.id.startswith("container_")
    # The second upstream turn saw the call and its result as a tool message.
    second = upstream.seen[1].messages
    assert second[-2].parts[-1] == ToolCall(call_block.id, "bash_code_execution", {"command": "echo hi"}, True)
    tool_result = second[-1].parts[0]
    assert isinstance(tool_result, ToolResult) and "bash: echo hi" in tool_result.content[0].text
    assert "code execution" in upstream.seen[0].system


async def test_parallel_server_calls_interleave_with_results():
    upstream = ScriptedUpstream(
        call(0, "bash_code_execution", '{"command": "a"}') + call(1, "bash_code_execution", '{"command": "b"}')
        + done("tool_calls"),
        done(),
    )  # fmt: skip
    events = await collect(engine_with(upstream), request(user("go")))
    shape = [
        (type(e).__name__, getattr(getattr(e, "block", None), "input", None) or getattr(e, "partial_json", None))
        for e in events
    ]
    assert shape[1:-1] == [
        ("BlockStarted", None), ("InputJsonDelta", '{"command": "a"}'), ("BlockFinished", {"command": "a"}),
        ("ServerToolResultReady", None),
        ("BlockStarted", None), ("InputJsonDelta", '{"command":"b"}'), ("BlockFinished", {"command": "b"}),
        ("ServerToolResultReady", None),
    ]  # fmt: skip
    outs = [e.result.outcome.stdout for e in events if isinstance(e, ServerToolResultReady)]
    assert outs == ["bash: a\n", "bash: b\n"]


async def test_client_tool_in_batch_defers_server_call_then_resumes():
    weather = ClientTool("get_weather", "weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    upstream = ScriptedUpstream(
        call(0, "bash_code_execution", '{"command": "date"}') + call(1, "get_weather", '{"city": "Paris"}')
        + done("tool_calls"),
    )  # fmt: skip
    sandbox = FakeContainerService()
    tools = (CodeExecutionTool("20250825"), weather)
    events = await collect(engine_with(upstream, sandbox), request(user("go"), tools=tools))
    assert not any(isinstance(e, ServerToolResultReady) for e in events)
    finished = events[-1]
    assert finished.stop_reason == "tool_use"
    blocks = [e.block for e in events if isinstance(e, BlockFinished)]
    server_call, client_call = blocks
    assert server_call.server and not client_call.server and client_call.id.startswith("toolu_")

    # The client answers its tool; the deferred server call runs first, then the model continues.
    upstream.turns.append(text("Done.") + done())
    follow_up = request(
        user("go"),
        Message("assistant", (server_call, client_call)),
        Message("user", (ToolResult(client_call.id, (Text("15C"),)),)),
        tools=tools,
        container_id=finished.container.id,
    )
    events = await collect(engine_with(upstream, sandbox), follow_up)
    assert isinstance(events[1], ServerToolResultReady) and events[1].result.tool_use_id == server_call.id
    sent = upstream.seen[-1].messages[-1].parts
    assert [p.tool_use_id for p in sent] == [server_call.id, client_call.id]
    assert events[-1].stop_reason == "end_turn"


async def test_iteration_cap_pauses_and_continuation_resumes():
    looping = call(0, "bash_code_execution", '{"command": "x"}') + done("tool_calls")
    upstream = ScriptedUpstream(looping, looping)
    events = await collect(engine_with(upstream, max_iterations=2), request(user("go")))
    assert events[-1].stop_reason == "pause_turn"
    assert sum(isinstance(e, ServerToolResultReady) for e in events) == 2

    content: list = []
    for e in events:
        if isinstance(e, BlockFinished):
            content.append(e.block)
        elif isinstance(e, ServerToolResultReady):
            content.append(e.result)
    upstream.turns.append(text("finished") + done())
    sandbox_events = await collect(
        engine_with(upstream, max_iterations=2),
        request(user("go"), Message("assistant", tuple(content))),
    )
    assert sandbox_events[-1].stop_reason == "end_turn"
    last_turn = upstream.seen[-1].messages
    assert last_turn[-1].role == "assistant" and isinstance(last_turn[-1].parts[-1], ToolResult)


async def test_invalid_arguments_become_invalid_tool_input_and_model_recovers():
    upstream = ScriptedUpstream(
        call(0, "bash_code_execution", '{"command": ') + done("tool_calls"),
        call(0, "text_editor_code_execution", '{"command": "delete", "path": "a"}') + done("tool_calls"),
        text("sorry") + done(),
    )
    events = await collect(engine_with(upstream), request(user("go")))
    outcomes = [e.result.outcome for e in events if isinstance(e, ServerToolResultReady)]
    assert [o.error_code for o in outcomes] == ["invalid_tool_input", "invalid_tool_input"]
    assert "unknown command" in outcomes[1].message
    assert events[-1].stop_reason == "end_turn"


async def test_failing_program_and_timeout_are_results():
    def respond(kind: str, source: str) -> ExecutionResult:
        if source == "slow":
            return ExecutionResult("", "", -9, 1.0, error_code="execution_time_exceeded")
        return ExecutionResult("", "boom\n", 2, 1.0)

    upstream = ScriptedUpstream(
        call(0, "bash_code_execution", '{"command": "fail"}') + call(1, "bash_code_execution", '{"command": "slow"}')
        + done("tool_calls"),
        done(),
    )  # fmt: skip
    events = await collect(engine_with(upstream, FakeContainerService(respond)), request(user("go")))
    outcomes = [e.result.outcome for e in events if isinstance(e, ServerToolResultReady)]
    assert outcomes == [CommandOutcome("", "boom\n", 2), ToolFailure("execution_time_exceeded")]
    rendered = upstream.seen[1].messages[-1].parts
    assert "exit code: 2" in rendered[0].content[0].text and rendered[1].is_error


async def test_unknown_or_foreign_container_is_not_found():
    sandbox = FakeContainerService()
    mine = await sandbox.create("alice")
    upstream = ScriptedUpstream(done())
    with pytest.raises(NotFound):
        await collect(engine_with(upstream, sandbox), request(user("x"), container_id=mine.id), owner="bob")
    with pytest.raises(NotFound):
        await collect(engine_with(upstream, sandbox), request(user("x"), container_id="container_nope"))


async def test_client_tool_named_like_a_sub_tool_is_rejected():
    clash = ClientTool("bash_code_execution", None, {"type": "object"})
    with pytest.raises(InvalidRequest, match="reserved"):
        await collect(engine_with(ScriptedUpstream()), request(user("x"), tools=(CodeExecutionTool("20250825"), clash)))


async def test_databricks_empty_object_placeholder_is_dropped():
    # The upstream's fold takes the placeholder out (upstream/stream.py); the engine gets real arguments.
    pieces = [{"id": "call_0", "function": {"name": "bash_code_execution", "arguments": "{}"}}]
    pieces.append({"function": {"arguments": '{"command": "ls"}'}})
    chunks = [{"choices": [{"delta": {"tool_calls": [{"index": 0, **p}]}}]} for p in pieces]
    upstream = ScriptedUpstream(
        events_from_chunks([*chunks, {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}]),
        done(),
    )
    events = await collect(engine_with(upstream), request(user("go")))
    deltas = [e.partial_json for e in events if isinstance(e, InputJsonDelta)]
    assert deltas == ['{"command": "ls"}']


async def test_python_tool_for_legacy_version():
    upstream = ScriptedUpstream(call(0, "code_execution", '{"code": "print(1)"}') + done("tool_calls"), done())
    events = await collect(engine_with(upstream), request(user("go"), tools=(CodeExecutionTool("20250522"),)))
    result = next(e.result for e in events if isinstance(e, ServerToolResultReady))
    assert result == ServerToolResult(result.tool_use_id, "code_execution", CommandOutcome("python: print(1)\n", "", 0))
    assert [f.name for f in upstream.seen[0].functions] == ["code_execution"]


@pytest.mark.parametrize(
    ("choice", "tool", "expected"),
    [
        (None, None, None),
        (ToolChoice("auto"), None, FunctionChoice("auto")),
        (ToolChoice("any"), None, FunctionChoice("required")),
        (ToolChoice("none"), None, FunctionChoice("none")),
        (ToolChoice("tool", "get_weather"), None, FunctionChoice("function", "get_weather")),
        (
            ToolChoice("tool", "code_execution"),
            CodeExecutionTool("20250522"),
            FunctionChoice("function", "code_execution"),
        ),
        (ToolChoice("tool", "code_execution"), CodeExecutionTool("20250825"), FunctionChoice("required")),
        (ToolChoice("tool", "code_execution"), CodeExecutionTool("20260521"), FunctionChoice("required")),
    ],
)
def test_tool_choice_maps_to_function_choice(choice, tool, expected):
    assert _function_choice(choice, version_of(tool) if tool else None) == expected


async def test_forced_choice_applies_to_the_first_round_only():
    upstream = ScriptedUpstream(call(0, "bash_code_execution", '{"command": "x"}') + done("tool_calls"), done())
    await collect(engine_with(upstream), request(user("go"), tool_choice=ToolChoice("any")))
    assert [t.function_choice for t in upstream.seen] == [FunctionChoice("required"), None]


class RefusingUpstream(ScriptedUpstream):
    async def stream_turn(self, turn: up.ChatTurn) -> AsyncIterator[up.UpstreamEvent]:
        self.seen.append(turn)
        raise UpstreamError("invalid token", status=401)
        yield  # an async generator that fails before its first event


async def test_a_request_the_upstream_refuses_builds_no_container():
    sandbox = FakeContainerService()
    with pytest.raises(UpstreamError):
        await collect(engine_with(RefusingUpstream(), sandbox), request(user("go")))
    assert sandbox.sessions == {}


async def test_the_container_is_announced_when_the_message_starts():
    sandbox = FakeContainerService()
    events = await collect(engine_with(ScriptedUpstream(text("hi") + done()), sandbox), request(user("go")))
    started, finished = events[0], events[-1]
    assert started.container is not None and list(sandbox.sessions) == [started.container.id]
    assert finished.container.id == started.container.id


async def test_no_room_for_a_live_container_is_the_tools_too_many_requests():
    busy = "every live container is in use (2 at most); retry when one is done"

    def no_room(kind: str, source: str) -> ExecutionResult:
        raise QuotaExceeded(busy)

    upstream = ScriptedUpstream(call(0, "bash_code_execution", '{"command": "ls"}') + done("tool_calls"), done())
    events = await collect(engine_with(upstream, FakeContainerService(no_room)), request(user("go")))
    result = next(e.result for e in events if isinstance(e, ServerToolResultReady))
    assert result.outcome == ToolFailure(
        "too_many_requests", "every live container is in use (2 at most); retry when one is done"
    )
