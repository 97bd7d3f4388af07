"""Request parsing: every accepted shape (table-driven), every 400 with its exact message, and the
round trip render → parse → render for response content."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic.types import Message as SdkMessage
from anthropic.types.beta import BetaMessage

from execbridge.api.blocks import render_block
from execbridge.api.wire import api_version, parse_content, parse_messages_request
from execbridge.errors import InvalidRequest
from execbridge.types import (
    CacheControl,
    ClientTool,
    CodeExecutionTool,
    CommandOutcome,
    ContainerUpload,
    CreateOutcome,
    Document,
    GenerationRequest,
    Image,
    Message,
    OutputFile,
    Part,
    Sampling,
    ServerToolResult,
    StrReplaceOutcome,
    Text,
    Thinking,
    ThinkingConfig,
    ToolCall,
    ToolChoice,
    ToolFailure,
    ToolResult,
    ViewOutcome,
)

from ._sdk import capture_requests

OLD = {"anthropic-version": "2023-06-01"}
NEW = {"anthropic-version": "2026-10-21"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
CE = {"type": "code_execution_20250825", "name": "code_execution"}
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather",
    "input_schema": {"type": "object", "properties": {}},
}


def body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    base.update(fields)
    return base


def nested(levels: int) -> dict[str, Any]:
    """An object nesting ``levels`` objects and arrays (``{"k": [{"k": …}]}``)."""
    value: Any = {} if levels % 2 else []
    for _ in range(levels - 1):
        value = [value] if isinstance(value, dict) else {"k": value}
    return value


TOOL_USE: dict[str, Any] = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
TOOL_RESULT: dict[str, Any] = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15C"}


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def msgs(*messages: dict[str, Any]) -> dict[str, Any]:
    return body(messages=list(messages))


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def result(kind: str, tool_use_id: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "tool_use_id": tool_use_id, "content": content}


# ---------------------------------------------------------------- accepted content blocks

# (id, message list, expected neutral messages)
CONTENT_CASES: list[tuple[str, list[dict[str, Any]], tuple[Message, ...]]] = [
    ("string content", [{"role": "user", "content": "hi"}], (Message("user", (Text("hi"),)),)),
    (
        "text blocks with cache breakpoints and citations carried",
        [user(text("a", cache_control={"type": "ephemeral"}, citations=[{"type": "char_location"}]), text("b"))],
        (Message("user", (Text("a", CacheControl(), ({"type": "char_location"},)), Text("b"))),),
    ),
    (
        "consecutive same-role turns merge",
        [user(text("a")), {"role": "user", "content": "b"}, assistant(text("c")), assistant(text("d"))],
        (Message("user", (Text("a"), Text("b"))), Message("assistant", (Text("c"), Text("d")))),
    ),
    (
        "empty final assistant turn is a prefill",
        [user(text("a")), {"role": "assistant", "content": ""}],
        (Message("user", (Text("a"),)), Message("assistant", (Text(""),))),
    ),
    (
        "images",
        [
            user(
                {"type": "image", "source": PNG}, {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}
            )
        ],
        (Message("user", (Image("image/png", "iVBORw0KGgo="), Image(url="https://x/a.png"))),),
    ),
    (
        "documents",
        [
            user(
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                    "title": "T",
                    "context": "C",
                    "citations": {"enabled": True},
                },
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}},
                {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}},
                {"type": "document", "source": {"type": "content", "content": [text("p1"), text("p2")]}},
                {"type": "document", "source": {"type": "content", "content": "whole"}},
            )
        ],
        (
            Message(
                "user",
                (
                    Document("application/pdf", data="JVBERi0=", title="T", context="C", citations=True),
                    Document("text/plain", text="plain"),
                    Document(url="https://x/a.pdf"),
                    Document("text/plain", text="p1\n\np2"),
                    Document("text/plain", text="whole"),
                ),
            ),
        ),
    ),
    (
        "client tool round",
        [
            user(text("weather?")),
            assistant(
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                    "caller": {"type": "direct"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
                {"type": "tool_use", "id": "toolu_3", "name": "get_weather", "input": {}},
            ),
            user(
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [
                        text("a"),
                        {"type": "image", "source": PNG},
                        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}},
                    ],
                },
                {"type": "tool_result", "tool_use_id": "toolu_3"},
            ),
        ],
        (
            Message("user", (Text("weather?"),)),
            Message(
                "assistant",
                (
                    Thinking("hmm", "sig"),
                    Thinking("", data="opaque"),
                    ToolCall("toolu_1", "get_weather", {"city": "Paris"}),
                    ToolCall("toolu_2", "get_weather", {}),
                    ToolCall("toolu_3", "get_weather", {}),
                ),
            ),
            Message(
                "user",
                (
                    ToolResult("toolu_1", (Text("15C"),)),
                    ToolResult("toolu_2", (Text("a"), Image("image/png", "iVBORw0KGgo="), Text("d")), is_error=True),
                    ToolResult("toolu_3", ()),
                ),
            ),
        ),
    ),
    (
        "container upload",
        [user(text("analyse"), {"type": "container_upload", "file_id": "file_1", "cache_control": None})],
        (Message("user", (Text("analyse"), ContainerUpload("file_1"))),),
    ),
    (
        "every server result variant in history",
        [
            user(text("go")),
            assistant(
                {"type": "server_tool_use", "id": "s1", "name": "code_execution", "input": {"code": "print(2)"}},
                result(
                    "code_execution_tool_result",
                    "s1",
                    {
                        "type": "code_execution_result",
                        "stdout": "2\n",
                        "stderr": "",
                        "return_code": 0,
                        "content": [{"type": "code_execution_output", "file_id": "file_a"}],
                    },
                ),
                result(
                    "code_execution_tool_result",
                    "s2",
                    {
                        "type": "encrypted_code_execution_result",
                        "encrypted_stdout": "ENC",
                        "stderr": "w",
                        "return_code": 1,
                        "content": [],
                    },
                ),
                result(
                    "code_execution_tool_result",
                    "s3",
                    {"type": "code_execution_tool_result_error", "error_code": "execution_time_exceeded"},
                ),
                {"type": "server_tool_use", "id": "s4", "name": "bash_code_execution", "input": {"command": "ls"}},
                result(
                    "bash_code_execution_tool_result",
                    "s4",
                    {"type": "bash_code_execution_result", "stdout": "a\n", "stderr": "", "return_code": 0},
                ),
                result(
                    "bash_code_execution_tool_result",
                    "s5",
                    {"type": "bash_code_execution_tool_result_error", "error_code": "output_file_too_large"},
                ),
                result(
                    "text_editor_code_execution_tool_result",
                    "s6",
                    {"type": "text_editor_code_execution_view_result", "file_type": "text", "content": "x"},
                ),
                result(
                    "text_editor_code_execution_tool_result",
                    "s7",
                    {"type": "text_editor_code_execution_create_result", "is_file_update": True},
                ),
                result(
                    "text_editor_code_execution_tool_result",
                    "s8",
                    {"type": "text_editor_code_execution_str_replace_result"},
                ),
                result(
                    "text_editor_code_execution_tool_result",
                    "s9",
                    {
                        "type": "text_editor_code_execution_tool_result_error",
                        "error_code": "file_not_found",
                        "error_message": "no such file",
                    },
                ),
            ),
        ],
        (
            Message("user", (Text("go"),)),
            Message(
                "assistant",
                (
                    ToolCall("s1", "code_execution", {"code": "print(2)"}, server=True),
                    ServerToolResult(
                        "s1", "code_execution", CommandOutcome("2\n", "", 0, (OutputFile("file_a", "", 0),))
                    ),
                    ServerToolResult("s2", "code_execution", CommandOutcome("", "w", 1)),
                    ServerToolResult("s3", "code_execution", ToolFailure("execution_time_exceeded")),
                    ToolCall("s4", "bash_code_execution", {"command": "ls"}, server=True),
                    ServerToolResult("s4", "bash_code_execution", CommandOutcome("a\n", "", 0)),
                    ServerToolResult("s5", "bash_code_execution", ToolFailure("output_file_too_large")),
                    ServerToolResult("s6", "text_editor_code_execution", ViewOutcome("text", "x")),
                    ServerToolResult("s7", "text_editor_code_execution", CreateOutcome(True)),
                    ServerToolResult("s8", "text_editor_code_execution", StrReplaceOutcome(None, None, None, None, ())),
                    ServerToolResult("s9", "text_editor_code_execution", ToolFailure("file_not_found", "no such file")),
                ),
            ),
        ),
    ),
    (
        "a result block in a user turn is tolerated",
        [
            user(
                result(
                    "bash_code_execution_tool_result",
                    "s1",
                    {"type": "bash_code_execution_result", "stdout": "", "stderr": "", "return_code": 0, "content": []},
                )
            )
        ],
        (Message("user", (ServerToolResult("s1", "bash_code_execution", CommandOutcome("", "", 0)),)),),
    ),
]


@pytest.mark.parametrize(("messages", "expected"), [c[1:] for c in CONTENT_CASES], ids=[c[0] for c in CONTENT_CASES])
def test_content_parses(messages: list[dict[str, Any]], expected: tuple[Message, ...]) -> None:
    assert parse_messages_request(body(messages=messages), OLD).messages == expected


# ---------------------------------------------------------------- accepted top-level fields

# (id, request body, headers, expected GenerationRequest fields)
FIELD_CASES: list[tuple[str, dict[str, Any], dict[str, str], dict[str, Any]]] = [
    (
        "minimal defaults",
        body(),
        {},
        {
            "system": None,
            "tools": (),
            "tool_choice": None,
            "stop_sequences": (),
            "sampling": Sampling(),
            "user_id": None,
            "stream": False,
            "container_id": None,
        },
    ),
    ("system string", body(system="be brief"), OLD, {"system": "be brief"}),
    (
        "system blocks join with a blank line",
        body(system=[text("a", cache_control={"type": "ephemeral"}), text("b")]),
        OLD,
        {"system": "a\n\nb"},
    ),
    ("empty system is none", body(system=[]), OLD, {"system": None}),
    (
        "tools",
        body(tools=[WEATHER, {"type": "custom", "name": "t2", "input_schema": {"type": "object"}, "strict": True}, CE]),
        OLD,
        {
            "tools": (
                ClientTool("get_weather", "Weather", WEATHER["input_schema"]),
                ClientTool("t2", None, {"type": "object"}),
                CodeExecutionTool("20250825"),
            )
        },
    ),
    *[
        (
            f"code execution {v}",
            body(
                tools=[
                    {
                        "type": f"code_execution_{v}",
                        "name": "code_execution",
                        "allowed_callers": ["direct"],
                        "cache_control": None,
                    }
                ]
            ),
            OLD,
            {"tools": (CodeExecutionTool(v),)},
        )  # type: ignore[arg-type]
        for v in ("20250522", "20250825", "20260120", "20260521")
    ],
    ("tool_choice auto", body(tools=[WEATHER], tool_choice={"type": "auto"}), OLD, {"tool_choice": ToolChoice("auto")}),
    (
        "tool_choice any, no parallel",
        body(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True}),
        OLD,
        {"tool_choice": ToolChoice("any", None, True)},
    ),
    (
        "tool_choice tool",
        body(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}),
        OLD,
        {"tool_choice": ToolChoice("tool", "get_weather")},
    ),
    (
        "tool_choice forcing the server tool",
        body(tools=[CE], tool_choice={"type": "tool", "name": "code_execution"}),
        OLD,
        {"tool_choice": ToolChoice("tool", "code_execution")},
    ),
    ("tool_choice none without tools", body(tool_choice={"type": "none"}), OLD, {"tool_choice": ToolChoice("none")}),
    (
        "generation parameters",
        body(
            stop_sequences=["</a>"],
            temperature=0.2,
            top_p=1,
            top_k=5,
            metadata={"user_id": "u1"},
            stream=True,
            thinking={"type": "enabled", "budget_tokens": 2048},
            service_tier="auto",
            unknown_future_field=1,
        ),
        OLD,
        {"stop_sequences": ("</a>",), "sampling": Sampling(0.2, 1.0, 5), "user_id": "u1", "stream": True},
    ),
    ("integral float max_tokens", body(max_tokens=1024.0), OLD, {"max_tokens": 1024}),
    ("max_tokens zero pre-warms", body(max_tokens=0), OLD, {"max_tokens": 0}),
    ("max_tokens at the bound", body(max_tokens=2**31 - 1), OLD, {"max_tokens": 2**31 - 1}),
    ("max_tokens as an exponent", body(max_tokens=1e3), OLD, {"max_tokens": 1000}),
    (
        "inputs and schemas nested to the bound",
        body(
            tools=[{**WEATHER, "input_schema": nested(100)}],
            messages=[
                user(text("q")),
                assistant({"type": "tool_use", "id": "t", "name": "n", "input": nested(100)}),
                user({"type": "tool_result", "tool_use_id": "t"}),
            ],
        ),
        OLD,
        {"max_tokens": 100},
    ),
    ("container string", body(container="container_1"), OLD, {"container_id": "container_1"}),
    ("container object", body(container={"id": "container_1", "skills": None}), OLD, {"container_id": "container_1"}),
    ("container object without id", body(container={"id": None, "skills": []}), OLD, {"container_id": None}),
    ("metadata null", body(metadata=None), OLD, {"user_id": None}),
    ("new dialect plain request", body(stream=False), NEW, {"sampling": Sampling()}),
    (
        "new dialect allows assistant citations",
        msgs(user(text("q")), assistant(text("a", citations=[{"x": 1}]))),
        NEW,
        {"system": None},
    ),
    ("new dialect allows empty user citations", msgs(user(text("q", citations=[]))), NEW, {"system": None}),
    ("old dialect allows user citations", msgs(user(text("q", citations=[{"x": 1}]))), OLD, {"system": None}),
    (
        "old dialect allows assistant documents",
        msgs(user(text("q")), assistant({"type": "document", "source": {"type": "url", "url": "u"}})),
        OLD,
        {"system": None},
    ),
    # system messages (newer API versions) join the system prompt in order, and are no turn of their own
    (
        "system messages join the system prompt",
        body(
            system="top",
            messages=[
                {"role": "system", "content": "first"},
                user(text("q")),
                {"role": "system", "content": [text("second"), text("third")]},
                user(text("more")),
            ],
        ),
        NEW,
        {"system": "top\n\nfirst\n\nsecond\n\nthird", "messages": (Message("user", (Text("q"), Text("more"))),)},
    ),
    (
        "system message without a system field",
        body(messages=[{"role": "system", "content": "s"}, user(text("q"))]),
        OLD,
        {"system": "s"},
    ),
    (
        "thinking enabled",
        body(thinking={"type": "enabled", "budget_tokens": 2048}),
        OLD,
        {"thinking": ThinkingConfig("enabled", 2048)},
    ),
    (
        "thinking adaptive",
        body(thinking={"type": "adaptive", "display": "omitted"}),
        NEW,
        {"thinking": ThinkingConfig("adaptive", None, "omitted")},
    ),
    ("thinking disabled", body(thinking={"type": "disabled"}), OLD, {"thinking": ThinkingConfig("disabled")}),
    # whitespace-only text is the model's own in assistant turns (before a call): kept, never refused
    ("assistant whitespace text", msgs(user(text("q")), assistant(text("\n\n"))), OLD, {"system": None}),
]


@pytest.mark.parametrize(("raw", "headers", "expected"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_fields_parse(raw: dict[str, Any], headers: dict[str, str], expected: dict[str, Any]) -> None:
    parsed = parse_messages_request(raw, headers)
    assert isinstance(parsed, GenerationRequest)
    for name, value in expected.items():
        assert getattr(parsed, name) == value, name


def test_parsing_does_not_mutate_the_body() -> None:
    raw = msgs(user(text("a")), user(text("b")), assistant(text("c")))
    before = copy.deepcopy(raw)
    parse_messages_request(raw, OLD)
    assert raw == before


# ---------------------------------------------------------------- every 400

SUPPORTED = "code_execution_20250522, code_execution_20250825, code_execution_20260120, code_execution_20260521"

# (id, request body, headers, exact error message)
INVALID_CASES: list[tuple[str, object, dict[str, str], str]] = [
    ("body not an object", [1], OLD, "body: expected a JSON object, got array"),
    (
        "unknown version",
        body(),
        {"anthropic-version": "2024-01-01"},
        "anthropic-version: unsupported API version '2024-01-01'; supported: 2023-06-01, 2026-10-21",
    ),
    ("model missing", {"max_tokens": 1, "messages": []}, OLD, "model: Field required"),
    ("model not a string", body(model=3), OLD, "model: expected a string, got number"),
    ("max_tokens missing", {"model": "m", "messages": []}, OLD, "max_tokens: Field required"),
    ("max_tokens string", body(max_tokens="10"), OLD, "max_tokens: expected an integer, got string"),
    ("max_tokens bool", body(max_tokens=True), OLD, "max_tokens: expected an integer, got boolean"),
    ("max_tokens fraction", body(max_tokens=1.5), OLD, "max_tokens: expected an integer, got number"),
    ("max_tokens negative", body(max_tokens=-1), OLD, "max_tokens: must be at least 0"),
    ("max_tokens past 32 bits", body(max_tokens=2**31), OLD, "max_tokens: must be at most 2147483647"),
    ("max_tokens huge float", body(max_tokens=1e30), OLD, "max_tokens: must be at most 2147483647"),
    ("max_tokens huge negative float", body(max_tokens=-1e30), OLD, "max_tokens: must be at least 0"),
    ("max_tokens past 64 bits", body(max_tokens=2**64), OLD, "max_tokens: must be at most 2147483647"),
    ("top_k past 32 bits", body(top_k=2**31), OLD, "top_k: must be at most 2147483647"),
    (
        "tool_use input nested too deep",
        msgs(user(text("q")), assistant({"type": "tool_use", "id": "t", "name": "n", "input": nested(101)})),
        OLD,
        "messages.1.content.0.input: nests objects and arrays more than 100 levels deep",
    ),
    (
        "server_tool_use input nested too deep",
        msgs(
            user(text("q")),
            assistant({"type": "server_tool_use", "id": "s", "name": "bash_code_execution", "input": nested(101)}),
        ),
        OLD,
        "messages.1.content.0.input: nests objects and arrays more than 100 levels deep",
    ),
    (
        "input_schema nested too deep",
        body(tools=[{**WEATHER, "input_schema": nested(101)}]),
        OLD,
        "tools.0.input_schema: nests objects and arrays more than 100 levels deep",
    ),
    (
        "result return code past 64 bits",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "bash_code_execution_tool_result",
                    "s",
                    {"type": "bash_code_execution_result", "stdout": "", "stderr": "", "return_code": 1e30},
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.return_code: must be at most 9223372036854775807",
    ),
    ("messages missing", {"model": "m", "max_tokens": 1}, OLD, "messages: Field required"),
    ("messages not a list", body(messages={}), OLD, "messages: expected an array, got object"),
    ("messages empty", body(messages=[]), OLD, "messages: at least one message is required"),
    ("message not an object", body(messages=["hi"]), OLD, "messages.0: expected an object, got string"),
    (
        "role missing",
        body(messages=[{"content": "x"}]),
        OLD,
        "messages.0.role: Field required (one of 'user', 'assistant', 'system')",
    ),
    (
        "role unknown",
        body(messages=[{"role": "tool", "content": "x"}]),
        OLD,
        "messages.0.role: expected one of 'user', 'assistant', 'system', got 'tool'",
    ),
    (
        "role not a string",
        body(messages=[{"role": 1, "content": "x"}]),
        OLD,
        "messages.0.role: expected one of 'user', 'assistant', 'system', got number",
    ),
    ("temperature bool", body(temperature=True), OLD, "temperature: expected a number, got boolean"),
    ("content missing", body(messages=[{"role": "user"}]), OLD, "messages.0.content: Field required"),
    (
        "content number",
        body(messages=[{"role": "user", "content": 5}]),
        OLD,
        "messages.0.content: expected a string or an array of content blocks, got number",
    ),
    (
        "empty content mid-conversation",
        msgs(user(), assistant(text("a"))),
        OLD,
        "messages.0.content: all messages must have non-empty content except for the optional final assistant message",
    ),
    (
        "empty final user content",
        msgs(user(text("a")), assistant(text("b")), {"role": "user", "content": ""}),
        OLD,
        "messages.2.content: all messages must have non-empty content except for the optional final assistant message",
    ),
    (
        "too many messages",
        body(messages=[{"role": "user", "content": "x"}] * 100_001),
        OLD,
        "messages: at most 100000 messages are allowed, got 100001",
    ),
    ("block not an object", msgs(user("hi")), OLD, "messages.0.content.0: expected a content block object, got string"),
    ("block type missing", msgs(user({"text": "x"})), OLD, "messages.0.content.0.type: Field required"),
    (
        "block type unknown",
        msgs(user(text("a"), {"type": "search_result"})),
        OLD,
        "messages.0.content.1.type: unsupported content block type 'search_result'",
    ),
    ("text missing", msgs(user({"type": "text"})), OLD, "messages.0.content.0.text: Field required"),
    (
        "text not a string",
        msgs(user({"type": "text", "text": None})),
        OLD,
        "messages.0.content.0.text: expected a string, got null",
    ),
    ("image source missing", msgs(user({"type": "image"})), OLD, "messages.0.content.0.source: Field required"),
    (
        "image media type",
        msgs(user(text("a"), {"type": "image", "source": {**PNG, "media_type": "image/bmp"}})),
        OLD,
        "messages.0.content.1.source.media_type: expected one of 'image/jpeg', 'image/png', 'image/gif', 'image/webp', "
        "got 'image/bmp'",
    ),
    (
        "image data missing",
        msgs(user({"type": "image", "source": {"type": "base64", "media_type": "image/png"}})),
        OLD,
        "messages.0.content.0.source.data: Field required",
    ),
    (
        "image url missing",
        msgs(user({"type": "image", "source": {"type": "url"}})),
        OLD,
        "messages.0.content.0.source.url: Field required",
    ),
    (
        "image file source",
        msgs(user({"type": "image", "source": {"type": "file", "file_id": "file_1"}})),
        OLD,
        "messages.0.content.0.source.type: 'file' image sources are not supported by this gateway; send base64 or url",
    ),
    (
        "image source type",
        msgs(user({"type": "image", "source": {"type": "s3"}})),
        OLD,
        "messages.0.content.0.source.type: expected one of 'base64', 'url', 'file', got 's3'",
    ),
    (
        "pdf media type",
        msgs(user({"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": "x"}})),
        OLD,
        "messages.0.content.0.source.media_type: expected one of 'application/pdf', got 'text/plain'",
    ),
    (
        "text document media type",
        msgs(user({"type": "document", "source": {"type": "text", "data": "x"}})),
        OLD,
        "messages.0.content.0.source.media_type: Field required (one of 'text/plain')",
    ),
    (
        "document file source",
        msgs(user({"type": "document", "source": {"type": "file", "file_id": "f"}})),
        OLD,
        "messages.0.content.0.source.type: 'file' document sources are not supported by this gateway; "
        "send base64, text or url",
    ),
    (
        "document content with image",
        msgs(
            user(
                {
                    "type": "document",
                    "source": {"type": "content", "content": [text("a"), {"type": "image", "source": PNG}]},
                }
            )
        ),
        OLD,
        "messages.0.content.0.source.content.1.type: only text blocks are supported inside a content document source",
    ),
    (
        "document title",
        msgs(user({"type": "document", "source": {"type": "url", "url": "u"}, "title": 1})),
        OLD,
        "messages.0.content.0.title: expected a string or null, got number",
    ),
    (
        "tool_use in a user turn",
        msgs(user({"type": "tool_use", "id": "t", "name": "n", "input": {}})),
        OLD,
        "messages.0.content.0: tool_use blocks are only allowed in assistant messages",
    ),
    (
        "server_tool_use in a user turn",
        msgs(user({"type": "server_tool_use", "id": "t", "name": "n", "input": {}})),
        OLD,
        "messages.0.content.0: server_tool_use blocks are only allowed in assistant messages",
    ),
    (
        "thinking in a user turn",
        msgs(user({"type": "thinking", "thinking": "t", "signature": "s"})),
        OLD,
        "messages.0.content.0: thinking blocks are only allowed in assistant messages",
    ),
    (
        "tool_result in an assistant turn",
        msgs(user(text("q")), assistant({"type": "tool_result", "tool_use_id": "t"})),
        OLD,
        "messages.1.content.0: tool_result blocks are only allowed in user messages",
    ),
    (
        "thinking without signature",
        msgs(user(text("q")), assistant({"type": "thinking", "thinking": "t"})),
        OLD,
        "messages.1.content.0.signature: Field required",
    ),
    (
        "tool_use input not an object",
        msgs(user(text("q")), assistant({"type": "tool_use", "id": "t", "name": "n", "input": "{}"})),
        OLD,
        "messages.1.content.0.input: expected an object, got string",
    ),
    (
        "server tool we do not serve",
        msgs(user(text("q")), assistant({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}})),
        OLD,
        "messages.1.content.0.name: server tool 'web_search' is not supported by this gateway; supported: "
        "bash_code_execution, code_execution, text_editor_code_execution",
    ),
    (
        "tool_result content number",
        msgs(user({"type": "tool_result", "tool_use_id": "t", "content": 3})),
        OLD,
        "messages.0.content.0.content: expected a string or an array of blocks, got number",
    ),
    (
        "tool_result content block",
        msgs(user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "search_result"}]})),
        OLD,
        "messages.0.content.0.content.0.type: expected one of 'text', 'image', 'document', got 'search_result'",
    ),
    (
        "tool_result pdf document",
        msgs(
            user(
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "document", "source": {"type": "url", "url": "u"}}],
                }
            )
        ),
        OLD,
        "messages.0.content.0.content.0: only text documents are supported inside tool_result content",
    ),
    (
        "tool_result is_error",
        msgs(user({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"})),
        OLD,
        "messages.0.content.0.is_error: expected a boolean, got string",
    ),
    (
        "container_upload without id",
        msgs(user({"type": "container_upload"})),
        OLD,
        "messages.0.content.0.file_id: Field required",
    ),
    (
        "result content type",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "bash_code_execution_tool_result",
                    "s",
                    {"type": "code_execution_result", "stdout": "", "stderr": "", "return_code": 0},
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.type: expected one of 'bash_code_execution_result', "
        "'bash_code_execution_tool_result_error', got 'code_execution_result'",
    ),
    (
        "result error code",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "code_execution_tool_result",
                    "s",
                    {"type": "code_execution_tool_result_error", "error_code": "container_expired"},
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.error_code: expected one of 'execution_time_exceeded', 'file_not_found', "
        "'invalid_tool_input', 'output_file_too_large', 'too_many_requests', 'unavailable', got 'container_expired'",
    ),
    (
        "result return code",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "code_execution_tool_result",
                    "s",
                    {"type": "code_execution_result", "stdout": "", "stderr": "", "return_code": "0"},
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.return_code: expected an integer, got string",
    ),
    (
        "encrypted result without ciphertext",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "code_execution_tool_result",
                    "s",
                    {"type": "encrypted_code_execution_result", "stderr": "", "return_code": 0},
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.encrypted_stdout: Field required",
    ),
    (
        "result output file type",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "bash_code_execution_tool_result",
                    "s",
                    {
                        "type": "bash_code_execution_result",
                        "stdout": "",
                        "stderr": "",
                        "return_code": 0,
                        "content": [{"type": "code_execution_output", "file_id": "f"}],
                    },
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.content.0.type: expected one of 'bash_code_execution_output', "
        "got 'code_execution_output'",
    ),
    (
        "view file type",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "text_editor_code_execution_tool_result",
                    "s",
                    {"type": "text_editor_code_execution_view_result", "file_type": "binary", "content": ""},
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.file_type: expected one of 'text', 'image', 'pdf', got 'binary'",
    ),
    (
        "create flag",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "text_editor_code_execution_tool_result", "s", {"type": "text_editor_code_execution_create_result"}
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.is_file_update: Field required",
    ),
    (
        "str_replace lines",
        msgs(
            user(text("q")),
            assistant(
                result(
                    "text_editor_code_execution_tool_result",
                    "s",
                    {"type": "text_editor_code_execution_str_replace_result", "lines": [1]},
                )
            ),
        ),
        OLD,
        "messages.1.content.0.content.lines: expected an array of strings, got array",
    ),
    (
        "result without content",
        msgs(user(text("q")), assistant({"type": "code_execution_tool_result", "tool_use_id": "s"})),
        OLD,
        "messages.1.content.0.content: Field required",
    ),
    ("system number", body(system=1), OLD, "system: expected a string or an array of text blocks, got number"),
    (
        "system image block",
        body(system=[{"type": "image", "source": PNG}]),
        OLD,
        "system.0.type: expected one of 'text', got 'image'",
    ),
    ("tools not a list", body(tools={}), OLD, "tools: expected an array, got object"),
    ("tool not an object", body(tools=["x"]), OLD, "tools.0: expected a tool object, got string"),
    *[
        (
            f"server tool {kind}",
            body(tools=[WEATHER, {"type": kind, "name": "x"}]),
            OLD,
            f"tools.1.type: tool type {kind!r} is not supported by this gateway; supported server tools: {SUPPORTED} "
            "(client tools have no type, or type 'custom')",
        )
        for kind in (
            "web_search_20250305",
            "web_fetch_20250910",
            "bash_20250124",
            "text_editor_20250728",
            "computer_20250124",
            "memory_20250818",
            "code_execution_20991231",
        )
    ],
    (
        "tool type not a string",
        body(tools=[{"type": 1, "name": "x"}]),
        OLD,
        "tools.0.type: expected a string, got number",
    ),
    (
        "code execution misnamed",
        body(tools=[{"type": "code_execution_20250825", "name": "python"}]),
        OLD,
        "tools.0.name: expected one of 'code_execution', got 'python'",
    ),
    (
        "duplicate client tools",
        body(tools=[WEATHER, CE, WEATHER]),
        OLD,
        "tools.2.name: tool names must be unique; 'get_weather' is already used by tools.0",
    ),
    (
        "two code execution tools",
        body(tools=[CE, {"type": "code_execution_20250522", "name": "code_execution"}]),
        OLD,
        "tools.1.name: tool names must be unique; 'code_execution' is already used by tools.0",
    ),
    (
        "client tool shadows a sub-tool",
        body(tools=[{**WEATHER, "name": "bash_code_execution"}, CE]),
        OLD,
        "tools.0.name: 'bash_code_execution' is reserved by the code_execution_20250825 tool",
    ),
    (
        "client tool named code_execution",
        body(tools=[{**WEATHER, "name": "code_execution"}, CE]),
        OLD,
        "tools.1.name: tool names must be unique; 'code_execution' is already used by tools.0",
    ),
    (
        "tool name pattern",
        body(tools=[{**WEATHER, "name": "get weather"}]),
        OLD,
        "tools.0.name: tool names must match ^[a-zA-Z0-9_-]{1,64}$, got 'get weather'",
    ),
    ("tool input_schema missing", body(tools=[{"name": "t"}]), OLD, "tools.0.input_schema: Field required"),
    (
        "tool input_schema type",
        body(tools=[{"name": "t", "input_schema": {"type": "array"}}]),
        OLD,
        "tools.0.input_schema.type: expected 'object', got 'array'",
    ),
    (
        "tool description",
        body(tools=[{**WEATHER, "description": 1}]),
        OLD,
        "tools.0.description: expected a string or null, got number",
    ),
    (
        "tool_choice not an object",
        body(tools=[WEATHER], tool_choice="auto"),
        OLD,
        "tool_choice: expected an object, got string",
    ),
    (
        "tool_choice type",
        body(tools=[WEATHER], tool_choice={"type": "required"}),
        OLD,
        "tool_choice.type: expected one of 'auto', 'any', 'tool', 'none', got 'required'",
    ),
    (
        "tool_choice unknown tool",
        body(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}),
        OLD,
        "tool_choice.name: tool 'nope' is not among the provided tools",
    ),
    (
        "tool_choice tool without name",
        body(tools=[WEATHER], tool_choice={"type": "tool"}),
        OLD,
        "tool_choice.name: Field required",
    ),
    (
        "tool_choice any without tools",
        body(tool_choice={"type": "any"}),
        OLD,
        "tool_choice: 'any' may only be specified while providing tools",
    ),
    (
        "tool_choice parallel flag",
        body(tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": 1}),
        OLD,
        "tool_choice.disable_parallel_tool_use: expected a boolean, got number",
    ),
    (
        "stop_sequences string",
        body(stop_sequences="x"),
        OLD,
        "stop_sequences: expected an array of strings, got string",
    ),
    ("stop_sequences item", body(stop_sequences=["a", 1]), OLD, "stop_sequences.1: expected a string, got number"),
    ("temperature range", body(temperature=1.5), OLD, "temperature: must be between 0 and 1"),
    ("temperature type", body(temperature="hot"), OLD, "temperature: expected a number, got string"),
    ("top_p range", body(top_p=-0.1), OLD, "top_p: must be between 0 and 1"),
    ("top_k negative", body(top_k=-1), OLD, "top_k: must be at least 0"),
    *[
        (
            f"new dialect {key}",
            body(**{key: 0}),
            NEW,
            f"{key}: removed in anthropic-version 2026-10-21; omit it or send anthropic-version 2023-06-01",
        )
        for key in ("temperature", "top_p", "top_k")
    ],
    (
        "new dialect null temperature",
        body(temperature=None),
        NEW,
        "temperature: removed in anthropic-version 2026-10-21; omit it or send anthropic-version 2023-06-01",
    ),
    (
        "new dialect assistant document",
        msgs(user(text("q")), assistant({"type": "document", "source": {"type": "url", "url": "u"}})),
        NEW,
        "messages.1.content.0: document blocks are not allowed in assistant messages with anthropic-version 2026-10-21",
    ),
    (
        "new dialect user citations",
        msgs(user(text("q", citations=[{"type": "char_location"}]))),
        NEW,
        "messages.0.content.0.citations: text blocks with citations are not allowed in user messages with "
        "anthropic-version 2026-10-21",
    ),
    ("metadata not an object", body(metadata="u"), OLD, "metadata: expected an object, got string"),
    ("metadata user id", body(metadata={"user_id": 1}), OLD, "metadata.user_id: expected a string or null, got number"),
    ("stream not a bool", body(stream="yes"), OLD, "stream: expected a boolean, got string"),
    ("container number", body(container=1), OLD, "container: expected a string or an object, got number"),
    ("container id number", body(container={"id": 1}), OLD, "container.id: expected a string or null, got number"),
    (
        "container skills",
        body(container={"id": None, "skills": [{"skill_id": "pptx", "type": "anthropic"}]}),
        OLD,
        "container.skills: Agent Skills are not supported by this gateway",
    ),
    # Anthropic's own conversation checks, at the client's indexes and in Anthropic's words
    (
        "empty text block",
        msgs(user(text("q"), text(""))),
        OLD,
        "messages.0.content.1: text content blocks must be non-empty",
    ),
    (
        "whitespace user text block",
        msgs(user(text(" \n"))),
        OLD,
        "messages.0.content.0: text content blocks must contain non-whitespace text",
    ),
    (
        "tool_result for an unknown id",
        msgs(
            user(text("q")), assistant(TOOL_USE), user(TOOL_RESULT, {"type": "tool_result", "tool_use_id": "toolu_9"})
        ),
        OLD,
        "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9. Each `tool_result` "
        "block must have a corresponding `tool_use` block in the previous message.",
    ),
    (
        "tool_result in the first message",
        msgs(user(TOOL_RESULT)),
        OLD,
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_1. Each `tool_result` "
        "block must have a corresponding `tool_use` block in the previous message.",
    ),
    (
        "tool_result two turns after its call",
        msgs(user(text("q")), assistant(TOOL_USE), user(TOOL_RESULT), assistant(text("ok")), user(TOOL_RESULT)),
        OLD,
        "messages.4.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_1. Each `tool_result` "
        "block must have a corresponding `tool_use` block in the previous message.",
    ),
    (
        "unanswered tool_use, counted in the client's own messages",
        msgs(
            {"role": "system", "content": "s"},
            user(text("q")),
            assistant(text("calling")),
            assistant(TOOL_USE),
            user(text("never mind")),
        ),
        OLD,
        "messages.3: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. Each "
        "`tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "unanswered tool_use at the end",
        msgs(user(text("q")), assistant(TOOL_USE)),
        OLD,
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. Each "
        "`tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    (
        "tool_use id used twice",
        msgs(user(text("q")), assistant(TOOL_USE, TOOL_USE)),
        OLD,
        "messages.1.content.1: `tool_use` ids must be unique; toolu_1 is used twice",
    ),
    (
        "only system messages",
        body(messages=[{"role": "system", "content": "s"}]),
        OLD,
        "messages: at least one user or assistant message is required",
    ),
    (
        "system message content not text",
        body(messages=[{"role": "system", "content": [{"type": "image"}]}]),
        OLD,
        "messages.0.content.0.type: expected one of 'text', got 'image'",
    ),
    (
        "thinking budget too small",
        body(thinking={"type": "enabled", "budget_tokens": 1000}),
        OLD,
        "thinking.budget_tokens: must be at least 1024",
    ),
    ("thinking without a budget", body(thinking={"type": "enabled"}), OLD, "thinking.budget_tokens: Field required"),
    (
        "thinking type unknown",
        body(thinking={"type": "maybe"}),
        OLD,
        "thinking.type: expected one of 'enabled', 'disabled', 'adaptive', got 'maybe'",
    ),
]


@pytest.mark.parametrize(
    ("raw", "headers", "message"), [c[1:] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_requests(raw: object, headers: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(raw, headers)
    assert caught.value.message == message
    assert type(caught.value) is InvalidRequest


def test_api_version() -> None:
    assert api_version({}) == "2023-06-01"
    assert api_version({"anthropic-version": " 2026-10-21 "}) == "2026-10-21"


# ---------------------------------------------------------------- render → parse → render

GOLDEN = Path(__file__).parent / "golden"

# The content of the complete non-streaming example of docs/protocol.md §2.13, verbatim.
EXAMPLE_2_13: list[dict[str, Any]] = [
    {"type": "text", "text": "I'll write a script and run it."},
    {
        "type": "server_tool_use",
        "id": "srvtoolu_01C4…",
        "name": "text_editor_code_execution",
        "input": {"command": "create", "path": "stats.py", "file_text": "import numpy as np\nprint(np.std([1,2,3]))\n"},
    },
    {
        "type": "text_editor_code_execution_tool_result",
        "tool_use_id": "srvtoolu_01C4…",
        "content": {"type": "text_editor_code_execution_create_result", "is_file_update": False},
    },
    {
        "type": "server_tool_use",
        "id": "srvtoolu_01D5…",
        "name": "bash_code_execution",
        "input": {"command": "python stats.py"},
    },
    {
        "type": "bash_code_execution_tool_result",
        "tool_use_id": "srvtoolu_01D5…",
        "content": {
            "type": "bash_code_execution_result",
            "stdout": "0.816496580927726\n",
            "stderr": "",
            "return_code": 0,
            "content": [],
        },
    },
    {"type": "text", "text": "The population standard deviation is ≈ 0.8165."},
]


def _render(parts: tuple[Part, ...]) -> list[dict[str, Any]]:
    return [render_block(p) for p in parts]  # type: ignore[arg-type]  # history holds output parts only


def test_example_2_13_round_trips() -> None:
    parts = parse_content(EXAMPLE_2_13, "assistant")
    rendered = _render(parts)
    # the only differences from the documented example are the fields the API itself adds on output
    added = [{k: v for k, v in block.items() if k not in ("citations", "caller")} for block in rendered]
    assert added == EXAMPLE_2_13
    assert all(b["caller"] == {"type": "direct"} for b in rendered if b["type"] == "server_tool_use")
    # and a second trip changes nothing
    assert parse_content(rendered, "assistant") == parts
    assert _render(parse_content(rendered, "assistant")) == rendered


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_content_round_trips(path: Path) -> None:
    """Every response we render can be sent back as history and renders identically."""
    content = orjson.loads(path.read_bytes())["content"]
    for version in ("2023-06-01", "2026-10-21"):
        assert _render(parse_content(content, "assistant", version=version)) == content


def test_thinking_and_redacted_thinking_round_trip() -> None:
    blocks = [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "redacted_thinking", "data": "x"}]
    assert parse_content(blocks, "assistant") == (Thinking("t", "s"), Thinking("", data="x"))


def test_request_fields_for_anthropic_upstreams_are_carried() -> None:
    request = parse_messages_request(
        body(
            system=[
                {"type": "text", "text": "s1"},
                {"type": "text", "text": "s2", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            ],
            thinking={"type": "enabled", "budget_tokens": 2048},
            service_tier="standard_only",
            tools=[{"name": "w", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        ),
        {"anthropic-beta": "code-execution-2025-08-25, interleaved-thinking-2025-05-14,files-api-2025-04-14"},
    )
    assert request.system == "s1\n\ns2"
    assert request.system_blocks == (Text("s1"), Text("s2", CacheControl("ephemeral", "1h")))
    assert request.thinking == ThinkingConfig("enabled", 2048)
    assert request.service_tier == "standard_only"
    assert request.client_tools[0].cache_control == CacheControl()
    assert request.betas == ("interleaved-thinking-2025-05-14",)  # the gateway serves the other two itself


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 10}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"service_tier": "priority"}, "service_tier"),
        (
            {"system": [{"type": "text", "text": "s", "cache_control": {"type": "forever"}}]},
            "system.0.cache_control.type",
        ),
    ],
)
def test_anthropic_only_fields_are_validated_with_their_path(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        parse_messages_request(body(**fields), OLD)


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
def test_sdk_sent_history_parses_back(path: Path, beta: bool) -> None:
    """What the official SDK sends (our response passed back with ``to_param()``, with the SDK's own
    headers, i.e. ``anthropic-version: 2026-10-21``) parses, and its assistant turn renders unchanged."""
    raw = path.read_bytes()
    golden = orjson.loads(raw)
    container = golden["container"]["id"] if golden["container"] else None
    client, seen = capture_requests(raw)
    message = (BetaMessage if beta else SdkMessage).model_validate(golden)
    # A client tool call is answered (Anthropic refuses one left without its result).
    answers = [{"type": "tool_result", "tool_use_id": b["id"]} for b in golden["content"] if b["type"] == "tool_use"]
    follow_up: Any = answers or "continue"
    create: Any = client.beta.messages.create if beta else client.messages.create
    create(
        model="m",
        max_tokens=10,
        messages=[{"role": "user", "content": "go"}, message.to_param(), {"role": "user", "content": follow_up}],
        tools=[CE, WEATHER],
        container=container,
    )
    request = seen[-1]
    parsed = parse_messages_request(orjson.loads(request.content), request.headers)
    assert api_version(request.headers) == "2026-10-21"
    assert _render(parsed.messages[1].parts) == golden["content"]
    assert parsed.container_id == container
