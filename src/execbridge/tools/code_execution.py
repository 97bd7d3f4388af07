"""Anthropic's server-side code execution tool, expressed as plain functions and run in a container.

Job: for each published tool version, the function schemas the upstream model sees (mirroring
Anthropic's sub-tool inputs one to one, so the model's arguments become ``server_tool_use.input``
unchanged), the note that tells the model what the sandbox is, validation of the model's arguments,
dispatch of a call to a ``ContainerSession``, and the bounded text the model reads back.

Must not: know any wire format (Anthropic blocks live in ``api/``, Chat Completions in ``upstream/``),
or read files itself: ``$OUTPUT_DIR`` files are streamed by the sandbox into an ``OutputBatch`` that
the ``Publisher`` (the Files API) hands out for each command, and published from there; whatever is
not published, the batch removes.
Invariant: a bad argument from the model is a ``ToolFailure("invalid_tool_input")`` it can recover
from, never an exception.

Programmatic tool calling (docs/protocol.md §5.1): with a REPL version, a cell's code may await the
client tools that allow it (``repl_function`` tells the model which); a cell that does comes back as
``AwaitingTools`` instead of an outcome, and ``resume_cell`` runs it on with the client's answers.

Generated files (docs/protocol.md §2.6, §2.9): a bash command that left a file over the size limit is the
``output_file_too_large`` error block (the only block with that code; an error block has no room for
the other files or the output, so none of its files are published). The Python tool's error block
has no such code, so there the files under the limit are returned and a note on stderr names the
rest. Files past the count limit or the total budget are never an error: the others are returned
and stderr says how many were left out. Entries skipped for another reason (a second hard link to a
file already returned, a link, FIFO, socket, device or directory, an unreadable file, one that
changed while it was read) are named in a note on stderr too; the command's own result is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Protocol, assert_never

import orjson

from execbridge.config import SandboxSettings
from execbridge.sandbox.base import DEFAULT_WORKSPACE, ContainerSession, ExecutionResult, OutputSpool, SkippedFile
from execbridge.tools.versions import BASH, EDITOR, OPENAI_WORKSPACE, PYTHON, ToolVersion
from execbridge.tools.written import figures, started, written_since
from execbridge.types import (
    MAX_NESTING,
    AwaitingTools,
    ClientTool,
    CommandOutcome,
    CreateOutcome,
    FunctionDef,
    OutputFile,
    ServerToolResult,
    StrReplaceOutcome,
    ToolCall,
    ToolErrorCode,
    ToolFailure,
    ToolOutcome,
    ViewOutcome,
    nests_deeper_than,
)


class OutputBatch(OutputSpool, Protocol):
    """One command's output files: written into the batch by the sandbox, then published or removed."""

    async def publish(self, outputs: Sequence[tuple[str, Path]]) -> tuple[OutputFile, ...]:
        """Register files (name, a path of this batch) and say under which file ids."""
        ...

    def discard(self) -> None:
        """Remove every file of the batch not published."""
        ...

    @property
    def over_budget(self) -> Sequence[str]:
        """Names ``publish`` left out because the owner's file storage is full."""
        ...


# A fresh batch for each command (``FileService.output_batch`` bound to the caller).
Publisher = Callable[[], OutputBatch]
# What the model reads back is bounded: a flood of output must not flood the context window.
MODEL_OUTPUT_CHARS = 20_000


def system_note(version: ToolVersion, limits: SandboxSettings) -> str:
    """What the model must know about the sandbox; appended to the request's system prompt."""
    if version.surface == "openai":
        return _openai_note(version, limits)
    names = ", ".join(s.name for s in version.sub_tools)
    return (
        f"You have server-side code execution through the tools {names}. They run in a sandboxed "
        f"Linux container (x86_64, Python 3.11 with numpy, pandas, scipy, scikit-learn, statsmodels, "
        f"matplotlib, seaborn, openpyxl, pillow, sympy and more; bash and common CLI tools). The working "
        f"directory is {DEFAULT_WORKSPACE}; files there persist across calls and across requests that reuse "
        f"the container. Files the user uploaded are in {DEFAULT_WORKSPACE}. There is no internet access and "
        f"packages cannot be installed. Each command may run for at most {limits.command_timeout_s:g} "
        f"seconds and the container has {limits.memory_mb} MiB of memory. Files written to the "
        f'top level of "$OUTPUT_DIR" during a command are returned to the user.'
        + (
            f" Python code runs as cells of one persistent interpreter: each cell may run for at most "
            f"{limits.repl_cell_timeout_s:g} seconds of wall-clock time."
            if version.repl
            else ""
        )
    )


def repl_function(base: FunctionDef, tools: Sequence[ClientTool]) -> FunctionDef:
    """The REPL's Python function as the model sees it, with the client tools its code may await.

    Each is listed as ``async def name(input: dict) -> str`` with its description and the JSON schema
    of ``input`` (docs/protocol.md §5.1: Anthropic does not publish what it tells the model).
    """
    if not tools:
        return base
    listed = "\n".join(
        f"- async def {t.name}(input: dict) -> str"
        + (f": {t.description}" if t.description else "")
        + f"\n  input schema: {orjson.dumps(dict(t.input_schema)).decode()}"
        for t in tools
    )
    note = (
        "\n\nThe code can call these tools of the user's as async Python functions, already defined in the "
        "interpreter. Each takes one dict of arguments (matching its input schema) and returns the tool's "
        "result as a string (use json.loads when it is JSON). Await them at the top level of the cell, e.g. "
        '`rows = await some_tool({"key": "value"})`; await several at once with `asyncio.gather(...)`. '
        "Their results reach only your code, so print what you need to see. A call that gets no answer "
        "raises TimeoutError.\n" + listed
    )
    return FunctionDef(base.name, base.description + note, base.parameters, base.cache_control)


def _openai_note(version: ToolVersion, limits: SandboxSettings) -> str:
    """The note for OpenAI's hosted tools: files live in /mnt/data and are linked as ``sandbox:`` URLs,
    which the Responses surface turns into ``container_file_citation`` annotations."""
    names = " and ".join(s.name for s in version.sub_tools)
    return (
        f"You can run code with {names} in a sandboxed Linux container (Python 3.11 with numpy, pandas, "
        f"scipy, scikit-learn, matplotlib, seaborn, openpyxl, pillow, sympy and more). The working directory "
        f"is {OPENAI_WORKSPACE}: files the user provided are there, and files saved there persist across "
        f"calls. There is no internet access and packages cannot be installed. Each command may run for at "
        f"most {limits.command_timeout_s:g} seconds. To give the user a file (a chart, a CSV), save it in "
        f"{OPENAI_WORKSPACE} and link it in your answer as [name](sandbox:{OPENAI_WORKSPACE}/name); PNG images "
        f"saved there are shown to the user."
    )


def _str_arg(args: Mapping[str, Any], name: str, *, required: bool = True) -> str | ToolFailure | None:
    value = args.get(name)
    if value is None:
        return ToolFailure("invalid_tool_input", f"missing required parameter `{name}`") if required else None
    if not isinstance(value, str):
        return ToolFailure("invalid_tool_input", f"parameter `{name}` must be a string")
    return value


async def run_call(
    session: ContainerSession,
    name: str,
    args: Mapping[str, Any],
    limits: SandboxSettings,
    publish: Publisher | None = None,
    *,
    repl: bool = False,
    code_tools: Sequence[str] = (),
    call_id: str = "",
    written: bool = False,
) -> ToolOutcome | AwaitingTools:
    """Run one server tool call; every problem with ``args`` becomes ``invalid_tool_input``.

    Without ``publish`` captured files are dropped (nothing could serve them). ``repl``
    (``ToolVersion.repl``): Python code is a cell of the container's persistent REPL, limited by
    ``repl_cell_timeout_s``; otherwise a fresh ``python -c``. A cell may await the client tools
    ``code_tools``: one that does is suspended (``AwaitingTools``), named by its ``call_id``.
    ``written``: a command's outcome lists the workspace files it wrote (``tools/written.py``), with
    the bytes of small images.
    """
    since = started()
    outcome = await _dispatch(session, name, args, limits, publish, repl=repl, code_tools=code_tools, call_id=call_id)
    if not written or not isinstance(outcome, CommandOutcome):
        return outcome
    # A cell that failed may have lost the REPL: a capture would start a new one and take the note
    # saying so from the model's next cell. Its figures are captured after the next cell that succeeds.
    capture = name == PYTHON and repl and outcome.return_code == 0
    drawn = await figures(session, limits.repl_cell_timeout_s) if capture else ()
    return replace(outcome, written=await written_since(session, since), figures=drawn)


async def _dispatch(
    session: ContainerSession,
    name: str,
    args: Mapping[str, Any],
    limits: SandboxSettings,
    publish: Publisher | None,
    *,
    repl: bool,
    code_tools: Sequence[str],
    call_id: str,
) -> ToolOutcome | AwaitingTools:
    if name == BASH:
        command = _str_arg(args, "command")
        if not isinstance(command, str):
            return command or ToolFailure("invalid_tool_input", "missing `command`")
        if not command.strip():
            return ToolFailure("invalid_tool_input", "`command` is empty")
        return await _run_command(session, BASH, command, publish, limits)
    if name == PYTHON:
        code = _str_arg(args, "code")
        if not isinstance(code, str):
            return code or ToolFailure("invalid_tool_input", "missing `code`")
        if repl:
            return await _run_cell(session, code, publish, limits, code_tools, call_id)
        return await _run_command(session, PYTHON, code, publish, limits)
    if name == EDITOR:
        return await _run_editor(session, args)
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


async def _run_cell(
    session: ContainerSession,
    code: str,
    publish: Publisher | None,
    limits: SandboxSettings,
    code_tools: Sequence[str],
    cell_id: str,
) -> ToolOutcome | AwaitingTools:
    async def run(batch: OutputBatch | None) -> ExecutionResult:
        return await session.run_cell(
            code, timeout=limits.repl_cell_timeout_s, spool=batch, tools=code_tools, cell_id=cell_id
        )

    return await _finished(run, PYTHON, publish, limits, cell_id)


async def resume_cell(
    session: ContainerSession,
    cell_id: str,
    replies: Mapping[str, str],
    limits: SandboxSettings,
    publish: Publisher | None = None,
) -> ToolOutcome | AwaitingTools:
    """Run the suspended cell ``cell_id`` on with the client's answers (``toolu_`` id → text): its
    outcome, or ``AwaitingTools`` again. A cell that is gone is ``unavailable`` (the reason in its message)."""

    async def run(batch: OutputBatch | None) -> ExecutionResult:
        return await session.resume_cell(cell_id, replies, spool=batch)

    return await _finished(run, PYTHON, publish, limits, cell_id)


def _awaiting(result: ExecutionResult, cell_id: str) -> AwaitingTools:
    calls = tuple(
        # Input the model's code made up nests as the code likes; what no encoder could write back is dropped.
        ToolCall(c.id, c.name, {} if nests_deeper_than(c.input, MAX_NESTING) else c.input, caller=cell_id)
        for c in result.calls
    )
    return AwaitingTools(calls)


async def _run_command(
    session: ContainerSession,
    tool_name: str,
    source: str,
    publish: Publisher | None,
    limits: SandboxSettings,
) -> ToolOutcome:
    """Run a bash or Python command; its ``$OUTPUT_DIR`` files are published when the outcome keeps them."""

    async def run(batch: OutputBatch | None) -> ExecutionResult:
        if tool_name == BASH:
            return await session.run_bash(source, timeout=limits.command_timeout_s, spool=batch)
        return await session.run_python(source, timeout=limits.command_timeout_s, spool=batch)

    outcome = await _finished(run, tool_name, publish, limits)
    assert not isinstance(outcome, AwaitingTools)  # only cells await client tools
    return outcome


async def _finished(
    run: Callable[[OutputBatch | None], Awaitable[ExecutionResult]],
    tool_name: str,
    publish: Publisher | None,
    limits: SandboxSettings,
    cell_id: str = "",
) -> ToolOutcome | AwaitingTools:
    """What a command (or cell) ``run`` ends with; its ``$OUTPUT_DIR`` files are published when the
    outcome keeps them."""
    batch = publish() if publish is not None else None
    try:
        result = await run(batch)
        if result.calls:
            return _awaiting(result, cell_id)
        file_limit = min(limits.output_file_limit_bytes, limits.output_total_limit_bytes)
        outcome = command_outcome(result, tool_name=tool_name, file_limit=file_limit)
        if not isinstance(outcome, CommandOutcome) or not result.files or batch is None:
            return outcome
        files = await batch.publish([(f.name, f.path) for f in result.files if f.path is not None])
        stderr = outcome.stderr
        if batch.over_budget:
            note = (
                f"not returned from $OUTPUT_DIR, the file storage of this API key is full: {_names(batch.over_budget)}"
                " (delete files with the Files API to free space)"
            )
            stderr = _with_notes(stderr, [note])
        return CommandOutcome(outcome.stdout, stderr, outcome.return_code, files)
    finally:
        if batch is not None:
            batch.discard()


def command_outcome(
    result: ExecutionResult,
    files: tuple[OutputFile, ...] = (),
    *,
    tool_name: str = BASH,
    file_limit: int | None = None,
) -> ToolOutcome:
    """A sandbox result as the client sees it: a time-out is an error block, a failed program is not.

    Files left out of the result are named in a note appended to stderr (see the module docstring),
    except where bash reports them with ``output_file_too_large``.
    """
    if result.error_code == "execution_time_exceeded" or result.error_code == "unavailable":
        return ToolFailure(result.error_code)
    too_large = result.error_code == "output_file_too_large" or bool(result.files_too_large)
    limit = f"the {file_limit}-byte limit" if file_limit else "the size limit"
    too_large_names = _names(result.files_too_large, more=result.files_too_large_unlisted)
    if too_large and tool_name == BASH:
        names = too_large_names
        detail = f"{names} in $OUTPUT_DIR over {limit}" if names else f"a file in $OUTPUT_DIR over {limit}"
        return ToolFailure("output_file_too_large", f"{detail}; no file of this command was returned")
    notes = []
    if too_large:
        notes.append(f"not returned from $OUTPUT_DIR, over {limit}: {too_large_names or '?'}")
    if result.files_omitted:
        notes.append(
            f"{result.files_omitted} more file(s) in $OUTPUT_DIR not returned: too many, or too much in total "
            "(put them in an archive to return them together)"
        )
    if result.files_skipped or result.files_skipped_unlisted:
        skipped = _names([_skip_note(s) for s in result.files_skipped], more=result.files_skipped_unlisted)
        notes.append(f"skipped in $OUTPUT_DIR: {skipped}")
    return CommandOutcome(result.stdout, _with_notes(result.stderr, notes), result.return_code, files)


def _with_notes(stderr: str, notes: Sequence[str]) -> str:
    """``stderr`` with an ``[execbridge] …`` line per note appended."""
    if not notes:
        return stderr
    separator = "\n" if stderr and not stderr.endswith("\n") else ""
    return stderr + separator + "".join(f"[execbridge] {note}\n" for note in notes)


def _names(names: Sequence[str], shown: int = 10, *, more: int = 0) -> str:
    # A command can leave thousands of sparse files; the note stays short.
    listed = ", ".join(names[:shown])
    rest = max(0, len(names) - shown) + more
    if not rest:
        return listed
    return f"{listed} and {rest} more" if listed else f"{rest} entries"


_SKIP_NOTES: Final[dict[str, str]] = {
    "hard_link": "a hard link to {}, counted once",
    "not_regular": "a {}, not a regular file",
    "unreadable": "unreadable: {}",
    "changed": "changed while it was collected: {}",
    "failed": "collection stopped here: {}",
    "replaced": "replaced by a {}; nothing in it was returned",
    "unstored": "could not be stored: {}",
}


def _skip_note(skipped: SkippedFile) -> str:
    name = "$OUTPUT_DIR" if skipped.name == "." else skipped.name
    return f"{name} ({_SKIP_NOTES[skipped.reason].format(skipped.detail or '?')})"


def _clip(text: str, limit: int = MODEL_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    skipped = len(text) - head - tail
    return f"{text[:head]}\n[… {skipped} characters omitted …]\n{text[-tail:]}"


# What the model reads for each error code (the codes themselves: ``types.ToolErrorCode``).
_FAILURE_HINTS: Final[dict[ToolErrorCode, str]] = {
    "execution_time_exceeded": "the command ran past its time limit and was stopped",
    "unavailable": "the sandbox was unavailable; try again",
    "output_file_too_large": "a file in $OUTPUT_DIR was over the size limit; no file of that command was returned",
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
                # Files from a client's history may carry only their id (the wire block has no name).
                listed = ", ".join(
                    f"{f.filename} ({f.size_bytes} bytes)" if f.filename else f.file_id for f in outcome.files
                )
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
