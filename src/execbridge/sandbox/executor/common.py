"""What every module of the executor shares: its log, its two exceptions, request fields, bounded reads.

Job: the few primitives the other modules would otherwise each reinvent.

Must not: import anything but C (or frozen) modules — this runs at every sandbox's start-up — or
``typing``/``contextlib`` (~8 ms and ~1 ms here); log user code or program output.
"""

import os

# Names for type checkers only: ``typing`` costs ~8 ms to import here (re, collections, functools,
# contextlib) and ``from __future__ import annotations`` ~0.1 ms, so the annotations that use them
# are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ignore:  # contextlib.suppress without importing contextlib (~1 ms at start-up)
    def __init__(self, *types: type[BaseException]) -> None:
        self.types = types

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: object, tb: object) -> bool:
        return typ is not None and issubclass(typ, self.types)


def log(message: str) -> None:
    """One line on stderr. Never called with user code or program output."""
    with ignore(OSError):
        os.write(2, f"execbridge-executor[{os.getpid()}]: {message}\n".encode("utf-8", "replace"))


class ProtocolViolation(Exception):
    """The stream cannot be trusted any more; the executor exits and the gateway restarts it."""


class ToolError(Exception):
    """A text-editor command that cannot be done; becomes a ``tool_error`` response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def field_str(request: "dict[str, Any]", key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string")
    return value


def field_int(request: "dict[str, Any]", key: str) -> int:
    value = request.get(key)
    if type(value) is not int or value < 0:
        raise ValueError(f"{key!r} must be a non-negative integer")
    return value


def read_small(path: str) -> bytes | None:
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


def read_upto(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``fd``: less at EOF, or when a non-blocking fd has nothing more."""
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
