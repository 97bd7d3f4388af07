"""Usage per owner in SQLite (migration ``0010_usage``), with the Files API's figures read alongside.

Must not: hold a key; owners are key ids or digests already.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from execbridge.store.base import UsageRecord

if TYPE_CHECKING:
    from execbridge.store.sqlite import SqliteStore

# Every owner that used something or keeps a file, with both sets of figures.
_LIST = """
WITH kept AS (SELECT owner, COUNT(*) AS files, SUM(size_bytes) AS bytes FROM files GROUP BY owner)
SELECT u.owner, u.requests, u.input_tokens, u.output_tokens, u.code_execution_s,
       COALESCE(k.files, 0), COALESCE(k.bytes, 0), u.last_used_at
FROM usage AS u LEFT JOIN kept AS k ON k.owner = u.owner
UNION ALL
SELECT k.owner, 0, 0, 0, 0.0, k.files, k.bytes, NULL
FROM kept AS k WHERE k.owner NOT IN (SELECT owner FROM usage)
ORDER BY 3 DESC, 1
"""


def _usage(row: tuple[Any, ...]) -> UsageRecord:
    last = None if row[7] is None else datetime.fromtimestamp(row[7], UTC)
    return UsageRecord(row[0], int(row[1]), int(row[2]), int(row[3]), float(row[4]), int(row[5]), int(row[6]), last)


class SqliteUsageStore:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def add(
        self, owner: str, *, requests: int, input_tokens: int, output_tokens: int, code_execution_s: float, at: datetime
    ) -> None:
        await self._store.execute(
            "INSERT INTO usage (owner, requests, input_tokens, output_tokens, code_execution_s, last_used_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner) DO UPDATE SET "
            "requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens, "
            "code_execution_s = code_execution_s + excluded.code_execution_s, last_used_at = excluded.last_used_at",
            (owner, requests, input_tokens, output_tokens, code_execution_s, at.timestamp()),
        )

    async def list(self) -> builtins.list[UsageRecord]:
        return [_usage(r) for r in await self._store.query(_LIST, ())]

    async def files_total(self) -> tuple[int, int]:
        rows = await self._store.query("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM files", ())
        return int(rows[0][0]), int(rows[0][1])
