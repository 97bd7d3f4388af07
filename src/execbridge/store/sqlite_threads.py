"""Message threads in SQLite (``store.base.ThreadStore``): a thread is a chain of rows by ``parent_id``.

A continue claims its row with one ``UPDATE … WHERE state = 'open'`` (SQLite serialises writers, so
of two concurrent claims exactly one changes the row); ``chain`` reads a thread with one recursive
query; ``record`` inserts the new turn, closes the one it continued and moves the whole chain's expiry
in one transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from execbridge.store.base import ThreadClaim, ThreadTurn

if TYPE_CHECKING:
    from execbridge.store.sqlite import SqliteStore

_COLUMNS = "message_id, owner, parent_id, messages, fingerprint, container_id, created_at, expires_at"

# The thread up to a row, walking parent links; ``depth`` orders it and bounds a corrupted cycle.
_CHAIN = """
WITH RECURSIVE chain(message_id, parent_id, depth) AS (
    SELECT message_id, parent_id, 0 FROM threads WHERE message_id = ?
    UNION ALL
    SELECT t.message_id, t.parent_id, chain.depth + 1
    FROM threads t JOIN chain ON t.message_id = chain.parent_id
    WHERE chain.depth < 100000
)
"""


def _turn(row: tuple[Any, ...]) -> ThreadTurn:
    return ThreadTurn(
        message_id=row[0],
        owner=row[1],
        parent_id=row[2],
        messages=bytes(row[3]),
        fingerprint=bytes(row[4]),
        container_id=row[5],
        created_at=datetime.fromtimestamp(row[6], UTC),
        expires_at=datetime.fromtimestamp(row[7], UTC),
    )


class SqliteThreadStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def claim(self, message_id: str, owner: str, now: datetime) -> ThreadClaim:
        claimed = await self._store.execute_count(
            "UPDATE threads SET state = 'continuing' "
            "WHERE message_id = ? AND owner = ? AND state = 'open' AND expires_at > ?",
            (message_id, owner, now.timestamp()),
        )
        if claimed:
            return "claimed"
        rows = await self._store.query(
            "SELECT state FROM threads WHERE message_id = ? AND owner = ? AND expires_at > ?",
            (message_id, owner, now.timestamp()),
        )
        if not rows:
            return "not_found"
        return "continued" if rows[0][0] == "continued" else "in_flight"

    async def release(self, message_id: str) -> None:
        await self._store.execute(
            "UPDATE threads SET state = 'open' WHERE message_id = ? AND state = 'continuing'", (message_id,)
        )

    async def chain(self, message_id: str) -> list[ThreadTurn]:
        rows = await self._store.query(
            f"{_CHAIN} SELECT {', '.join('t.' + c for c in _COLUMNS.split(', '))} "
            "FROM chain JOIN threads t ON t.message_id = chain.message_id ORDER BY chain.depth DESC",
            (message_id,),
        )
        turns = [_turn(r) for r in rows]
        if not turns or turns[0].parent_id is not None:
            return []  # a turn of the thread was swept: what is left is no conversation
        return turns

    async def record(self, turn: ThreadTurn, *, continues: str | None) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO threads ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    turn.message_id,
                    turn.owner,
                    turn.parent_id,
                    turn.messages,
                    turn.fingerprint,
                    turn.container_id,
                    turn.created_at.timestamp(),
                    turn.expires_at.timestamp(),
                ),
            )
            if continues is not None:
                db.execute("UPDATE threads SET state = 'continued' WHERE message_id = ?", (continues,))
                db.execute(
                    f"{_CHAIN} UPDATE threads SET expires_at = ? WHERE message_id IN (SELECT message_id FROM chain)",
                    (continues, turn.expires_at.timestamp()),
                )

        await self._store.transaction(run)

    async def sweep(self, now: datetime, *, limit: int) -> int:
        return await self._store.execute_count(
            "DELETE FROM threads WHERE message_id IN (SELECT message_id FROM threads WHERE expires_at <= ? LIMIT ?)",
            (now.timestamp(), limit),
        )
