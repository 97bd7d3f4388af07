"""The warm executor: runs inside each sandbox and forks one child per command.

Started by the launcher as ``/usr/bin/python3.11 -I -S /opt/execbridge/executor.py [options]`` (or its
``.pyc``, see ``client.executor_bytecode``) with the protocol on stdin (requests) and stdout
(responses); stderr is its log. It also runs directly, without any sandbox, as the tests do.

Job: answer framed requests from the gateway one at a time: run bash or Python (fork per command,
output captured, time limit enforced, ``$OUTPUT_DIR`` collected), and the three text-editor commands.

Must not:
- import execbridge or anything outside the standard library (it runs under the sandbox's Python);
- import anything heavy at start-up: it is on the "new container to first result" path. ``json``
  (it pulls in ``re`` and ``enum``), ``ctypes``, ``signal`` and ``site`` each cost 3-7 ms here, so the
  executor uses ``_json``, ``_ctypes`` and ``_signal`` directly and runs ``site.main()`` only when idle
  or before the first Python command;
- write anything but frames to the protocol fd, or log user code or program output;
- die because of user code: every command runs in a forked child that always ends in ``os._exit``.

Invariants:
- exactly one response per request, in order; ``cancel`` frames never get a response of their own;
- when a bash/python command's main process exits (or its time runs out, or it is cancelled), every
  other process it started is killed before the answer is sent, so nothing runs between commands.
  With ``--kill-all`` (the executor owns its PID namespace) that means every process except the
  executor and its ancestors; without it (tests, no namespace) only the executor's own descendants,
  found through ``/proc`` — never anything outside its subtree. The executor is a child subreaper, so
  daemons that double-fork or ``setsid`` stay in its subtree.

Choices (Anthropic's semantics from the wire-format reference, §2.4 and §2.9):
- Python runs in a child forked from this warm interpreter, as ``python -c`` would run it (``__main__``,
  ``argv ['-c']``, ``''`` first on ``sys.path``, tracebacks on stderr, rc 1, ``SystemExit`` honoured,
  threads joined and atexit run at the end); bash is ``posix_spawn``'d as ``bash -c``. A process killed
  by a signal reports ``128 + signal``, as a shell does.
- ``$OUTPUT_DIR`` is ``<output-root>/<n>``, outside the workspace: files left elsewhere stay in the
  container, files at its top level are captured and the directory is then removed.
- ``view`` returns text as is, without line-number prefixes, with ``start_line``/``num_lines``/
  ``total_lines`` beside it (the reference's example). A text file over the size cap is shown up to
  the last whole line under the cap (``num_lines`` < ``total_lines`` says so); an image or PDF over
  the cap is an ``invalid_tool_input`` error.

Frame := u32be header_len, u32be body_len, header (UTF-8 JSON object), body (raw bytes). A binary
value anywhere in the header is written as ``{"$b": [offset, length]}`` into the body, so file bytes
and program output travel without base64. ``protocol.py`` holds the gateway's copy of this framing
and the table of fields; a test makes the two talk to each other.
"""

from __future__ import annotations

# The C halves of json and signal: the same functions without importing re and enum (~7 ms, ~4 ms).
import _json
import _signal as _sig
import atexit
import io
import os
import select
import sys
import time

TYPE_CHECKING = False  # typing costs ~8 ms to import here (re, collections, functools, contextlib)
if TYPE_CHECKING:
    from typing import Any, NoReturn


PROTOCOL_VERSION = 1
_PREFIX_LEN = 8
_MAX_REQUEST_HEADER = 1 << 30
_MAX_REQUEST_BODY = 1 << 32
_MAX_RESPONSE_BODY = (1 << 32) - 1
_READ_CHUNK = 1 << 16
_KILL_GRACE_S = 2.0  # how long to wait for killed processes to vanish before giving up loudly
_DRAIN_GRACE_S = 1.0  # after everything is killed, how long to wait for the output pipes to close
_MAX_LINE_COUNT_BYTES = 1 << 30  # a truncated view counts the lines of files up to this size
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BASH = "/bin/bash"
_RESET_SIGNALS = tuple(n for n in range(1, 32) if n not in (_sig.SIGKILL, _sig.SIGSTOP))
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")  # png, jpeg, gif; webp below


class _ignore:  # contextlib.suppress without importing contextlib (~1 ms at start-up)
    def __init__(self, *types: type[BaseException]) -> None:
        self.types = types

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: object, tb: object) -> bool:
        return typ is not None and issubclass(typ, self.types)


def _log(message: str) -> None:
    """One line on stderr. Never called with user code or program output."""
    with _ignore(OSError):
        os.write(2, f"execbridge-executor[{os.getpid()}]: {message}\n".encode("utf-8", "replace"))


# ---------------------------------------------------------------- framing (mirror of protocol.py)


class _ScannerContext:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict[str, Any] = {}


_scan_json = _json.make_scanner(_ScannerContext())
_encode_str = _json.encode_basestring  # keeps non-ASCII as is; the frame is UTF-8


def _loads(text: str) -> Any:
    start = len(text) - len(text.lstrip())
    try:
        value, end = _scan_json(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    except SystemError:  # _json reports errors through json.decoder, which is not imported here
        raise ValueError("invalid JSON") from None
    if text[end:].strip():
        raise ValueError(f"extra data after JSON value at offset {end}")
    return value


def _dump_json(value: Any, parts: list[str], blobs: list[Any], offset: list[int]) -> None:
    """Append ``value`` as JSON to ``parts``; bytes-like values become body references."""
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(_encode_str(value))
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, float):
        parts.append(float.__repr__(value) if value == value and value not in (_INF, -_INF) else "null")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        size = len(value) if not isinstance(value, memoryview) else value.nbytes
        parts.append(f'{{"$b":[{offset[0]},{size}]}}')
        blobs.append(value)
        offset[0] += size
    elif isinstance(value, dict):
        parts.append("{")
        first = True
        for key, item in value.items():
            if not first:
                parts.append(",")
            first = False
            parts.append(_encode_str(key))
            parts.append(":")
            _dump_json(item, parts, blobs, offset)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            _dump_json(item, parts, blobs, offset)
        parts.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


_INF = float("inf")


def encode_frame(message: dict[str, Any]) -> list[Any]:
    """Prefix, header and body pieces of one frame (written with one ``writev``)."""
    parts: list[str] = []
    blobs: list[Any] = []
    offset = [0]
    _dump_json(message, parts, blobs, offset)
    header = "".join(parts).encode("utf-8", "surrogatepass")
    if offset[0] > _MAX_RESPONSE_BODY:
        raise ValueError("frame body too large")
    return [len(header).to_bytes(4, "big") + offset[0].to_bytes(4, "big"), header, *blobs]


def _resolve_blobs(value: Any, body: memoryview) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$b" in value:
            ref = value["$b"]
            if (
                not isinstance(ref, list)
                or len(ref) != 2
                or not all(type(x) is int and x >= 0 for x in ref)
                or ref[0] + ref[1] > len(body)
            ):
                raise ValueError("bad body reference")
            return body[ref[0] : ref[0] + ref[1]]
        return {k: _resolve_blobs(v, body) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_blobs(v, body) for v in value]
    return value


def decode_frame(header: bytes | bytearray | memoryview, body: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode one frame; binary values come back as memoryview slices of ``body`` (no copies)."""
    message = _loads(bytes(header).decode("utf-8", "surrogatepass"))
    if not isinstance(message, dict):
        raise ValueError("frame header is not a JSON object")
    return _resolve_blobs(message, memoryview(body))


def _read_exact(fd: int, size: int) -> bytearray | None:
    """Read exactly ``size`` bytes; ``None`` on a clean EOF before the first byte."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            if got == 0:
                return None
            raise EOFError("protocol stream ended inside a frame")
        got += n
    return buf


def read_frame(fd: int) -> dict[str, Any] | None:
    """Read one request frame from ``fd``; ``None`` when the gateway closed the stream."""
    prefix = _read_exact(fd, _PREFIX_LEN)
    if prefix is None:
        return None
    header_len = int.from_bytes(prefix[:4], "big")
    body_len = int.from_bytes(prefix[4:], "big")
    if header_len > _MAX_REQUEST_HEADER or body_len > _MAX_REQUEST_BODY:
        raise ValueError("request frame too large")
    header = _read_exact(fd, header_len) if header_len else bytearray()
    body = _read_exact(fd, body_len) if body_len else bytearray()
    if header is None or body is None:
        raise EOFError("protocol stream ended inside a frame")
    return decode_frame(header, body)


def write_frame(fd: int, message: dict[str, Any]) -> None:
    pieces = [memoryview(p).cast("B") for p in encode_frame(message)]
    pieces = [p for p in pieces if p.nbytes]
    while pieces:
        written = os.writev(fd, pieces[:512])  # IOV_MAX is 1024 on Linux
        while written:
            if written >= pieces[0].nbytes:
                written -= pieces.pop(0).nbytes
            else:
                pieces[0] = pieces[0][written:]
                written = 0


# ---------------------------------------------------------------- native calls


def _make_prctl() -> Any:
    """``prctl(2)`` through ``_ctypes`` (``import ctypes`` alone costs ~3 ms at start-up)."""
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):
            _type_ = "i"

        class _ULong(_ctypes._SimpleCData):
            _type_ = "L"

        class _Prctl(_ctypes.CFuncPtr):
            _argtypes_ = (_Int, _ULong, _ULong, _ULong, _ULong)
            _restype_ = _Int
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO

        func = _Prctl(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))

        def prctl(option: int, arg: int) -> int:
            result = func(option, arg, 0, 0, 0)
            if result != 0:
                raise OSError(_ctypes.get_errno(), os.strerror(_ctypes.get_errno()))
            return result

        return prctl
    except Exception as exc:  # any failure here only degrades, it is logged
        _log(f"prctl unavailable ({exc!r}); orphans will not be reaped by the executor")
        return None


# ---------------------------------------------------------------- processes


def _wait_status_code(status: int) -> int:
    """Shell convention: exit status, or 128 + signal for a process killed by a signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return -1


def _read_small(path: str) -> bytes | None:
    """A /proc file in one read (``open()`` costs six extra syscalls per call)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat_fields(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid`` from ``/proc/<pid>/stat``, or None if it is gone."""
    data = _read_small(f"/proc/{pid}/stat")
    if not data:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # comm may contain spaces and parentheses
    return fields[0].decode("ascii", "replace"), int(fields[1])


class _Capture:
    """Bytes read from one output pipe: kept up to ``limit``, counted and dropped beyond."""

    __slots__ = ("chunks", "kept", "limit", "scratch", "truncated")

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.kept = 0
        self.limit = limit
        self.truncated = False
        self.scratch: bytearray | None = None

    def read_from(self, fd: int) -> bool:
        """Read what is available; False at EOF."""
        if self.kept < self.limit:
            data = os.read(fd, _READ_CHUNK)
            if not data:
                return False
            room = self.limit - self.kept
            if len(data) > room:
                data = data[:room]
                self.truncated = True
            self.chunks.append(data)
            self.kept += len(data)
            return True
        # Past the cap: keep the pipe flowing so the writer never blocks on us, without growing.
        if self.scratch is None:
            self.scratch = bytearray(_READ_CHUNK)
        if os.readv(fd, [self.scratch]) == 0:
            return False
        self.truncated = True
        return True

    def value(self) -> bytes:
        return b"".join(self.chunks)


# ---------------------------------------------------------------- the executor


class ProtocolViolation(Exception):
    """The stream cannot be trusted any more; the executor exits and the gateway restarts it."""


class ToolError(Exception):
    """A text-editor command that cannot be done; becomes a ``tool_error`` response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Executor:
    def __init__(
        self,
        proto_in: int,
        proto_out: int,
        *,
        workspace: str,
        output_root: str,
        kill_all: bool,
        extra_env: dict[str, str],
    ) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.workspace = workspace
        self.output_root = output_root
        self.kill_all = kill_all
        self.pid = os.getpid()
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.child_env = {
            "PATH": _DEFAULT_PATH,
            "HOME": workspace,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "MPLBACKEND": "Agg",
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        self.prctl = _make_prctl()
        self.subreaper = False
        if self.prctl is not None:
            try:
                self.prctl(_PR_SET_CHILD_SUBREAPER, 1)
                self.subreaper = True
                # Not dumpable: /proc/<executor>/fd becomes unreadable to user code of the same
                # uid, so it cannot write forged frames into the protocol pipes.
                self.prctl(_PR_SET_DUMPABLE, 0)
            except OSError as exc:
                _log(f"prctl failed: {exc}")
        self.children_file = f"/proc/{self.pid}/task/{self.pid}/children"
        self.have_children_file = os.path.exists(self.children_file)
        self.protected = self._ancestors() if kill_all else {self.pid}
        self.reaped: dict[int, int] = {}
        self.warm = False
        self.plain_flags: Any = None
        self.runs = 0
        self.spare_out_dir: str | None = None
        self.current_id: int | None = None
        os.makedirs(output_root, exist_ok=True)

    # ------------------------------------------------------------ main loop

    def hello(self) -> dict[str, Any]:
        return {
            "id": 0,
            "status": "ok",
            "op": "ready",
            "protocol": PROTOCOL_VERSION,
            "pid": self.pid,
            "python": ".".join(map(str, sys.version_info[:3])),
            "subreaper": self.subreaper,
            "kill_all": self.kill_all,
        }

    def serve(self) -> None:
        write_frame(self.proto_out, self.hello())
        served = False
        while True:
            # Pay for ``site`` while idle, but never before the first request: the gateway sends it
            # right after "ready", and a first bash command should not wait for Python's start-up.
            if served and not self.warm and not self._readable(self.proto_in, 0):
                self.warm_up()
            request = read_frame(self.proto_in)
            if request is None:
                self._kill_others()
                return
            response = self.handle(request)
            if response is not None:
                write_frame(self.proto_out, response)
                served = True

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        op = request.get("op")
        rid = request.get("id")
        if op == "cancel":
            return None  # the command it meant already finished; its answer is on its way
        try:
            handler = self._handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            result = handler(self, request)
            return {"id": rid, "status": "ok", **result}
        except ProtocolViolation:
            raise
        except ToolError as exc:
            return {"id": rid, "status": "tool_error", "error_code": exc.code, "message": exc.message}
        except Exception as exc:  # the boundary: one bad request must not end the loop
            import traceback

            _log(f"internal error in {op!r}:\n{traceback.format_exc()}")
            return {"id": rid, "status": "internal_error", "message": f"{type(exc).__name__}: {exc}"}

    def warm_up(self) -> None:
        """Make dist-packages importable for Python commands (``site`` was skipped by ``-S``)."""
        self.warm = True
        try:
            import site

            site.main()
        except Exception as exc:  # a broken .pth must not take the executor down
            _log(f"site.main() failed: {exc!r}")
        self.plain_flags = _plain_flags()
        # First calls are expensive in a forked child (copy-on-write faults, cold caches): compiling
        # once here saves ~1 ms per Python command, and giving the executor the commands' environment
        # leaves the child one putenv instead of clearing and refilling os.environ (~0.4 ms).
        compile("pass", "<string>", "exec", dont_inherit=True)
        os.environ.clear()
        os.environ.update(self.child_env)

    @staticmethod
    def _readable(fd: int, timeout_ms: int) -> bool:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_ms))

    # ------------------------------------------------------------ ops

    def op_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"op": "pong", "warm": self.warm}

    def op_bash(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._run(request, bash=_str(request, "command"))

    def op_python(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.warm:
            self.warm_up()
        return self._run(request, python=_str(request, "code"))

    def op_view(self, request: dict[str, Any]) -> dict[str, Any]:
        path = _str(request, "path")
        max_bytes = _int(request, "max_bytes")
        fd = self._open_existing(path)
        try:
            head = _read_upto(fd, max_bytes + 1)
            file_type = _binary_kind(head)
            if file_type is not None:
                if len(head) > max_bytes:
                    raise ToolError(
                        "invalid_tool_input",
                        f"{path} is too large to view ({os.fstat(fd).st_size} bytes; the limit is {max_bytes} bytes)",
                    )
                return {"file_type": file_type, "data": head}
            if b"\x00" in head:
                raise ToolError(
                    "invalid_tool_input",
                    f"{path} is a binary file; the editor views text, images and PDFs only "
                    "(inspect it with bash, e.g. xxd or file)",
                )
            if len(head) <= max_bytes:
                lines = _count_lines(head)
                return {"file_type": "text", "data": head, "num_lines": lines, "start_line": 1,
                        "total_lines": lines, "truncated": False}  # fmt: skip
            # Too long: show whole lines up to the cap, and still say how long the file is.
            shown = head[:max_bytes]
            cut = shown.rfind(b"\n")
            shown = shown[: cut + 1] if cut >= 0 else _trim_partial_utf8(shown)
            total: int | None = head.count(b"\n")
            last = head[-1:]
            scanned = len(head)
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                if scanned > _MAX_LINE_COUNT_BYTES:  # not worth seconds of reading: say "unknown"
                    total = None
                    break
                scanned += len(chunk)
                total += chunk.count(b"\n")
                last = chunk[-1:]
            if total is not None and last != b"\n":
                total += 1
            return {"file_type": "text", "data": shown, "num_lines": _count_lines(shown), "start_line": 1,
                    "total_lines": total, "truncated": True}  # fmt: skip
        finally:
            os.close(fd)

    def op_create(self, request: dict[str, Any]) -> dict[str, Any]:
        path = _str(request, "path")
        data = request.get("data")
        if not isinstance(data, memoryview):
            raise ValueError("create needs binary 'data'")
        full = self._resolve(path)
        if os.path.isdir(full):
            raise ToolError("invalid_tool_input", f"{path} is a directory; give the path of a file")
        existed = os.path.exists(full)
        self._write_file(path, full, data)
        return {"is_file_update": existed}

    def op_str_replace(self, request: dict[str, Any]) -> dict[str, Any]:
        path = _str(request, "path")
        old = _str(request, "old_str")
        new = _str(request, "new_str")
        max_bytes = _int(request, "max_bytes")
        if not old:
            raise ToolError("invalid_tool_input", "old_str must not be empty")
        fd = self._open_existing(path)
        try:
            raw = _read_upto(fd, max_bytes + 1)
        finally:
            os.close(fd)
        if len(raw) > max_bytes:
            raise ToolError("invalid_tool_input", f"{path} is too large to edit (over {max_bytes} bytes)")
        if _binary_kind(raw) is not None or b"\x00" in raw:
            raise ToolError("invalid_tool_input", f"{path} is a binary file; the editor edits text files only")
        # surrogateescape: bytes that are not UTF-8 survive the edit unchanged.
        text = raw.decode("utf-8", "surrogateescape")
        count = text.count(old)
        if count == 0:
            raise ToolError(
                "invalid_tool_input",
                f"old_str was not found in {path}; it must match the file exactly, including "
                "whitespace and indentation",
            )
        if count > 1:
            lines = _occurrence_lines(text, old)
            shown = ", ".join(map(str, lines[:20])) + (", …" if len(lines) > 20 else "")
            raise ToolError(
                "invalid_tool_input",
                f"old_str occurs {count} times in {path} (lines {shown}); it must occur exactly once, "
                "so include more surrounding context to make it unique",
            )
        start = text.index(old)
        new_text = text[:start] + new + text[start + len(old) :]
        try:
            encoded = new_text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ToolError("invalid_tool_input", "new_str contains characters that cannot be encoded") from None
        self._write_file(path, self._resolve(path), encoded)
        return _replacement_diff(text, start, old, new)

    def op_put_file(self, request: dict[str, Any]) -> dict[str, Any]:
        path = _str(request, "path")
        data = request.get("data")
        if not isinstance(data, memoryview):
            raise ValueError("put_file needs binary 'data'")
        self._write_file(path, self._resolve(path), data)
        return {"size": data.nbytes}

    _handlers = {
        "ping": op_ping,
        "bash": op_bash,
        "python": op_python,
        "view": op_view,
        "create": op_create,
        "str_replace": op_str_replace,
        "put_file": op_put_file,
    }

    # ------------------------------------------------------------ files

    def _resolve(self, path: str) -> str:
        if not path:
            raise ToolError("invalid_tool_input", "path must not be empty")
        if "\x00" in path:
            raise ToolError("invalid_tool_input", "path must not contain NUL characters")
        # Relative to the workspace; an absolute path is taken as is: the sandbox, not a lexical
        # check here, decides what exists.
        return os.path.join(self.workspace, path)

    def _open_existing(self, path: str) -> int:
        full = self._resolve(path)
        try:
            # O_NONBLOCK: opening a FIFO must not hang the executor.
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise ToolError("file_not_found", f"File not found: {path}") from None
        except OSError as exc:
            raise ToolError("invalid_tool_input", f"Cannot open {path}: {exc.strerror}") from None
        mode = os.fstat(fd).st_mode
        if (mode & 0o170000) == 0o040000:
            os.close(fd)
            raise ToolError("invalid_tool_input", f"{path} is a directory, not a file; list it with bash (e.g. ls)")
        if (mode & 0o170000) != 0o100000:
            os.close(fd)
            raise ToolError("invalid_tool_input", f"{path} is not a regular file")
        return fd

    def _write_file(self, path: str, full: str, data: bytes | memoryview) -> None:
        try:
            parent = os.path.dirname(full)
            if parent:
                os.makedirs(parent, exist_ok=True)
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except IsADirectoryError:
            raise ToolError("invalid_tool_input", f"{path} is a directory; give the path of a file") from None
        except OSError as exc:
            raise ToolError("invalid_tool_input", f"Cannot write {path}: {exc.strerror}") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise ToolError("invalid_tool_input", f"Cannot write {path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    # ------------------------------------------------------------ commands

    def _run(self, request: dict[str, Any], *, bash: str | None = None, python: str | None = None) -> dict[str, Any]:
        timeout = float(request["timeout"])
        output_limit = _int(request, "output_limit")
        file_limit = _int(request, "file_limit")
        file_count = _int(request, "file_count")
        self.current_id = request.get("id")
        out_dir = self._fresh_output_dir()
        env = {**self.child_env, "OUTPUT_DIR": out_dir}
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        try:
            # Children inherit the executor's cwd: posix_spawn cannot chdir on Python 3.11.
            os.chdir(self.workspace)
            if bash is not None:
                # posix_spawn is vfork+exec: ~0.7 ms less than fork+exec from this process.
                pid = os.posix_spawn(
                    _BASH, ["bash", "-c", bash], env,
                    file_actions=[(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                                  (os.POSIX_SPAWN_DUP2, err_w, 2)],
                    setsid=True,  # own session and process group: one killpg reaches the whole job
                    setsigmask=(),
                    setsigdef=_RESET_SIGNALS,  # ignored signals survive exec; bash wants defaults
                )  # fmt: skip
            else:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child, which always ends in os._exit
                    self._python_child(out_w, err_w, env, python or "")
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            self.spare_out_dir = out_dir  # still empty
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            outcome = self._supervise(pid, out_r, err_r, output_limit, started + timeout)
        finally:
            os.close(out_r)
            os.close(err_r)
            self.current_id = None
        duration_ms = (time.monotonic() - started) * 1000.0
        files, too_large, omitted, reusable = _collect_outputs(
            out_dir, file_limit, file_count, len(outcome["stdout"]) + len(outcome["stderr"])
        )
        self.spare_out_dir = out_dir if reusable else None
        outcome.update(duration_ms=round(duration_ms, 3), files=files, files_too_large=too_large, files_omitted=omitted)
        return outcome

    def _fresh_output_dir(self) -> str:
        """A new, empty ``$OUTPUT_DIR`` (Anthropic gives every command its own, §2.9).

        A directory the last command left untouched and empty is indistinguishable from a new one, so
        it is handed out again: that saves a mkdir/rmdir pair (~0.5 ms on ext4) on most commands.
        """
        if self.spare_out_dir is not None:
            out_dir, self.spare_out_dir = self.spare_out_dir, None
            return out_dir
        self.runs += 1
        out_dir = os.path.join(self.output_root, str(self.runs))
        if os.path.lexists(out_dir):  # left over from an earlier executor in this sandbox
            _remove_path(out_dir)
        os.mkdir(out_dir, 0o755)
        return out_dir

    def _python_child(self, out_w: int, err_w: int, env: dict[str, str], code: str) -> NoReturn:
        """Runs in the forked child; never returns into the executor's loop."""
        try:  # pragma: no cover - child process
            os.setsid()  # own session and process group: one killpg reaches the whole job
            os.dup2(self.devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.closerange(3, 1 << 20)  # close_range(2): the protocol pipes must not leak to user code
            if self.prctl is not None:
                self.prctl(_PR_SET_DUMPABLE, 1)  # only the executor itself hides its /proc entries
            _python_main(code, env, self.plain_flags)
        except BaseException as exc:
            with _ignore(BaseException):
                os.write(2, f"executor: could not start the command: {exc!r}\n".encode())
        os._exit(127)

    def _supervise(self, pid: int, out_r: int, err_r: int, limit: int, deadline: float) -> dict[str, Any]:
        """Pump the output pipes until the command is over; kill what it left behind."""
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # old kernel or seccomp: fall back to polling waitpid
            pidfd = -1
        captures = {out_r: _Capture(limit), err_r: _Capture(limit)}
        poller = select.poll()
        for fd in captures:
            poller.register(fd, select.POLLIN)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        poller.register(self.proto_in, select.POLLIN)
        open_pipes = 2
        status: int | None = None
        timed_out = cancelled = False
        stop_by: float | None = None  # once everything is killed: give up on the pipes after this
        try:
            while True:
                if status is None:
                    status = self._main_status(pid)
                    if status is not None:
                        self._kill_others()  # lingering background jobs and daemons
                        stop_by = time.monotonic() + _DRAIN_GRACE_S
                if status is not None and open_pipes == 0:
                    break
                now = time.monotonic()
                if stop_by is None and now >= deadline:
                    timed_out = True
                    self._kill_job(pid)
                    stop_by = time.monotonic() + _DRAIN_GRACE_S
                if stop_by is not None and now >= stop_by:
                    if status is None:
                        _log(f"command {pid} did not die after SIGKILL")
                    break
                limit_at = stop_by if stop_by is not None else deadline
                wait_ms = max(0, int((limit_at - now) * 1000) + 1)
                if pidfd < 0 and status is None:
                    wait_ms = min(wait_ms, 5)
                for fd, _events in poller.poll(wait_ms):
                    if fd in captures:
                        if not captures[fd].read_from(fd):
                            poller.unregister(fd)
                            open_pipes -= 1
                    elif fd == pidfd:
                        poller.unregister(pidfd)
                    elif fd == self.proto_in and self._cancel_requested() and stop_by is None:
                        cancelled = True
                        self._kill_job(pid)
                        stop_by = time.monotonic() + _DRAIN_GRACE_S
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            if status is None:
                self._kill_job(pid)
                status = self._main_status(pid)
        out, err = captures[out_r], captures[err_r]
        return {
            "stdout": out.value(),
            "stderr": err.value(),
            "stdout_truncated": out.truncated,
            "stderr_truncated": err.truncated,
            "return_code": _wait_status_code(status) if status is not None else -1,
            "timed_out": timed_out,
            "cancelled": cancelled,
        }

    def _cancel_requested(self) -> bool:
        """A frame arrived while a command runs: only ``cancel`` is allowed there."""
        frame = read_frame(self.proto_in)
        if frame is None:  # the gateway went away: stop everything and leave
            self._kill_others()
            _log("protocol stream closed during a command; exiting")
            os._exit(0)
        if frame.get("op") == "cancel":
            return frame.get("id") == self.current_id
        raise ProtocolViolation(f"request {frame.get('op')!r} arrived while a command was running")

    def _main_status(self, pid: int) -> int | None:
        if pid in self.reaped:
            return self.reaped.pop(pid)
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return self.reaped.pop(pid, None)
        return status if got == pid else None

    def _kill_job(self, pid: int) -> None:
        with _ignore(OSError):
            os.killpg(pid, _sig.SIGKILL)
        self._kill_others()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped[pid] = status

    def _victims(self) -> list[int]:
        """Live processes that must go: the whole namespace (kill-all) or the executor's subtree."""
        if self.kill_all:
            candidates = [int(name) for name in os.listdir("/proc") if name.isdigit()]
            candidates = [pid for pid in candidates if pid not in self.protected]
        else:
            candidates = self._descendants()
        victims = []
        for pid in candidates:
            fields = _stat_fields(pid)
            if fields is not None and fields[0] not in ("Z", "X"):
                victims.append(pid)
        return victims

    def _descendants(self) -> list[int]:
        if not self.have_children_file:
            return self._descendants_by_scan()
        found: list[int] = []
        frontier = [self.pid]
        while frontier:
            pid = frontier.pop()
            try:
                tids = [str(self.pid)] if pid == self.pid else os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                kids = [int(x) for x in (_read_small(f"/proc/{pid}/task/{tid}/children") or b"").split()]
                found.extend(kids)
                frontier.extend(kids)
        return found

    def _descendants_by_scan(self) -> list[int]:
        parent_of: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                fields = _stat_fields(int(name))
                if fields is not None:
                    parent_of[int(name)] = fields[1]
        children: dict[int, list[int]] = {}
        for pid, ppid in parent_of.items():
            children.setdefault(ppid, []).append(pid)
        found, frontier = [], [self.pid]
        while frontier:
            kids = children.get(frontier.pop(), [])
            found.extend(kids)
            frontier.extend(kids)
        return found

    def _kill_others(self) -> None:
        """SIGKILL every victim until none is left; orphans come back to us (subreaper) and are reaped."""
        self._reap()
        # The common case: nothing was left behind. As a subreaper the executor inherits every orphan,
        # so no child of its own means no process of the command is left, in either mode.
        if self.subreaper and self.have_children_file and not _read_small(self.children_file):
            return
        give_up = time.monotonic() + _KILL_GRACE_S
        while True:
            victims = self._victims()
            if not victims:
                self._reap()  # the last ones may have turned into zombies only just now
                return
            for pid in victims:
                with _ignore(OSError):
                    os.kill(pid, _sig.SIGKILL)
            self._reap()
            if time.monotonic() > give_up:
                _log(f"{len(victims)} processes survived SIGKILL")
                return
            time.sleep(0.0005)
            self._reap()

    def _ancestors(self) -> set[int]:
        chain = {self.pid}
        pid = os.getppid()
        while pid > 0 and pid not in chain:
            chain.add(pid)
            fields = _stat_fields(pid)
            pid = fields[1] if fields is not None else 0
        return chain


# ---------------------------------------------------------------- helpers


def _str(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string")
    return value


def _int(request: dict[str, Any], key: str) -> int:
    value = request.get(key)
    if type(value) is not int or value < 0:
        raise ValueError(f"{key!r} must be a non-negative integer")
    return value


def _read_upto(fd: int, limit: int) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        try:
            chunk = os.read(fd, min(limit - size, 1 << 20))
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _binary_kind(head: bytes) -> str | None:
    """``image``/``pdf`` by magic bytes (not by name: models rename files freely)."""
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head.startswith(b"%PDF-"):
        return "pdf"
    return None


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _trim_partial_utf8(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence at the end of a cut."""
    i = len(data)
    while i > 0 and len(data) - i < 4 and (data[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i > 0 and data[i - 1] >= 0xC0:
        lead = data[i - 1]
        need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        if len(data) - (i - 1) < need:
            return data[: i - 1]
    return data


def _occurrence_lines(text: str, needle: str) -> list[int]:
    lines, pos, line, counted_to = [], text.find(needle), 1, 0
    while pos >= 0:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        lines.append(line)
        pos = text.find(needle, pos + len(needle))
    return lines


def _split_lines(region: str) -> list[str]:
    if not region:
        return []
    if region.endswith("\n"):
        region = region[:-1]
    return region.split("\n")


def _replacement_diff(text: str, start: int, old: str, new: str) -> dict[str, Any]:
    """Whole affected lines before (``-``) and after (``+``) the edit, with their 1-based starts.

    The block runs from the start of the line where ``old`` begins to the end of the line where it
    ends; when the replacement leaves a line without its newline, the next line joins the block, so
    ``lines`` always shows complete lines of the old and the new file.
    """
    end = start + len(old)
    line_start = text.rfind("\n", 0, start) + 1
    block_end = text.find("\n", end - 1)
    block_end = len(text) if block_end < 0 else block_end + 1
    new_block = text[line_start:start] + new + text[end:block_end]
    if new_block and not new_block.endswith("\n") and block_end < len(text):
        more = text.find("\n", block_end)
        more = len(text) if more < 0 else more + 1
        new_block += text[block_end:more]
        block_end = more
    old_lines = _split_lines(text[line_start:block_end])
    new_lines = _split_lines(new_block)
    first = text.count("\n", 0, line_start) + 1
    return {
        "old_start": first,
        "old_lines": len(old_lines),
        "new_start": first,
        "new_lines": len(new_lines),
        "lines": [f"-{line}" for line in old_lines] + [f"+{line}" for line in new_lines],
    }


def _display_name(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _collect_outputs(
    path: str, file_limit: int, file_count: int, output_bytes: int
) -> tuple[list[dict[str, Any]], list[str], int, bool]:
    """Read the regular files at the top level of ``$OUTPUT_DIR``, then empty or remove it.

    Runs after every process of the command is dead. Symlinks, FIFOs and directories are skipped
    (O_NOFOLLOW, fstat); the directory itself is opened with O_NOFOLLOW, so a command that swapped
    it for a symlink cannot make the executor read or delete anything else. The last value says the
    directory was left empty and unchanged, so it may serve the next command as is.
    """
    files: list[dict[str, Any]] = []
    too_large: list[str] = []
    omitted = 0
    budget = _MAX_RESPONSE_BODY - output_bytes - (1 << 20)
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        _remove_path(path)
        return files, too_large, omitted, False
    try:
        names = os.listdir(dfd)
        if not names and (os.fstat(dfd).st_mode & 0o7777) == 0o755:
            return files, too_large, omitted, True
        for name in sorted(names):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                continue  # a symlink (ELOOP), unreadable, or gone
            try:
                st = os.fstat(fd)
                if (st.st_mode & 0o170000) != 0o100000:
                    continue
                if len(files) >= file_count:
                    omitted += 1
                    continue
                data = _read_upto(fd, file_limit + 1) if st.st_size <= file_limit else b""
                if st.st_size > file_limit or len(data) > file_limit:
                    too_large.append(_display_name(name))
                    continue
                if len(data) > budget:
                    omitted += 1
                    continue
                budget -= len(data)
                files.append({"name": _display_name(name), "data": data})
            finally:
                os.close(fd)
        _clear_dir(dfd)
    finally:
        os.close(dfd)
    try:
        os.rmdir(path)
    except OSError as exc:
        _log(f"could not remove an output directory: {exc.strerror}")
    return files, too_large, omitted, False


def _clear_dir(dfd: int) -> None:
    """Empty a directory opened as ``dfd`` without ever following a symlink."""
    for entry in os.scandir(dfd):
        try:
            if entry.is_dir(follow_symlinks=False):
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    _clear_dir(sub)
                finally:
                    os.close(sub)
                os.rmdir(entry.name, dir_fd=dfd)
            else:
                os.unlink(entry.name, dir_fd=dfd)
        except OSError as exc:
            _log(f"could not remove an output file: {exc.strerror}")


def _remove_path(path: str) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        with _ignore(OSError):
            os.unlink(path)
        return
    try:
        _clear_dir(dfd)
    finally:
        os.close(dfd)
    with _ignore(OSError):
        os.rmdir(path)


def _plain_flags() -> Any:
    """A ``sys.flags`` look-alike saying what a plain ``python -c`` would say.

    The executor runs with ``-I -S``; left alone, forked Python children would report those flags and
    ``subprocess._args_from_interpreter_flags()`` would pass ``-S -I`` on to every interpreter they
    spawn (multiprocessing's spawn, joblib/loky workers), which then cannot import dist-packages.
    """
    names = getattr(type(sys.flags), "__match_args__", None)
    if not names:
        return None
    values = dict(zip(names, sys.flags, strict=False))
    values.update(no_user_site=0, no_site=0, ignore_environment=0, isolated=0, safe_path=False)
    row = tuple(values[name] for name in names)

    def field(i: int) -> property:
        return property(lambda self: tuple.__getitem__(self, i))

    namespace: dict[str, Any] = {name: field(i) for i, name in enumerate(names)}
    namespace["__slots__"] = ()
    namespace["__match_args__"] = names
    namespace["n_fields"] = namespace["n_sequence_fields"] = len(names)
    namespace["__repr__"] = lambda self: (
        f"sys.flags({', '.join(f'{n}={v!r}' for n, v in zip(names, self, strict=True))})"
    )
    flags_type = type("flags", (tuple,), namespace)
    flags_type.__module__ = "sys"
    return flags_type(row)


def _python_main(code: str, env: dict[str, str], plain_flags: Any) -> NoReturn:  # pragma: no cover - child
    """Run ``code`` the way ``python -c`` would, in this forked child, and exit."""
    for name, value in env.items():  # warm_up() gave the executor this environment; usually only
        if os.environ.get(name) != value:  # OUTPUT_DIR differs
            os.environ[name] = value
    if plain_flags is not None:
        sys.flags = plain_flags
    sys.argv = ["-c"]
    sys.path.insert(0, "")  # python -c puts the current directory first
    # The executor's own stream objects stay referenced until os._exit: were they collected, their
    # finalizers would flush into the command's pipes.
    previous_streams = (sys.stdin, sys.stdout, sys.stderr)  # noqa: F841
    stdin_raw = io.FileIO(0, "r", closefd=False)
    stdin_raw.name = "<stdin>"
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(
        io.BufferedReader(stdin_raw), encoding="utf-8", errors="surrogateescape"
    )
    # Like PYTHONUNBUFFERED=1: raw fds under write-through text layers, so output written before a
    # kill (time limit) is not lost in a buffer.
    for fd, name, errors in ((1, "stdout", "surrogateescape"), (2, "stderr", "backslashreplace")):
        raw = io.FileIO(fd, "w", closefd=False)
        raw.name = f"<{name}>"
        stream = io.TextIOWrapper(raw, encoding="utf-8", errors=errors, write_through=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    main = type(sys)("__main__")
    main.__loader__ = sys.modules["_frozen_importlib"].BuiltinImporter
    main.__annotations__ = {}
    sys.modules["__main__"] = main
    rc = 0
    try:
        # dont_inherit: the executor's own ``from __future__`` imports must not leak into user code.
        exec(compile(code, "<string>", "exec", dont_inherit=True), main.__dict__)
    except SystemExit as exc:
        rc = _system_exit_code(exc)
    except BaseException as exc:  # this *is* the top level of the user's program
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        exc.__traceback__ = tb  # hide this frame: the traceback starts in "<string>", as with -c
        with _ignore(BaseException):
            sys.excepthook(type(exc), exc, tb)
        rc = 130 if isinstance(exc, KeyboardInterrupt) else 1
    # What interpreter shutdown would do: wait for threads, run atexit handlers, flush.
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as exc:
        rc = _system_exit_code(exc)
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            rc = rc or 120  # like CPython when flushing stdout fails at exit
    try:
        os._exit(rc & 0xFF)
    except BaseException:
        os._exit(1)


def _system_exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    with _ignore(BaseException):
        sys.stderr.write(f"{code}\n")
    return 1


# ---------------------------------------------------------------- entry point

_USAGE = """usage: executor.py [--workspace DIR] [--output-root DIR] [--kill-all] [--env NAME=VALUE]...

  --workspace DIR     working directory and HOME of commands; editor paths are relative to it
                      (default /workspace)
  --output-root DIR   where each command's fresh $OUTPUT_DIR is made (default /tmp/outputs)
  --kill-all          the executor owns its PID namespace: after a command, kill every process
                      except itself and its ancestors (default: only its own descendants)
  --env NAME=VALUE    add or override a variable of the commands' environment (repeatable)
"""


def _parse_args(argv: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"workspace": "/workspace", "output_root": "/tmp/outputs", "kill_all": False,
                               "extra_env": {}}  # fmt: skip
    args = iter(argv)
    for arg in args:
        if arg == "--kill-all":
            options["kill_all"] = True
        elif arg in ("--workspace", "--output-root", "--env"):
            value = next(args, None)
            if value is None:
                raise SystemExit(f"{arg} needs a value\n{_USAGE}")
            if arg == "--env":
                name, sep, val = value.partition("=")
                if not sep or not name:
                    raise SystemExit(f"--env wants NAME=VALUE, got {value!r}")
                options["extra_env"][name] = val
            else:
                options[arg[2:].replace("-", "_")] = os.path.abspath(value)
        else:
            raise SystemExit(f"unknown argument {arg!r}\n{_USAGE}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = _parse_args(sys.argv[1:] if argv is None else argv)
    # Move the protocol off fds 0/1 (and mark it close-on-exec): a stray print or a library that
    # writes to fd 1 then lands in the log instead of corrupting a frame.
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    # Commands are exec'd without closing fds first (posix_spawn): nothing the launcher left open may
    # reach them.
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            with _ignore(OSError):
                os.set_inheritable(int(name), False)
    executor = Executor(proto_in, proto_out, **options)
    try:
        executor.serve()
    except (BrokenPipeError, EOFError) as exc:
        _log(f"protocol stream closed: {exc!r}")
        executor._kill_others()
    except (ProtocolViolation, ValueError) as exc:  # a malformed frame: nothing after it can be trusted
        _log(f"protocol error, exiting: {exc}")
        executor._kill_others()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
