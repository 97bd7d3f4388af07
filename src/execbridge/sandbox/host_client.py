"""``SandboxHostClient``: the gateway's ``ContainerService`` when containers live in a sandbox host.

Job: speak ``host_protocol.py`` over the host's Unix socket. Requests outside a lease share a few
idle connections; a lease holds a connection of its own from ``lease`` to ``release``, so commands
of different containers run side by side. A command's output files arrive as ``file`` frames and
are written to the caller's spool by the same ``OutputReceiver`` that takes them from an executor.

Must not: hang or leave a lease behind. A caller that gives up mid-command (a client that
disconnected) closes that connection, which tells the host to cancel the command and release the
lease. A host that is not there (restarting) is ``HostUnreachable`` (``unavailable`` to the model,
503 to the client); a connection that breaks mid-command answers that command ``unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from execbridge.errors import SandboxError
from execbridge.sandbox.base import ContainerInfo, ExecutionResult, OutputSpool, Owner
from execbridge.sandbox.host_protocol import (
    HOST_PROTOCOL_VERSION,
    MAX_REQUEST_BODY_FLOOR,
    HostUnreachable,
    Outcome,
    decode_info,
    decode_outcome,
    decode_result,
    encode_owner,
    raise_error,
)
from execbridge.sandbox.output_files import OutputReceiver
from execbridge.sandbox.protocol import FILE_CHUNK, ProtocolError, encode_frame, read_frame
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

log = logging.getLogger(__name__)

_IDLE_CONNECTIONS = 8  # kept open for requests outside leases; more are opened when needed
_MAX_ANSWER_BODY = max(FILE_CHUNK, MAX_REQUEST_BODY_FLOOR)  # answers carry text; files come a chunk at a time


class _Channel:
    """One connection to the host, past ``hello``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.broken = False
        self.owed = 0  # answers to requests sent without waiting (``release``), read before the next one

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and read its answer (the ``ok`` fields; an error answer raises)."""
        await self.send(message)
        frame = await self.read()
        return ok_fields(frame)

    def send_later(self, message: dict[str, Any]) -> None:
        """Send a request whose answer is read before the next request's (saves a round trip's wait)."""
        try:
            self.writer.write(encode_frame(message))
        except (ConnectionError, OSError):
            self.broken = True
            return
        self.owed += 1

    async def send(self, message: dict[str, Any]) -> None:
        while self.owed:
            self.broken = True
            ok_fields(await self.read())
            self.owed -= 1
        self.broken = True  # until the exchange completes: a cancelled exchange leaves the stream mid-way
        try:
            self.writer.write(encode_frame(message))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise HostUnreachable(f"the sandbox host went away: {exc}") from None

    async def read(self) -> dict[str, Any]:
        try:
            frame = await read_frame(self.reader, max_body=_MAX_ANSWER_BODY)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            raise HostUnreachable("the sandbox host closed the connection") from None
        if frame.get("op") != "file":
            self.broken = False
        return frame

    def close(self) -> None:
        self.writer.close()


def ok_fields(frame: dict[str, Any]) -> dict[str, Any]:
    status = frame.get("status")
    if status == "error":
        raise_error(frame)
    if status != "ok":
        raise ProtocolError(f"an answer with status {status!r}")
    return frame


RECONNECT_PATIENCE_S: Final = 15.0
"""How long a request waits for a sandbox host that does not answer: the supervisor restarts a dead host
after 1 s (then longer), so a restart is a pause for the requests of that moment, not their failure."""


class SandboxHostClient:
    """``ContainerService`` over the sandbox host at ``socket_path``; ``aclose()`` when done."""

    def __init__(
        self, socket_path: Path, *, output_limits: tuple[int, int, int], patience_s: float = RECONNECT_PATIENCE_S
    ) -> None:
        self.socket_path = socket_path
        self._patience_s = patience_s
        self._limits = output_limits  # file_limit, file_count, file_total: what the host may send
        self._idle: list[_Channel] = []
        self.instance: str | None = None

    async def aclose(self) -> None:
        for channel in self._idle:
            channel.close()
        self._idle.clear()

    async def _connect(self) -> _Channel:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience_s
        pause = 0.05
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path), limit=FILE_CHUNK)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                # Not there: perhaps being restarted by the supervisor. Wait for it, within patience.
                if loop.time() + pause > deadline:
                    raise HostUnreachable(f"no sandbox host answers at {self.socket_path} ({exc.strerror})") from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
            except PermissionError:
                raise HostUnreachable(f"not allowed to reach the sandbox host at {self.socket_path}") from None
        channel = _Channel(reader, writer)
        try:
            hello = await channel.call({"op": "hello", "protocol": HOST_PROTOCOL_VERSION})
        except BaseException:
            channel.close()
            raise
        self.instance = str(hello.get("instance"))
        return channel

    @asynccontextmanager
    async def _channel(self) -> AsyncIterator[_Channel]:
        while self._idle and self._idle[-1].reader.at_eof():
            self._idle.pop().close()  # the host closed it (it restarted)
        channel = self._idle.pop() if self._idle else await self._connect()
        try:
            yield channel
        finally:
            if channel.broken or len(self._idle) >= _IDLE_CONNECTIONS:
                channel.close()
            else:
                self._idle.append(channel)

    async def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self._channel() as channel:
            try:
                return await channel.call(message)
            except HostUnreachable:
                if channel.reader.at_eof() and message["op"] in ("get", "list"):
                    # An idle connection the host closed (it restarted): safe to ask once more.
                    channel.close()
                    async with self._channel() as fresh:
                        return await fresh.call(message)
                raise

    async def create(self, owner: Owner, *, memory_mb: int | None = None) -> ContainerInfo:
        frame = {"op": "create", "owner": encode_owner(owner), "memory_mb": memory_mb}
        return decode_info((await self._call(frame))["container"])

    async def get(self, container_id: str, owner: Owner) -> ContainerInfo:
        answer = await self._call({"op": "get", "id": container_id, "owner": encode_owner(owner)})
        return decode_info(answer["container"])

    async def list(self, owner: Owner | None = None) -> AsyncIterator[ContainerInfo]:
        answer = await self._call({"op": "list", "owner": None if owner is None else encode_owner(owner)})
        containers = answer.get("containers")
        if not isinstance(containers, list):
            raise ProtocolError("'containers' must be a list")
        for item in containers:
            yield decode_info(item)

    async def delete(self, container_id: str, owner: Owner) -> None:
        await self._call({"op": "delete", "id": container_id, "owner": encode_owner(owner)})

    @asynccontextmanager
    async def lease(self, container_id: str, owner: Owner) -> AsyncIterator[RemoteSession]:
        # The connection is the lease's while it lasts; a broken one is closed, which is what tells the
        # host to let go, and a clean one goes back to the idle ones with its release on the way.
        async with self._channel() as channel:
            answer = await channel.call({"op": "lease", "id": container_id, "owner": encode_owner(owner)})
            session = RemoteSession(channel, decode_info(answer["container"]), self._limits)
            try:
                yield session
            finally:
                session.closed = True
                if not channel.broken:
                    channel.send_later({"op": "release"})


async def host_answers(socket_path: Path) -> bool:
    """Whether a sandbox host speaking this protocol answers at ``socket_path``."""
    client = SandboxHostClient(socket_path, output_limits=(0, 0, 0), patience_s=0)
    try:
        (await client._connect()).close()
    except (SandboxError, ProtocolError):
        return False
    return True


class RemoteSession:
    """A ``ContainerSession`` whose container is in the sandbox host."""

    def __init__(self, channel: _Channel, info: ContainerInfo, limits: tuple[int, int, int]) -> None:
        self._channel = channel
        self._info = info
        self._limits = limits
        self.closed = False

    @property
    def info(self) -> ContainerInfo:
        return self._info

    def _check(self) -> None:
        if self.closed:
            raise SandboxError("container session used after its lease ended")
        if self._channel.broken:
            raise SandboxError("container session lost its sandbox host connection")

    async def _run(
        self, op: str, source: str, timeout: float | None, spool: OutputSpool | None, **extra: Any
    ) -> ExecutionResult:
        return await self._exchange({"op": op, "source": source, "timeout": timeout, **extra}, spool)

    async def _exchange(self, message: dict[str, Any], spool: OutputSpool | None) -> ExecutionResult:
        self._check()
        file_limit, file_count, file_total = self._limits
        receiver = OutputReceiver(spool, file_limit=file_limit, file_count=file_count, file_total=file_total)
        try:
            await self._channel.send(message)
            while True:
                frame = await self._channel.read()
                if frame.get("op") != "file":
                    break
                await receiver.take(frame)
            fields = decode_result(ok_fields(frame))
            receiver.finish()
        except HostUnreachable as exc:
            receiver.discard()
            reason = f"the sandbox host was lost during the command: {exc.message}"
            return ExecutionResult("", reason, -1, 0.0, error_code="unavailable")
        except BaseException:
            receiver.discard()
            raise
        result = ExecutionResult(**fields)
        if receiver.files or receiver.skipped:
            result = replace(
                result, files=tuple(receiver.files), files_skipped=result.files_skipped + tuple(receiver.skipped)
            )
        return result

    async def run_bash(
        self, command: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        return await self._run("run_bash", command, timeout, spool)

    async def run_python(
        self, code: str, *, timeout: float | None = None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        return await self._run("run_python", code, timeout, spool)

    async def run_cell(
        self,
        code: str,
        *,
        timeout: float | None = None,
        spool: OutputSpool | None = None,
        tools: Sequence[str] = (),
        cell_id: str = "",
    ) -> ExecutionResult:
        return await self._run("run_cell", code, timeout, spool, tools=list(tools), cell_id=cell_id)

    async def resume_cell(
        self, cell_id: str, replies: Mapping[str, str], *, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        return await self._exchange({"op": "resume_cell", "cell_id": cell_id, "replies": dict(replies)}, spool)

    async def _edit(self, message: dict[str, Any]) -> Outcome:
        self._check()
        try:
            return decode_outcome(await self._channel.call(message))
        except HostUnreachable as exc:
            return ToolFailure("unavailable", f"the sandbox host was lost: {exc.message}")

    async def view(self, path: str) -> ViewOutcome | ToolFailure:
        outcome = await self._edit({"op": "view", "path": path})
        if not isinstance(outcome, (ViewOutcome, ToolFailure)):
            raise ProtocolError("a view answered with another outcome")
        return outcome

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure:
        outcome = await self._edit({"op": "write", "path": path, "text": file_text})
        if not isinstance(outcome, (CreateOutcome, ToolFailure)):
            raise ProtocolError("a create answered with another outcome")
        return outcome

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure:
        outcome = await self._edit({"op": "str_replace", "path": path, "old_str": old_str, "new_str": new_str})
        if not isinstance(outcome, (StrReplaceOutcome, ToolFailure)):
            raise ProtocolError("a str_replace answered with another outcome")
        return outcome

    async def put_file(self, path: str, data: bytes) -> None:
        self._check()
        await self._channel.call({"op": "put_file", "path": path, "data": data})
