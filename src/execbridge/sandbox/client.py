"""``ExecutorClient``: the gateway's end of one warm executor (``executor/``) inside one sandbox.

Job: send one command at a time over the executor's stdin/stdout, wait for its answer with a safety
timeout, and turn the answer into the neutral result types (``ExecutionResult``, ``ViewOutcome``, …).
It implements the command methods of ``ContainerSession``; the container manager owns the process,
wraps a client in a session, and restarts the sandbox when the client reports it unusable.

Must not: start or kill processes (the launcher and the manager do), or trust what comes back: user
code shares the sandbox with the executor, so every frame is bounded before it is read and checked
before it is used; anything malformed makes the client unusable rather than wrong.

Invariants:
- Requests are serialised by a lock that stays held until the request's answer has been read in
  full, even when the caller gave up, so the stream never desynchronises.
- Cancellation: when the awaiting task is cancelled mid-command, the client writes a ``cancel``
  frame; the executor kills the command and everything it started and answers as usual; a
  background task reads and drops that answer, then frees the lock. The caller's ``CancelledError``
  propagates at once. If the answer does not come within the command's safety timeout, the client
  marks itself unusable (``failure``) and the manager must kill the sandbox.
- ``ExecutorError`` (a ``SandboxError``) means the executor is gone or broken: EOF, garbage, no
  answer in time. After it ``closed`` is true and every further call raises at once. An executor's
  ``internal_error`` answer also raises ``ExecutorError`` but leaves the client usable (the stream
  stayed in sync); callers may restart the sandbox anyway.
- A program that fails is an ``ExecutionResult``; an editor command that cannot be done is a
  ``ToolFailure``; neither is an exception.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import codecs
import contextlib
import graphlib
import importlib.util
import marshal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from execbridge.errors import SandboxError
from execbridge.sandbox.base import CapturedFile, ExecutionResult
from execbridge.sandbox.protocol import PROTOCOL_VERSION, ProtocolError, encode_frame, read_frame
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolErrorCode, ToolFailure, ViewOutcome

if TYPE_CHECKING:
    from execbridge.config import SandboxSettings

EXECUTOR_PACKAGE = Path(__file__).with_name("executor")
"""The executor's source: a stdlib-only package that runs inside the sandbox (``executor/__init__.py``)."""
EXECUTOR_SCRIPT = EXECUTOR_PACKAGE / "__main__.py"
"""The script that starts it from this source tree (the tests); a sandbox gets ``executor_bytecode()``."""
_MODULES_SLOT = "<executor modules>"  # the placeholder constant of ``_MODULES`` in executor/__main__.py

_TOOL_ERROR_CODES = frozenset(get_args(ToolErrorCode))
_T = TypeVar("_T")


class ExecutorError(SandboxError):
    """The executor did not answer as the protocol says: it died, sent garbage, or took too long."""


def executor_argv(
    python: str | Path,
    script: str | Path = EXECUTOR_SCRIPT,
    *,
    workspace: str | Path = "/workspace",
    output_root: str | Path = "/tmp/outputs",
    kill_all: bool = False,
    env: dict[str, str] | None = None,
) -> list[str]:
    """The command line that starts an executor: protocol on stdin/stdout, log on stderr.

    ``-I -S``: no environment, no user site, no ``site`` at start-up (it costs ~6 ms and runs later,
    when the executor is idle or before its first Python command). Pass ``kill_all`` only when the
    executor is alone in its own PID namespace: it then kills every other process after each command.
    """
    argv = [str(python), "-I", "-S", str(script), "--workspace", str(workspace), "--output-root", str(output_root)]
    if kill_all:
        argv.append("--kill-all")
    for name, value in (env or {}).items():
        argv += ["--env", f"{name}={value}"]
    return argv


def executor_bytecode() -> bytes:
    """The executor as one ``.pyc`` image, for ``python3 -I -S /opt/execbridge/executor.py``.

    The image is ``executor/__main__.py`` compiled, with every other module of the package compiled
    into its ``_MODULES`` constant, each after the siblings it imports: one file to bind into the
    sandbox, nothing to compile at start-up. Sources would be compiled at every start (~8 ms here, as
    much as the interpreter's own start-up), and nothing can cache them in a read-only sandbox.

    The image only runs on a Python with this interpreter's bytecode version (same major.minor); any
    other refuses it at start ("Bad magic number").
    """
    paths = {
        "executor" if path.stem == "__init__" else f"executor.{path.stem}": path
        for path in EXECUTOR_PACKAGE.glob("*.py")
        if path != EXECUTOR_SCRIPT
    }
    sources = {name: path.read_bytes() for name, path in paths.items()}
    needs: dict[str, set[str]] = {}  # the siblings each module imports as it runs: top-level ``from .x import``
    for name, source in sources.items():
        imports = [node for node in ast.parse(source).body if isinstance(node, ast.ImportFrom) and node.level == 1]
        needs[name] = {f"executor.{node.module or alias.name}" for node in imports for alias in node.names}
    modules = []
    for name in graphlib.TopologicalSorter(needs).static_order():  # CycleError on an import cycle
        code = compile(sources[name], f"executor/{paths[name].name}", "exec", dont_inherit=True, optimize=0)
        modules.append((name, code, name == "executor"))
    script = compile(EXECUTOR_SCRIPT.read_bytes(), "executor/__main__.py", "exec", dont_inherit=True, optimize=0)
    slot = [i for i, c in enumerate(script.co_consts) if type(c) is str and c == _MODULES_SLOT]
    if len(slot) != 1:
        raise RuntimeError(f"executor/__main__.py has no single {_MODULES_SLOT!r} constant to fill")
    consts = list(script.co_consts)
    consts[slot[0]] = tuple(modules)
    script = script.replace(co_consts=tuple(consts))
    # .pyc header: magic, flags (0: timestamp-based), mtime, source size; running a .pyc directly
    # checks only the magic.
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(script)


@dataclass(frozen=True, slots=True)
class ExecutorLimits:
    """Per-command limits sent with each request, and the client's own safety timeouts."""

    command_timeout_s: float = 180.0
    output_limit_bytes: int = 1 << 20  # per stream
    output_file_limit_bytes: int = 100 << 20
    output_file_count: int = 32
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
                pid=_int(frame, "pid"),
                python=_str(frame, "python"),
                subreaper=_bool(frame, "subreaper"),
                kill_all=_bool(frame, "kill_all"),
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
    ) -> ExecutionResult:
        """Run ``bash -c command``; ``None`` limits fall back to ``self.limits``."""
        message = {"op": "bash", "command": command}
        return await self._execute(message, timeout, output_limit, file_limit, file_count)

    async def run_python(
        self,
        code: str,
        *,
        timeout: float | None = None,
        output_limit: int | None = None,
        file_limit: int | None = None,
        file_count: int | None = None,
    ) -> ExecutionResult:
        """Run ``code`` as ``python -c`` would; ``None`` limits fall back to ``self.limits``."""
        message = {"op": "python", "code": code}
        return await self._execute(message, timeout, output_limit, file_limit, file_count)

    async def view(self, path: str) -> ViewOutcome | ToolFailure:
        limit = self.limits.view_limit_bytes
        frame = await self._call(
            {"op": "view", "path": path, "max_bytes": limit}, timeout=self.limits.op_timeout_s, max_body=limit
        )
        return self._decoded(_view_outcome, frame)

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure:
        try:
            data = file_text.encode("utf-8")
        except UnicodeEncodeError:
            return ToolFailure("invalid_tool_input", "file_text contains characters that cannot be encoded as UTF-8")
        frame = await self._call(
            {"op": "create", "path": path, "data": data}, timeout=self.limits.op_timeout_s, max_body=0
        )
        return self._decoded(_create_outcome, frame)

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure:
        message = {
            "op": "str_replace",
            "path": path,
            "old_str": old_str,
            "new_str": new_str,
            "max_bytes": self.limits.edit_limit_bytes,
        }
        frame = await self._call(message, timeout=self.limits.op_timeout_s, max_body=0)
        return self._decoded(_str_replace_outcome, frame)

    async def put_file(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` (relative to the workspace); parents are created."""
        frame = await self._call(
            {"op": "put_file", "path": path, "data": data}, timeout=self.limits.op_timeout_s, max_body=0
        )
        if frame["status"] == "tool_error":
            failure = self._decoded(_tool_failure, frame)
            raise SandboxError(f"could not write {path!r} into the container: {failure.message}")

    # ------------------------------------------------------------ internals

    async def _execute(
        self,
        message: dict[str, Any],
        timeout: float | None,
        output_limit: int | None,
        file_limit: int | None,
        file_count: int | None,
    ) -> ExecutionResult:
        limits = self.limits
        timeout = limits.command_timeout_s if timeout is None else timeout
        output_limit = limits.output_limit_bytes if output_limit is None else output_limit
        file_limit = limits.output_file_limit_bytes if file_limit is None else file_limit
        file_count = limits.output_file_count if file_count is None else file_count
        if timeout <= 0 or output_limit < 0 or file_limit < 0 or file_count < 0:
            raise ValueError("limits must be positive")
        message.update(timeout=timeout, output_limit=output_limit, file_limit=file_limit, file_count=file_count)
        max_body = 2 * output_limit + file_count * file_limit  # what the executor may send back, at most
        frame = await self._call(message, timeout=timeout + limits.reply_margin_s, max_body=max_body)
        return self._decoded(_execution_result, frame)

    async def _call(self, message: dict[str, Any], *, timeout: float, max_body: int) -> dict[str, Any]:
        await self.ready()
        request_id = self._next_id
        self._next_id += 1
        message["id"] = request_id
        return await self._exchange(message, request_id, timeout=timeout, max_body=max_body)

    async def _exchange(
        self, message: dict[str, Any] | None, request_id: int, *, timeout: float, max_body: int
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
        reply = asyncio.ensure_future(self._read_reply(request_id, timeout, max_body))
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
            raise

    async def _read_reply(self, request_id: int, timeout: float, max_body: int) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                frame = await read_frame(self._reader, max_body=max_body)
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


# ---------------------------------------------------------------- decoding helpers


def _decode_output(data: bytes, truncated: bool) -> str:
    # A cut output may end inside a UTF-8 sequence; a non-final decode drops that partial tail
    # instead of showing a replacement character that was never in the output.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=not truncated)


def _tool_failure(frame: dict[str, Any]) -> ToolFailure:
    code = frame.get("error_code")
    if code not in _TOOL_ERROR_CODES:
        raise ProtocolError(f"unknown tool error code {code!r}")
    return ToolFailure(code, _str(frame, "message"))


def _view_outcome(frame: dict[str, Any]) -> ViewOutcome | ToolFailure:
    if frame["status"] == "tool_error":
        return _tool_failure(frame)
    file_type = frame.get("file_type")
    data = _bytes(frame, "data")
    if file_type == "text":
        # Raw text, no line-number prefixes: Anthropic's view result carries the file as is, with
        # the numbering in start_line/num_lines/total_lines (§2.4). A view cut at the size limit
        # shows whole lines and says so through num_lines < total_lines.
        return ViewOutcome(
            file_type="text",
            content=data.decode("utf-8", "replace"),
            num_lines=_int(frame, "num_lines"),
            start_line=_int(frame, "start_line"),
            total_lines=_opt_int(frame, "total_lines"),
        )
    if file_type == "image" or file_type == "pdf":
        return ViewOutcome(file_type=file_type, content=base64.b64encode(data).decode("ascii"))
    raise ProtocolError(f"unknown file_type {file_type!r}")


def _create_outcome(frame: dict[str, Any]) -> CreateOutcome | ToolFailure:
    if frame["status"] == "tool_error":
        return _tool_failure(frame)
    return CreateOutcome(is_file_update=_bool(frame, "is_file_update"))


def _str_replace_outcome(frame: dict[str, Any]) -> StrReplaceOutcome | ToolFailure:
    if frame["status"] == "tool_error":
        return _tool_failure(frame)
    lines = frame.get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ProtocolError("'lines' must be a list of strings")
    return StrReplaceOutcome(
        old_start=_int(frame, "old_start"),
        old_lines=_int(frame, "old_lines"),
        new_start=_int(frame, "new_start"),
        new_lines=_int(frame, "new_lines"),
        lines=tuple(lines),
    )


def _execution_result(frame: dict[str, Any]) -> ExecutionResult:
    if frame["status"] != "ok":
        raise ProtocolError(f"status {frame['status']!r} for a command")
    stdout_truncated = _bool(frame, "stdout_truncated")
    stderr_truncated = _bool(frame, "stderr_truncated")
    too_large = frame.get("files_too_large")
    if not isinstance(too_large, list) or not all(isinstance(name, str) for name in too_large):
        raise ProtocolError("'files_too_large' must be a list of names")
    error_code: Literal["execution_time_exceeded", "output_file_too_large"] | None = None
    if _bool(frame, "timed_out"):
        error_code = "execution_time_exceeded"
    elif too_large:
        error_code = "output_file_too_large"  # the files under the limit are still returned
    return ExecutionResult(
        stdout=_decode_output(_bytes(frame, "stdout"), stdout_truncated),
        stderr=_decode_output(_bytes(frame, "stderr"), stderr_truncated),
        return_code=_int(frame, "return_code", minimum=-1),
        duration_ms=_float(frame, "duration_ms"),
        error_code=error_code,
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
        files=_captured_files(frame.get("files")),
        files_too_large=tuple(too_large),
        files_omitted=_int(frame, "files_omitted") if "files_omitted" in frame else 0,
    )


def _captured_files(value: Any) -> tuple[CapturedFile, ...]:
    if not isinstance(value, list):
        raise ProtocolError("'files' must be a list")
    files = []
    for item in value:
        if not isinstance(item, dict):
            raise ProtocolError("a captured file must be an object")
        name = _str(item, "name")
        # Names come from one directory listing: anything path-like is forged.
        if not name or name in (".", "..") or "/" in name or "\x00" in name:
            raise ProtocolError(f"bad output file name {name!r}")
        files.append(CapturedFile(name=name, data=_bytes(item, "data")))
    return tuple(files)


def _int(frame: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    value = frame.get(key)
    if type(value) is not int or value < minimum:
        raise ProtocolError(f"{key!r} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _opt_int(frame: dict[str, Any], key: str) -> int | None:
    return None if frame.get(key) is None else _int(frame, key)


def _float(frame: dict[str, Any], key: str) -> float:
    value = frame.get(key)
    if type(value) not in (int, float):
        raise ProtocolError(f"{key!r} must be a number, got {value!r}")
    return float(value)


def _bool(frame: dict[str, Any], key: str) -> bool:
    value = frame.get(key)
    if type(value) is not bool:
        raise ProtocolError(f"{key!r} must be a boolean, got {value!r}")
    return value


def _str(frame: dict[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _bytes(frame: dict[str, Any], key: str) -> bytes:
    value = frame.get(key)
    if not isinstance(value, bytes):
        raise ProtocolError(f"{key!r} must be binary, got {type(value).__name__}")
    return value
