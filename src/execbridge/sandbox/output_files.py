"""The gateway's end of a command's ``$OUTPUT_DIR``: ``file`` frames written straight to disk.

Job: take the ``file`` frames that precede a bash/python answer (``protocol.py`` has the table),
write each chunk to a fresh file of the command's ``OutputSpool`` as it arrives, and hand back the
files kept (``CapturedFile``: name, size, path). The gateway so holds one frame of output (at most
``FILE_CHUNK`` bytes) at a time, however much the command wrote. Without a spool (the CLI, tests) the
bytes are kept in memory instead, at most ``file_total`` in all.

Must not: trust the executor — a frame out of order, a bad name, a chunk over ``FILE_CHUNK``, a file
over ``min(file_limit, file_total)``, more than ``file_total`` bytes in all or more than ``file_count``
files is a ``ProtocolError``; block the event loop on disk work (threads do it); leave a spool file
behind when the exchange does not complete (``discard``) or when the caller gave up (``abandon``:
later frames are read and dropped, so the stream stays in sync).

Invariants: only the reader of the exchange calls ``take`` (one at a time); a file is in ``files``
only once its last frame said ``"ok"`` and every byte reached the disk; a file the disk refused is
a ``SkippedFile("unstored")`` instead. No file descriptor outlives a chunk: each write opens the
spool file by path, appends and closes in its thread, so a reader cancelled mid-write can remove the
file at once without racing that thread over an fd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execbridge.sandbox.base import CapturedFile, OutputSpool, SkippedFile
from execbridge.sandbox.protocol import FILE_CHUNK, ProtocolError, output_file_name

_ENDS = frozenset({"ok", "changed", "unreadable", "failed"})
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class _Incoming:
    """The file whose frames are arriving."""

    name: str
    size: int = 0
    path: Path | None = None  # its spool file, while its bytes are being kept there
    error: str | None = None  # why its bytes are not being kept (the disk refused them)
    chunks: list[bytes] | None = None  # its bytes, when there is no spool


class OutputReceiver:
    """The ``file`` frames of one command, checked against its limits; ``spool=None`` keeps the bytes."""

    def __init__(self, spool: OutputSpool | None, *, file_limit: int, file_count: int, file_total: int) -> None:
        self._spool = spool
        self._limit = min(file_limit, file_total)
        self._count = file_count
        self._left = file_total
        self._current: _Incoming | None = None
        self._kept = 0  # files that ended "ok", stored or not
        self._made: list[Path] = []  # every spool file this receiver created
        self.files: list[CapturedFile] = []
        self.skipped: list[SkippedFile] = []
        self.abandoned = False

    async def take(self, frame: dict[str, Any]) -> None:
        """One ``file`` frame; ``ProtocolError`` when it breaks the protocol or the limits."""
        data = frame.get("data")
        end = frame.get("end")
        name = frame.get("name")
        if not isinstance(data, bytes) or len(data) > FILE_CHUNK:
            raise ProtocolError("a file frame needs 'data' of at most FILE_CHUNK bytes")
        if end is not None and end not in _ENDS:
            raise ProtocolError(f"unknown file end {end!r}")
        current = self._current
        if current is None:
            if not isinstance(name, str):
                raise ProtocolError("a file frame without a file")
            if self._kept >= self._count:
                raise ProtocolError("more output files than the request's file_count")
            current = self._current = _Incoming(output_file_name(name))
            await self._open(current)
        elif name is not None:
            raise ProtocolError("a new file before the last one ended")
        current.size += len(data)
        self._left -= len(data)
        if current.size > self._limit or self._left < 0:
            raise ProtocolError("output files over the request's limits")
        if self.abandoned:
            self._drop(current)
        elif data and current.path is not None:
            await self._write(current, data)
        elif data and current.chunks is not None:
            current.chunks.append(data)
        if end is not None:
            self._current = None
            self._finish(current, end)

    def abandon(self) -> None:
        """The caller gave up: drop what arrives from now on and remove what was made."""
        self.abandoned = True

    def discard(self) -> None:
        """Remove every spool file this receiver made (the exchange did not complete)."""
        if self._current is not None:
            self._drop(self._current)
            self._current = None
        for path in self._made:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        self._made.clear()
        self.files.clear()

    def finish(self) -> None:
        """The answer arrived: every file must have ended."""
        if self._current is not None:
            raise ProtocolError("the answer arrived inside a file")
        if self.abandoned:
            self.discard()

    # ------------------------------------------------------------ internals

    async def _open(self, incoming: _Incoming) -> None:
        if self.abandoned:
            return
        if self._spool is None:
            incoming.chunks = []
            return
        path = self._spool.new_path()
        self._made.append(path)
        try:
            await asyncio.to_thread(_create, path)
        except OSError as exc:
            incoming.error = exc.strerror or type(exc).__name__
            return
        incoming.path = path

    async def _write(self, incoming: _Incoming, data: bytes) -> None:
        assert incoming.path is not None
        try:
            await asyncio.to_thread(_append, incoming.path, data)
        except OSError as exc:
            incoming.error = exc.strerror or type(exc).__name__
            self._drop(incoming)

    def _finish(self, incoming: _Incoming, end: str) -> None:
        self._kept += end == "ok"
        if end != "ok" or incoming.error is not None or (incoming.path is None and incoming.chunks is None):
            self._drop(incoming)  # a file the executor dropped is in its answer's files_skipped
            if end == "ok" and incoming.error is not None:
                self.skipped.append(SkippedFile(incoming.name, "unstored", incoming.error))
            return
        data = b"".join(incoming.chunks) if incoming.chunks is not None else b""
        self.files.append(CapturedFile(incoming.name, incoming.size, incoming.path, data))

    def _drop(self, incoming: _Incoming) -> None:
        """Stop keeping this file's bytes: remove its spool file (one unlink, no waiting)."""
        incoming.chunks = None
        if incoming.path is not None:
            with contextlib.suppress(OSError):
                incoming.path.unlink(missing_ok=True)
            incoming.path = None


def _create(path: Path) -> None:
    os.close(os.open(path, _CREATE_FLAGS, 0o600))


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, _APPEND_FLAGS)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
