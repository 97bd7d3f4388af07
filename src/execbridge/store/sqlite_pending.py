"""The client tool calls suspended REPL cells wait for, in SQLite (``store.base.PendingCallStore``).

One row per call (``ptc_pending_calls``, migration 0007); a cell's rows are written together when it
pauses and cleared together when it is resumed. Times are microseconds since the epoch, UTC.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from execbridge.store.base import PendingCall

if TYPE_CHECKING:
    from execbridge.store.sqlite import SqliteStore

_COLUMNS = "tool_use_id, cell_id, container_id, owner, name, created_us, expires_us"


def _us(value: datetime) -> int:
    return round(value.timestamp() * 1_000_000)


def _call(row: tuple[Any, ...]) -> PendingCall:
    return PendingCall(
        tool_use_id=row[0],
        cell_id=row[1],
        container_id=row[2],
        owner=row[3],
        name=row[4],
        created_at=datetime.fromtimestamp(row[5] / 1_000_000, UTC),
        expires_at=datetime.fromtimestamp(row[6] / 1_000_000, UTC),
    )


class SqlitePendingCallStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def add(self, calls: Sequence[PendingCall]) -> None:
        rows = [
            (c.tool_use_id, c.cell_id, c.container_id, c.owner, c.name, _us(c.created_at), _us(c.expires_at))
            for c in calls
        ]
        await self._store.transaction(
            lambda db: db.executemany(f"INSERT INTO ptc_pending_calls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        )

    async def of_cell(self, cell_id: str, owner: str) -> builtins.list[PendingCall]:
        rows = await self._store.query(
            f"SELECT {_COLUMNS} FROM ptc_pending_calls WHERE cell_id = ? AND owner = ? ORDER BY rowid",
            (cell_id, owner),
        )
        return [_call(row) for row in rows]

    async def of_container(self, container_id: str, owner: str, now: datetime) -> builtins.list[PendingCall]:
        rows = await self._store.query(
            f"SELECT {_COLUMNS} FROM ptc_pending_calls "
            "WHERE container_id = ? AND owner = ? AND expires_us > ? ORDER BY rowid",
            (container_id, owner, _us(now)),
        )
        return [_call(row) for row in rows]

    async def clear(self, cell_id: str) -> None:
        await self._store.execute("DELETE FROM ptc_pending_calls WHERE cell_id = ?", (cell_id,))

    async def sweep(self, now: datetime, *, limit: int) -> int:
        return await self._store.execute_count(
            "DELETE FROM ptc_pending_calls WHERE tool_use_id IN "
            "(SELECT tool_use_id FROM ptc_pending_calls WHERE expires_us <= ? LIMIT ?)",
            (_us(now), limit),
        )
