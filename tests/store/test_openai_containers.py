"""OpenAI containers and their file ids in the store (SQLite and memory alike), and OpenAI files kept
apart from Anthropic's in listings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execbridge.store.base import ContainerFileRecord, FileRecord, OpenAIContainerRecord
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def container(
    cid: str, owner: str = "alice", *, at: int = 0, name: str = "c", minutes: int = 20
) -> OpenAIContainerRecord:
    when = T0 + timedelta(seconds=at)
    return OpenAIContainerRecord(cid, owner, name, "4g", minutes, f"container_{cid}", when, when)


@pytest.fixture(params=["sqlite", "memory"])
async def store(request, tmp_path):
    s = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield s
    await s.close()


async def test_containers_round_trip_by_owner_and_page_both_ways(store):
    c = store.openai_containers
    for i, cid in enumerate(["a", "b", "c", "d"]):
        await c.insert(container(cid, at=i, name="x" if cid in "ac" else "y"))
    await c.insert(container("z", "bob", at=9))
    assert await c.get("a", "alice") == container("a", at=0, name="x")
    assert await c.get("z", "alice") is None
    assert [r.id for r in await c.list("alice", limit=10)] == ["d", "c", "b", "a"]
    assert [r.id for r in await c.list("alice", limit=2, after=(T0 + timedelta(seconds=2), "c"))] == ["b", "a"]
    assert [r.id for r in await c.list("alice", limit=2, ascending=True)] == ["a", "b"]
    assert [r.id for r in await c.list("alice", limit=9, ascending=True, after=(T0 + timedelta(seconds=1), "b"))] == [
        "c",
        "d",
    ]
    assert [r.id for r in await c.list("alice", limit=9, name="x")] == ["c", "a"]
    assert not await c.delete("a", "bob")
    assert await c.delete("a", "alice")
    assert await c.get("a", "alice") is None


async def test_expiry_counts_from_the_last_activity(store):
    c = store.openai_containers
    await c.insert(container("a", minutes=1))
    await c.insert(container("b", minutes=20))
    a = await c.get("a", "alice")
    assert not a.expired(T0 + timedelta(seconds=59)) and a.expired(T0 + timedelta(minutes=1))
    await c.touch("a", T0 + timedelta(minutes=5))
    a = await c.get("a", "alice")
    assert a.last_active_at == T0 + timedelta(minutes=5) and not a.expired(T0 + timedelta(minutes=5, seconds=59))
    await c.mark_expired("a")
    got = await c.get("a", "alice")
    assert got is not None and got.sandbox_id is None and got.expired(T0)  # expired whatever the time
    assert (await c.get("b", "alice")).sandbox_id == "container_b"


async def test_file_ids_are_one_per_path_and_go_with_their_container(store):
    c = store.openai_containers
    await c.insert(container("a"))
    first = await c.add_file(ContainerFileRecord("cfile_1", "a", "plot.png", "assistant", T0))
    again = await c.add_file(ContainerFileRecord("cfile_2", "a", "plot.png", "user", T0 + timedelta(seconds=1)))
    assert again == first
    await c.add_file(ContainerFileRecord("cfile_3", "a", "data.csv", "user", T0))
    assert {f.id for f in await c.files("a")} == {"cfile_1", "cfile_3"}
    await c.remove_files("a", ["cfile_1", "cfile_nope"])
    assert [f.id for f in await c.files("a")] == ["cfile_3"]
    await c.delete("a", "alice")
    assert await c.files("a") == []


async def test_openai_files_are_listed_apart_from_anthropic_files(store):
    f = store.files

    def file(fid: str, at: int, purpose: str | None) -> FileRecord:
        return FileRecord(fid, "alice", "x", "text/plain", 1, T0 + timedelta(seconds=at), False, purpose=purpose)

    await f.insert(file("file_a", 0, None))
    await f.insert(file("file-b", 1, "user_data"))
    await f.insert(file("file-c", 2, "assistants"))
    assert [r.id for r in await f.list("alice", limit=9)] == ["file_a"]
    assert [r.id for r in await f.list("alice", limit=9, openai=True)] == ["file-c", "file-b"]
    assert [r.id for r in await f.list("alice", limit=9, openai=True, purpose="user_data")] == ["file-b"]
    assert (await f.get("file-b", "alice")).purpose == "user_data"
