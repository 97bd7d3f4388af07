"""Turn a client's conversation into what the upstream model should see, and find unfinished work.

Pure functions. Server tool results in the client's history become the text the model read when the
call first ran (``render_for_model``); server calls that have no result yet (a ``pause_turn``
continuation, or calls deferred because a client tool was called in the same batch) are found so the
loop can run them before asking the model again. A ``container_upload`` in a user turn becomes a line
telling the model where that file is in the container.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from execbridge.tools.code_execution import render_for_model
from execbridge.types import (
    CommandOutcome,
    ContainerUpload,
    Message,
    OutputFile,
    Part,
    ServerToolResult,
    Text,
    ToolCall,
    ToolFailure,
    ToolResult,
)

_NO_UPLOADS: Mapping[str, str] = {}
_NO_OUTPUTS: Mapping[str, OutputFile] = {}


def as_model_result(result: ServerToolResult) -> ToolResult:
    return ToolResult(
        tool_use_id=result.tool_use_id,
        content=(Text(render_for_model(result)),),
        is_error=isinstance(result.outcome, ToolFailure),
    )


def upload_note(path: str) -> str:
    return f"[The user uploaded a file into the code execution container: {path}]"


def _named_outputs(result: ServerToolResult, outputs: Mapping[str, OutputFile]) -> ServerToolResult:
    """Give output files from the client's history (ids only on the wire) their names and sizes back."""
    outcome = result.outcome
    if not isinstance(outcome, CommandOutcome) or not outcome.files or not outputs:
        return result
    files = tuple(outputs.get(f.file_id, f) if not f.filename else f for f in outcome.files)
    return replace(result, outcome=replace(outcome, files=files))


def _upstream_part(part: Part, role: str, uploads: Mapping[str, str], outputs: Mapping[str, OutputFile]) -> Part | None:
    match part:
        case ServerToolResult():
            return as_model_result(_named_outputs(part, outputs))
        case ContainerUpload(file_id=file_id):
            # Where the file was put; without a container (no code execution tool) it is nowhere.
            path = uploads.get(file_id)
            return Text(upload_note(path)) if path is not None and role == "user" else None
        case _:
            return part


def for_upstream(
    messages: Iterable[Message],
    uploads: Mapping[str, str] = _NO_UPLOADS,
    outputs: Mapping[str, OutputFile] = _NO_OUTPUTS,
) -> list[Message]:
    """The conversation with server results rendered as model-readable tool results.

    ``uploads`` maps uploaded file ids to their path in the container; ``outputs`` maps output file
    ids to what the Files API knows of them (name, size). Client calls a REPL cell's code made, and
    their results, are left out (the model sees the cell's result instead); turns of one role that
    then meet are joined, so a cell's result still follows its call.
    """
    messages = tuple(messages)
    programmatic = {p.id for m in messages for p in m.parts if isinstance(p, ToolCall) and p.caller is not None}
    converted: list[Message] = []
    for message in messages:
        rendered = (
            _upstream_part(p, message.role, uploads, outputs)
            for p in message.parts
            if not (programmatic and _programmatic(p, programmatic))
        )
        parts = tuple(p for p in rendered if p is not None)
        if not parts:
            continue
        if converted and converted[-1].role == message.role:
            converted[-1] = Message(message.role, converted[-1].parts + parts)
        else:
            converted.append(Message(message.role, parts))
    return converted


def _programmatic(part: Part, programmatic: set[str]) -> bool:
    if isinstance(part, ToolCall):
        return part.caller is not None
    return isinstance(part, ToolResult) and part.tool_use_id in programmatic


def unanswered_server_calls(messages: tuple[Message, ...]) -> tuple[ToolCall, ...]:
    """Server calls in the latest assistant turn that have no result anywhere after them.

    That turn is the last message (``pause_turn`` continuation) or the one before a final user
    message (a batch where a client tool was called too, so the server calls were deferred).
    """
    if not messages:
        return ()
    index = len(messages) - 1
    if messages[index].role == "user":
        index -= 1
    if index < 0 or messages[index].role != "assistant":
        return ()
    answered = {
        p.tool_use_id for m in messages[index:] for p in m.parts if isinstance(p, ServerToolResult | ToolResult)
    }
    return tuple(p for p in messages[index].parts if isinstance(p, ToolCall) and p.server and p.id not in answered)


def with_results(messages: list[Message], results: Iterable[ServerToolResult]) -> list[Message]:
    """Attach freshly run results for unanswered calls, where the upstream expects them.

    After a continuation (history ends with the assistant turn) they join that turn; after a
    deferred batch they go first in the final user message, before the client's own results.
    """
    rendered = tuple(as_model_result(r) for r in results)
    if not rendered or not messages:
        return messages
    last = messages[-1]
    if last.role == "assistant":
        return [*messages[:-1], Message("assistant", last.parts + rendered)]
    return [*messages[:-1], Message("user", rendered + last.parts)]
