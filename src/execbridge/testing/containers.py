"""An in-memory stand-in for ``ContainerService``, for tests of code *around* the sandbox.

It runs nothing: commands are answered by a function the test supplies (default: echo the command),
files live in a dict. Use it to test the engine's ordering and bookkeeping; use the real
``ContainerManager`` whenever the behaviour of code execution itself matters.

Output files: a responder lists them in memory (``fake_output(name, data)``); a session given a
spool writes their bytes there, as the real client does with what the executor sends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from execbridge import ids
from execbridge.errors import NotFound
from execbridge.sandbox.base import CapturedFile, ContainerInfo, ExecutionResult, OutputSpool
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

Responder = Callable[[str, str], ExecutionResult]


def echo(kind: str, source: str) -> ExecutionResult:
    return ExecutionResult(stdout=f"{kind}: {source}\n", stderr="", return_code=0, duration_ms=0.1)


def fake_output(name: str, data: bytes) -> CapturedFile:
    """An output file a responder makes up, its bytes in memory."""
    return CapturedFile(name, len(data), None, data)


def _spooled(result: ExecutionResult, spool: OutputSpool | None) -> ExecutionResult:
    """``result`` with its in-memory output files written into ``spool`` (as they are without one)."""
    if spool is None:
        return result
    files = []
    for made in result.files:
        if made.path is None:
            path = spool.new_path()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, made.data)
            finally:
                os.close(fd)
            made = CapturedFile(made.name, made.size, path)
        files.append(made)
    return replace(result, files=tuple(files))


@dataclass
class FakeSession:
    info: ContainerInfo
    files: dict[str, str]
    respond: Responder
    log: list[tuple[str, str]] = field(default_factory=list)

    async def run_bash(
        self, command: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        self.log.append(("bash", command))
        return _spooled(self.respond("bash", command), spool)

    async def run_python(
        self, code: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        self.log.append(("python", code))
        return _spooled(self.respond("python", code), spool)

    async def run_cell(
        self,
        code: str,
        *,
        timeout: float | None = None,
        spool: OutputSpool | None = None,
        tools: Sequence[str] = (),
        cell_id: str = "",
    ) -> ExecutionResult:
        self.log.append(("cell", code))
        return _spooled(self.respond("cell", code), spool)

    async def resume_cell(
        self, cell_id: str, replies: Mapping[str, str], *, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        """The fake keeps no cells: the responder answers ``("resume", <cell id>)``."""
        self.log.append(("resume", cell_id))
        return _spooled(self.respond("resume", cell_id), spool)

    async def view(self, path: str) -> ViewOutcome | ToolFailure:
        if path not in self.files:
            return ToolFailure("file_not_found", f"{path}: no such file")
        text = self.files[path]
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        return ViewOutcome("text", text, lines, 1, lines)

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure:
        existed = path in self.files
        self.files[path] = file_text
        return CreateOutcome(existed)

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure:
        text = self.files.get(path)
        if text is None:
            return ToolFailure("file_not_found", f"{path}: no such file")
        if text.count(old_str) != 1:
            return ToolFailure("invalid_tool_input", "old_str must occur exactly once")
        line = text[: text.index(old_str)].count("\n") + 1
        self.files[path] = text.replace(old_str, new_str)
        return StrReplaceOutcome(line, 1, line, 1, (f"-{old_str}", f"+{new_str}"))

    async def put_file(self, path: str, data: bytes) -> None:
        self.files[path] = data.decode("utf-8", "replace")


class FakeContainerService:
    def __init__(self, respond: Responder = echo) -> None:
        self.respond = respond
        self.sessions: dict[str, FakeSession] = {}

    def _info(self, container_id: str, owner: str) -> ContainerInfo:
        now = datetime.now(UTC)
        return ContainerInfo(container_id, owner, now, now, now + timedelta(minutes=5), True)

    async def create(self, owner: str, *, memory_mb: int | None = None) -> ContainerInfo:
        info = replace(self._info(ids.container_id(), owner), memory_mb=memory_mb)
        self.sessions[info.id] = FakeSession(info, {}, self.respond)
        return info

    async def get(self, container_id: str, owner: str) -> ContainerInfo:
        session = self.sessions.get(container_id)
        if session is None or session.info.owner != owner:
            raise NotFound(f"container '{container_id}' not found")
        return replace(session.info, last_used_at=datetime.now(UTC))

    @asynccontextmanager
    async def lease(self, container_id: str, owner: str) -> AsyncIterator[FakeSession]:
        await self.get(container_id, owner)
        yield self.sessions[container_id]

    async def list(self, owner: str | None = None) -> AsyncIterator[ContainerInfo]:
        for session in list(self.sessions.values()):
            if owner is None or session.info.owner == owner:
                yield session.info

    async def delete(self, container_id: str, owner: str) -> None:
        await self.get(container_id, owner)
        del self.sessions[container_id]
