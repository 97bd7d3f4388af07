"""Anthropic's server-side code execution tool, expressed as plain functions and run in a container.

Job: for each published tool version, the function schemas the upstream model sees (mirroring
Anthropic's sub-tool inputs one to one, so the model's arguments become ``server_tool_use.input``
unchanged), the note that tells the model what the sandbox is, validation of the model's arguments,
dispatch of a call to a ``ContainerSession``, and the bounded text the model reads back.

Must not: know any wire format (Anthropic blocks live in ``api/``, Chat Completions in ``upstream/``).
Invariant: a bad argument from the model is a ``ToolFailure("invalid_tool_input")`` it can recover
from, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from execbridge.config import SandboxSettings
from execbridge.sandbox.base import ContainerSession, ExecutionResult
from execbridge.types import (
    CodeExecutionTool,
    CommandOutcome,
    CreateOutcome,
    FunctionDef,
    OutputFile,
    ServerToolResult,
    StrReplaceOutcome,
    ToolFailure,
    ToolOutcome,
    ViewOutcome,
)

BASH = "bash_code_execution"
EDITOR = "text_editor_code_execution"
PYTHON = "code_execution"
SERVER_TOOL_NAMES = frozenset({BASH, EDITOR, PYTHON})

WORKSPACE = "/workspace"
# What the model reads back is bounded: a flood of output must not flood the context window.
MODEL_OUTPUT_CHARS = 20_000

_PYTHON_FUNCTION = FunctionDef(
    name=PYTHON,
    description=(
        "Run Python 3.11 code in a persistent sandboxed Linux container and return its stdout, stderr "
        "and exit code. Use print() to show results. Each call is a fresh process; files written to the "
        "working directory persist between calls. No internet access."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python program to run."}},
        "required": ["code"],
    },
)

_BASH_FUNCTION = FunctionDef(
    name=BASH,
    description=(
        "Run a bash command in a persistent sandboxed Linux container and return its stdout, stderr and "
        "exit code. Python 3.11 with common data libraries is installed (run scripts with `python`). "
        "Files persist between calls. No internet access; packages cannot be installed. To hand a file "
        'back to the user, write or copy it into "$OUTPUT_DIR" (a fresh, empty directory for each '
        "call) and list it in the same command."
    ),
    parameters={
        "type": "object",
        "properties": {"command": {"type": "string", "description": "The bash command to run."}},
        "required": ["command"],
    },
)

_EDITOR_FUNCTION = FunctionDef(
    name=EDITOR,
    description=(
        "View, create or edit text files in the sandboxed container. Commands: `view` (show a file), "
        "`create` (write `file_text` to `path`, replacing any file there), `str_replace` (replace the "
        "single exact occurrence of `old_str` in the file with `new_str`). Paths are relative to the "
        "working directory unless absolute."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {"type": "string", "enum": ["view", "create", "str_replace"]},
            "path": {"type": "string", "description": "File path."},
            "file_text": {"type": "string", "description": "Full file content, for `create`."},
            "old_str": {"type": "string", "description": "Exact text to replace, for `str_replace`."},
            "new_str": {"type": "string", "description": "Replacement text, for `str_replace`."},
        },
        "required": ["command", "path"],
    },
)


def functions_for(tool: CodeExecutionTool) -> tuple[FunctionDef, ...]:
    """The functions a tool version offers; 2026 versions add Python next to bash and the editor."""
    match tool.version:
        case "20250522":
            return (_PYTHON_FUNCTION,)
        case "20250825":
            return (_BASH_FUNCTION, _EDITOR_FUNCTION)
        case "20260120" | "20260521":
            return (_BASH_FUNCTION, _EDITOR_FUNCTION, _PYTHON_FUNCTION)
        case _ as unreachable:
            assert_never(unreachable)


def system_note(tool: CodeExecutionTool, limits: SandboxSettings) -> str:
    """What the model must know about the sandbox; appended to the request's system prompt."""
    names = ", ".join(f.name for f in functions_for(tool))
    return (
        f"You have server-side code execution through the tools {names}. They run in a sandboxed "
        f"Linux container (x86_64, Python 3.11 with numpy, pandas, scipy, scikit-learn, statsmodels, "
        f"matplotlib, seaborn, openpyxl, pillow, sympy and more; bash and common CLI tools). The working "
        f"directory is {WORKSPACE}; files there persist across calls and across requests that reuse "
        f"the container. Files the user uploaded are in {WORKSPACE}. There is no internet access and "
        f"packages cannot be installed. Each command may run for at most {limits.command_timeout_s:g} "
        f"seconds and the container has {limits.memory_mb} MiB of memory. Files written to the "
        f'top level of "$OUTPUT_DIR" during a command are returned to the user.'
    )


def _str_arg(args: Mapping[str, Any], name: str, *, required: bool = True) -> str | ToolFailure | None:
    value = args.get(name)
    if value is None:
        return ToolFailure("invalid_tool_input", f"missing required parameter `{name}`") if required else None
    if not isinstance(value, str):
        return ToolFailure("invalid_tool_input", f"parameter `{name}` must be a string")
    return value


async def run_call(
    session: ContainerSession, name: str, args: Mapping[str, Any], limits: SandboxSettings
) -> ToolOutcome:
    """Run one server tool call; every problem with ``args`` becomes ``invalid_tool_input``."""
    match name:
        case "bash_code_execution":
            command = _str_arg(args, "command")
            if not isinstance(command, str):
                return command or ToolFailure("invalid_tool_input", "missing `command`")
            if not command.strip():
                return ToolFailure("invalid_tool_input", "`command` is empty")
            return command_outcome(await session.run_bash(command, timeout=limits.command_timeout_s))
        case "code_execution":
            code = _str_arg(args, "code")
            if not isinstance(code, str):
                return code or ToolFailure("invalid_tool_input", "missing `code`")
            return command_outcome(await session.run_python(code, timeout=limits.command_timeout_s))
        case "text_editor_code_execution":
            return await _run_editor(session, args)
        case _:
            return ToolFailure("invalid_tool_input", f"unknown tool `{name}`")


async def _run_editor(session: ContainerSession, args: Mapping[str, Any]) -> ToolOutcome:
    command = _str_arg(args, "command")
    path = _str_arg(args, "path")
    for value in (command, path):
        if isinstance(value, ToolFailure):
            return value
    assert isinstance(command, str) and isinstance(path, str)
    if not path.strip():
        return ToolFailure("invalid_tool_input", "`path` is empty")
    match command:
        case "view":
            return await session.view(path)
        case "create":
            file_text = _str_arg(args, "file_text")
            if not isinstance(file_text, str):
                return file_text or ToolFailure("invalid_tool_input", "missing `file_text`")
            return await session.create(path, file_text)
        case "str_replace":
            old_str = _str_arg(args, "old_str")
            new_str = _str_arg(args, "new_str", required=False)
            if not isinstance(old_str, str):
                return old_str or ToolFailure("invalid_tool_input", "missing `old_str`")
            if isinstance(new_str, ToolFailure):
                return new_str
            if not old_str:
                return ToolFailure("invalid_tool_input", "`old_str` is empty")
            return await session.str_replace(path, old_str, new_str or "")
        case _:
            return ToolFailure("invalid_tool_input", f"unknown command `{command}`; use view, create or str_replace")


def command_outcome(result: ExecutionResult, files: tuple[OutputFile, ...] = ()) -> ToolOutcome:
    """A sandbox result as the client sees it: a time-out is an error block, a failed program is not."""
    if result.error_code == "execution_time_exceeded" or result.error_code == "unavailable":
        return ToolFailure(result.error_code)
    if result.error_code == "output_file_too_large":
        return ToolFailure("output_file_too_large")
    return CommandOutcome(result.stdout, result.stderr, result.return_code, files)


def _clip(text: str, limit: int = MODEL_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    skipped = len(text) - head - tail
    return f"{text[:head]}\n[… {skipped} characters omitted …]\n{text[-tail:]}"


_FAILURE_HINTS = {
    "execution_time_exceeded": "the command ran past its time limit and was stopped",
    "unavailable": "the sandbox was unavailable; try again",
    "output_file_too_large": "a file in $OUTPUT_DIR was larger than the limit and was not returned",
    "file_not_found": "the file does not exist",
    "too_many_requests": "too many requests to the tool",
    "invalid_tool_input": "the tool input was invalid",
}


def render_for_model(result: ServerToolResult) -> str:
    """The text the upstream model reads as the function's return value (bounded in size)."""
    outcome = result.outcome
    match outcome:
        case CommandOutcome():
            parts = [f"exit code: {outcome.return_code}"]
            if outcome.stdout:
                parts.append(f"stdout:\n{_clip(outcome.stdout)}")
            if outcome.stderr:
                parts.append(f"stderr:\n{_clip(outcome.stderr)}")
            if not outcome.stdout and not outcome.stderr:
                parts.append("(no output)")
            if outcome.files:
                listed = ", ".join(f"{f.filename} ({f.size_bytes} bytes)" for f in outcome.files)
                parts.append(f"files returned to the user from $OUTPUT_DIR: {listed}")
            return "\n".join(parts)
        case ViewOutcome():
            if outcome.file_type != "text":
                return f"{outcome.file_type} file ({len(outcome.content)} base64 characters); not shown as text"
            start = outcome.start_line or 1
            numbered = "\n".join(f"{start + i:6}\t{line}" for i, line in enumerate(outcome.content.split("\n")))
            return _clip(numbered)
        case CreateOutcome():
            return "file updated" if outcome.is_file_update else "file created"
        case StrReplaceOutcome():
            diff = "\n".join(outcome.lines)
            return _clip(f"replaced; diff at line {outcome.old_start}:\n{diff}" if diff else "replaced")
        case ToolFailure():
            hint = _FAILURE_HINTS.get(outcome.error_code, "")
            detail = f": {outcome.message}" if outcome.message else (f": {hint}" if hint else "")
            return f"error {outcome.error_code}{detail}"
        case _ as unreachable:
            assert_never(unreachable)
