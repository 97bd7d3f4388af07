"""The engine's model turns and tool executions, reported to ``Telemetry`` as they happen.

The loop hands its upstream stream and its tool run through ``observed_turn`` / ``observed_tool``; both
give back what they were given untouched when telemetry is off, so the loop pays nothing then.

Must not: change an event, a result or an exception; read a tool's input or output beyond its exit code.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

from execbridge.errors import QuotaExceeded
from execbridge.telemetry import Telemetry, ToolReport, TurnReport
from execbridge.types import AwaitingTools, CommandOutcome, ToolFailure, ToolOutcome, Usage
from execbridge.upstream import base as up


def observed_turn(
    telemetry: Telemetry, events: AsyncGenerator[up.UpstreamEvent, None], model: str, owner: str
) -> AsyncGenerator[up.UpstreamEvent, None]:
    """``events`` (one upstream turn), reporting its duration, tokens and finish reason when it ends."""
    if not telemetry.enabled:
        return events
    return _turn(telemetry, events, model, owner)


async def _turn(
    telemetry: Telemetry, events: AsyncGenerator[up.UpstreamEvent, None], model: str, owner: str
) -> AsyncGenerator[up.UpstreamEvent, None]:
    handles = telemetry.turn_started(model)
    began = time.perf_counter()
    usage = Usage()
    finish: str | None = None
    error: str | None = "cancelled"  # until the stream ends or raises: a consumer that left early
    try:
        async for event in events:
            if isinstance(event, up.TokenUsage):
                usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
            elif isinstance(event, up.Finished):
                finish = event.reason
            yield event
        error = None
    except Exception as exc:
        error = type(exc).__name__
        raise
    finally:
        await events.aclose()
        report = TurnReport(model, owner, time.perf_counter() - began, usage, finish, error)
        telemetry.turn_finished(handles, report)


def observed_tool(
    telemetry: Telemetry,
    run: Coroutine[Any, Any, ToolOutcome | AwaitingTools],
    sub_tool: str,
    call_id: str,
    container_id: str,
    owner: str,
) -> Coroutine[Any, Any, ToolOutcome | AwaitingTools]:
    """``run`` (one tool execution), reporting its duration, outcome and exit code when it ends."""
    if not telemetry.enabled:
        return run
    return _tool(telemetry, run, sub_tool, call_id, container_id, owner)


async def _tool(
    telemetry: Telemetry,
    run: Coroutine[Any, Any, ToolOutcome | AwaitingTools],
    sub_tool: str,
    call_id: str,
    container_id: str,
    owner: str,
) -> ToolOutcome | AwaitingTools:
    handles = telemetry.tool_started(sub_tool, call_id, container_id)
    began = time.perf_counter()
    outcome_name, exit_code = "cancelled", None
    try:
        outcome = await run
        outcome_name, exit_code = _outcome(outcome)
        return outcome
    except Exception as exc:
        # What the loop answers the model for it (``Engine._outcome_of``).
        outcome_name = "too_many_requests" if isinstance(exc, QuotaExceeded) else "unavailable"
        raise
    finally:
        duration = time.perf_counter() - began
        report = ToolReport(sub_tool, call_id, container_id, owner, duration, outcome_name, exit_code)
        telemetry.tool_finished(handles, report)


def _outcome(outcome: ToolOutcome | AwaitingTools) -> tuple[str, int | None]:
    if isinstance(outcome, AwaitingTools):  # a REPL cell suspended on client tools (PTC)
        return "awaiting_tools", None
    if isinstance(outcome, ToolFailure):
        return outcome.error_code, None
    if isinstance(outcome, CommandOutcome):
        return ("ok" if outcome.return_code == 0 else "nonzero_exit"), outcome.return_code
    return "ok", None
