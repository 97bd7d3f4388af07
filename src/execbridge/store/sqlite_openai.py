"""OpenAI containers and the ids of their files in SQLite (``store.base.OpenAIContainerStore``).

Times are integer microseconds (``created_us``, ``active_us``), so list cursors compare exactly.
A container's file ids go with it (``ON DELETE CASCADE``; the connection enables foreign keys).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from execbridge.store.base import ContainerFileRecord, ContainerFileSource, OpenAIContainerRecord

if TYPE_CHECKING:
    from execbridge.store.sqlite import SqliteStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_COLUMNS = "id, owner, name, memory_limit, expires_minutes, sandbox_id, created_us, active_us"
_FILE_COLUMNS = "id, container_id, path, source, created_us"


def _us(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _from_us(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


def _container(row: tuple[Any, ...]) -> OpenAIContainerRecord:
    return OpenAIContainerRecord(
        id=row[0],
        owner=row[1],
        name=row[2],
        memory_limit=row[3],
        expires_after_minutes=row[4],
        sandbox_id=row[5],
        created_at=_from_us(row[6]),
        last_active_at=_from_us(row[7]),
    )


def _file(row: tuple[Any, ...]) -> ContainerFileRecord:
    return ContainerFileRecord(
        id=row[0],
        container_id=row[1],
        path=row[2],
        source=cast(ContainerFileSource, row[3]),
        created_at=_from_us(row[4]),
    )


class SqliteOpenAIContainerStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def insert(self, record: OpenAIContainerRecord) -> None:
        await self._store.execute(
            f"INSERT INTO openai_containers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.owner,
                record.name,
                record.memory_limit,
                record.expires_after_minutes,
                record.sandbox_id,
                _us(record.created_at),
                _us(record.last_active_at),
            ),
        )

    async def get(self, container_id: str, owner: str) -> OpenAIContainerRecord | None:
        rows = await self._store.query(
            f"SELECT {_COLUMNS} FROM openai_containers WHERE id = ? AND owner = ?", (container_id, owner)
        )
        return _container(rows[0]) if rows else None

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        ascending: bool = False,
        after: tuple[datetime, str] | None = None,
        name: str | None = None,
    ) -> builtins.list[OpenAIContainerRecord]:
        sql = f"SELECT {_COLUMNS} FROM openai_containers WHERE owner = ?"
        params: builtins.list[object] = [owner]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        if after is not None:
            sql += f" AND (created_us, id) {'>' if ascending else '<'} (?, ?)"
            params += [_us(after[0]), after[1]]
        direction = "ASC" if ascending else "DESC"
        rows = await self._store.query(
            f"{sql} ORDER BY created_us {direction}, id {direction} LIMIT ?", (*params, limit)
        )
        return [_container(r) for r in rows]

    async def touch(self, container_id: str, last_active_at: datetime) -> None:
        await self._store.execute(
            "UPDATE openai_containers SET active_us = ? WHERE id = ?", (_us(last_active_at), container_id)
        )

    async def mark_expired(self, container_id: str) -> None:
        await self._store.execute("UPDATE openai_containers SET sandbox_id = NULL WHERE id = ?", (container_id,))

    async def delete(self, container_id: str, owner: str) -> bool:
        changed = await self._store.execute_count(
            "DELETE FROM openai_containers WHERE id = ? AND owner = ?", (container_id, owner)
        )
        return changed > 0

    async def add_file(self, record: ContainerFileRecord) -> ContainerFileRecord:
        # Two listings racing over one new file both try; the first row stays and both return it.
        await self._store.execute(
            f"INSERT OR IGNORE INTO openai_container_files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (record.id, record.container_id, record.path, record.source, _us(record.created_at)),
        )
        rows = await self._store.query(
            f"SELECT {_FILE_COLUMNS} FROM openai_container_files WHERE container_id = ? AND path = ?",
            (record.container_id, record.path),
        )
        return _file(rows[0]) if rows else record

    async def files(self, container_id: str) -> builtins.list[ContainerFileRecord]:
        rows = await self._store.query(
            f"SELECT {_FILE_COLUMNS} FROM openai_container_files WHERE container_id = ?", (container_id,)
        )
        return [_file(r) for r in rows]

    async def remove_files(self, container_id: str, file_ids: Sequence[str]) -> None:
        for start in range(0, len(file_ids), 500):
            batch = file_ids[start : start + 500]
            marks = ", ".join("?" * len(batch))
            await self._store.execute(
                f"DELETE FROM openai_container_files WHERE container_id = ? AND id IN ({marks})",
                (container_id, *batch),
            )
