"""The embedded store: one SQLite file in the data directory, WAL mode, schema by ``migrations``.

All database work runs on one dedicated thread that owns the one connection, so the event loop
never blocks on disk and SQLite never sees two threads. Calls are short (single statements); the
thread hop costs tens of microseconds.

Invariants: the database file is created 0600 (it names every container and, later, keys); times
are stored as UTC epoch seconds and come back as UTC-aware datetimes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from execbridge.store import migrations
from execbridge.store.base import ContainerRecord

T = TypeVar("T")


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _record(row: tuple[str, str, int, float, float]) -> ContainerRecord:
    return ContainerRecord(id=row[0], owner=row[1], slot=row[2], created_at=_dt(row[3]), last_used_at=_dt(row[4]))


_COLUMNS = "id, owner, slot, created_at, last_used_at"


class SqliteContainerStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def insert(self, record: ContainerRecord) -> None:
        await self._store.execute(
            f"INSERT INTO containers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (record.id, record.owner, record.slot, _ts(record.created_at), _ts(record.last_used_at)),
        )

    async def get(self, container_id: str) -> ContainerRecord | None:
        rows = await self._store.query(f"SELECT {_COLUMNS} FROM containers WHERE id = ?", (container_id,))
        return _record(rows[0]) if rows else None

    async def list(self, owner: str | None = None) -> list[ContainerRecord]:
        if owner is None:
            rows = await self._store.query(f"SELECT {_COLUMNS} FROM containers ORDER BY last_used_at DESC", ())
        else:
            rows = await self._store.query(
                f"SELECT {_COLUMNS} FROM containers WHERE owner = ? ORDER BY last_used_at DESC", (owner,)
            )
        return [_record(r) for r in rows]

    async def touch(self, container_id: str, last_used_at: datetime) -> None:
        await self._store.execute(
            "UPDATE containers SET last_used_at = ? WHERE id = ?", (_ts(last_used_at), container_id)
        )

    async def delete(self, container_id: str) -> None:
        await self._store.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    async def unused_since(self, cutoff: datetime) -> list[ContainerRecord]:
        rows = await self._store.query(
            f"SELECT {_COLUMNS} FROM containers WHERE last_used_at < ? ORDER BY last_used_at", (_ts(cutoff),)
        )
        return [_record(r) for r in rows]


class SqliteStore:
    """Open with ``await SqliteStore.open(path)``; close with ``await store.close()``."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._db = db
        self._containers = SqliteContainerStore(self)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="execbridge-sqlite")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, db)

    @property
    def containers(self) -> SqliteContainerStore:
        return self._containers

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def execute(self, sql: str, params: tuple[object, ...]) -> None:
        await self._run(lambda: self._db.execute(sql, params).close())

    async def query(self, sql: str, params: tuple[object, ...]) -> list[tuple]:  # type: ignore[type-arg]
        return await self._run(lambda: self._db.execute(sql, params).fetchall())

    async def close(self) -> None:
        await self._run(self._db.close)
        self._executor.shutdown(wait=True)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create the file 0600 ourselves; SQLite gives its -wal/-shm files the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, isolation_level=None)  # autocommit; transactions are explicit
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; WAL keeps it consistent
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA foreign_keys=ON")
    migrations.apply(db)
    return db
