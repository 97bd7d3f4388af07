"""The response store, on SQLite and in memory: chains walk ``previous_id`` oldest first and may branch,
everything is owner-scoped, and a chain with a deleted ancestor is no conversation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execbridge.store.base import StoredResponse
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore

NOW = datetime(2026, 12, 5, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "memory"])
async def responses(request, tmp_path):
    store = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield store.responses
    await store.close()


def stored(response_id: str, previous: str | None = None, *, owner: str = "alice", at: int = 0) -> StoredResponse:
    return StoredResponse(
        id=response_id,
        owner=owner,
        previous_id=previous,
        input_items=f'[{{"type":"message","role":"user","content":"{response_id}"}}]'.encode(),
        response=f'{{"id":"{response_id}","output":[]}}'.encode(),
        created_at=NOW + timedelta(seconds=at),
    )


async def test_a_record_reads_back_whole(responses):
    record = stored("resp_1")
    await responses.insert(record)
    assert await responses.get("resp_1", "alice") == record


async def test_a_chain_is_read_oldest_first_and_may_branch(responses):
    await responses.insert(stored("resp_1"))
    await responses.insert(stored("resp_2", "resp_1", at=1))
    await responses.insert(stored("resp_3", "resp_2", at=2))
    await responses.insert(stored("resp_2b", "resp_1", at=3))  # a second answer to the same response
    assert [r.id for r in await responses.chain("resp_3", "alice")] == ["resp_1", "resp_2", "resp_3"]
    assert [r.id for r in await responses.chain("resp_2b", "alice")] == ["resp_1", "resp_2b"]
    assert [r.id for r in await responses.chain("resp_1", "alice")] == ["resp_1"]
    assert await responses.chain("resp_unknown", "alice") == []


async def test_another_owner_sees_nothing(responses):
    await responses.insert(stored("resp_1"))
    await responses.insert(stored("resp_2", "resp_1"))
    assert await responses.get("resp_1", "bob") is None
    assert await responses.chain("resp_2", "bob") == []
    assert await responses.delete("resp_1", "bob") is False
    assert await responses.get("resp_1", "alice") is not None


async def test_a_chain_through_another_owner_is_no_conversation(responses):
    await responses.insert(stored("resp_1", owner="bob"))
    await responses.insert(stored("resp_2", "resp_1"))
    assert await responses.chain("resp_2", "alice") == []


async def test_deleting_an_ancestor_breaks_the_chain(responses):
    await responses.insert(stored("resp_1"))
    await responses.insert(stored("resp_2", "resp_1"))
    assert await responses.delete("resp_1", "alice") is True
    assert await responses.delete("resp_1", "alice") is False
    assert await responses.get("resp_1", "alice") is None
    assert await responses.chain("resp_2", "alice") == []
    assert await responses.get("resp_2", "alice") is not None
