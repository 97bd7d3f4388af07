"""The SQLite store: schema by migrations, round trips, ordering, expiry queries, file mode."""

from __future__ import annotations

import sqlite3
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from execbridge.errors import StoreBusy
from execbridge.store import migrations
from execbridge.store.base import ContainerRecord, FileRecord
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(cid: str, owner: str = "alice", slot: int = 1, used: datetime = T0) -> ContainerRecord:
    return ContainerRecord(id=cid, owner=owner, slot=slot, created_at=T0, last_used_at=used)


@pytest.fixture(params=["sqlite", "memory"])
async def store(request, tmp_path):
    s = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield s
    await s.close()


async def test_round_trip_and_owner_filter(store):
    c = store.containers
    await c.insert(record("a", "alice", 1, T0))
    await c.insert(record("b", "bob", 2, T0 + timedelta(seconds=5)))
    await c.insert(record("c", "alice", 3, T0 + timedelta(seconds=9)))
    got = await c.get("a")
    assert got == record("a", "alice", 1, T0)
    assert got.created_at.tzinfo is not None
    assert [r.id for r in await c.list("alice")] == ["c", "a"]  # most recently used first
    assert [r.id for r in await c.list()] == ["c", "b", "a"]
    assert await c.get("nope") is None


async def test_touch_delete_and_unused_since(store):
    c = store.containers
    await c.insert(record("a", slot=1))
    await c.insert(record("b", slot=2))
    await c.touch("b", T0 + timedelta(hours=2))
    assert [r.id for r in await c.unused_since(T0 + timedelta(hours=1))] == ["a"]
    await c.delete("a")
    await c.delete("a")  # a no-op the second time
    assert await c.get("a") is None
    assert (await c.get("b")).last_used_at == T0 + timedelta(hours=2)


async def test_slots_are_unique(store):
    await store.containers.insert(record("a", slot=7))
    with pytest.raises((sqlite3.IntegrityError, ValueError)):
        await store.containers.insert(record("b", slot=7))


async def test_sqlite_file_is_private_wal_and_survives_reopen(tmp_path):
    path = tmp_path / "sub" / "db.sqlite3"
    s = await SqliteStore.open(path)
    await s.containers.insert(record("a"))
    await s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    s = await SqliteStore.open(path)
    try:
        assert (await s.containers.get("a")) is not None
        assert (await s.query("PRAGMA journal_mode", ()))[0][0] == "wal"
    finally:
        await s.close()


def test_migrations_apply_once_in_order(tmp_path):
    db = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    calls: list[str] = []
    steps = [
        ("0001_a", lambda d: (calls.append("a"), d.execute("CREATE TABLE a (x)"))),
        ("0002_b", lambda d: (calls.append("b"), d.execute("CREATE TABLE b (x)"))),
    ]
    assert migrations.apply(db, steps) == ["0001_a", "0002_b"]
    assert migrations.apply(db, steps) == []
    assert calls == ["a", "b"]


def test_failed_migration_rolls_back(tmp_path):
    db = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)

    def broken(d: sqlite3.Connection) -> None:
        d.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        migrations.apply(db, [("0001_broken", broken)])
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half" not in tables
    assert not list(db.execute("SELECT * FROM migrations"))


# ---------------------------------------------------------------- files


def file_record(fid: str, owner: str = "alice", at: datetime = T0, downloadable: bool = False) -> FileRecord:
    return FileRecord(fid, owner, f"{fid}.csv", "text/csv", 3, at, downloadable)


async def test_file_round_trip_keeps_microseconds_and_owner(store):
    f = store.files
    exact = T0 + timedelta(microseconds=123457)
    await f.insert(file_record("file_a", at=exact, downloadable=True))
    got = await f.get("file_a", "alice")
    assert got == file_record("file_a", at=exact, downloadable=True) and got.created_at.tzinfo is not None
    assert await f.get("file_a", "bob") is None
    assert await f.delete("file_a", "bob") is False
    assert await f.delete("file_a", "alice") is True
    assert await f.get("file_a", "alice") is None


async def test_file_listing_is_newest_first_with_ties_broken_by_id(store):
    f = store.files
    for fid, at in [("file_b", T0), ("file_a", T0), ("file_c", T0 + timedelta(seconds=1))]:
        await f.insert(file_record(fid, at=at))
    await f.insert(file_record("file_z", owner="bob", at=T0 + timedelta(hours=1)))
    assert [r.id for r in await f.list("alice", limit=10)] == ["file_c", "file_b", "file_a"]
    c, _b, a = await f.list("alice", limit=10)
    assert [r.id for r in await f.list("alice", limit=10, after=c.cursor)] == ["file_b", "file_a"]
    assert [r.id for r in await f.list("alice", limit=1, after=c.cursor)] == ["file_b"]
    assert [r.id for r in await f.list("alice", limit=10, before=a.cursor)] == ["file_c", "file_b"]
    assert [r.id for r in await f.list("alice", limit=1, before=a.cursor)] == ["file_b"]
    assert [r.id for r in await f.get_many(["file_a", "file_c", "file_z", "nope"], "alice")] == ["file_c", "file_a"]
    assert await f.get_many([], "alice") == []


async def test_upload_placements_are_kept_until_forgotten_by_age(tmp_path):
    """Container records live in the sandbox host's database now: placements are forgotten by age."""
    s = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        await s.files.add_placement("container_a", "file_1", "/workspace/a.csv", T0)
        await s.files.add_placement("container_a", "file_1", "/workspace/again.csv", T0)  # first one stays
        await s.files.add_placement("container_b", "file_1", "/workspace/b.csv", T0 + timedelta(days=2))
        assert await s.files.placements("container_a") == {"file_1": "/workspace/a.csv"}
        assert await s.files.forget_placements(T0 + timedelta(days=1)) == 1
        assert await s.files.placements("container_a") == {}
        assert await s.files.placements("container_b") == {"file_1": "/workspace/b.csv"}
    finally:
        await s.close()


def test_placements_made_before_the_split_survive_its_migration(tmp_path):
    """A database with the old foreign key keeps its rows through 0005 and accepts rows of any container."""
    path = tmp_path / "db.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    migrations.apply(db, migrations.MIGRATIONS[:4])
    db.execute("INSERT INTO containers VALUES ('container_a', 'alice', 1, 0, 0)")
    db.execute("INSERT INTO container_uploads VALUES ('container_a', 'file_1', '/workspace/a.csv')")
    assert migrations.apply(db, migrations.MIGRATIONS[:5]) == ["0005_uploads_without_container_key"]
    db.execute("INSERT INTO container_uploads VALUES ('container_elsewhere', 'file_2', '/workspace/b.csv', 0)")
    rows = db.execute("SELECT container_id, file_id, path FROM container_uploads ORDER BY file_id").fetchall()
    db.close()
    assert rows == [
        ("container_a", "file_1", "/workspace/a.csv"),
        ("container_elsewhere", "file_2", "/workspace/b.csv"),
    ]


async def test_owner_bytes_and_expiry_queries(store):
    f = store.files
    soon, later = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    await f.insert(replace(file_record("file_a"), size_bytes=10))
    await f.insert(replace(file_record("file_b", at=T0 + timedelta(seconds=1)), size_bytes=20, expires_at=soon))
    await f.insert(replace(file_record("file_c", at=T0 + timedelta(seconds=2)), size_bytes=40, expires_at=later))
    await f.insert(replace(file_record("file_z", owner="bob"), size_bytes=1000, expires_at=soon))
    assert (await f.bytes_of("alice"), await f.bytes_of("bob"), await f.bytes_of("nobody")) == (70, 1000, 0)
    assert (await f.get("file_b", "alice")).expires_at == soon  # microseconds and zone kept
    # ``now`` hides what expired at or before it; without it everything is there.
    assert await f.get("file_b", "alice", now=soon) is None
    assert await f.get("file_b", "alice", now=soon - timedelta(microseconds=1)) is not None
    assert [r.id for r in await f.list("alice", limit=10, now=soon)] == ["file_c", "file_a"]
    assert [r.id for r in await f.list("alice", limit=10)] == ["file_c", "file_b", "file_a"]
    assert [r.id for r in await f.get_many(["file_a", "file_b"], "alice", now=soon)] == ["file_a"]
    assert [r.id for r in await f.expired(soon, limit=10)] in (["file_b", "file_z"], ["file_z", "file_b"])
    assert [r.id for r in await f.expired(later, limit=10)][-1] == "file_c"
    assert len(await f.expired(later, limit=1)) == 1
    assert await f.expired(T0, limit=10) == []


def test_expiry_migration_keeps_older_rows(tmp_path):
    db = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    migrations.apply(db, migrations.MIGRATIONS[:3])
    db.execute("INSERT INTO files VALUES ('file_old', 'alice', 'a.csv', 'text/csv', 5, 0, 0)")
    assert migrations.apply(db, migrations.MIGRATIONS[:4]) == ["0004_files_expiry"]
    assert db.execute("SELECT id, expires_us FROM files").fetchall() == [("file_old", None)]
    plan = db.execute("EXPLAIN QUERY PLAN SELECT COALESCE(SUM(size_bytes), 0) FROM files WHERE owner = ?", ("a",))
    assert "COVERING INDEX files_owner_size" in " ".join(str(row) for row in plan.fetchall())
    db.close()


async def test_a_lock_held_by_another_connection_is_store_busy_and_nothing_is_written(tmp_path):
    """Past the busy timeout a write (single statement or transaction) fails with the retryable
    ``StoreBusy``, not a raw ``OperationalError``; reads go on (WAL); once the lock goes, writes do too."""
    store = await SqliteStore.open(tmp_path / "db.sqlite3", busy_timeout_s=0.05)
    try:
        await store.containers.insert(record("a"))
        other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusy) as busy:
            await store.containers.insert(record("b", slot=2))
        assert busy.value.message == "the store (db.sqlite3) is locked by another process; retry"
        assert busy.value.retry_after == 1.0 and busy.value.code == "store_busy"
        with pytest.raises(StoreBusy):
            await store.transaction(lambda db: db.execute("DELETE FROM containers"))
        assert [r.id for r in await store.containers.list()] == ["a"]
        other.execute("ROLLBACK")
        other.close()
        await store.containers.insert(record("b", slot=2))
        await store.transaction(lambda db: db.execute("DELETE FROM containers WHERE id = 'a'"))
        assert [r.id for r in await store.containers.list()] == ["b"]
    finally:
        await store.close()
