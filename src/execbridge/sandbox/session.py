"""``LeasedSession``: the ``ContainerSession`` a lease hands out — commands on one live container.

A session never hangs and never raises for what a program does. If the sandbox died since the last
command (memory limit, a killed executor, a time limit that took the whole sandbox down), the
next command first starts a fresh one on the same workspace (``revive``); if that cannot be done,
commands answer ``error_code="unavailable"`` (editor operations: ``ToolFailure("unavailable")``).

Must not be used after its lease ended (``closed``), and must not touch the workspace from the
host: every file operation runs inside the sandbox, through the executor. It knows nothing of the
manager: it gets the container's entry and three callables (``revive``, ``info``, ``repl``) when it is made.

Cells of the persistent Python REPL (``run_cell``) go to the container's REPL sandbox, which ``repl``
starts on the first cell (and again after it died); a cell whose REPL lost its state since the last
cell (it died, or the container was evicted) carries a note saying so at the end of its stderr. A
cell whose code awaits client tools is suspended (``sandbox/waiting.py``) and resumed by a later
lease's ``resume_cell``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Literal, NoReturn, TypeVar

from execbridge.errors import NotFound, SandboxError
from execbridge.sandbox import waiting
from execbridge.sandbox.base import ContainerInfo, ExecutionResult, OutputSpool
from execbridge.sandbox.entry import ContainerEntry
from execbridge.sandbox.live import LiveSandbox
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class _Unavailable(Exception):
    """No live sandbox for this command, and why (in words the model can act on)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeasedSession:
    """Exclusive use of one container while its lease lasts (the caller holds the entry's lock).

    ``revive`` replaces a dead sandbox and returns the new one (``NotFound`` once the container was
    deleted, ``SandboxError`` when no sandbox can start); ``info`` describes the container now;
    ``repl`` returns the container's live REPL sandbox, starting it if needed (the same errors);
    ``watch`` is called when a cell was suspended on client tools (the manager times its wait out after
    ``call_timeout_s``).
    """

    def __init__(
        self,
        entry: ContainerEntry,
        *,
        revive: Callable[[], Awaitable[LiveSandbox]],
        info: Callable[[], ContainerInfo],
        repl: Callable[[], Awaitable[LiveSandbox]],
        watch: Callable[[], None] = lambda: None,
        call_timeout_s: float = 270.0,
    ) -> None:
        self._entry = entry
        self._revive = revive
        self._info = info
        self._repl = repl
        self._watch = watch
        self._call_timeout_s = call_timeout_s
        self.closed = False

    @property
    def info(self) -> ContainerInfo:
        return self._info()

    async def _sandbox(self) -> LiveSandbox:
        """The live sandbox, restarted if it died; ``_Unavailable`` says why there is none."""
        if self.closed:
            raise SandboxError("container session used after its lease ended")
        live = self._entry.live
        if live is not None and live.alive:
            return live
        try:
            return await self._revive()
        except NotFound:
            raise _Unavailable("the container was deleted") from None
        except SandboxError as exc:
            log.error("container %s could not be restarted: %s", self._entry.record.id, exc)
            raise _Unavailable(f"the sandbox could not be started: {exc.message}") from None

    async def _use(self, call: Callable[[LiveSandbox], Awaitable[_T]], unavailable: Callable[[str], _T]) -> _T:
        """``call`` on the live sandbox; ``unavailable(reason)`` when there is none."""
        try:
            live = await self._sandbox()
        except _Unavailable as exc:
            reason = exc.reason
        else:
            return await call(live)
        return unavailable(reason)  # outside the handler: a raised error does not chain ``_Unavailable``

    async def _run(
        self, kind: Literal["bash", "python"], source: str, timeout: float | None, spool: OutputSpool | None
    ) -> ExecutionResult:
        return await self._use(lambda live: live.run(kind, source, timeout, spool), _unavailable_result)

    async def run_bash(
        self, command: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        return await self._run("bash", command, timeout, spool)

    async def run_python(
        self, code: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        return await self._run("python", code, timeout, spool)

    async def run_cell(
        self,
        code: str,
        *,
        timeout: float | None = None,
        spool: OutputSpool | None = None,
        tools: Sequence[str] = (),
        cell_id: str = "",
    ) -> ExecutionResult:
        if self.closed:
            raise SandboxError("container session used after its lease ended")
        if self._entry.waiting is not None:  # a cell waits for its client: it ends first (its calls time out)
            await waiting.settle(self._entry, call_timeout_s=self._call_timeout_s)
        try:
            repl = await self._repl()
        except NotFound:
            return _unavailable_result("the container was deleted")
        except SandboxError as exc:
            log.error("the REPL of container %s could not be started: %s", self._entry.record.id, exc)
            return _unavailable_result(f"the Python REPL could not be started: {exc.message}")
        result = await repl.run("cell", code, timeout, spool, tools=tools)
        if result.calls:
            limit = repl.limits.executor.command_timeout_s if timeout is None else timeout
            paused = waiting.suspend(
                self._entry, cell_id, result, repl, call_timeout_s=self._call_timeout_s, cell_timeout=limit
            )
            self._watch()
            return paused
        lost, self._entry.repl_note = self._entry.repl_note, None
        if lost is None or result.error_code is not None:
            self._entry.repl_note = lost  # said by the next cell that runs
            return result
        note = (
            f"[execbridge] a fresh Python REPL was started for this cell: {lost}; variables, imports and "
            "definitions from earlier cells are gone (files in the workspace are kept)\n"
        )
        separator = "\n" if result.stderr and not result.stderr.endswith("\n") else ""
        return replace(result, stderr=result.stderr + separator + note)

    async def resume_cell(
        self, cell_id: str, replies: Mapping[str, str], *, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        if self.closed:
            raise SandboxError("container session used after its lease ended")
        result = await waiting.resume(self._entry, cell_id, replies, spool, call_timeout_s=self._call_timeout_s)
        if result.calls:
            self._watch()
        return result

    async def view(self, path: str) -> ViewOutcome | ToolFailure:
        return await self._use(lambda live: live.view(path), _unavailable_failure)

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure:
        return await self._use(lambda live: live.create(path, file_text), _unavailable_failure)

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure:
        return await self._use(lambda live: live.str_replace(path, old_str, new_str), _unavailable_failure)

    async def put_file(self, path: str, data: bytes) -> None:
        def cannot_write(reason: str) -> NoReturn:
            raise SandboxError(f"cannot write {path}: {reason}")

        await self._use(lambda live: live.put_file(path, data), cannot_write)


def _unavailable_result(reason: str) -> ExecutionResult:
    return ExecutionResult("", reason, -1, 0.0, error_code="unavailable")


def _unavailable_failure(reason: str) -> ToolFailure:
    return ToolFailure("unavailable", reason)
