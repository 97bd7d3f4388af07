"""The SQLite schema as an ordered list of named migrations, applied once each and recorded.

Append new migrations at the end; never edit or reorder one that has shipped (a database that
already applied it would not see the change). Each runs in its own transaction together with the
row that records it, so a crash leaves either both or neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

Migration = tuple[str, Callable[[sqlite3.Connection], None]]


def _containers(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE containers (
            id           TEXT PRIMARY KEY,
            owner        TEXT NOT NULL,
            slot         INTEGER NOT NULL UNIQUE,
            created_at   REAL NOT NULL,
            last_used_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX containers_owner ON containers (owner, last_used_at)")
    db.execute("CREATE INDEX containers_last_used ON containers (last_used_at)")


MIGRATIONS: list[Migration] = [
    ("0001_containers", _containers),
]


def apply(db: sqlite3.Connection, migrations: list[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations ``db`` has not seen yet, in order; returns their names.

    ``db`` must be in autocommit mode (``isolation_level=None``).
    """
    db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {row[0] for row in db.execute("SELECT name FROM migrations")}
    applied: list[str] = []
    for name, migrate in migrations:
        if name in done:
            continue
        # One explicit transaction (``db`` is in autocommit mode, so DDL does not commit by itself).
        db.execute("BEGIN IMMEDIATE")
        try:
            migrate(db)
            db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, datetime.now(UTC).isoformat()))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(name)
    return applied
