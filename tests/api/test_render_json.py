"""The non-streaming renderer: golden Message JSON, and fidelity with the official SDK's classes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from anthropic.types import Message
from anthropic.types.beta import BetaMessage

from execbridge.api.render_json import MessageFolder, fold_events, render_message
from execbridge.engine.events import EngineEvent, MessageFinished
from execbridge.errors import UpstreamTimeout
from execbridge.types import Usage

from ._golden import check_golden
from ._scripts import SCRIPTS, bash_session, plain_text
from ._sdk import REQUEST, json_client

# wire block → (GA class of the block, GA class of its ``content`` when that is a typed object)
_RESULT_CLASSES: dict[str, tuple[str, str]] = {
    "code_execution_result": ("CodeExecutionToolResultBlock", "CodeExecutionResultBlock"),
    "code_execution_tool_result_error": ("CodeExecutionToolResultBlock", "CodeExecutionToolResultErrorObject"),
    "bash_code_execution_result": ("BashCodeExecutionToolResultBlock", "BashCodeExecutionResultBlock"),
    "bash_code_execution_tool_result_error": (
        "BashCodeExecutionToolResultBlock",
        "BashCodeExecutionToolResultErrorObject",
    ),
    "text_editor_code_execution_view_result": (
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionViewResultBlock",
    ),
    "text_editor_code_execution_create_result": (
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionCreateResultBlock",
    ),
    "text_editor_code_execution_str_replace_result": (
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionStrReplaceResultBlock",
    ),
    "text_editor_code_execution_tool_result_error": (
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionToolResultErrorObject",
    ),
}
_SIMPLE_CLASSES = {
    "text": "TextBlock",
    "thinking": "ThinkingBlock",
    "tool_use": "ToolUseBlock",
    "server_tool_use": "ServerToolUseBlock",
}


def expected_classes(block: dict[str, Any]) -> tuple[str, str | None]:
    if block["type"] in _SIMPLE_CLASSES:
        return _SIMPLE_CLASSES[block["type"]], None
    return _RESULT_CLASSES[block["content"]["type"]]


def assert_typed_like(parsed: Message | BetaMessage, rendered: dict[str, Any], prefix: str) -> None:
    """Every SDK block is the exact typed class the wire block names, never a fallback or error variant,
    and carries the same data."""
    assert len(parsed.content) == len(rendered["content"])
    for block, wire in zip(parsed.content, rendered["content"], strict=True):
        outer, inner = expected_classes(wire)
        # the stream accumulator hands back its ``Parsed…`` subclass of the text block
        assert type(block).__name__ in (prefix + outer, "Parsed" + prefix + outer), wire
        if inner is not None:
            content: Any = block.content  # type: ignore[union-attr]
            assert type(content).__name__ == prefix + inner, wire
            assert content.to_dict() == wire["content"]
        if wire["type"] in ("tool_use", "server_tool_use"):
            assert block.input == wire["input"]  # type: ignore[union-attr]
    if rendered["container"] is not None:
        assert parsed.container is not None
        assert parsed.container.id == rendered["container"]["id"]
    assert parsed.stop_reason == rendered["stop_reason"]
    assert parsed.stop_sequence == rendered["stop_sequence"]
    assert parsed.usage.input_tokens == rendered["usage"]["input_tokens"]
    assert parsed.usage.output_tokens == rendered["usage"]["output_tokens"]
    assert parsed.usage.server_tool_use is not None
    # the documented, untyped counter survives the SDK (it keeps unknown keys)
    assert (
        parsed.usage.server_tool_use.to_dict()["code_execution_requests"]
        == (rendered["usage"]["server_tool_use"]["code_execution_requests"])
    )


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_golden_message(name: str) -> None:
    rendered = fold_events(SCRIPTS[name]())
    check_golden(f"{name}.json", orjson.dumps(rendered, option=orjson.OPT_INDENT_2) + b"\n")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_sdk_model_validate_both_namespaces(name: str) -> None:
    rendered = orjson.loads(orjson.dumps(fold_events(SCRIPTS[name]())))
    assert_typed_like(Message.model_validate(rendered), rendered, "")
    assert_typed_like(BetaMessage.model_validate(rendered), rendered, "Beta")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_sdk_client_parses_response(name: str) -> None:
    """Through the SDK's real HTTP client and response parsing, GA and beta."""
    body = orjson.dumps(fold_events(SCRIPTS[name]()))
    rendered = orjson.loads(body)
    client = json_client(body)
    assert_typed_like(client.messages.create(**REQUEST), rendered, "")
    assert_typed_like(client.beta.messages.create(**REQUEST), rendered, "Beta")


def test_message_shape() -> None:
    rendered = fold_events(plain_text())
    assert list(rendered) == [
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "stop_details",
        "usage",
        "container",
    ]
    assert rendered["content"] == [{"type": "text", "text": "Hi!", "citations": None}]
    assert rendered["usage"] == {
        "input_tokens": 25,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0, "code_execution_requests": 0},
        "service_tier": "standard",
    }
    assert rendered["container"] is None


def test_container_from_finish_wins() -> None:
    events = bash_session()
    rendered = fold_events(events)
    assert rendered["container"] == {
        "id": "container_011CPR5CNjB747bTd36fQLFk",
        "expires_at": "2026-11-24T12:34:56.000000Z",
    }


async def _aiter(events: list[EngineEvent], fail: BaseException | None = None) -> AsyncIterator[EngineEvent]:
    for event in events:
        yield event
    if fail is not None:
        raise fail


async def test_render_message_async_equals_fold() -> None:
    assert await render_message(_aiter(bash_session())) == fold_events(bash_session())


async def test_engine_error_propagates() -> None:
    with pytest.raises(UpstreamTimeout):
        await render_message(_aiter(bash_session()[:5], UpstreamTimeout("slow")))


def test_stream_without_finish_is_an_engine_bug() -> None:
    with pytest.raises(RuntimeError, match="without MessageFinished"):
        fold_events(plain_text()[:-1])
    with pytest.raises(RuntimeError, match="MessageStarted"):
        MessageFolder().add(MessageFinished("end_turn", None, Usage(), None))
