"""``ExecutorClient``: the gateway's end of one warm executor (``executor/``) inside one sandbox.

Job: send one command at a time over the executor's stdin/stdout, wait for its answer with a safety
timeout, and hand the answer to ``protocol``'s decoders for the neutral result types
(``ExecutionResult``, ``ViewOutcome``, …). A command's ``$OUTPUT_DIR`` files arrive before its
answer as ``file`` frames, which ``output_files.OutputReceiver`` writes to the caller's
``OutputSpool`` chunk by chunk. It implements the command methods of ``ContainerSession``; the
container manager owns the process, wraps a client in a session, and restarts the sandbox when the
client reports it unusable. Packaging the executor is ``executor_image``'s job.

Must not: start or kill processes (the launcher and the manager do), or trust what comes back: user
code shares the sandbox with the executor, so every frame is bounded before it is read and checked
before it is used; anything malformed makes the client unusable rather than wrong.

Invariants:
- Requests are serialised by a lock that stays held until the request's answer has been read in
  full, even when the caller gave up, so the stream never desynchronises.
- Cancellation: when the awaiting task is cancelled mid-command, the client writes a ``cancel``
  frame; the executor kills the command and everything it started and answers as usual; a
  background task reads and drops that answer (and the files before it: the spool files made for
  them are removed), then frees the lock. The caller's ``CancelledError`` propagates at once. If
  the answer does not come within the command's safety timeout, the client marks itself unusable
  (``failure``) and the manager must kill the sandbox.
- ``ExecutorError`` (a ``SandboxError``) means the executor is gone or broken: EOF, garbage, no
  answer in time. After it ``closed`` is true and every further call raises at once. An executor's
  ``internal_error`` answer also raises ``ExecutorError`` but leaves the client usable (the stream
  stayed in sync); callers may restart the sandbox anyway.
- A program that fails is an ``ExecutionResult``; an editor command that cannot be done is a
  ``ToolFailure``; neither is an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from execbridge.errors import SandboxError
from execbridge.sandbox.base import ExecutionResult, OutputSpool
from execbridge.sandbox.output_files import OutputReceiver
from execbridge.sandbox.protocol import (
    FILE_CHUNK,
    PROTOCOL_VERSION,
    ProtocolError,
    bool_field,
    create_outcome,
    encode_frame,
    execution_result,
    int_field,
    read_frame,
    str_field,
    str_replace_outcome,
    tool_failure,
    view_outcome,
)
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

if TYPE_CHECKING:
    from execbridge.config import SandboxSettings

_T = TypeVar("_T")


class ExecutorError(SandboxError):
    """The executor did not answer as the protocol says: it died, sent garbage, or took too long."""


@dataclass(frozen=True, slots=True)
class ExecutorLimits:
    """Per-command limits sent with each request, and the client's own safety timeouts."""

    command_timeout_s: float = 180.0
    output_limit_bytes: int = 1 << 20  # per stream
    output_file_limit_bytes: int = 100 << 20
    output_file_count: int = 32
    output_total_limit_bytes: int = 64 << 20  # all of a command's output files together
    view_limit_bytes: int = 10 << 20  # text views are cut at a line boundary; bigger images/PDFs fail
    edit_limit_bytes: int = 64 << 20  # str_replace refuses files over this size
    reply_margin_s: float = 10.0  # added to a command's timeout: killing, collecting files, sending
    op_timeout_s: float = 60.0  # editor commands, uploads, ping

    @classmethod
    def from_settings(cls, settings: SandboxSettings) -> ExecutorLimits:
        return cls(
            command_timeout_s=settings.command_timeout_s,
            output_limit_bytes=settings.output_limit_bytes,
            output_file_limit_bytes=settings.output_file_limit_bytes,
            output_file_count=settings.output_file_count,
            output_total_limit_bytes=settings.output_total_limit_bytes,
        )


@dataclass(frozen=True, slots=True)
class ExecutorReady:
    """What the executor said when it started."""

    pid: int  # in the sandbox's PID namespace
    python: str
    subreaper: bool  # orphans of commands are reaped (and killed) by the executor
    kill_all: bool


class ExecutorClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, limits: ExecutorLimits | None = None
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.limits = limits or ExecutorLimits()
        self._lock = asyncio.Lock()
        self._next_id = 1
        self._failure: str | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None

    @property
    def closed(self) -> bool:
        """True once the client is unusable (see ``failure``) or closed."""
        return self._failure is not None

    @property
    def failure(self) -> str | None:
        """Why the client is unusable, or None while it works."""
        return self._failure

    # ------------------------------------------------------------ lifecycle

    async def ready(self, timeout: float = 10.0) -> ExecutorReady:
        """Wait for the executor's start-up frame (the other methods do this implicitly)."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._exchange(None, 0, timeout=timeout, max_body=0))
            # A caller cancelled during start-up leaves the shielded future alone; retrieve its
            # outcome anyway so a late failure is not reported as "never retrieved".
            self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        frame = await asyncio.shield(self._ready)
        try:
            if frame.get("op") != "ready" or frame.get("protocol") != PROTOCOL_VERSION:
                raise ProtocolError(f"unexpected start-up frame (protocol {frame.get('protocol')!r})")
            return ExecutorReady(
                pid=int_field(frame, "pid"),
                python=str_field(frame, "python"),
                subreaper=bool_field(frame, "subreaper"),
                kill_all=bool_field(frame, "kill_all"),
            )
        except ProtocolError as exc:
            raise self._fail(str(exc)) from None

    async def ping(self) -> float:
        """Round-trip time in seconds."""
        started = time.perf_counter()
        await self._call({"op": "ping"}, timeout=self.limits.op_timeout_s, max_body=0)
        return time.perf_counter() - started

    def close(self) -> None:
        """Close the executor's stdin: it kills whatever is still running and exits. Idempotent."""
        self._failure = self._failure or "closed"
        if not self._writer.is_closing():
            self._writer.close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    # ------------------------------------------------------------ commands

    async def run_bash(
        self,
        command: str,
        *,
        timeout: float | None = None,
        output_limit: int | None = None,
        file_limit: int | None = None,
        file_count: int | None = None,
        file_total: int | None = None,
        spool: OutputSpool | None = None,
    ) -> ExecutionResult:
        """Run ``bash -c command``; ``None`` limits fall back to ``self.limits``.

        Its ``$OUTPUT_DIR`` files are written to ``spool`` (without one they are read and dropped).
        """
        message = {"op": "bash", "command": command}
        return await self._execute(message, timeout, output_limit, (file_limit, file_count, file_total), spool)

    async def run_python(
        self,
        code: str,
        *,
        timeout: float | None = None,
        output_limit: int | None = None,
        file_limit: int | None = None,
        file_count: int | None = None,
        file_total: int | None = None,
        spool: OutputSpool | None = None,
    ) -> ExecutionResult:
        """Run ``code`` as ``python -c`` would; limits and ``spool`` as for ``run_bash``."""
        message = {"op": "python", "code": code}
        return await self._execute(message, timeout, output_limit, (file_limit, file_count, file_total), spool)

    async def run_cell(
        self,
        code: str,
        *,
        timeout: float | None = None,
        output_limit: int | None = None,
        file_limit: int | None = None,
        file_count: int | None = None,
        file_total: int | None = None,
        spool: OutputSpool | None = None,
        tools: Sequence[str] = (),
    ) -> ExecutionResult:
        """Run ``code`` as a cell of the persistent REPL (an executor started with ``--repl``).

        A cell past ``timeout`` is interrupted and answers normally (rc 1, ``detection_timeout`` on
        stderr), never ``execution_time_exceeded``; limits and ``spool`` as for ``run_bash``. ``tools``:
        the client tools its code may await; a cell that awaits some answers with ``calls`` (ids are
        the interpreter's numbers for them) and waits, suspended, for ``resume_cell``.
        """
        message = {"op": "cell", "code": code, "tools": list(tools)}
        return await self._execute(message, timeout, output_limit, (file_limit, file_count, file_total), spool)

    async def resume_cell(
        self,
        replies: Sequence[Mapping[str, Any]],
        *,
        timeout: float | None = None,
        output_limit: int | None = None,
        spool: OutputSpool | None = None,
    ) -> ExecutionResult:
        """Run the suspended cell on with ``replies`` (``{"seq", "text"}`` or ``{"seq", "timeout"}``):
        its result, or ``calls`` again. ``timeout`` bounds the wait for the answer (the cell's own
        remaining time is the executor's to enforce)."""
        message = {"op": "resume", "replies": list(replies)}
        return await self._execute(message, timeout, output_limit, (None, None, None), spool)

    async def view(self, path: str) -> ViewOutcome | ToolFailure:
        limit = self.limits.view_limit_bytes
        frame = await self._call(
            {"op": "view", "path": path, "max_bytes": limit}, timeout=self.limits.op_timeout_s, max_body=limit
        )
        return self._decoded(view_outcome, frame)

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure:
        try:
            data = file_text.encode("utf-8")
        except UnicodeEncodeError:
            return ToolFailure("invalid_tool_input", "file_text contains characters that cannot be encoded as UTF-8")
        frame = await self._call(
            {"op": "create", "path": path, "data": data}, timeout=self.limits.op_timeout_s, max_body=0
        )
        return self._decoded(create_outcome, frame)

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure:
        message = {
            "op": "str_replace",
            "path": path,
            "old_str": old_str,
            "new_str": new_str,
            "max_bytes": self.limits.edit_limit_bytes,
        }
        frame = await self._call(message, timeout=self.limits.op_timeout_s, max_body=0)
        return self._decoded(str_replace_outcome, frame)

    async def put_file(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` (relative to the workspace); parents are created."""
        frame = await self._call(
            {"op": "put_file", "path": path, "data": data}, timeout=self.limits.op_timeout_s, max_body=0
        )
        if frame["status"] == "tool_error":
            failure = self._decoded(tool_failure, frame)
            raise SandboxError(f"could not write {path!r} into the container: {failure.message}")

    # ------------------------------------------------------------ internals

    async def _execute(
        self,
        message: dict[str, Any],
        timeout: float | None,
        output_limit: int | None,
        file_limits: tuple[int | None, int | None, int | None],
        spool: OutputSpool | None,
    ) -> ExecutionResult:
        limits = self.limits
        timeout = limits.command_timeout_s if timeout is None else timeout
        output_limit = limits.output_limit_bytes if output_limit is None else output_limit
        defaults = (limits.output_file_limit_bytes, limits.output_file_count, limits.output_total_limit_bytes)
        file_limit, file_count, file_total = (d if v is None else v for v, d in zip(file_limits, defaults, strict=True))
        if timeout <= 0 or min(output_limit, file_limit, file_count, file_total) < 0:
            raise ValueError("limits must be positive")
        message.update(timeout=timeout, output_limit=output_limit, file_limit=file_limit, file_count=file_count)
        message["file_total"] = file_total
        receiver = OutputReceiver(spool, file_limit=file_limit, file_count=file_count, file_total=file_total)
        # The answer carries stdout and stderr; each file frame at most one chunk of a file.
        max_body = max(2 * output_limit, FILE_CHUNK)
        frame = await self._call(message, timeout=timeout + limits.reply_margin_s, max_body=max_body, receiver=receiver)
        try:
            result = self._decoded(execution_result, frame)
        except BaseException:
            receiver.discard()
            raise
        if not receiver.files and not receiver.skipped:
            return result
        skipped = result.files_skipped + tuple(receiver.skipped)
        return replace(result, files=tuple(receiver.files), files_skipped=skipped)

    async def _call(
        self, message: dict[str, Any], *, timeout: float, max_body: int, receiver: OutputReceiver | None = None
    ) -> dict[str, Any]:
        await self.ready()
        request_id = self._next_id
        self._next_id += 1
        message["id"] = request_id
        return await self._exchange(message, request_id, timeout=timeout, max_body=max_body, receiver=receiver)

    async def _exchange(
        self,
        message: dict[str, Any] | None,
        request_id: int,
        *,
        timeout: float,
        max_body: int,
        receiver: OutputReceiver | None = None,
    ) -> dict[str, Any]:
        """Send ``message`` (None: only read, for the start-up frame) and return its answer."""
        await self._lock.acquire()
        try:
            if self._failure is not None:
                raise ExecutorError(f"executor unusable: {self._failure}")
            if message is not None:
                self._writer.write(encode_frame(message))  # whole frame into the transport buffer
        except BaseException:
            self._lock.release()
            raise
        # From here the answer must be read in full, whatever happens to the caller: a separate task
        # reads it and releases the lock when done.
        reply = asyncio.ensure_future(self._read_reply(request_id, timeout, max_body, receiver))
        reply.add_done_callback(self._reply_done)
        try:
            if message is not None:
                try:
                    await self._writer.drain()
                except (ConnectionError, OSError) as exc:
                    reply.cancel()
                    raise self._fail(f"cannot write to the executor: {exc!r}") from None
            return await asyncio.shield(reply)
        except asyncio.CancelledError:
            if message is not None and not reply.done():
                self._send_cancel(request_id)
                if receiver is not None:
                    receiver.abandon()  # the reader drops the files still to come, and removes the rest
            raise

    async def _read_reply(
        self, request_id: int, timeout: float, max_body: int, receiver: OutputReceiver | None
    ) -> dict[str, Any]:
        completed = False
        try:
            frame = await self._read_answer(request_id, timeout, max_body, receiver)
            completed = True
            return frame
        finally:
            if receiver is not None and not completed:
                receiver.discard()

    async def _read_answer(
        self, request_id: int, timeout: float, max_body: int, receiver: OutputReceiver | None
    ) -> dict[str, Any]:
        """The answer to ``request_id``; the ``file`` frames before it go to ``receiver``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await read_frame(self._reader, max_body=max_body)
                    if frame.get("op") != "file" or "status" in frame:
                        break
                    if receiver is None or frame.get("id") != request_id:
                        raise ProtocolError(f"a file frame for request {frame.get('id')!r} during {request_id}")
                    await receiver.take(frame)
                if receiver is not None:
                    receiver.finish()
        except TimeoutError:
            raise self._fail(f"the executor did not answer within {timeout:.1f} s") from None
        except asyncio.IncompleteReadError:
            raise self._fail("the executor's output ended (it exited or was killed)") from None
        except ProtocolError as exc:
            raise self._fail(f"protocol error: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise self._fail(f"cannot read from the executor: {exc!r}") from None
        except asyncio.CancelledError:
            self._fail("a reply was abandoned while being read")
            raise
        if frame.get("id") != request_id:
            raise self._fail(f"answer to request {frame.get('id')!r} while waiting for {request_id}")
        status = frame.get("status")
        if status == "internal_error":
            raise ExecutorError(f"executor error: {frame.get('message')}")
        if status not in ("ok", "tool_error"):
            raise self._fail(f"unknown status {status!r}")
        return frame

    def _reply_done(self, reply: asyncio.Future[dict[str, Any]]) -> None:
        self._lock.release()
        if not reply.cancelled():
            reply.exception()  # retrieved here: an abandoned command's failure is not "never retrieved"

    def _send_cancel(self, request_id: int) -> None:
        if self._writer.is_closing():
            return
        # If this fails the executor is gone, and the reader task reports it.
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self._writer.write(encode_frame({"op": "cancel", "id": request_id}))

    def _fail(self, reason: str) -> ExecutorError:
        if self._failure is None:
            self._failure = reason
        return ExecutorError(f"executor unusable: {reason}")

    def _decoded(self, decode: Callable[[dict[str, Any]], _T], frame: dict[str, Any]) -> _T:
        try:
            return decode(frame)
        except ProtocolError as exc:
            raise self._fail(str(exc)) from None
