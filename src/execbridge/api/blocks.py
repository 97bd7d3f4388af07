"""Neutral values → Anthropic JSON: content blocks, server-tool result blocks, usage and container.

Job: one place that knows the exact Anthropic output shape of every block the gateway emits, shared by
the JSON renderer (``render_json``) and the SSE renderer (``render_sse``).

Must not: parse requests (that is ``wire``), know about events or streaming order, or invent data the
neutral model does not carry.

Invariants (each one is pinned by a test that validates against the official SDK's classes):
- Command results always carry ``"content": []`` (possibly empty file list). Older SDKs parse the
  result unions without a discriminator, and a ``*_result`` without ``content`` silently becomes the
  *error* class (wire-format §2.3).
- Only the text-editor error object has ``error_message``; bash and Python errors have ``error_code``
  only.
- Error codes are clamped to the enum of the block they go in (§2.6), so a strict client never rejects
  a block we emit.
- ``tool_use``/``server_tool_use`` carry ``"caller": {"type": "direct"}``, as the API's own output does
  (§1.4); it parses in both SDK namespaces.
"""

from __future__ import annotations

from typing import Any, Final, assert_never

from execbridge.types import (
    CommandOutcome,
    ContainerRef,
    ContainerUpload,
    CreateOutcome,
    ServerToolResult,
    StrReplaceOutcome,
    Text,
    Thinking,
    ToolCall,
    ToolFailure,
    Usage,
    ViewOutcome,
)

__all__ = [
    "OutputPart",
    "render_block",
    "render_container",
    "render_result_block",
    "render_start_block",
    "render_usage",
]

OutputPart = Text | Thinking | ToolCall | ServerToolResult | ContainerUpload
"""The neutral parts that can appear in a response's ``content`` array."""

# A fresh dict per call would cost an allocation per block; callers never mutate it, and orjson only
# reads it.
_DIRECT_CALLER: Final[dict[str, str]] = {"type": "direct"}

# Error-code enums per result block (§2.6). A code outside a block's enum is replaced by the closest
# code the block can express, so strict validators (pydantic ``Literal``) accept what we send.
_BASE_CODES: Final = frozenset({"invalid_tool_input", "unavailable", "too_many_requests", "execution_time_exceeded"})
_CODES: Final[dict[str, frozenset[str]]] = {
    "code_execution": _BASE_CODES,
    "bash_code_execution": _BASE_CODES | {"output_file_too_large"},
    "text_editor_code_execution": _BASE_CODES | {"file_not_found"},
}
_CLAMP: Final[dict[str, str]] = {
    # a missing file is the model asking for something that is not there: its input was wrong
    "file_not_found": "invalid_tool_input",
    # too much output is the tool refusing to hand it over
    "output_file_too_large": "unavailable",
}


def _clamp_code(tool_name: str, code: str) -> str:
    if code in _CODES[tool_name]:
        return code
    return _CLAMP.get(code, "unavailable")


def render_block(part: OutputPart) -> dict[str, Any]:
    """One finished output block, exactly as it appears in ``Message.content``."""
    match part:
        case Text(text=text):
            return {"type": "text", "text": text, "citations": None}
        case Thinking(text=text, signature=signature):
            return {"type": "thinking", "thinking": text, "signature": signature}
        case ToolCall(id=id_, name=name, input=input_, server=server):
            return {
                "type": "server_tool_use" if server else "tool_use",
                "id": id_,
                "name": name,
                "input": dict(input_),
                "caller": _DIRECT_CALLER,
            }
        case ServerToolResult():
            return render_result_block(part)
        case ContainerUpload(file_id=file_id):
            return {"type": "container_upload", "file_id": file_id}
        case _:
            assert_never(part)


def render_start_block(block: Text | Thinking | ToolCall) -> dict[str, Any]:
    """The ``content_block`` of a ``content_block_start`` event: the block with empty payload (§3.2).

    Text and thinking start empty and grow by deltas; a call starts with ``"input": {}`` (the SDK marks
    ``input`` required) and its input arrives as ``input_json_delta`` fragments.
    """
    match block:
        case Text():
            return {"type": "text", "text": ""}  # exactly the documented start shape (§3.2)
        case Thinking():
            return {"type": "thinking", "thinking": "", "signature": ""}
        case ToolCall(id=id_, name=name, server=server):
            return {
                "type": "server_tool_use" if server else "tool_use",
                "id": id_,
                "name": name,
                "input": {},
                "caller": _DIRECT_CALLER,
            }
        case _:
            assert_never(block)


def _command_result(prefix: str, outcome: CommandOutcome) -> dict[str, Any]:
    # ``content`` is always present, even empty: see the module invariant.
    return {
        "type": f"{prefix}_result",
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "return_code": outcome.return_code,
        "content": [{"type": f"{prefix}_output", "file_id": f.file_id} for f in outcome.files],
    }


def _result_content(result: ServerToolResult) -> dict[str, Any]:
    name = result.tool_name
    outcome = result.outcome
    if name not in _CODES:
        raise ValueError(f"no Anthropic result block for server tool {name!r}")
    match outcome:
        case ToolFailure(error_code=code, message=message):
            error: dict[str, Any] = {"type": f"{name}_tool_result_error", "error_code": _clamp_code(name, code)}
            if name == "text_editor_code_execution":
                error["error_message"] = message
            return error
        case CommandOutcome() if name != "text_editor_code_execution":
            return _command_result(name, outcome)
        case ViewOutcome() if name == "text_editor_code_execution":
            return {
                "type": "text_editor_code_execution_view_result",
                "file_type": outcome.file_type,
                "content": outcome.content,
                "num_lines": outcome.num_lines,
                "start_line": outcome.start_line,
                "total_lines": outcome.total_lines,
            }
        case CreateOutcome(is_file_update=is_file_update) if name == "text_editor_code_execution":
            return {"type": "text_editor_code_execution_create_result", "is_file_update": is_file_update}
        case StrReplaceOutcome() if name == "text_editor_code_execution":
            return {
                "type": "text_editor_code_execution_str_replace_result",
                "old_start": outcome.old_start,
                "old_lines": outcome.old_lines,
                "new_start": outcome.new_start,
                "new_lines": outcome.new_lines,
                "lines": list(outcome.lines),
            }
        case CommandOutcome() | ViewOutcome() | CreateOutcome() | StrReplaceOutcome():
            # An engine bug (e.g. a bash result holding a view): refuse rather than emit a block the
            # client cannot parse.
            raise ValueError(f"{type(outcome).__name__} is not a valid outcome for {name!r}")
        case _:
            assert_never(outcome)


def render_result_block(result: ServerToolResult) -> dict[str, Any]:
    """A whole ``*_tool_result`` block; the block type follows the sub-tool that ran (§2.3, §2.4)."""
    return {
        "type": f"{result.tool_name}_tool_result",
        "tool_use_id": result.tool_use_id,
        "content": _result_content(result),
    }


def render_usage(usage: Usage, *, service_tier: bool = True) -> dict[str, Any]:
    """``usage`` of a Message (or, with ``service_tier=False``, of a ``message_delta``; counts cumulative).

    ``server_tool_use`` keeps the two keys the SDK type requires and adds the documented, untyped
    ``code_execution_requests`` (§1.6; SDK models keep unknown keys).
    """
    rendered: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        # the neutral model has no cache writes: upstreams we drive do not report them
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "server_tool_use": {
            "web_search_requests": 0,
            "web_fetch_requests": 0,
            "code_execution_requests": usage.code_execution_requests,
        },
    }
    if service_tier:
        rendered["service_tier"] = "standard"
    return rendered


def render_container(container: ContainerRef | None) -> dict[str, str] | None:
    if container is None:
        return None
    return {"id": container.id, "expires_at": container.expires_at}
