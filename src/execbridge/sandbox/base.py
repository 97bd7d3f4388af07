"""What the rest of the gateway may ask of the sandbox: containers and the commands they run.

A *container* is a persistent, isolated workspace owned by one key; while active it has a live
sandboxed executor. Callers only see these types and the ``ContainerService`` protocol; bubblewrap,
cgroups and the executor protocol stay inside ``sandbox/``.

Invariants:
- A failing program is an ``ExecutionResult`` with a non-zero ``return_code``, never an exception.
- ``error_code`` is set only when the command could not run to completion (time limit, sandbox gone).
- Every method checks the owner: another key's container is ``NotFound``, indistinguishable from an
  id that never existed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from execbridge.types import Caller, CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

DEFAULT_WORKSPACE = "/workspace"
"""Where a container's workspace is inside its sandbox unless the container says otherwise (its
``ContainerInfo.workspace``): the working directory and ``HOME`` of commands, where uploads go."""

DATA_ALIAS = "/mnt/data"
"""The same workspace bound a second time, at the path OpenAI's code interpreter and shell use for a
container's files (docs/sandbox.md, "What a program inside can see and do"): code that writes
``/mnt/data/plot.png`` writes ``<workspace>/plot.png``, which the Containers API lists as
``/mnt/data/plot.png``. Every container has it, so a spare serves either API."""


Owner = str | Caller
"""Whose containers a call is about: an owner id taken as given (the in-process manager; root's CLI
on a sandbox host), or a ``Caller``, whose ``key`` a separate sandbox host checks: it derives the
owner from the key itself, so a gateway cannot name an owner whose key it never saw."""


def owner_id(owner: Owner) -> str:
    return owner.owner if isinstance(owner, Caller) else owner


class OutputSpool(Protocol):
    """Where the bytes of a command's ``$OUTPUT_DIR`` files go as they arrive from the sandbox.

    The Files API's implementation hands out temporary paths in its own directory, so a published
    file is renamed into place, never copied; whatever is not published, the spool's owner removes.
    """

    def new_path(self) -> Path:
        """A path where nothing is yet, for one file; the caller creates it (0600) and writes it."""
        ...


@dataclass(frozen=True, slots=True)
class CapturedFile:
    """A file the command left at the top level of its ``$OUTPUT_DIR``, read inside the sandbox.

    Its bytes are at ``path``, a file of the ``OutputSpool`` the command was given (the gateway's
    way: nothing in memory). Without a spool (the CLI, tests) they are in ``data``: all the command's
    files together are at most its total budget (``output_total_limit_bytes``).
    """

    name: str
    size: int
    path: Path | None = None
    data: bytes = b""


SkipReason = Literal["hard_link", "not_regular", "unreadable", "changed", "failed", "replaced", "unstored"]


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """An entry of ``$OUTPUT_DIR`` that is not returned, and why (said in a note on stderr).

    ``name`` is ``"."`` for the directory itself. ``detail``: for ``hard_link`` the name already
    returned for the same inode; for ``not_regular`` and ``replaced`` the kind ("FIFO", "symbolic
    link", …); for ``unreadable``, ``changed``, ``failed`` and ``unstored`` what went wrong.
    """

    name: str
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """A client tool call that a suspended REPL cell awaits (programmatic tool calling).

    ``id`` is what the answer names: the ``toolu_`` id the client's ``tool_result`` carries (inside the
    sandbox, the interpreter's own number for the call). ``input`` is the dict the code passed, as it
    came from the sandbox: untrusted.
    """

    id: str
    name: str
    input: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    stdout: str
    stderr: str
    return_code: int
    duration_ms: float
    error_code: Literal["execution_time_exceeded", "unavailable", "output_file_too_large"] | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    files: tuple[CapturedFile, ...] = ()
    # Left out of ``files``: names over the size limit (``error_code`` says so too; past the first
    # hundred only counted), how many more were past the count limit or the total budget, and entries
    # skipped for another reason (the same: past the first hundred only counted).
    files_too_large: tuple[str, ...] = ()
    files_too_large_unlisted: int = 0
    files_omitted: int = 0
    files_skipped: tuple[SkippedFile, ...] = ()
    files_skipped_unlisted: int = 0
    # A REPL cell that awaits client tools is suspended, not finished: these are the calls it waits
    # for (``ContainerSession.resume_cell`` carries their answers); every other field is empty.
    calls: tuple[ToolRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    owner: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    active: bool  # has a live executor right now
    workspace: str = DEFAULT_WORKSPACE  # the workspace's path inside the container (absolute)
    memory_mb: int | None = None  # its memory limit (None: not said, the sandbox's per-container one)


class ContainerSession(Protocol):
    """Exclusive use of one live container for the span of an ``async with`` lease."""

    @property
    def info(self) -> ContainerInfo: ...

    async def run_bash(
        self, command: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        """Run ``bash -c command``; its ``$OUTPUT_DIR`` files are written to ``spool`` (see ``CapturedFile``)."""
        ...

    async def run_python(
        self, code: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        """Run ``code`` as ``python -c`` would; ``spool`` as for ``run_bash``."""
        ...

    async def run_cell(
        self,
        code: str,
        *,
        timeout: float | None = None,
        spool: OutputSpool | None = None,
        tools: Sequence[str] = (),
        cell_id: str = "",
    ) -> ExecutionResult:
        """Run ``code`` as a cell of the container's persistent Python REPL (its globals persist).

        A cell past ``timeout`` is interrupted: a normal result, rc 1 and ``detection_timeout`` on
        stderr, and the REPL keeps its state; a REPL that lost its state since the last cell says so
        at the end of stderr. ``spool`` as for ``run_bash``.

        ``tools`` are the client tools the code may await (``async def name(input: dict) -> str``). A
        cell that awaits some is suspended: the result's ``calls`` say which, with fresh ``toolu_``
        ids, and ``cell_id`` (the call's ``srvtoolu_`` id) is what ``resume_cell`` names it by. A cell
        still waiting when the next one comes is first settled as if its calls had timed out.
        """
        ...

    async def resume_cell(
        self, cell_id: str, replies: Mapping[str, str], *, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        """Carry the client's answers (``toolu_`` id → text) to the suspended cell ``cell_id`` and run it
        on: its result, or ``calls`` again when it awaits more.

        Past ``ptc_call_timeout_s`` the answers come too late: the awaits have raised ``TimeoutError``
        and the result is the cell's end without them. A cell that is no longer there (its REPL or
        sandbox stopped) is ``error_code="unavailable"`` with the reason on stderr. Answers that leave
        out a call the cell waits for are ``InvalidRequest`` naming the missing ids.
        """
        ...

    async def view(self, path: str) -> ViewOutcome | ToolFailure: ...

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure: ...

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure: ...

    async def put_file(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` inside the workspace (uploads); parents are created."""
        ...


class ContainerService(Protocol):
    """Containers, scoped by owner: the in-process ``ContainerManager`` or a ``SandboxHostClient``."""

    async def create(self, owner: Owner, *, memory_mb: int | None = None) -> ContainerInfo:
        """A new container; ``memory_mb`` asks for a memory limit of its own, which the sandbox clamps to
        its per-container limit (None: that limit)."""
        ...

    async def get(self, container_id: str, owner: Owner) -> ContainerInfo: ...

    def lease(self, container_id: str, owner: Owner) -> AbstractAsyncContextManager[ContainerSession]: ...

    def list(self, owner: Owner | None = None) -> AsyncIterator[ContainerInfo]:
        """Every container (of ``owner`` when given; all of them only for a trusted caller)."""
        ...

    async def delete(self, container_id: str, owner: Owner) -> None: ...
