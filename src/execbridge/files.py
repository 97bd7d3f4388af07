"""The Files API's backend: file bytes under ``<data_dir>/files/``, metadata in the store.

Job: create files from an upload stream (size-capped while it streams), from bytes in hand, or from
the temporary files a command's outputs were streamed into (``OutputBatch``), and get, list, read
and delete them for their owner; remember which uploads were put into which container. HTTP lives
in ``api/files.py``; this module is what it and the engine call.

Must not: know any wire format or HTTP; read anything but its own directory. Sandbox outputs arrive
as bytes the executor already read inside the sandbox, written by the sandbox client into this
directory's temporaries; the gateway never opens a workspace path.

Invariants:
- Every call is scoped by owner: another owner's file is ``NotFound``, like an id that never existed.
- Bytes are written to a temporary file in the same directory and renamed into place before the
  metadata row exists, so a listed file always has its bytes; a delete removes the row, then the
  bytes. Temporaries left by a crash are swept by ``prepare``.
- The on-disk name is the file id (``file_`` + base62, or OpenAI's ``file-`` + base62 for a file with
  a ``purpose``; made here), never a client-supplied name.
- Uploads are ``downloadable=False``; sandbox outputs ``downloadable=True`` (docs/protocol.md §2.10).
- An owner's files together (``size_bytes``, uploads and outputs) stay within ``max_owner_bytes``:
  an upload past it is ``OwnerStorageFull`` (400), an output past it is left out of its batch.
- A file past its ``expires_at`` is gone for every reader (``NotFound``, absent from lists); its row
  and bytes are removed by ``sweep``, which runs at start-up and on every upload and listing.
- Blocking disk work runs in a thread; disk failures become ``StorageError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from execbridge import ids
from execbridge.errors import InvalidRequest, NotFound, RequestTooLarge, StorageError
from execbridge.store.base import FileRecord, FileStore
from execbridge.types import OutputFile

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MIME_TYPE",
    "FilePage",
    "FileService",
    "OutputBatch",
    "OwnerStorageFull",
    "UploadSink",
    "mime_type_for",
    "upload_filename",
]

DEFAULT_MIME_TYPE = "application/octet-stream"
MAX_LIST_LIMIT = 1000
# ``expires_in_seconds`` of an upload: Anthropic's documented range (one hour to ninety days).
MIN_EXPIRES_IN_SECONDS = 3600
MAX_EXPIRES_IN_SECONDS = 7_776_000
_SWEEP_BATCH = 1000  # expired files removed per sweep on a request path (start-up sweeps them all)
_FLUSH_BYTES = 1 << 20  # upload bytes are buffered up to this much between thread hops
_TEMP_PREFIX = ".tmp-"
_FILE_ID = re.compile(r"file[_-][0-9A-Za-z]+")  # Anthropic's ``file_…`` and OpenAI's ``file-…``
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def mime_type_for(filename: str, content_type: str | None) -> str:
    """The declared type when it says something; else a guess from the name; else octet-stream.

    Clients that do not know a type send ``application/octet-stream`` (httpx does), so that is no
    better than no type at all. Parameters (``; charset=…``) are dropped: the file object has none.
    """
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared and declared != DEFAULT_MIME_TYPE and _MIME.fullmatch(declared):
        return declared
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or DEFAULT_MIME_TYPE


def upload_filename(raw: str | None, mime_type: str) -> str:
    """What the file object keeps as ``filename``: the final path component of the client's name.

    The SDK documents exactly this: an absent or empty name becomes ``unnamed`` plus the extension of
    the stored type, when one is known.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1].replace("\x00", "")
    if name.strip() and name not in (".", ".."):
        return name
    return "unnamed" + (mimetypes.guess_extension(mime_type, strict=False) or "")


class OwnerStorageFull(InvalidRequest):
    """The owner's files together would pass ``max_owner_bytes``."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class FilePage:
    records: tuple[FileRecord, ...]
    has_more: bool


class UploadSink:
    """One upload on its way to disk. ``write`` streams (refusing bytes past the limit); ``commit``
    makes it a file. Obtained from ``FileService.upload``, which removes it unless committed.

    Past what the owner's budget has left (``room``) bytes are counted but no longer written, so a
    file over the per-file limit is still ``RequestTooLarge`` (413); one within it is refused with
    ``OwnerStorageFull`` (400) by ``commit``.
    """

    def __init__(self, service: FileService, owner: str, temp: Path, handle: BinaryIO, limit: int, room: int) -> None:
        self._service = service
        self._owner = owner
        self._temp = temp
        self._handle = handle
        self._limit = limit
        self.room = room  # what the owner's budget had left when the upload began
        self._buffer = bytearray()
        self.size = 0
        self.committed: FileRecord | None = None

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:
            raise RequestTooLarge(f"file is larger than the limit of {self._limit} bytes")
        if self.size > self.room:
            self._buffer.clear()  # refused at commit; only the count matters now
            return
        self._buffer += chunk
        if len(self._buffer) >= _FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            await asyncio.to_thread(self._handle.write, data)
        except OSError as exc:
            raise StorageError(f"could not store the file: {exc.strerror}") from None

    async def commit(
        self,
        filename: str | None,
        content_type: str | None,
        *,
        expires_in_seconds: int | None = None,
        purpose: str | None = None,
    ) -> FileRecord:
        """Make the upload a file; ``expires_in_seconds`` (already checked by the caller) sets its expiry;
        a ``purpose`` makes it an OpenAI Files API file (``file-…``)."""
        if self.size > self.room:
            raise self._service.storage_full()
        await self._flush()
        try:
            await asyncio.to_thread(self._handle.close)
        except OSError as exc:
            raise StorageError(f"could not store the file: {exc.strerror}") from None
        mime_type = mime_type_for(filename or "", content_type)
        self.committed = await self._service._commit(
            self._temp,
            self._owner,
            upload_filename(filename, mime_type),
            mime_type,
            self.size,
            downloadable=False,
            expires_in_seconds=expires_in_seconds,
            purpose=purpose,
        )
        return self.committed


class OutputBatch:
    """One command's ``$OUTPUT_DIR`` files on their way into the Files API (a sandbox ``OutputSpool``).

    The sandbox client writes each file, as it arrives, to a path from ``new_path``: a temporary name
    in the Files API's directory, so ``publish`` only renames it into place and registers it (no
    copy, nothing in memory); ``discard`` removes every temporary not published. Obtained from
    ``FileService.output_batch``; its owner calls ``discard`` when the command is done with, whatever
    happened (a crash leaves temporaries that ``FileService.prepare`` sweeps). Files that would pass
    the owner's budget are not published; ``over_budget`` names them.
    """

    def __init__(self, service: FileService, owner: str) -> None:
        self._service = service
        self._owner = owner
        self._paths: set[Path] = set()
        self.over_budget: list[str] = []

    def new_path(self) -> Path:
        path = self._service.root / f"{_TEMP_PREFIX}{ids.random_token()}"
        self._paths.add(path)
        return path

    async def publish(self, outputs: Sequence[tuple[str, Path]]) -> tuple[OutputFile, ...]:
        """Register files (name, a path of this batch) as the owner's downloadable files."""
        published = []
        for name, path in outputs:
            if path not in self._paths:
                raise StorageError("an output file outside its batch")
            try:
                size = (await asyncio.to_thread(path.stat)).st_size
            except OSError as exc:
                raise StorageError(f"could not store the file: {exc.strerror}") from None
            self._paths.discard(path)  # from here ``_commit`` owns it: renamed into place, or removed
            try:
                record = await self._service._commit(
                    path, self._owner, name, mime_type_for(name, None), size, downloadable=True
                )
            except OwnerStorageFull:
                self.over_budget.append(name)
                continue
            published.append(OutputFile(record.id, record.filename, record.size_bytes))
        return tuple(published)

    def discard(self) -> None:
        """Remove every temporary of this batch that was not published (a few unlinks, no waiting)."""
        for path in self._paths:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        self._paths.clear()


class FileService:
    """Files of every owner, kept in ``root`` (bytes) and ``store`` (metadata)."""

    def __init__(
        self,
        store: FileStore,
        root: Path,
        *,
        max_bytes: int,
        max_owner_bytes: int | None = None,
        placement_ttl: timedelta | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        # Container records are the sandbox's (another database): an upload's placement row is
        # forgotten this long after it was made, by when its container is long gone (twice the
        # containers' retention; a container used without a break for longer re-puts the upload under
        # a new name rather than reusing it, never overwriting anything).
        self._placement_ttl = placement_ttl
        self.root = root
        self.max_bytes = max_bytes
        self.max_owner_bytes = max_owner_bytes  # None: no budget per owner
        self._clock = clock
        # Held from the budget check to the row's insert, so two commits cannot both take the last room.
        self._budget_lock = asyncio.Lock()

    def prepare(self) -> None:
        """Create the directory (0700) and drop temporaries a crash left behind. Call once at start."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for leftover in self.root.glob(f"{_TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)

    # ------------------------------------------------------------ creating

    async def room(self, owner: str) -> int:
        """How many more bytes the owner may store (one query; no budget: a huge number)."""
        if self.max_owner_bytes is None:
            return 1 << 62
        return max(0, self.max_owner_bytes - await self._store.bytes_of(owner))

    def storage_full(self) -> OwnerStorageFull:
        return OwnerStorageFull(
            f"file storage for this API key is full (its files may hold {self.max_owner_bytes} bytes in all); "
            "delete files you no longer need (DELETE /v1/files/{file_id}) to free space"
        )

    @asynccontextmanager
    async def upload(self, owner: str) -> AsyncIterator[UploadSink]:
        """A sink for one streamed upload; its bytes are removed unless ``commit`` was called."""
        await self.sweep()
        room = await self.room(owner)
        temp = self.root / f"{_TEMP_PREFIX}{ids.random_token()}"
        try:
            handle = await asyncio.to_thread(_open_new, temp)
        except OSError as exc:
            raise StorageError(f"could not store the file: {exc.strerror}") from None
        sink = UploadSink(self, owner, temp, handle, self.max_bytes, room)
        try:
            yield sink
        finally:
            if sink.committed is None:
                with contextlib.suppress(OSError):
                    handle.close()
                temp.unlink(missing_ok=True)

    async def create(
        self, owner: str, filename: str, data: bytes, *, content_type: str | None = None, downloadable: bool
    ) -> FileRecord:
        """A file from bytes in hand (sandbox outputs, tests)."""
        temp = self.root / f"{_TEMP_PREFIX}{ids.random_token()}"
        try:
            await asyncio.to_thread(_write_new, temp, data)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(f"could not store the file: {exc.strerror}") from None
        mime_type = mime_type_for(filename, content_type)
        return await self._commit(temp, owner, filename, mime_type, len(data), downloadable=downloadable)

    def output_batch(self, owner: str) -> OutputBatch:
        """Where one command's ``$OUTPUT_DIR`` files are streamed to, then published from as ``owner``'s."""
        return OutputBatch(self, owner)

    async def _commit(
        self,
        temp: Path,
        owner: str,
        filename: str,
        mime_type: str,
        size: int,
        *,
        downloadable: bool,
        expires_in_seconds: int | None = None,
        purpose: str | None = None,
    ) -> FileRecord:
        """Rename ``temp`` into place and insert its row; ``OwnerStorageFull`` (``temp`` removed) past the budget."""
        now = self._clock()
        record = FileRecord(
            id=ids.file_id() if purpose is None else ids.openai_file_id(),
            purpose=purpose,
            owner=owner,
            filename=filename,
            mime_type=mime_type,
            size_bytes=size,
            created_at=now,
            downloadable=downloadable,
            expires_at=None if expires_in_seconds is None else now + timedelta(seconds=expires_in_seconds),
        )
        final = self.path_of(record)
        async with self._budget_lock:
            if size > await self.room(owner):
                temp.unlink(missing_ok=True)  # noqa: ASYNC240  (refusal: one unlink of our own temp file)
                raise self.storage_full()
            try:
                await asyncio.to_thread(os.replace, temp, final)
            except OSError as exc:
                temp.unlink(missing_ok=True)  # noqa: ASYNC240  (error path: one unlink of our own temp file)
                raise StorageError(f"could not store the file: {exc.strerror}") from None
            try:
                await self._store.insert(record)
            except BaseException:
                final.unlink(missing_ok=True)
                raise
        return record

    # ------------------------------------------------------------ reading

    def path_of(self, record: FileRecord) -> Path:
        # Ids are made by ``ids.file_id``; the check keeps a corrupted row from naming another path.
        if not _FILE_ID.fullmatch(record.id):
            raise StorageError("malformed file id in the store")
        return self.root / record.id

    async def get(self, owner: str, file_id: str) -> FileRecord:
        record = await self._store.get(file_id, owner, now=self._clock())
        if record is None:
            raise NotFound(f"file '{file_id}' not found")
        return record

    async def find(self, owner: str, file_ids: Sequence[str]) -> dict[str, FileRecord]:
        """The owner's files among ``file_ids``; unknown ids are simply absent."""
        unique = list(dict.fromkeys(file_ids))
        found: dict[str, FileRecord] = {}
        for start in range(0, len(unique), 500):  # stay far below SQLite's parameter limit
            for record in await self._store.get_many(unique[start : start + 500], owner, now=self._clock()):
                found[record.id] = record
        return found

    async def read(self, record: FileRecord) -> bytes:
        """All bytes of a file (for putting it into a container, which takes them in one frame)."""
        try:
            return await asyncio.to_thread(self.path_of(record).read_bytes)
        except FileNotFoundError:
            raise NotFound(f"file '{record.id}' not found") from None
        except OSError as exc:
            raise StorageError(f"could not read file '{record.id}': {exc.strerror}") from None

    async def list(
        self,
        owner: str,
        *,
        limit: int = 20,
        after_id: str | None = None,
        before_id: str | None = None,
        after: tuple[datetime, str] | None = None,
        before: tuple[datetime, str] | None = None,
        openai: bool = False,
        purpose: str | None = None,
    ) -> FilePage:
        """A page of the owner's files, newest first: Anthropic's, or with ``openai`` OpenAI's (those of
        ``purpose`` when given).

        ``after_id``/``before_id`` are the old beta cursors (ids on the previous page); ``after`` is a
        position (from a GA ``page`` token), which stays valid even if that file was deleted since;
        ``before`` is a position too (the files just newer than it, still newest first).
        """
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit: must be between 1 and {MAX_LIST_LIMIT}")
        await self.sweep()
        if after_id is not None:
            after = (await self._cursor_of(owner, after_id, "after_id")).cursor
        if before_id is not None:
            before = (await self._cursor_of(owner, before_id, "before_id")).cursor
        # One more than asked says whether there is a next page without a second query.
        rows = await self._store.list(
            owner, limit=limit + 1, after=after, before=before, now=self._clock(), openai=openai, purpose=purpose
        )
        if before is not None:
            return FilePage(tuple(rows[-limit:]), len(rows) > limit)
        return FilePage(tuple(rows[:limit]), len(rows) > limit)

    async def _cursor_of(self, owner: str, file_id: str, name: str) -> FileRecord:
        record = await self._store.get(file_id, owner, now=self._clock())
        if record is None:
            raise InvalidRequest(f"{name}: no file '{file_id}'")
        return record

    # ------------------------------------------------------------ deleting

    async def delete(self, owner: str, file_id: str) -> None:
        record = await self.get(owner, file_id)
        if not await self._store.delete(file_id, owner):
            raise NotFound(f"file '{file_id}' not found")  # deleted concurrently
        try:
            await asyncio.to_thread(self.path_of(record).unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete the bytes of '{file_id}': {exc.strerror}") from None

    async def sweep(self, limit: int = _SWEEP_BATCH) -> int:
        """Remove up to ``limit`` expired files (rows, then bytes) of any owner; how many were removed.

        Expired files are invisible already; this frees their disk. A concurrent sweep that removed a
        row first wins; a byte file that cannot be unlinked stays (it has no row, nothing lists it).
        """
        removed = 0
        for record in await self._store.expired(self._clock(), limit=limit):
            if await self._store.delete(record.id, record.owner):
                removed += 1
                with contextlib.suppress(OSError, StorageError):
                    await asyncio.to_thread(self.path_of(record).unlink, missing_ok=True)
        return removed

    async def sweep_all(self) -> None:
        """Remove every expired file, the bytes a crash left without a row, and old upload placements
        (at start-up)."""
        while await self.sweep() == _SWEEP_BATCH:
            pass
        orphans = await self.sweep_orphans()
        if orphans:
            log.info("removed the bytes of %d files that a crash left without a record", orphans)
        if self._placement_ttl is not None:
            await self._store.forget_placements(self._clock() - self._placement_ttl)

    async def sweep_orphans(self) -> int:
        """Remove byte files with no row: a crash between writing a file's bytes and inserting its row
        (``_commit``), or between deleting a row and unlinking its bytes (``delete``). Call at start-up
        only, before this process takes uploads: a commit in flight has bytes without a row for a moment
        (one gateway serves a data directory: its sandbox lock refuses a second)."""
        names = await asyncio.to_thread(lambda: [p.name for p in self.root.iterdir() if _FILE_ID.fullmatch(p.name)])
        removed = 0
        for start in range(0, len(names), _SWEEP_BATCH):
            batch = names[start : start + _SWEEP_BATCH]
            known = await self._store.known(batch)
            for name in batch:
                if name not in known:
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread((self.root / name).unlink)
                        removed += 1
        return removed

    # ------------------------------------------------------------ uploads in containers

    async def placements(self, container_id: str) -> dict[str, str]:
        return await self._store.placements(container_id)

    async def add_placement(self, container_id: str, file_id: str, path: str) -> None:
        await self._store.add_placement(container_id, file_id, path, self._clock())


def _open_new(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def _write_new(path: Path, data: bytes) -> None:
    with _open_new(path) as handle:
        handle.write(data)
