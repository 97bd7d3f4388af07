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


def _files(db: sqlite3.Connection) -> None:
    # created_us: integer microseconds, so list cursors compare exactly (a REAL would round).
    db.execute(
        """
        CREATE TABLE files (
            id           TEXT PRIMARY KEY,
            owner        TEXT NOT NULL,
            filename     TEXT NOT NULL,
            mime_type    TEXT NOT NULL,
            size_bytes   INTEGER NOT NULL,
            created_us   INTEGER NOT NULL,
            downloadable INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX files_owner_created ON files (owner, created_us, id)")
    # Which uploads were put into which container, and where: an upload is put once, so a later
    # request never overwrites what the model did to it. Rows go with their container.
    db.execute(
        """
        CREATE TABLE container_uploads (
            container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
            file_id      TEXT NOT NULL,
            path         TEXT NOT NULL,
            PRIMARY KEY (container_id, file_id)
        )
        """
    )


def _api_keys(db: sqlite3.Connection) -> None:
    # Gateway keys: the secret's SHA-256 only. Revoked keys stay (revoked_at set) so ``keys ls`` can
    # show them and an id is never reused for another secret.
    db.execute(
        """
        CREATE TABLE api_keys (
            id           TEXT PRIMARY KEY,
            name         TEXT,
            secret_hash  TEXT NOT NULL,
            created_at   REAL NOT NULL,
            last_used_at REAL,
            revoked_at   REAL
        )
        """
    )


def _files_expiry(db: sqlite3.Connection) -> None:
    # expires_us: integer microseconds like created_us; NULL for files that never expire (the sweep
    # reads the partial index). files_owner_size lets the per-owner byte sum read the index alone.
    db.execute("ALTER TABLE files ADD COLUMN expires_us INTEGER")
    db.execute("CREATE INDEX files_expires ON files (expires_us) WHERE expires_us IS NOT NULL")
    db.execute("CREATE INDEX files_owner_size ON files (owner, size_bytes)")


def _uploads_without_container_key(db: sqlite3.Connection) -> None:
    # Container records moved to the sandbox host's own database (the privilege split), so a row can no
    # longer name its container by foreign key; ``placed_us`` lets a sweep forget rows of containers
    # long gone instead (``FileStore.forget_placements``).
    db.execute("ALTER TABLE container_uploads RENAME TO container_uploads_old")
    db.execute(
        """
        CREATE TABLE container_uploads (
            container_id TEXT NOT NULL,
            file_id      TEXT NOT NULL,
            path         TEXT NOT NULL,
            placed_us    INTEGER NOT NULL,
            PRIMARY KEY (container_id, file_id)
        )
        """
    )
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    db.execute(
        "INSERT INTO container_uploads SELECT container_id, file_id, path, ? FROM container_uploads_old", (now_us,)
    )
    db.execute("DROP TABLE container_uploads_old")
    db.execute("CREATE INDEX container_uploads_placed ON container_uploads (placed_us)")


def _threads(db: sqlite3.Connection) -> None:
    # One row per response held for a message thread; a thread is a chain of rows by parent_id. state:
    # 'open' (may be continued), 'continuing' (a continue is in flight), 'continued' (threads are linear).
    db.execute(
        """
        CREATE TABLE threads (
            message_id   TEXT PRIMARY KEY,
            owner        TEXT NOT NULL,
            parent_id    TEXT,
            messages     BLOB NOT NULL,
            fingerprint  BLOB NOT NULL,
            container_id TEXT,
            state        TEXT NOT NULL DEFAULT 'open',
            created_at   REAL NOT NULL,
            expires_at   REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX threads_expires ON threads (expires_at)")


def _ptc_pending_calls(db: sqlite3.Connection) -> None:
    # One row per client tool call a suspended REPL cell waits for (programmatic tool calling); the
    # cell itself waits in the sandbox. Times are microseconds since the epoch, UTC.
    db.execute(
        """
        CREATE TABLE ptc_pending_calls (
            tool_use_id  TEXT PRIMARY KEY,
            cell_id      TEXT NOT NULL,
            container_id TEXT NOT NULL,
            owner        TEXT NOT NULL,
            name         TEXT NOT NULL,
            created_us   INTEGER NOT NULL,
            expires_us   INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX ptc_pending_calls_cell ON ptc_pending_calls (cell_id)")
    db.execute("CREATE INDEX ptc_pending_calls_container ON ptc_pending_calls (container_id, expires_us)")
    db.execute("CREATE INDEX ptc_pending_calls_expires ON ptc_pending_calls (expires_us)")


def _openai_containers(db: sqlite3.Connection) -> None:
    # A container may have a memory limit of its own below the sandbox's (OpenAI's memory tiers).
    db.execute("ALTER TABLE containers ADD COLUMN memory_mb INTEGER")
    # OpenAI's Files API keeps a purpose per file (NULL: an Anthropic file); each API lists its own.
    db.execute("ALTER TABLE files ADD COLUMN purpose TEXT")
    # OpenAI containers over sandbox containers; sandbox_id NULL once expired (metadata stays).
    db.execute(
        """
        CREATE TABLE openai_containers (
            id              TEXT PRIMARY KEY,
            owner           TEXT NOT NULL,
            name            TEXT NOT NULL,
            memory_limit    TEXT NOT NULL,
            expires_minutes INTEGER NOT NULL,
            sandbox_id      TEXT,
            created_us      INTEGER NOT NULL,
            active_us       INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX openai_containers_owner ON openai_containers (owner, created_us, id)")
    # The stable id of each file in such a container, by its path in the workspace.
    db.execute(
        """
        CREATE TABLE openai_container_files (
            id           TEXT PRIMARY KEY,
            container_id TEXT NOT NULL REFERENCES openai_containers (id) ON DELETE CASCADE,
            path         TEXT NOT NULL,
            source       TEXT NOT NULL,
            created_us   INTEGER NOT NULL,
            UNIQUE (container_id, path)
        )
        """
    )


def _responses(db: sqlite3.Connection) -> None:
    # Stored Responses-API responses (api/responses.py): a conversation is a chain of rows by
    # previous_id, and branches are allowed (two requests may continue the same response).
    db.execute(
        """
        CREATE TABLE responses (
            id          TEXT PRIMARY KEY,
            owner       TEXT NOT NULL,
            previous_id TEXT,
            input_items BLOB NOT NULL,
            response    BLOB NOT NULL,
            created_us  INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX responses_owner ON responses (owner, created_us)")


def _usage(db: sqlite3.Connection) -> None:
    # Totals per owner (never a key: owners are key ids or digests), added to as requests finish.
    db.execute(
        """
        CREATE TABLE usage (
            owner            TEXT PRIMARY KEY,
            requests         INTEGER NOT NULL,
            input_tokens     INTEGER NOT NULL,
            output_tokens    INTEGER NOT NULL,
            code_execution_s REAL NOT NULL,
            last_used_at     REAL NOT NULL
        )
        """
    )


MIGRATIONS: list[Migration] = [
    ("0001_containers", _containers),
    ("0002_files", _files),
    ("0003_api_keys", _api_keys),
    ("0004_files_expiry", _files_expiry),
    ("0005_uploads_without_container_key", _uploads_without_container_key),
    ("0006_threads", _threads),
    ("0007_ptc_pending_calls", _ptc_pending_calls),
    ("0008_responses", _responses),
    ("0009_openai_containers", _openai_containers),
    ("0010_usage", _usage),
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
