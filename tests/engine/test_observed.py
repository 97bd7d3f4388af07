"""What the engine reports to telemetry (``engine/observed.py``): a turn's tokens and finish reason, a
tool's outcome and exit code, and the turn or execution that did not finish; nothing at all when off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from execbridge.config import Settings
from execbridge.engine.loop import Engine
from execbridge.engine.observed import observed_tool, observed_turn
from execbridge.errors import SandboxUnavailable, UpstreamError
from execbridge.sandbox.base import ExecutionResult
from execbridge.telemetry import OFF, Sink, Telemetry, ToolReport, TurnReport
from execbridge.testing import FakeContainerService, ScriptedUpstream
from execbridge.types import Caller, CodeExecutionTool, GenerationRequest, Message, Text
from execbridge.upstream import base as up


class Recorder(Sink):
    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.started: list[str] = []

    def turn_started(self, model: str) -> Any:
        self.started.append(f"turn {model}")
        return len(self.started)

    def turn_finished(self, handle: Any, report: TurnReport) -> None:
        self.reports.append((handle, report))

    def tool_started(self, sub_tool: str, call_id: str, container_id: str) -> Any:
        self.started.append(f"tool {sub_tool}")
        return len(self.started)

    def tool_finished(self, handle: Any, report: ToolReport) -> None:
        self.reports.append((handle, report))


def request() -> GenerationRequest:
    return GenerationRequest(
        model="m", max_tokens=100, messages=(Message("user", (Text("go"),)),), tools=(CodeExecutionTool("20250825"),)
    )


def bash_turn(command: str) -> list[up.UpstreamEvent]:
    return [
        up.ToolCallDelta(0, "call_0", "bash_code_execution", f'{{"command": "{command}"}}'),
        up.Finished("tool_calls"),
        up.TokenUsage(10, 5),
    ]


async def run(engine: Engine) -> None:
    async for _ in engine.run(request(), Caller("owner-1")):
        pass


async def test_turns_and_tools_are_reported_with_their_handles() -> None:
    def respond(kind: str, source: str) -> ExecutionResult:
        return ExecutionResult("", "boom", 2, 1.0)

    recorder = Recorder()
    upstream = ScriptedUpstream(bash_turn("false"), [up.TextDelta("ok"), up.Finished("stop"), up.TokenUsage(20, 1)])
    await run(Engine(upstream, FakeContainerService(respond), Settings(), telemetry=Telemetry([recorder])))
    assert recorder.started == ["turn m", "tool bash_code_execution", "turn m"]
    (h1, turn1), (h2, tool), (h3, turn2) = recorder.reports
    assert (h1, h2, h3) == (1, 2, 3)
    assert (turn1.model, turn1.owner, turn1.usage.input_tokens, turn1.usage.output_tokens) == ("m", "owner-1", 10, 5)
    assert (turn1.finish_reason, turn1.error) == ("tool_calls", None)
    assert (tool.sub_tool, tool.owner, tool.outcome, tool.exit_code) == (
        "bash_code_execution",
        "owner-1",
        "nonzero_exit",
        2,
    )
    assert tool.container_id.startswith("container_") and tool.call_id.startswith("srvtoolu_")
    assert (turn2.finish_reason, turn2.usage.input_tokens) == ("stop", 20)


async def test_a_failing_turn_and_a_failing_sandbox_are_reported_so() -> None:
    def respond(kind: str, source: str) -> ExecutionResult:
        raise SandboxUnavailable("the sandbox is down")

    class FailingSecond(ScriptedUpstream):
        async def stream_turn(self, turn: up.ChatTurn) -> Any:
            if len(self.seen) == 1:
                self.seen.append(turn)
                raise UpstreamError("upstream went away", status=502)
                yield  # an async generator
            async for event in super().stream_turn(turn):
                yield event

    recorder = Recorder()
    engine = Engine(
        FailingSecond(bash_turn("x")), FakeContainerService(respond), Settings(), telemetry=Telemetry([recorder])
    )
    with pytest.raises(UpstreamError):
        await run(engine)
    (_, first), (_, tool), (_, second) = recorder.reports
    assert first.error is None
    assert (tool.outcome, tool.exit_code) == ("unavailable", None)
    assert (second.error, second.finish_reason) == ("UpstreamError", None)


async def test_a_consumer_that_leaves_reports_the_turn_cancelled() -> None:
    recorder = Recorder()
    upstream = ScriptedUpstream([up.TextDelta("a"), up.TextDelta("b"), up.Finished("stop")])
    events = Engine(upstream, FakeContainerService(), Settings(), telemetry=Telemetry([recorder])).run(
        request(), Caller("o")
    )
    async for _ in events:
        break  # the message started: leave
    await events.aclose()
    ((_, turn),) = recorder.reports
    assert turn.error == "cancelled"


async def test_off_wraps_nothing() -> None:
    async def stream() -> Any:
        yield up.Finished("stop")

    events = stream()
    assert observed_turn(OFF, events, "m", "o") is events
    coroutine = asyncio.sleep(0)
    assert observed_tool(OFF, coroutine, "bash_code_execution", "c", "k", "o") is coroutine  # type: ignore[arg-type]
    await coroutine
    await events.aclose()
