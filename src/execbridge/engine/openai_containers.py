"""OpenAI's Containers API over the sandbox's containers: ``cntr_…`` ids, names, memory tiers, expiry
after minutes without activity, and the files in them (docs/protocol.md, "OpenAI Files and Containers").

Job: the one service behind ``/v1/containers`` and behind the ``code_interpreter``/``shell`` tools of
``/v1/responses`` (``resolve``): an OpenAI container is a row of the store (``OpenAIContainerRecord``)
over one sandbox container (``ContainerService``), the same kind an Anthropic request gets, whose
workspace code reaches as ``/mnt/data``.

Invariants:
- Every call is scoped by the caller's owner: another key's container is ``NotFound``, like an id
  that never existed. Anthropic's ``container_…`` ids and OpenAI's ``cntr_…`` ids never resolve
  through the other API (the sandbox container's id is never shown to an OpenAI client).
- Any operation on a container (retrieve, file operations, use by a response) moves
  ``last_active_at``; a container whose ``last_active_at`` + ``expires_after.minutes`` has passed is
  ``expired``: its metadata stays readable, its files are gone (the sandbox container is deleted at
  the owner's next request that meets it, or by the sandbox's own retention), and using it is a 400
  ``container_expired``. Deletion is lazy because only a request carries the key a separate sandbox
  host needs to delete anything.
- ``memory_limit`` is echoed as requested; the sandbox container gets the tier as its own memory
  limit, clamped to the sandbox's per-container limit (``sandbox.memory_mb``: what the machine allows).

Must not: know HTTP or any wire format (``api/containers.py`` renders).
"""

from __future__ import annotations

import builtins
import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from execbridge import ids
from execbridge.engine.container_files import ContainerFile, ContainerFiles, sorted_page
from execbridge.engine.uploads import container_filename
from execbridge.errors import InvalidRequest, NotFound
from execbridge.files import FileService
from execbridge.sandbox.base import ContainerService, ContainerSession
from execbridge.store.base import FileRecord, OpenAIContainerRecord, OpenAIContainerStore
from execbridge.types import Caller

__all__ = [
    "AUTO_NAME",
    "DEFAULT_EXPIRES_MINUTES",
    "DEFAULT_MEMORY_LIMIT",
    "MAX_EXPIRES_MINUTES",
    "MAX_LIST_LIMIT",
    "MEMORY_TIERS",
    "AutoContainer",
    "LiveContainer",
    "OpenAIContainers",
    "check_memory_limit",
    "expired_error",
]

MEMORY_TIERS: Final = {"1g": 1 << 10, "4g": 4 << 10, "16g": 16 << 10, "64g": 64 << 10}  # MiB
DEFAULT_MEMORY_LIMIT: Final = "1g"
DEFAULT_EXPIRES_MINUTES: Final = 20  # OpenAI's documented idle expiry
MAX_EXPIRES_MINUTES: Final = 7 * 24 * 60
MAX_LIST_LIMIT: Final = 100
AUTO_NAME: Final = "auto"  # the name of a container a response's ``{"type": "auto"}`` made
_CONTAINER_ID: Final = re.compile(r"cntr_[0-9a-f]{48}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AutoContainer:
    """A response's ``{"type": "auto", "file_ids": […], "memory_limit": …}``: a new container, with
    those files placed under ``/mnt/data/<file id>-<name>``."""

    file_ids: tuple[str, ...] = ()
    memory_limit: str = DEFAULT_MEMORY_LIMIT


@dataclass(frozen=True, slots=True)
class LiveContainer:
    """A running OpenAI container resolved for use: ``sandbox_id`` is what ``ContainerService.lease``
    takes (with the same caller); ``placed`` maps each requested file id to its ``/mnt/data`` path."""

    record: OpenAIContainerRecord
    sandbox_id: str
    placed: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.record.id


def check_memory_limit(value: str) -> str:
    if value not in MEMORY_TIERS:
        raise InvalidRequest(
            f"Invalid 'memory_limit': expected one of {', '.join(MEMORY_TIERS)}, got {value!r}.", param="memory_limit"
        )
    return value


def expired_error(container_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Container '{container_id}' is expired: its files are gone and it cannot be used.", code="container_expired"
    )


class OpenAIContainers:
    """``cntr_…`` containers of every owner, over ``containers``; uploads by file id read ``files``."""

    def __init__(
        self,
        store: OpenAIContainerStore,
        containers: ContainerService,
        files: FileService,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._containers = containers
        self._files = files
        self._clock = clock
        self.files = ContainerFiles(store, clock)

    # ------------------------------------------------------------ containers

    async def create(
        self,
        caller: Caller,
        *,
        name: str,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        expires_after_minutes: int = DEFAULT_EXPIRES_MINUTES,
        file_ids: Sequence[str] = (),
    ) -> LiveContainer:
        """A new running container; ``file_ids`` (the caller's Files API files) are put into it first
        thing, each at ``/mnt/data/<file id>-<name>``. An unknown file id is a 400 before anything is made."""
        check_memory_limit(memory_limit)
        if not 1 <= expires_after_minutes <= MAX_EXPIRES_MINUTES:
            raise InvalidRequest(
                f"Invalid 'expires_after.minutes': must be between 1 and {MAX_EXPIRES_MINUTES}.",
                param="expires_after.minutes",
            )
        records = await self._file_records(caller, file_ids)
        info = await self._containers.create(caller, memory_mb=MEMORY_TIERS[memory_limit])
        now = self._clock()
        record = OpenAIContainerRecord(
            id=ids.openai_container_id(),
            owner=caller.owner,
            name=name,
            memory_limit=memory_limit,
            expires_after_minutes=expires_after_minutes,
            sandbox_id=info.id,
            created_at=now,
            last_active_at=now,
        )
        try:
            await self._store.insert(record)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._containers.delete(info.id, caller)
            raise
        live = LiveContainer(record, info.id)
        if records:
            async with self._containers.lease(info.id, caller) as session:
                for file_record in records:
                    placed = await self._put_file_record(record.id, session, file_record)
                    live.placed[file_record.id] = placed.path
        return live

    async def get(self, caller: Caller, container_id: str) -> OpenAIContainerRecord:
        """The container (a retrieve counts as activity while it runs; an expired one is returned as is)."""
        record = await self._record(caller, container_id)
        if record.expired(self._clock()):
            return await self._dispose(caller, record)
        return await self._touch(record)

    async def list(
        self,
        caller: Caller,
        *,
        limit: int = 20,
        after: str | None = None,
        ascending: bool = False,
        name: str | None = None,
    ) -> tuple[builtins.list[OpenAIContainerRecord], bool]:
        """One page of the caller's containers (newest first unless ``ascending``), and whether more follow."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"Invalid 'limit': must be between 1 and {MAX_LIST_LIMIT}.", param="limit")
        cursor = None
        if after is not None:
            anchor = await self._store.get(after, caller.owner)
            if anchor is None:
                raise InvalidRequest(f"Invalid 'after': no container '{after}'.", param="after")
            cursor = anchor.cursor
        rows = await self._store.list(caller.owner, limit=limit + 1, ascending=ascending, after=cursor, name=name)
        now = self._clock()
        page = [await self._dispose(caller, r) if r.expired(now) else r for r in rows[:limit]]
        return page, len(rows) > limit

    async def delete(self, caller: Caller, container_id: str) -> None:
        record = await self._record(caller, container_id)
        if record.sandbox_id is not None:
            with contextlib.suppress(NotFound):  # gone already (the sandbox's retention)
                await self._containers.delete(record.sandbox_id, caller)
        if not await self._store.delete(record.id, caller.owner):
            raise _not_found(container_id)  # deleted concurrently

    async def resolve(self, caller: Caller, container: str | AutoContainer) -> LiveContainer:
        """The running container a response's tool names: a ``cntr_…`` id of the caller's (a 404 if
        unknown, a 400 ``container_expired`` if expired), or a new one for ``AutoContainer``."""
        if isinstance(container, AutoContainer):
            return await self.create(
                caller, name=AUTO_NAME, memory_limit=container.memory_limit, file_ids=container.file_ids
            )
        record = await self._running(caller, container)
        assert record.sandbox_id is not None
        return LiveContainer(record, record.sandbox_id)

    @asynccontextmanager
    async def lease(
        self, caller: Caller, container_id: str
    ) -> AsyncIterator[tuple[OpenAIContainerRecord, ContainerSession]]:
        """Exclusive use of a running container's sandbox (activity at start and end)."""
        record = await self._running(caller, container_id)
        assert record.sandbox_id is not None
        async with contextlib.AsyncExitStack() as stack:
            try:
                session = await stack.enter_async_context(self._containers.lease(record.sandbox_id, caller))
            except NotFound:
                # The sandbox container is gone (its retention, or deleted by hand): the files are too.
                await self._store.mark_expired(record.id)
                raise expired_error(container_id) from None
            yield record, session
        await self._touch(record)

    # ------------------------------------------------------------ files

    async def list_files(
        self, caller: Caller, container_id: str, *, limit: int = 20, after: str | None = None, ascending: bool = False
    ) -> tuple[builtins.list[ContainerFile], bool]:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"Invalid 'limit': must be between 1 and {MAX_LIST_LIMIT}.", param="limit")
        async with self.lease(caller, container_id) as (record, session):
            found = await self.files.all(record.id, session)
        return sorted_page(found, limit=limit, after=after, ascending=ascending)

    async def current_files(self, caller: Caller, container_id: str) -> builtins.list[ContainerFile]:
        """Every file in the container now, oldest first, each with its ``cfile_…`` id: what a response
        cites after code ran (match ``ContainerFile.path`` against the ``/mnt/data/…`` the code wrote)."""
        async with self.lease(caller, container_id) as (record, session):
            return await self.files.all(record.id, session)

    async def get_file(self, caller: Caller, container_id: str, file_id: str) -> ContainerFile:
        async with self.lease(caller, container_id) as (record, session):
            return await self.files.one(record.id, file_id, session)

    async def upload(self, caller: Caller, container_id: str, filename: str | None, data: bytes) -> ContainerFile:
        """A client's upload, at ``/mnt/data/<32 hex>-<name>`` as OpenAI's are."""
        name = container_filename(filename or "")
        async with self.lease(caller, container_id) as (record, session):
            return await self.files.put(record.id, session, f"{secrets.token_hex(16)}-{name}", data, "user")

    async def add_file_id(self, caller: Caller, container_id: str, file_id: str) -> ContainerFile:
        """A Files API file of the caller's, copied in at ``/mnt/data/<file id>-<name>``."""
        (file_record,) = await self._file_records(caller, [file_id], param="file_id")
        async with self.lease(caller, container_id) as (record, session):
            return await self._put_file_record(record.id, session, file_record)

    async def delete_file(self, caller: Caller, container_id: str, file_id: str) -> None:
        async with self.lease(caller, container_id) as (record, session):
            await self.files.remove(record.id, file_id, session)

    async def download(
        self, caller: Caller, container_id: str, file_id: str
    ) -> tuple[ContainerFile, Path, Callable[[], None]]:
        """The file, a temporary copy of its bytes, and the function that removes that copy (the caller
        calls it once the bytes are sent)."""
        batch = self._files.output_batch(caller.owner)
        try:
            async with self.lease(caller, container_id) as (record, session):
                found = await self.files.one(record.id, file_id, session)
                path = await self.files.copy_out(await self.files.record_of(record.id, file_id), session, batch)
        except BaseException:
            batch.discard()
            raise
        return found, path, batch.discard

    def is_expired(self, record: OpenAIContainerRecord) -> bool:
        return record.expired(self._clock())

    # ------------------------------------------------------------ internals

    async def _record(self, caller: Caller, container_id: str) -> OpenAIContainerRecord:
        record = await self._store.get(container_id, caller.owner) if _CONTAINER_ID.fullmatch(container_id) else None
        if record is None:
            raise _not_found(container_id)
        return record

    async def _running(self, caller: Caller, container_id: str) -> OpenAIContainerRecord:
        record = await self._record(caller, container_id)
        if record.expired(self._clock()):
            await self._dispose(caller, record)
            raise expired_error(container_id)
        return await self._touch(record)

    async def _touch(self, record: OpenAIContainerRecord) -> OpenAIContainerRecord:
        now = self._clock()
        await self._store.touch(record.id, now)
        return replace(record, last_active_at=now)

    async def _dispose(self, caller: Caller, record: OpenAIContainerRecord) -> OpenAIContainerRecord:
        """An expired container's sandbox container goes (its files with it); the record stays."""
        if record.sandbox_id is None:
            return record
        with contextlib.suppress(NotFound):
            await self._containers.delete(record.sandbox_id, caller)
        await self._store.mark_expired(record.id)
        return replace(record, sandbox_id=None)

    async def _file_records(
        self, caller: Caller, file_ids: Sequence[str], *, param: str = "file_ids"
    ) -> builtins.list[FileRecord]:
        if not file_ids:
            return []
        found = await self._files.find(caller.owner, file_ids)
        unknown = [i for i in file_ids if i not in found]
        if unknown:
            raise NotFound(f"No such File object: {unknown[0]}", param=param)
        return [found[i] for i in file_ids]

    async def _put_file_record(self, container_id: str, session: ContainerSession, record: FileRecord) -> ContainerFile:
        data = await self._files.read(record)
        relative = f"{record.id}-{container_filename(record.filename)}"
        return await self.files.put(container_id, session, relative, data, "user")


def _not_found(container_id: str) -> NotFound:
    return NotFound(f"Container with id '{container_id}' not found.", code="not_found")
