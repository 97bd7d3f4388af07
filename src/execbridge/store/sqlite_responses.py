"""Stored Responses-API responses in SQLite (``store.base.ResponseStore``).

A conversation is a chain of rows by ``previous_id``; ``chain`` reads it with one recursive query,
owner-checked on every row, so a chain that passes through another owner's row (it cannot be built
through the API, but a store is not the place to assume so) or a deleted one is no conversation.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from execbridge.store.base import StoredResponse

if TYPE_CHECKING:
    from execbridge.store.sqlite import SqliteStore

_COLUMNS = "id, owner, previous_id, input_items, response, created_us"

_CHAIN = """
WITH RECURSIVE chain(id, previous_id, depth) AS (
    SELECT id, previous_id, 0 FROM responses WHERE id = ? AND owner = ?
    UNION ALL
    SELECT r.id, r.previous_id, chain.depth + 1
    FROM responses r JOIN chain ON r.id = chain.previous_id
    WHERE r.owner = ? AND chain.depth < 100000
)
"""


def _record(row: tuple[Any, ...]) -> StoredResponse:
    return StoredResponse(
        id=row[0],
        owner=row[1],
        previous_id=row[2],
        input_items=bytes(row[3]),
        response=bytes(row[4]),
        created_at=datetime.fromtimestamp(row[5] / 1_000_000, UTC),
    )


class SqliteResponseStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def insert(self, record: StoredResponse) -> None:
        await self._store.execute(
            f"INSERT INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.owner,
                record.previous_id,
                record.input_items,
                record.response,
                int(record.created_at.timestamp() * 1_000_000),
            ),
        )

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        rows = await self._store.query(
            f"SELECT {_COLUMNS} FROM responses WHERE id = ? AND owner = ?", (response_id, owner)
        )
        return _record(rows[0]) if rows else None

    async def chain(self, response_id: str, owner: str) -> builtins.list[StoredResponse]:
        rows = await self._store.query(
            f"{_CHAIN} SELECT {', '.join('r.' + c for c in _COLUMNS.split(', '))} "
            "FROM chain JOIN responses r ON r.id = chain.id ORDER BY chain.depth DESC",
            (response_id, owner, owner),
        )
        found = [_record(r) for r in rows]
        if not found or found[0].previous_id is not None:
            return []  # an ancestor is gone: what is left is no conversation
        return found

    async def delete(self, response_id: str, owner: str) -> bool:
        deleted = await self._store.execute_count(
            "DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner)
        )
        return deleted > 0
