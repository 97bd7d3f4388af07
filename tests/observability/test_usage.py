"""Usage per key: the store's totals (SQLite and memory), and ``execbridge keys usage`` after a scripted
conversation through library mode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from execbridge.cli import main
from execbridge.ids import key_id
from execbridge.store.base import FileRecord, Store
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore
from execbridge.testing import FakeUpstream
from library.conftest import KEY

from .conftest import SALES, converse


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield opened
    await opened.close()


async def test_totals_add_up_per_owner_with_the_files_they_keep(store: Store) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await store.usage.add("alice", requests=1, input_tokens=10, output_tokens=2, code_execution_s=0.5, at=start)
    later = start + timedelta(hours=1)
    await store.usage.add("alice", requests=2, input_tokens=5, output_tokens=1, code_execution_s=0.25, at=later)
    await store.usage.add("bob", requests=1, input_tokens=100, output_tokens=0, code_execution_s=0.0, at=start)
    for i, owner in enumerate(["alice", "alice", "carol"]):
        record = FileRecord(f"file_{i}", owner, "f.csv", "text/csv", 10 * (i + 1), start, downloadable=False)
        await store.files.insert(record)

    listed = [
        (r.owner, r.requests, r.input_tokens, r.output_tokens, r.code_execution_s, r.files, r.file_bytes)
        for r in await store.usage.list()
    ]
    assert listed == [
        ("bob", 1, 100, 0, 0.0, 0, 0),
        ("alice", 3, 15, 3, 0.75, 2, 30),
        ("carol", 0, 0, 0, 0.0, 1, 30),  # files only: never ran a model here
    ]
    usage = {r.owner: r for r in await store.usage.list()}
    assert usage["alice"].last_used_at == later and usage["carol"].last_used_at is None
    assert await store.usage.files_total() == (3, 60)


def test_keys_usage_after_a_conversation(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    converse(fake_upstream, tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["--data-dir", str(tmp_path), "keys", "usage", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["key"] == key_id(KEY) and row["gateway_key"] is False and row["name"] is None
    assert (row["requests"], row["input_tokens"], row["output_tokens"]) == (1, 250, 25)
    assert row["code_execution_seconds"] > 0
    assert (row["files"], row["file_bytes"]) == (1, len(SALES))
    assert KEY not in result.output

    table = runner.invoke(main, ["--data-dir", str(tmp_path), "keys", "usage"])
    assert table.exit_code == 0
    header, line = table.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "REQUESTS", "TOKENS"]
    assert line.split()[:4] == [key_id(KEY), "1", "250", "25"]
