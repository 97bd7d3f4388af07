"""The embedded store: one SQLite file in the data directory, WAL mode, schema by ``migrations``.

All database work runs on one dedicated thread that owns the one connection, so the event loop
never blocks on disk and SQLite never sees two threads. Calls are short (single statements); the
thread hop costs tens of microseconds.

Another process may hold the database's lock (a backup, a hand-run ``sqlite3``): a statement waits up to
``busy_timeout_s`` for it, then fails with ``StoreBusy`` (retryable, nothing written) rather than a raw
``sqlite3.OperationalError``. While one statement waits, the others queue behind it on the one thread.

Invariants: the database file is created 0600 (it names every container and, later, keys); times
are stored as UTC epoch seconds and come back as UTC-aware datetimes.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from execbridge.errors import StoreBusy
from execbridge.store import migrations
from execbridge.store.base import ApiKeyRecord, ContainerRecord, FileRecord
from execbridge.store.sqlite_openai import SqliteOpenAIContainerStore
from execbridge.store.sqlite_pending import SqlitePendingCallStore
from execbridge.store.sqlite_responses import SqliteResponseStore
from execbridge.store.sqlite_threads import SqliteThreadStore
from execbridge.store.sqlite_usage import SqliteUsageStore

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_S = 5.0  # how long a statement waits for another process's lock (settings.store_busy_timeout_s)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _record(row: tuple[str, str, int, float, float, int | None]) -> ContainerRecord:
    return ContainerRecord(
        id=row[0], owner=row[1], slot=row[2], created_at=_dt(row[3]), last_used_at=_dt(row[4]), memory_mb=row[5]
    )


_COLUMNS = "id, owner, slot, created_at, last_used_at, memory_mb"


class SqliteContainerStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def insert(self, record: ContainerRecord) -> None:
        await self._store.execute(
            f"INSERT INTO containers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.owner,
                record.slot,
                _ts(record.created_at),
                _ts(record.last_used_at),
                record.memory_mb,
            ),
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

    async def unused_since(self, cutoff: datetime) -> builtins.list[ContainerRecord]:  # ``list`` is a method here
        rows = await self._store.query(
            f"SELECT {_COLUMNS} FROM containers WHERE last_used_at < ? ORDER BY last_used_at", (_ts(cutoff),)
        )
        return [_record(r) for r in rows]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _from_us(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


_FILE_COLUMNS = "id, owner, filename, mime_type, size_bytes, created_us, downloadable, expires_us, purpose"
_NEWEST_FIRST = "ORDER BY created_us DESC, id DESC"


def _unexpired(now: datetime | None) -> tuple[str, tuple[object, ...]]:
    """The SQL condition (and its parameters) that leaves out records expired at ``now``."""
    if now is None:
        return "", ()
    return " AND (expires_us IS NULL OR expires_us > ?)", (_us(now),)


def _file(row: tuple[str, str, str, str, int, int, int, int | None, str | None]) -> FileRecord:
    return FileRecord(
        id=row[0],
        owner=row[1],
        filename=row[2],
        mime_type=row[3],
        size_bytes=row[4],
        created_at=_from_us(row[5]),
        downloadable=bool(row[6]),
        expires_at=None if row[7] is None else _from_us(row[7]),
        purpose=row[8],
    )


class SqliteFileStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def insert(self, record: FileRecord) -> None:
        await self._store.execute(
            f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.owner,
                record.filename,
                record.mime_type,
                record.size_bytes,
                _us(record.created_at),
                int(record.downloadable),
                None if record.expires_at is None else _us(record.expires_at),
                record.purpose,
            ),
        )

    async def get(self, file_id: str, owner: str, *, now: datetime | None = None) -> FileRecord | None:
        live, live_params = _unexpired(now)
        rows = await self._store.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ? AND owner = ?{live}", (file_id, owner, *live_params)
        )
        return _file(rows[0]) if rows else None

    async def get_many(self, file_ids: Sequence[str], owner: str, *, now: datetime | None = None) -> list[FileRecord]:
        if not file_ids:
            return []
        # One parameter per id; callers bound the count (the list route allows 100).
        marks = ", ".join("?" * len(file_ids))
        live, live_params = _unexpired(now)
        rows = await self._store.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE owner = ? AND id IN ({marks}){live} {_NEWEST_FIRST}",
            (owner, *file_ids, *live_params),
        )
        return [_file(r) for r in rows]

    async def known(self, file_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(file_ids), 500):  # SQLite allows 32766 parameters; stay well below
            batch = file_ids[start : start + 500]
            marks = ", ".join("?" * len(batch))
            rows = await self._store.query(f"SELECT id FROM files WHERE id IN ({marks})", tuple(batch))
            found.update(r[0] for r in rows)
        return found

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        before: tuple[datetime, str] | None = None,
        now: datetime | None = None,
        openai: bool = False,
        purpose: str | None = None,
    ) -> list[FileRecord]:
        live, live_params = _unexpired(now)
        sql = f"SELECT {_FILE_COLUMNS} FROM files WHERE owner = ?{live}"
        params: list[object] = [owner, *live_params]
        if not openai:
            sql += " AND purpose IS NULL"
        elif purpose is None:
            sql += " AND purpose IS NOT NULL"
        else:
            sql += " AND purpose = ?"
            params.append(purpose)
        if after is not None:
            sql += " AND (created_us, id) < (?, ?)"
            params += [_us(after[0]), after[1]]
        if before is not None:
            sql += " AND (created_us, id) > (?, ?)"
            params += [_us(before[0]), before[1]]
            # the nearest newer ones: walk upwards, then turn the page back to newest first
            rows = await self._store.query(f"{sql} ORDER BY created_us, id LIMIT ?", (*params, limit))
            return [_file(r) for r in reversed(rows)]
        rows = await self._store.query(f"{sql} {_NEWEST_FIRST} LIMIT ?", (*params, limit))
        return [_file(r) for r in rows]

    async def bytes_of(self, owner: str) -> int:
        rows = await self._store.query("SELECT COALESCE(SUM(size_bytes), 0) FROM files WHERE owner = ?", (owner,))
        return int(rows[0][0])

    async def expired(self, now: datetime, *, limit: int) -> builtins.list[FileRecord]:  # ``list`` is a method here
        rows = await self._store.query(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE expires_us IS NOT NULL AND expires_us <= ? "
            "ORDER BY expires_us LIMIT ?",
            (_us(now), limit),
        )
        return [_file(r) for r in rows]

    async def delete(self, file_id: str, owner: str) -> bool:
        return await self._store.execute_count("DELETE FROM files WHERE id = ? AND owner = ?", (file_id, owner)) > 0

    async def placements(self, container_id: str) -> dict[str, str]:
        rows = await self._store.query(
            "SELECT file_id, path FROM container_uploads WHERE container_id = ?", (container_id,)
        )
        return {file_id: path for file_id, path in rows}

    async def add_placement(self, container_id: str, file_id: str, path: str, placed_at: datetime) -> None:
        # Two requests racing on one container may both put the same upload; the first row stays.
        await self._store.execute(
            "INSERT OR IGNORE INTO container_uploads (container_id, file_id, path, placed_us) VALUES (?, ?, ?, ?)",
            (container_id, file_id, path, _us(placed_at)),
        )

    async def forget_placements(self, placed_before: datetime) -> int:
        return await self._store.execute_count(
            "DELETE FROM container_uploads WHERE placed_us < ?", (_us(placed_before),)
        )


def _key(row: tuple[str, str | None, str, float, float | None, float | None]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row[0],
        name=row[1],
        secret_hash=row[2],
        created_at=_dt(row[3]),
        last_used_at=None if row[4] is None else _dt(row[4]),
        revoked_at=None if row[5] is None else _dt(row[5]),
    )


_KEY_COLUMNS = "id, name, secret_hash, created_at, last_used_at, revoked_at"


class SqliteKeyStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def insert(self, record: ApiKeyRecord) -> None:
        await self._store.execute(
            f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.name,
                record.secret_hash,
                _ts(record.created_at),
                None if record.last_used_at is None else _ts(record.last_used_at),
                None if record.revoked_at is None else _ts(record.revoked_at),
            ),
        )

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        rows = await self._store.query(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    async def list(self) -> list[ApiKeyRecord]:
        rows = await self._store.query(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id", ())
        return [_key(r) for r in rows]

    async def revoke(self, key_id: str, revoked_at: datetime) -> bool:
        changed = await self._store.execute_count(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (_ts(revoked_at), key_id)
        )
        return changed > 0

    async def touch(self, key_id: str, last_used_at: datetime) -> None:
        await self._store.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (_ts(last_used_at), key_id))

    async def count(self, *, include_revoked: bool = False) -> int:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = await self._store.query(f"SELECT COUNT(*) FROM api_keys{where}", ())
        return int(rows[0][0])


class SqliteStore:
    """Open with ``await SqliteStore.open(path)``; close with ``await store.close()``."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._db = db
        self._containers = SqliteContainerStore(self)
        self._files = SqliteFileStore(self)
        self._keys = SqliteKeyStore(self)
        self._threads = SqliteThreadStore(self)
        self._pending_calls = SqlitePendingCallStore(self)
        self._openai_containers = SqliteOpenAIContainerStore(self)
        self._responses = SqliteResponseStore(self)
        self._usage = SqliteUsageStore(self)

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> SqliteStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="execbridge-sqlite")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(executor, _connect, path, busy_timeout_s)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, db)

    @property
    def containers(self) -> SqliteContainerStore:
        return self._containers

    @property
    def files(self) -> SqliteFileStore:
        return self._files

    @property
    def pending_calls(self) -> SqlitePendingCallStore:
        return self._pending_calls

    @property
    def keys(self) -> SqliteKeyStore:
        return self._keys

    @property
    def threads(self) -> SqliteThreadStore:
        return self._threads

    @property
    def openai_containers(self) -> SqliteOpenAIContainerStore:
        return self._openai_containers

    @property
    def responses(self) -> SqliteResponseStore:
        return self._responses

    @property
    def usage(self) -> SqliteUsageStore:
        return self._usage

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.OperationalError as exc:
            if _locked_elsewhere(exc):
                raise StoreBusy(f"the store ({self.path.name}) is locked by another process; retry") from exc
            raise

    async def execute(self, sql: str, params: tuple[object, ...]) -> None:
        await self._run(lambda: self._db.execute(sql, params).close())

    async def execute_count(self, sql: str, params: tuple[object, ...]) -> int:
        """Run one statement; the number of rows it changed."""

        def run() -> int:
            cursor = self._db.execute(sql, params)
            try:
                return cursor.rowcount
            finally:
                cursor.close()

        return await self._run(run)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the database thread inside one ``BEGIN IMMEDIATE`` … ``COMMIT``."""

        def run() -> T:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT leaves it open too
                    self._db.execute("ROLLBACK")
                raise
            return result

        return await self._run(run)

    async def query(self, sql: str, params: tuple[object, ...]) -> builtins.list[tuple[Any, ...]]:
        return await self._run(lambda: self._db.execute(sql, params).fetchall())

    async def close(self) -> None:
        await self._run(self._db.close)
        self._executor.shutdown(wait=True)


_BUSY_CODES = frozenset((sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))


def _locked_elsewhere(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, extended codes included (their low byte is the primary code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _BUSY_CODES


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create the file 0600 ourselves; SQLite gives its -wal/-shm files the same mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, isolation_level=None)  # autocommit; transactions are explicit
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; WAL keeps it consistent
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    db.execute("PRAGMA foreign_keys=ON")
    migrations.apply(db)
    return db
