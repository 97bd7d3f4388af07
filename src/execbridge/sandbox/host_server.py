"""``SandboxHostServer``: the root process's end of the privilege split — containers behind a Unix socket.

Job: serve ``host_protocol.py`` to the gateway (and to root's CLI) on a socket with checked
permissions, acting on the one ``ContainerManager`` of this data directory. A gateway so reaches
the containers only through these requests, and only as owners whose keys it presents.

Must not: trust a peer. Every request's owner is derived here (``_owner``): from a client's key, or
taken as named only from a root peer (``SO_PEERCRED``). A peer that breaks the protocol is
disconnected; a peer that disconnects mid-command has the command cancelled and its lease released.

Invariants: one request at a time per connection; a command's output files are spooled under the
sandbox's own directory (root only) and removed once forwarded, forwarded or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execbridge import ids
from execbridge.errors import ExecbridgeError, InvalidRequest, PermissionDenied
from execbridge.sandbox.base import CapturedFile, ContainerSession, ExecutionResult
from execbridge.sandbox.host_protocol import (
    ANONYMOUS_OWNER,
    HOST_PROTOCOL_VERSION,
    MAX_REQUEST_BODY_FLOOR,
    encode_info,
    encode_outcome,
    encode_result,
    error_answer,
)
from execbridge.sandbox.manager import ContainerManager
from execbridge.sandbox.protocol import FILE_CHUNK, ProtocolError, encode_frame, opt_int_field, read_frame

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")  # pid, uid, gid


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0


class _Disconnected(Exception):
    """The peer went away (or broke the protocol): the connection ends."""


class DirectorySpool:
    """An ``OutputSpool`` in a directory only root reaches: where a command's files wait to be forwarded."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def new_path(self) -> Path:
        return self._dir / ids.random_token(32)


class SandboxHostServer:
    """``async with server.listening(path, group=gid): ...`` serves until the block ends."""

    def __init__(self, containers: ContainerManager, *, instance: str, max_upload_bytes: int) -> None:
        self._containers = containers
        self._instance = instance
        self._max_body = max(max_upload_bytes, MAX_REQUEST_BODY_FLOOR)
        self._spool_dir = containers.root / "spool"
        self._connections: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def listening(self, path: Path, *, group: int | None = None) -> AsyncIterator[None]:
        """Listen at ``path`` (mode 0660, group ``group``; 0600 without one) until the block ends."""
        sock = _bind(path, group, self._spool_dir)
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(
            lambda: _WatchedProtocol(asyncio.StreamReader(limit=FILE_CHUNK), self._accept), sock=sock
        )
        try:
            yield
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await server.wait_closed()
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            protocol = writer.transport.get_protocol()
            assert isinstance(protocol, _WatchedProtocol)
            connection = _Connection(self, reader, writer, _peer(writer))
            protocol.on_gone = connection.peer_gone
            await connection.serve()
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _bind(path: Path, group: int | None, spool_dir: Path) -> socket.socket:
    """The listening socket at ``path`` (0660 with ``group``, else 0600), and an empty spool directory."""
    spool_dir.mkdir(mode=0o700, exist_ok=True)
    for leftover in spool_dir.iterdir():  # a previous host's, killed mid-forward
        leftover.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # Bound under a umask that leaves nobody a window on it; the group is given before listen().
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if group is not None:
        os.chown(path, 0, group)
        os.chmod(path, 0o660)
    return sock


def _read_chunk(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(FILE_CHUNK)


def _peer(writer: asyncio.StreamWriter) -> Peer:
    sock: socket.socket = writer.get_extra_info("socket")
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Peer(pid, uid, gid)


class _WatchedProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that says when the peer is gone even while nothing is reading: a command
    waits for its sandbox, not for the socket, and a peer that disconnects must end it at once."""

    on_gone: Callable[[], None] | None = None

    def eof_received(self) -> bool:
        if self.on_gone is not None:
            self.on_gone()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_gone is not None:
            self.on_gone()
        super().connection_lost(exc)


class _Connection:
    """One peer's requests, in order. A peer that goes away mid-command has the command cancelled (its
    lease released); the protocol reports it (``peer_gone``), so no reader waits beside each command."""

    def __init__(
        self, server: SandboxHostServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        self._server = server
        self._containers = server._containers
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._serving: asyncio.Task[Any] | None = None
        self._in_command = False  # a request inside a lease is being carried out
        self._gone = False

    def peer_gone(self) -> None:
        self._gone = True
        if self._in_command and self._serving is not None:
            self._serving.cancel()

    async def serve(self) -> None:
        self._serving = asyncio.current_task()
        try:
            await self._hello()
            while True:
                frame = await self._read()
                if frame.get("op") == "lease":
                    await self._lease(frame)
                else:
                    await self._answer(self._request, frame)
        except _Disconnected:
            pass
        except asyncio.CancelledError:
            if not self._gone:
                raise  # the server is stopping

    # ------------------------------------------------------------ framing

    async def _read(self) -> dict[str, Any]:
        try:
            return await read_frame(self._reader, max_body=self._server._max_body)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _Disconnected from None
        except ProtocolError as exc:
            log.warning("sandbox host: peer pid %d broke the protocol: %s", self._peer.pid, exc)
            raise _Disconnected from None

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            self._writer.write(encode_frame(message))
            await self._writer.drain()
        except ConnectionError:
            raise _Disconnected from None

    async def _answer(
        self, handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], request: dict[str, Any]
    ) -> None:
        try:
            answer = {"status": "ok", **await handle(request)}
        except ExecbridgeError as exc:
            answer = error_answer(exc)
        await self._send(answer)

    async def _hello(self) -> None:
        frame = await self._read()
        if frame.get("op") != "hello" or frame.get("protocol") != HOST_PROTOCOL_VERSION:
            await self._send(
                error_answer(
                    InvalidRequest(
                        f"this sandbox host speaks protocol {HOST_PROTOCOL_VERSION}, not {frame.get('protocol')!r}",
                        code="protocol_version",
                    )
                )
            )
            raise _Disconnected
        await self._send({"status": "ok", "protocol": HOST_PROTOCOL_VERSION, "instance": self._server._instance})

    # ------------------------------------------------------------ requests

    def _owner(self, frame: dict[str, Any]) -> str:
        """The owner this request may act for: derived from the client's key, never taken on trust."""
        value = frame.get("owner")
        if isinstance(value, dict) and len(value) == 1:
            key = value.get("key")
            if isinstance(key, str) and key:
                return ids.key_id(key)
            named = value.get("id")
            if isinstance(named, str) and named:
                if self._peer.is_root or named == ANONYMOUS_OWNER:
                    return named
                raise PermissionDenied(
                    "only root may act for an owner by name; send the key the client presented", code="owner_refused"
                )
        raise InvalidRequest('\'owner\' must be {"key": KEY} or {"id": OWNER}', code="bad_owner")

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        op = frame.get("op")
        if op == "create":
            memory_mb = opt_int_field(frame, "memory_mb")  # the manager clamps it to its own limit
            return {"container": encode_info(await self._containers.create(self._owner(frame), memory_mb=memory_mb))}
        if op == "get":
            return {"container": encode_info(await self._containers.get(_id(frame), self._owner(frame)))}
        if op == "delete":
            await self._containers.delete(_id(frame), self._owner(frame))
            return {}
        if op == "list":
            if frame.get("owner") is None and not self._peer.is_root:
                raise PermissionDenied("only root may list every owner's containers", code="owner_refused")
            owner = None if frame.get("owner") is None else self._owner(frame)
            return {"containers": [encode_info(info) async for info in self._containers.list(owner)]}
        raise InvalidRequest(f"unknown request {op!r}", code="unknown_op")

    async def _lease(self, frame: dict[str, Any]) -> None:
        try:
            owner = self._owner(frame)
            lease = self._containers.lease(_id(frame), owner)
            self._in_command = True  # waiting for the container's lock may take as long as a command
            try:
                session = await lease.__aenter__()
            finally:
                self._in_command = False
        except ExecbridgeError as exc:
            await self._send(error_answer(exc))
            return
        try:
            await self._send({"status": "ok", "container": encode_info(session.info)})
            while True:
                request = await self._read()
                if request.get("op") == "release":
                    await self._send({"status": "ok"})
                    return
                self._in_command = True
                try:
                    await self._in_lease(session, request)
                finally:
                    self._in_command = False
        finally:
            await lease.__aexit__(None, None, None)

    async def _in_lease(self, session: ContainerSession, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op in ("run_bash", "run_python", "run_cell", "resume_cell"):
            await self._run(session, request, op)
            return
        await self._answer(functools.partial(self._edit, session), request)

    async def _edit(self, session: ContainerSession, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "view":
            return encode_outcome(await session.view(_str(request, "path")))
        if op == "write":
            return encode_outcome(await session.create(_str(request, "path"), _str(request, "text")))
        if op == "str_replace":
            outcome = await session.str_replace(
                _str(request, "path"), _str(request, "old_str"), _str(request, "new_str")
            )
            return encode_outcome(outcome)
        if op == "put_file":
            data = request.get("data")
            if not isinstance(data, bytes):
                raise InvalidRequest("'data' must be binary")
            await session.put_file(_str(request, "path"), data)
            return {}
        if op == "info":
            return {"container": encode_info(session.info)}
        raise InvalidRequest(f"unknown request {op!r} in a lease", code="unknown_op")

    async def _run(self, session: ContainerSession, request: dict[str, Any], op: str) -> None:
        spool = DirectorySpool(self._server._spool_dir)
        try:
            result = await self._execute(session, request, op, spool)
        except ExecbridgeError as exc:
            await self._send(error_answer(exc))
            return
        try:
            for captured in result.files:
                await self._forward(captured)
            await self._send({"status": "ok", **encode_result(result)})
        finally:
            for captured in result.files:
                if captured.path is not None:
                    with contextlib.suppress(OSError):
                        captured.path.unlink()

    async def _execute(
        self, session: ContainerSession, request: dict[str, Any], op: str, spool: DirectorySpool
    ) -> ExecutionResult:
        if op == "resume_cell":
            replies = request.get("replies")
            if not isinstance(replies, dict) or not all(isinstance(v, str) for v in replies.values()):
                raise InvalidRequest("'replies' must map tool_use ids to text")
            return await session.resume_cell(_str(request, "cell_id"), replies, spool=spool)
        timeout = request.get("timeout")
        source = request.get("source")
        if not isinstance(source, str) or not (timeout is None or type(timeout) in (int, float)):
            raise InvalidRequest("'source' must be a string and 'timeout' a number")
        limit = None if timeout is None else float(timeout)
        if op == "run_cell":
            tools = request.get("tools", [])
            if not isinstance(tools, list) or not all(isinstance(t, str) and t.isidentifier() for t in tools):
                raise InvalidRequest("'tools' must be a list of names")
            cell_id = request.get("cell_id", "")
            if not isinstance(cell_id, str):
                raise InvalidRequest("'cell_id' must be a string")
            return await session.run_cell(source, timeout=limit, spool=spool, tools=tools, cell_id=cell_id)
        run = session.run_bash if op == "run_bash" else session.run_python
        return await run(source, timeout=limit, spool=spool)

    async def _forward(self, captured: CapturedFile) -> None:
        """One output file as ``file`` frames, read a chunk at a time (the spool file is root's)."""
        path = captured.path
        assert path is not None
        offset = 0
        while True:
            chunk = await asyncio.to_thread(_read_chunk, path, offset)
            last = len(chunk) < FILE_CHUNK
            frame: dict[str, Any] = {"op": "file", "data": chunk, "end": "ok" if last else None}
            if offset == 0:
                frame["name"] = captured.name
            await self._send(frame)
            if last:
                return
            offset += len(chunk)


def _id(frame: dict[str, Any]) -> str:
    return _str(frame, "id")


def _str(frame: dict[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{key}' must be a string", code="bad_request")
    return value
