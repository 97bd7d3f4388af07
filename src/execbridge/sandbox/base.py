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

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

DEFAULT_WORKSPACE = "/workspace"
"""Where a container's workspace is inside its sandbox unless the container says otherwise (its
``ContainerInfo.workspace``): the working directory and ``HOME`` of commands, where uploads go."""


@dataclass(frozen=True, slots=True)
class CapturedFile:
    """A file the command left at the top level of its ``$OUTPUT_DIR`` (bytes read inside the sandbox)."""

    name: str
    data: bytes


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
    # Left out of ``files``: names over the per-file size limit (``error_code`` says so too), and how
    # many more were past the count limit.
    files_too_large: tuple[str, ...] = ()
    files_omitted: int = 0


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    owner: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    active: bool  # has a live executor right now
    workspace: str = DEFAULT_WORKSPACE  # the workspace's path inside the container (absolute)


class ContainerSession(Protocol):
    """Exclusive use of one live container for the span of an ``async with`` lease."""

    @property
    def info(self) -> ContainerInfo: ...

    async def run_bash(self, command: str, *, timeout: float | None = None) -> ExecutionResult: ...

    async def run_python(self, code: str, *, timeout: float | None = None) -> ExecutionResult: ...

    async def view(self, path: str) -> ViewOutcome | ToolFailure: ...

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure: ...

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure: ...

    async def put_file(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` inside the workspace (uploads); parents are created."""
        ...


class ContainerService(Protocol):
    async def create(self, owner: str) -> ContainerInfo: ...

    async def get(self, container_id: str, owner: str) -> ContainerInfo: ...

    def lease(self, container_id: str, owner: str) -> AbstractAsyncContextManager[ContainerSession]: ...

    def list(self, owner: str | None = None) -> AsyncIterator[ContainerInfo]: ...

    async def delete(self, container_id: str, owner: str) -> None: ...
