"""Neutral ↔ Anthropic block JSON: exact shapes, error-code clamping, the SDK classes they become, and
parsing each result block back."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, get_args

import anthropic.types
import pytest
from anthropic.types import ContentBlock
from anthropic.types import Usage as SdkUsage
from anthropic.types.beta import BetaContentBlock
from pydantic import TypeAdapter

from execbridge.api.blocks import (
    RESULT_BLOCK_TYPES,
    parse_result_block,
    render_block,
    render_container,
    render_start_block,
    render_usage,
)
from execbridge.tools.versions import SUB_TOOLS
from execbridge.types import (
    CommandOutcome,
    ContainerRef,
    ContainerUpload,
    CreateOutcome,
    OutputFile,
    ServerToolResult,
    StrReplaceOutcome,
    Text,
    Thinking,
    ToolCall,
    ToolErrorCode,
    ToolFailure,
    Usage,
    ViewOutcome,
)

GA = TypeAdapter(ContentBlock)
BETA = TypeAdapter(BetaContentBlock)
FILE = OutputFile("file_1", "a.png", 10)


def bash(outcome: Any) -> ServerToolResult:
    return ServerToolResult("srvtoolu_1", "bash_code_execution", outcome)


def python(outcome: Any) -> ServerToolResult:
    return ServerToolResult("srvtoolu_1", "code_execution", outcome)


def editor(outcome: Any) -> ServerToolResult:
    return ServerToolResult("srvtoolu_1", "text_editor_code_execution", outcome)


# (id, neutral part, exact JSON, GA class of the block, GA class of its content or None)
CASES: list[tuple[str, Any, dict[str, Any], str, str | None]] = [
    ("text", Text("hi"), {"type": "text", "text": "hi", "citations": None}, "TextBlock", None),
    (
        "thinking",
        Thinking("t", "sig"),
        {"type": "thinking", "thinking": "t", "signature": "sig"},
        "ThinkingBlock",
        None,
    ),
    (
        "client call",
        ToolCall("toolu_1", "get_weather", {"city": "Paris"}),
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"city": "Paris"},
            "caller": {"type": "direct"},
        },
        "ToolUseBlock",
        None,
    ),
    (
        "server call",
        ToolCall("srvtoolu_1", "bash_code_execution", {"command": "ls"}, server=True),
        {
            "type": "server_tool_use",
            "id": "srvtoolu_1",
            "name": "bash_code_execution",
            "input": {"command": "ls"},
            "caller": {"type": "direct"},
        },
        "ServerToolUseBlock",
        None,
    ),
    (
        "container upload",
        ContainerUpload("file_9"),
        {"type": "container_upload", "file_id": "file_9"},
        "ContainerUploadBlock",
        None,
    ),
    (
        "python result with a file",
        python(CommandOutcome("2\n", "", 0, (FILE,))),
        {
            "type": "code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {
                "type": "code_execution_result",
                "stdout": "2\n",
                "stderr": "",
                "return_code": 0,
                "content": [{"type": "code_execution_output", "file_id": "file_1"}],
            },
        },
        "CodeExecutionToolResultBlock",
        "CodeExecutionResultBlock",
    ),
    (
        "python error",
        python(ToolFailure("too_many_requests", "ignored")),
        {
            "type": "code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {"type": "code_execution_tool_result_error", "error_code": "too_many_requests"},
        },
        "CodeExecutionToolResultBlock",
        "CodeExecutionToolResultErrorObject",
    ),
    (
        "bash result without files keeps content []",
        bash(CommandOutcome("", "boom\n", 2)),
        {
            "type": "bash_code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {
                "type": "bash_code_execution_result",
                "stdout": "",
                "stderr": "boom\n",
                "return_code": 2,
                "content": [],
            },
        },
        "BashCodeExecutionToolResultBlock",
        "BashCodeExecutionResultBlock",
    ),
    (
        "bash result with a file",
        bash(CommandOutcome("", "", 0, (FILE,))),
        {
            "type": "bash_code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {
                "type": "bash_code_execution_result",
                "stdout": "",
                "stderr": "",
                "return_code": 0,
                "content": [{"type": "bash_code_execution_output", "file_id": "file_1"}],
            },
        },
        "BashCodeExecutionToolResultBlock",
        "BashCodeExecutionResultBlock",
    ),
    (
        "bash error has no error_message",
        bash(ToolFailure("unavailable", "sandbox down")),
        {
            "type": "bash_code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {"type": "bash_code_execution_tool_result_error", "error_code": "unavailable"},
        },
        "BashCodeExecutionToolResultBlock",
        "BashCodeExecutionToolResultErrorObject",
    ),
    (
        "editor view",
        editor(ViewOutcome("text", "a\nb", 2, 1, 2)),
        {
            "type": "text_editor_code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {
                "type": "text_editor_code_execution_view_result",
                "file_type": "text",
                "content": "a\nb",
                "num_lines": 2,
                "start_line": 1,
                "total_lines": 2,
            },
        },
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionViewResultBlock",
    ),
    (
        "editor create",
        editor(CreateOutcome(True)),
        {
            "type": "text_editor_code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {"type": "text_editor_code_execution_create_result", "is_file_update": True},
        },
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionCreateResultBlock",
    ),
    (
        "editor str_replace",
        editor(StrReplaceOutcome(3, 1, 3, 2, ("-a", "+b", "+c"))),
        {
            "type": "text_editor_code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {
                "type": "text_editor_code_execution_str_replace_result",
                "old_start": 3,
                "old_lines": 1,
                "new_start": 3,
                "new_lines": 2,
                "lines": ["-a", "+b", "+c"],
            },
        },
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionStrReplaceResultBlock",
    ),
    (
        "editor error keeps its message",
        editor(ToolFailure("file_not_found", "missing.txt does not exist")),
        {
            "type": "text_editor_code_execution_tool_result",
            "tool_use_id": "srvtoolu_1",
            "content": {
                "type": "text_editor_code_execution_tool_result_error",
                "error_code": "file_not_found",
                "error_message": "missing.txt does not exist",
            },
        },
        "TextEditorCodeExecutionToolResultBlock",
        "TextEditorCodeExecutionToolResultErrorObject",
    ),
]


@pytest.mark.parametrize(("part", "expected"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_exact_json(part: Any, expected: dict[str, Any]) -> None:
    assert render_block(part) == expected


@pytest.mark.parametrize(("part", "outer", "inner"), [(c[1], c[3], c[4]) for c in CASES], ids=[c[0] for c in CASES])
def test_sdk_classes(part: Any, outer: str, inner: str | None) -> None:
    for adapter, prefix in ((GA, ""), (BETA, "Beta")):
        block: Any = adapter.validate_python(render_block(part))
        assert type(block).__name__ == prefix + outer
        if inner is not None:
            assert type(block.content).__name__ == prefix + inner


# Codes outside a block's enum (docs/protocol.md §2.6) are clamped so strict validators accept the block.
@pytest.mark.parametrize(
    ("result", "code"),
    [
        (python(ToolFailure("file_not_found")), "invalid_tool_input"),
        (python(ToolFailure("output_file_too_large")), "unavailable"),
        (bash(ToolFailure("file_not_found")), "invalid_tool_input"),
        (bash(ToolFailure("output_file_too_large")), "output_file_too_large"),
        (editor(ToolFailure("output_file_too_large")), "unavailable"),
        (editor(ToolFailure("execution_time_exceeded")), "execution_time_exceeded"),
    ],
)
def test_error_codes_clamped_to_the_block_enum(result: ServerToolResult, code: str) -> None:
    rendered = render_block(result)
    assert rendered["content"]["error_code"] == code
    GA.validate_python(rendered)
    BETA.validate_python(rendered)


@pytest.mark.parametrize(
    "result",
    [
        bash(ViewOutcome("text", "x")),
        python(CreateOutcome(False)),
        editor(CommandOutcome("", "", 0)),
        ServerToolResult("s", "web_search", ToolFailure("unavailable")),
    ],
    ids=["bash view", "python create", "editor command", "unknown tool"],
)
def test_impossible_results_are_refused(result: ServerToolResult) -> None:
    with pytest.raises(ValueError):
        render_block(result)


def test_start_blocks() -> None:
    assert render_start_block(Text("ignored")) == {"type": "text", "text": ""}
    assert render_start_block(Thinking("ignored", "sig")) == {"type": "thinking", "thinking": "", "signature": ""}
    assert render_start_block(ToolCall("toolu_1", "f", {"a": 1})) == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "f",
        "input": {},
        "caller": {"type": "direct"},
    }
    assert render_start_block(ToolCall("srvtoolu_1", "code_execution", {}, server=True))["type"] == "server_tool_use"


def test_usage() -> None:
    rendered = render_usage(Usage(10, 20, 5, 3))
    assert rendered == {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0, "code_execution_requests": 3},
        "service_tier": "standard",
    }
    assert "service_tier" not in render_usage(Usage(), service_tier=False)
    parsed = SdkUsage.model_validate(rendered)
    assert parsed.server_tool_use is not None and parsed.server_tool_use.web_search_requests == 0


def test_container() -> None:
    assert render_container(None) is None
    assert render_container(ContainerRef("container_1", "2026-01-01T00:00:00Z")) == {
        "id": "container_1",
        "expires_at": "2026-01-01T00:00:00Z",
    }


# ---------------------------------------------------------------- the inverse: history → neutral

SERVER_RESULTS = [(c[0], c[1]) for c in CASES if isinstance(c[1], ServerToolResult)]


def _as_parsed(result: ServerToolResult) -> ServerToolResult:
    """What survives the wire: file ids only, an error message only where the block has room for it."""
    outcome = result.outcome
    if isinstance(outcome, CommandOutcome):
        outcome = replace(outcome, files=tuple(OutputFile(f.file_id, "", 0) for f in outcome.files))
    if isinstance(outcome, ToolFailure) and SUB_TOOLS[result.tool_name].kind != "editor":
        outcome = replace(outcome, message=None)
    return replace(result, outcome=outcome)


@pytest.mark.parametrize("result", [r for _, r in SERVER_RESULTS], ids=[i for i, _ in SERVER_RESULTS])
def test_every_rendered_result_parses_back(result: ServerToolResult) -> None:
    assert parse_result_block(render_block(result), "content.0") == _as_parsed(result)


def test_the_table_covers_every_sub_tool_and_result_block() -> None:
    assert set(RESULT_BLOCK_TYPES.values()) == set(SUB_TOOLS)
    rendered = {r.tool_name for _, r in SERVER_RESULTS}
    assert rendered == set(SUB_TOOLS)  # every sub-tool has a rendered case above


@pytest.mark.parametrize("name", sorted(SUB_TOOLS))
def test_error_codes_per_sub_tool_are_the_sdk_enums(name: str) -> None:
    """``tools.versions`` is the one owner of which codes a block can carry; the SDK agrees with it."""
    sdk_class = {
        "code_execution": "CodeExecutionToolResultError",
        "bash_code_execution": "BashCodeExecutionToolResultError",
        "text_editor_code_execution": "TextEditorCodeExecutionToolResultError",
    }[name]
    annotation = getattr(anthropic.types, sdk_class).model_fields["error_code"].annotation
    assert SUB_TOOLS[name].error_codes == frozenset(get_args(annotation))
    assert SUB_TOOLS[name].error_codes <= frozenset(get_args(ToolErrorCode))
