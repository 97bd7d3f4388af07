"""``Session``: the ``ContainerSession`` a lease hands out — commands on one live container.

A session never hangs and never raises for what a program does. If the sandbox died since the last
command (memory limit, a killed executor, a time limit that took the whole sandbox down), the
next command first starts a fresh one on the same workspace; if that cannot be done, commands
answer ``error_code="unavailable"`` (editor operations: ``ToolFailure("unavailable")``).

Must not be used after its lease ended (``closed``), and must not touch the workspace from the
host: every file operation runs inside the sandbox, through the executor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from execbridge.errors import NotFound, SandboxError
from execbridge.sandbox.base import ContainerInfo, ExecutionResult
from execbridge.sandbox.live import LiveSandbox
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

if TYPE_CHECKING:
    from execbridge.sandbox.manager import ContainerManager, _Entry

log = logging.getLogger(__name__)


class Session:
    def __init__(self, manager: ContainerManager, entry: _Entry) -> None:
        self._manager = manager
        self._entry = entry
        self.closed = False

    @property
    def info(self) -> ContainerInfo:
        return self._manager.info(self._entry)

    async def _sandbox(self) -> LiveSandbox | str:
        """The live sandbox, restarted if it died; or why there is none."""
        if self.closed:
            raise SandboxError("container session used after its lease ended")
        live = self._entry.live
        if live is not None and live.alive:
            return live
        try:
            return await self._manager.restart(self._entry)
        except NotFound:
            return "the container was deleted"
        except SandboxError as exc:
            log.error("container %s could not be restarted: %s", self._entry.record.id, exc)
            return f"the sandbox could not be started: {exc.message}"

    async def _run(self, kind: Literal["bash", "python"], source: str, timeout: float | None) -> ExecutionResult:
        live = await self._sandbox()
        if isinstance(live, str):
            return ExecutionResult("", live, -1, 0.0, error_code="unavailable")
        return await live.run(kind, source, timeout)

    async def run_bash(self, command: str, *, timeout: float | None = None) -> ExecutionResult:
        return await self._run("bash", command, timeout)

    async def run_python(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        return await self._run("python", code, timeout)

    async def view(self, path: str) -> ViewOutcome | ToolFailure:
        live = await self._sandbox()
        if isinstance(live, str):
            return ToolFailure("unavailable", live)
        return await live.view(path)

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure:
        live = await self._sandbox()
        if isinstance(live, str):
            return ToolFailure("unavailable", live)
        return await live.create(path, file_text)

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure:
        live = await self._sandbox()
        if isinstance(live, str):
            return ToolFailure("unavailable", live)
        return await live.str_replace(path, old_str, new_str)

    async def put_file(self, path: str, data: bytes) -> None:
        live = await self._sandbox()
        if isinstance(live, str):
            raise SandboxError(f"cannot write {path}: {live}")
        await live.put_file(path, data)
