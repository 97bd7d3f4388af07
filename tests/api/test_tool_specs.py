"""``allowed_callers`` on client tools and ``caller`` on ``tool_use`` blocks (docs/protocol.md §5.1)."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types.beta import BetaToolUseBlock

from execbridge.api.blocks import render_block
from execbridge.api.wire import parse_messages_request
from execbridge.errors import InvalidRequest
from execbridge.types import ClientTool, CodeExecutionTool, ToolCall

SCHEMA = {"type": "object", "properties": {}}


def request(tools: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "tools": tools, **extra}


@pytest.mark.parametrize(
    ("callers", "direct", "from_code"),
    [
        (None, True, False),
        (["direct"], True, False),
        (["code_execution_20260120"], False, True),
        (["code_execution_20260521", "direct"], True, True),
        (["code_execution_20250825"], False, True),
    ],
)
def test_allowed_callers(callers: list[str] | None, direct: bool, from_code: bool) -> None:
    tool: dict[str, Any] = {"name": "q", "input_schema": SCHEMA}
    if callers is not None:
        tool["allowed_callers"] = callers
    parsed = parse_messages_request(request([{"type": "code_execution_20260120", "name": "code_execution"}, tool]), {})
    (client,) = parsed.client_tools
    assert (client.direct, client.from_code) == (direct, from_code)


def test_a_code_callable_tool_without_the_code_execution_tool_implies_it() -> None:
    parsed = parse_messages_request(
        request([{"name": "q", "input_schema": SCHEMA, "allowed_callers": ["code_execution_20260120"]}]), {}
    )
    assert parsed.code_execution == CodeExecutionTool("20260120")
    assert parsed.code_callable_tools == (ClientTool("q", None, SCHEMA, None, False, True),)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            request([{"name": "q", "input_schema": SCHEMA, "allowed_callers": []}]),
            "tools.0.allowed_callers: expected a non-empty array",
        ),
        (request([{"name": "q", "input_schema": SCHEMA, "allowed_callers": ["code"]}]), "tools.0.allowed_callers.0: "),
        (
            request(
                [{"name": "q", "input_schema": SCHEMA, "allowed_callers": ["code_execution_20260120"]}],
                tool_choice={"type": "tool", "name": "q"},
            ),
            "tool_choice.name: tool 'q' cannot be forced: its allowed_callers do not include 'direct'",
        ),
    ],
)
def test_bad_allowed_callers(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(body, {})
    assert caught.value.message.startswith(message)


def test_a_programmatic_call_renders_its_caller_and_parses_back() -> None:
    call = ToolCall("toolu_1", "q", {"k": 1}, caller="srvtoolu_9")
    block = render_block(call)
    assert block["caller"] == {"type": "code_execution_20260120", "tool_id": "srvtoolu_9"}
    assert BetaToolUseBlock.model_validate(block).caller is not None  # the SDK reads it
    body = request(
        [{"name": "q", "input_schema": SCHEMA, "allowed_callers": ["code_execution_20260120"]}],
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [block]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
        ],
    )
    parsed = parse_messages_request(body, {})
    assert parsed.messages[1].parts == (call,)
    assert render_block(ToolCall("toolu_2", "q", {}))["caller"] == {"type": "direct"}
