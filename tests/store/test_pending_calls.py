"""The client tool calls suspended REPL cells wait for (``store.pending_calls``), SQLite and memory alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from execbridge.store.base import PendingCall
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def call(
    tool_use_id: str, cell: str = "srvtoolu_1", container: str = "container_a", owner: str = "alice"
) -> PendingCall:
    return PendingCall(tool_use_id, cell, container, owner, "query", T0, T0 + timedelta(seconds=270))


@pytest.fixture(params=["sqlite", "memory"])
async def store(request, tmp_path):
    s = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield s
    await s.close()


async def test_a_cells_calls_are_found_by_cell_and_container_for_their_owner_only(store):
    calls = store.pending_calls
    await calls.add([call("toolu_1"), call("toolu_2")])
    await calls.add([call("toolu_3", cell="srvtoolu_2", container="container_b", owner="bob")])
    assert [c.tool_use_id for c in await calls.of_cell("srvtoolu_1", "alice")] == ["toolu_1", "toolu_2"]
    assert await calls.of_cell("srvtoolu_1", "bob") == []  # another owner never sees them
    assert (await calls.of_cell("srvtoolu_1", "alice"))[0] == call("toolu_1")
    assert len(await calls.of_container("container_a", "alice", T0)) == 2
    assert await calls.of_container("container_a", "bob", T0) == []
    # Past their deadline the container no longer counts as waiting; the cell still knows them.
    assert await calls.of_container("container_a", "alice", T0 + timedelta(seconds=270)) == []
    assert len(await calls.of_cell("srvtoolu_1", "alice")) == 2


async def test_clear_and_sweep(store):
    calls = store.pending_calls
    await calls.add([call("toolu_1"), call("toolu_2", cell="srvtoolu_2")])
    await calls.clear("srvtoolu_1")
    assert await calls.of_cell("srvtoolu_1", "alice") == []
    assert await calls.sweep(T0 + timedelta(seconds=10), limit=10) == 0
    assert await calls.sweep(T0 + timedelta(seconds=270), limit=10) == 1
    assert await calls.of_cell("srvtoolu_2", "alice") == []
