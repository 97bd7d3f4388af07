"""The thread store, on SQLite and in memory: claims are compare-and-set, chains walk parents, a record
closes its parent and moves the thread's expiry, expired turns are swept and a broken chain is no thread."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from execbridge.store.base import ThreadTurn
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "memory"])
async def threads(request, tmp_path):
    store = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield store.threads
    await store.close() if request.param == "sqlite" else None


def turn(message_id: str, parent: str | None = None, *, owner: str = "alice", expires: timedelta = timedelta(days=1)):
    return ThreadTurn(
        message_id=message_id,
        owner=owner,
        parent_id=parent,
        messages=f'[{{"role":"user","content":"{message_id}"}}]'.encode(),
        fingerprint=b'{"model":"m"}',
        container_id="container_1",
        created_at=NOW,
        expires_at=NOW + expires,
    )


async def test_a_chain_is_read_oldest_first(threads):
    await threads.record(turn("msg_1"), continues=None)
    assert await threads.claim("msg_1", "alice", NOW) == "claimed"
    await threads.record(turn("msg_2", "msg_1"), continues="msg_1")
    assert await threads.claim("msg_2", "alice", NOW) == "claimed"
    await threads.record(turn("msg_3", "msg_2"), continues="msg_2")
    assert [t.message_id for t in await threads.chain("msg_3")] == ["msg_1", "msg_2", "msg_3"]
    assert [t.message_id for t in await threads.chain("msg_2")] == ["msg_1", "msg_2"]
    assert await threads.chain("msg_unknown") == []


async def test_claims_say_why_not(threads):
    await threads.record(turn("msg_1"), continues=None)
    assert await threads.claim("msg_1", "bob", NOW) == "not_found"  # another owner's
    assert await threads.claim("msg_1", "alice", NOW + timedelta(days=2)) == "not_found"  # expired
    assert await threads.claim("msg_1", "alice", NOW) == "claimed"
    assert await threads.claim("msg_1", "alice", NOW) == "in_flight"
    await threads.release("msg_1")  # the continue failed: it may be tried again
    assert await threads.claim("msg_1", "alice", NOW) == "claimed"
    await threads.record(turn("msg_2", "msg_1"), continues="msg_1")
    assert await threads.claim("msg_1", "alice", NOW) == "continued"
    await threads.release("msg_1")  # releasing a continued turn changes nothing
    assert await threads.claim("msg_1", "alice", NOW) == "continued"


async def test_of_concurrent_claims_exactly_one_wins(threads):
    await threads.record(turn("msg_1"), continues=None)
    results = await asyncio.gather(*(threads.claim("msg_1", "alice", NOW) for _ in range(8)))
    assert sorted(results) == ["claimed"] + ["in_flight"] * 7


async def test_a_continue_extends_the_whole_thread_and_the_sweep_takes_expired_turns(threads):
    await threads.record(turn("msg_1", expires=timedelta(hours=1)), continues=None)
    await threads.claim("msg_1", "alice", NOW)
    await threads.record(turn("msg_2", "msg_1", expires=timedelta(days=3)), continues="msg_1")
    assert await threads.sweep(NOW + timedelta(days=1), limit=100) == 0  # msg_1 lives as long as msg_2
    assert len(await threads.chain("msg_2")) == 2
    await threads.record(turn("msg_other", expires=timedelta(hours=1)), continues=None)
    assert await threads.sweep(NOW + timedelta(days=1), limit=100) == 1
    assert await threads.sweep(NOW + timedelta(days=4), limit=1) == 1
    assert await threads.chain("msg_2") == []  # its first turn is gone: no thread any more


async def test_two_connections_claiming_one_reply_one_wins(tmp_path):
    """Two connections to one database file, as two gateway processes have: the claim is one statement,
    and SQLite lets one writer at a time change the row."""
    first = await SqliteStore.open(tmp_path / "db.sqlite3")
    second = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        await first.threads.record(turn("msg_1"), continues=None)
        for _ in range(20):  # both orders happen over the rounds; every round has exactly one winner
            outcomes = await asyncio.gather(
                first.threads.claim("msg_1", "alice", NOW), second.threads.claim("msg_1", "alice", NOW)
            )
            assert sorted(outcomes) == ["claimed", "in_flight"]
            await first.threads.release("msg_1")
    finally:
        await first.close()
        await second.close()
