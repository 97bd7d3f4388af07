"""Neutral values ↔ Anthropic JSON: content blocks, server-tool result blocks, usage and container.

Job: one place that knows the exact Anthropic shape of every block the gateway emits, shared by the
JSON renderer (``render_json``) and the SSE renderer (``render_sse``), and its inverse for the result
blocks a client sends back in its history (``parse_result_block``, used by ``wire``), so what is
rendered here parses back to the same value.

Must not: parse requests (that is ``wire``), know about events or streaming order, or invent data the
neutral model does not carry.

Invariants (each one is pinned by a test that validates against the official SDK's classes):
- Command results always carry ``"content": []`` (possibly empty file list). Older SDKs parse the
  result unions without a discriminator, and a ``*_result`` without ``content`` silently becomes the
  *error* class (docs/protocol.md §2.3).
- Only the text-editor error object has ``error_message``; bash and Python errors have ``error_code``
  only.
- Error codes are clamped to the enum of the block they go in (§2.6), so a strict client never rejects
  a block we emit.
- Parsing is lenient where rendering is strict: a result block in history may carry any known error
  code, and an encrypted Python result parses with empty stdout.
- ``tool_use``/``server_tool_use`` carry ``"caller": {"type": "direct"}``, as the API's own output does
  (§1.4); it parses in both SDK namespaces. A client call a REPL cell's code made names the cell:
  ``{"type": "code_execution_20260120", "tool_id": "srvtoolu_…"}`` (§5.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, assert_never, get_args

from execbridge.api._checks import (
    MISSING,
    at,
    choice_error,
    fail,
    kind_of,
    opt_int,
    opt_str,
    req_dict,
    req_int,
    req_str,
    wrong,
)
from execbridge.tools.versions import BASH, EDITOR, PYTHON, SUB_TOOLS, SubTool
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
    ToolOutcome,
    Usage,
    ViewOutcome,
)

__all__ = [
    "RESULT_BLOCK_TYPES",
    "OutputPart",
    "parse_result_block",
    "render_block",
    "render_container",
    "render_message_shell",
    "render_result_block",
    "render_start_block",
    "render_usage",
]

OutputPart = Text | Thinking | ToolCall | ServerToolResult | ContainerUpload
"""The neutral parts that can appear in a response's ``content`` array."""

# A fresh dict per call would cost an allocation per block; callers never mutate it, and orjson only
# reads it.
_DIRECT_CALLER: Final[dict[str, str]] = {"type": "direct"}

# A code outside a block's enum (``SubTool.error_codes``, §2.6) is replaced by the closest code the
# block can express, so strict validators (pydantic ``Literal``) accept what we send.
_CLAMP: Final[dict[str, str]] = {
    # a missing file is the model asking for something that is not there: its input was wrong
    "file_not_found": "invalid_tool_input",
    # too much output is the tool refusing to hand it over
    "output_file_too_large": "unavailable",
}


def _clamp_code(sub_tool: SubTool, code: ToolErrorCode) -> str:
    if code in sub_tool.error_codes:
        return code
    return _CLAMP.get(code, "unavailable")


# A REPL cell's client calls name the cell; Anthropic tags them with this version for 20260120 and
# 20260521 alike (docs/protocol.md §5.1).
PROGRAMMATIC_CALLER: Final = "code_execution_20260120"


def _caller(cell_id: str | None) -> dict[str, str]:
    return _DIRECT_CALLER if cell_id is None else {"type": PROGRAMMATIC_CALLER, "tool_id": cell_id}


def render_block(part: OutputPart) -> dict[str, Any]:
    """One finished output block, exactly as it appears in ``Message.content``."""
    match part:
        case Text(text=text, citations=citations):
            return {"type": "text", "text": text, "citations": [dict(c) for c in citations] if citations else None}
        case Thinking(data=data) if data is not None:
            return {"type": "redacted_thinking", "data": data}
        case Thinking(text=text, signature=signature):
            return {"type": "thinking", "thinking": text, "signature": signature}
        case ToolCall(id=id_, name=name, input=input_, server=server, caller=caller):
            return {
                "type": "server_tool_use" if server else "tool_use",
                "id": id_,
                "name": name,
                "input": dict(input_),
                "caller": _caller(caller),
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
        case Thinking(data=data) if data is not None:
            return {"type": "redacted_thinking", "data": data}  # arrives whole, no deltas
        case Thinking():
            return {"type": "thinking", "thinking": "", "signature": ""}
        case ToolCall(id=id_, name=name, server=server, caller=caller):
            return {
                "type": "server_tool_use" if server else "tool_use",
                "id": id_,
                "name": name,
                "input": {},
                "caller": _caller(caller),
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
    sub_tool = SUB_TOOLS.get(name)
    if sub_tool is None:
        raise ValueError(f"no Anthropic result block for server tool {name!r}")
    editor = sub_tool.kind == "editor"
    match outcome:
        case ToolFailure(error_code=code, message=message):
            error: dict[str, Any] = {"type": f"{name}_tool_result_error", "error_code": _clamp_code(sub_tool, code)}
            if editor:
                error["error_message"] = message
            return error
        case CommandOutcome() if not editor:
            return _command_result(name, outcome)
        case ViewOutcome() if editor:
            return {
                "type": f"{name}_view_result",
                "file_type": outcome.file_type,
                "content": outcome.content,
                "num_lines": outcome.num_lines,
                "start_line": outcome.start_line,
                "total_lines": outcome.total_lines,
            }
        case CreateOutcome(is_file_update=is_file_update) if editor:
            return {"type": f"{name}_create_result", "is_file_update": is_file_update}
        case StrReplaceOutcome() if editor:
            return {
                "type": f"{name}_str_replace_result",
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


def render_message_shell(
    message_id: str, model: str, usage: Usage, container: ContainerRef | None, content: list[dict[str, Any]]
) -> dict[str, Any]:
    """A Message as it stands when it starts (§1.4): no stop reason yet, ``content`` as given (the JSON
    renderer fills that list in place and sets the stop fields at the end; a stream's
    ``message_start`` sends it empty)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": render_usage(usage),
        "container": render_container(container),
    }


def render_usage(usage: Usage, *, service_tier: bool = True) -> dict[str, Any]:
    """``usage`` of a Message (or, with ``service_tier=False``, of a ``message_delta``; counts cumulative).

    ``server_tool_use`` keeps the two keys the SDK type requires and adds the documented, untyped
    ``code_execution_requests`` (§1.6; SDK models keep unknown keys).
    """
    rendered: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
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


# ---------------------------------------------------------------- parsing (the inverse of rendering)

_ERROR_CODES: Final[dict[str, ToolErrorCode]] = {code: code for code in get_args(ToolErrorCode)}


def _error_code(obj: dict[str, Any], path: str) -> ToolErrorCode:
    # Any known code is accepted in any block: a client's history is read leniently (see the module doc).
    raw = obj.get("error_code", MISSING)
    code = _ERROR_CODES.get(raw) if type(raw) is str else None
    if code is None:
        choice_error(raw, at(path, "error_code"), tuple(sorted(_ERROR_CODES)))
    return code


def _command_outcome(obj: dict[str, Any], path: str, output_type: str, encrypted: bool) -> CommandOutcome:
    # An encrypted result's stdout is ciphertext meant for Anthropic's servers only: nothing to show.
    stdout = "" if encrypted else req_str(obj, "stdout", path)
    if encrypted:
        req_str(obj, "encrypted_stdout", path)
    stderr = req_str(obj, "stderr", path)
    return_code = req_int(obj, "return_code", path)
    files = obj.get("content")
    outputs: tuple[OutputFile, ...] = ()
    if files:
        if type(files) is not list:
            wrong(path, "content", "an array", files)
        found = []
        for i, item in enumerate(files):
            item_path = at(at(path, "content"), i)
            if type(item) is not dict:
                fail(item_path, f"expected an object, got {kind_of(item)}")
            if item.get("type") != output_type:
                choice_error(item.get("type", MISSING), at(item_path, "type"), (output_type,))
            # name and size are not on the wire; only the id matters when re-rendering
            found.append(OutputFile(req_str(item, "file_id", item_path), "", 0))
        outputs = tuple(found)
    return CommandOutcome(stdout, stderr, return_code, outputs)


def _code_execution_outcome(obj: dict[str, Any], path: str, kind: object) -> ToolOutcome:
    if kind == "code_execution_result":
        return _command_outcome(obj, path, "code_execution_output", encrypted=False)
    if kind == "encrypted_code_execution_result":
        return _command_outcome(obj, path, "code_execution_output", encrypted=True)
    if kind == "code_execution_tool_result_error":
        return ToolFailure(_error_code(obj, path))
    choice_error(
        kind,
        at(path, "type"),
        ("code_execution_result", "encrypted_code_execution_result", "code_execution_tool_result_error"),
    )


def _bash_outcome(obj: dict[str, Any], path: str, kind: object) -> ToolOutcome:
    if kind == "bash_code_execution_result":
        return _command_outcome(obj, path, "bash_code_execution_output", encrypted=False)
    if kind == "bash_code_execution_tool_result_error":
        return ToolFailure(_error_code(obj, path))
    choice_error(kind, at(path, "type"), ("bash_code_execution_result", "bash_code_execution_tool_result_error"))


_FILE_TYPES: Final = ("text", "image", "pdf")


def _editor_outcome(obj: dict[str, Any], path: str, kind: object) -> ToolOutcome:
    if kind == "text_editor_code_execution_view_result":
        file_type = obj.get("file_type", MISSING)
        if file_type not in _FILE_TYPES:
            choice_error(file_type, at(path, "file_type"), _FILE_TYPES)
        return ViewOutcome(
            file_type,
            req_str(obj, "content", path),
            opt_int(obj, "num_lines", path),
            opt_int(obj, "start_line", path),
            opt_int(obj, "total_lines", path),
        )
    if kind == "text_editor_code_execution_create_result":
        value = obj.get("is_file_update", MISSING)
        if type(value) is not bool:
            wrong(path, "is_file_update", "a boolean", value)
        return CreateOutcome(value)
    if kind == "text_editor_code_execution_str_replace_result":
        lines = obj.get("lines")
        if lines is None:
            lines = []
        elif type(lines) is not list or any(type(line) is not str for line in lines):
            wrong(path, "lines", "an array of strings", lines)
        return StrReplaceOutcome(
            opt_int(obj, "old_start", path),
            opt_int(obj, "old_lines", path),
            opt_int(obj, "new_start", path),
            opt_int(obj, "new_lines", path),
            tuple(lines),
        )
    if kind == "text_editor_code_execution_tool_result_error":
        return ToolFailure(_error_code(obj, path), opt_str(obj, "error_message", path))
    choice_error(
        kind,
        at(path, "type"),
        (
            "text_editor_code_execution_view_result",
            "text_editor_code_execution_create_result",
            "text_editor_code_execution_str_replace_result",
            "text_editor_code_execution_tool_result_error",
        ),
    )


_OUTCOME_PARSERS: Final[dict[str, Callable[[dict[str, Any], str, object], ToolOutcome]]] = {
    PYTHON: _code_execution_outcome,
    BASH: _bash_outcome,
    EDITOR: _editor_outcome,
}
RESULT_BLOCK_TYPES: Final[dict[str, str]] = {f"{name}_tool_result": name for name in SUB_TOOLS}
"""Result block type → the sub-tool whose result it is (``bash_code_execution_tool_result`` → bash)."""


def parse_result_block(block: dict[str, Any], path: str) -> ServerToolResult:
    """A ``*_tool_result`` block from a client's history → the ``ServerToolResult`` it renders from.

    ``block["type"]`` must be a key of ``RESULT_BLOCK_TYPES`` (the request parser dispatches on it).
    """
    tool_name = RESULT_BLOCK_TYPES[block["type"]]
    tool_use_id = req_str(block, "tool_use_id", path)
    content = req_dict(block, "content", path)
    outcome = _OUTCOME_PARSERS[tool_name](content, at(path, "content"), content.get("type", MISSING))
    return ServerToolResult(tool_use_id, tool_name, outcome)
